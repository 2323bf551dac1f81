"""Toy-world exemplar rendering and exact-score denoising speed (prints figures).

    .venv/bin/python benchmarks/toy_exemplars.py [--views 1024] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from framework.cameras import orbit_c2w  # noqa: E402
from models.priors.toy.exact_score import ToyExactScorePrior, ToyExactScorePriorConfig  # noqa: E402
from models.priors.toy.render import render_scene  # noqa: E402
from models.priors.toy.scenes import parse_prompt  # noqa: E402

PROMPTS = ["a red sphere", "a blue cube", "a green torus", "a purple cone", "a red cone on top of a blue cube"]


def random_cameras(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    elevation = -10 + 100 * torch.rand(n, generator=g)
    azimuth = -180 + 360 * torch.rand(n, generator=g)
    distance = 1.0 + 0.5 * torch.rand(n, generator=g)
    fovy = torch.deg2rad(40 + 30 * torch.rand(n, generator=g))
    return orbit_c2w(elevation, azimuth, distance), fovy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--views", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}")

    c2w, fovy = random_cameras(args.views)
    for prompt in PROMPTS:
        scene = parse_prompt(prompt)
        for supersample in (1, 2):
            wall, cpu = time.perf_counter(), time.process_time()
            render_scene(scene, c2w, fovy, 64, 64, supersample)
            print(
                f"render {args.views} views 64x64 supersample {supersample} {prompt!r}: "
                f"wall {time.perf_counter() - wall:.2f} s, cpu {time.process_time() - cpu:.2f} s"
            )

    with tempfile.TemporaryDirectory() as cache:
        cfg = ToyExactScorePriorConfig(prompt="a red sphere", cache_dir=cache, supersample=1, n_uncond_exemplars=64)
        prior = ToyExactScorePrior(cfg)
        batch = {
            "elevation": torch.tensor([10.0]),
            "azimuth": torch.tensor([30.0]),
            "distance": torch.tensor([1.2]),
            "fovy": torch.tensor([0.9]),
        }
        x_t, t = torch.randn(1, 3, 64, 64), torch.tensor([500])
        wall = time.perf_counter()
        prior.predict_noise(x_t, t, "a red sphere", batch, True)
        print(f"first call (renders {cfg.n_exemplars} + 30 x 64 exemplars): {time.perf_counter() - wall:.2f} s")
        for need_uncond in (False, True):
            wall = time.perf_counter()
            for _ in range(50):
                prior.predict_noise(x_t, t, "a red sphere", batch, need_uncond)
            per_call = (time.perf_counter() - wall) / 50 * 1000
            print(f"predict_noise B=1 k={cfg.k_nearest} need_uncond={need_uncond}: {per_call:.2f} ms")


if __name__ == "__main__":
    main()
