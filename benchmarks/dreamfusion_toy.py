"""Toy DreamFusion training speed: steps/s at the demo's 64x64 renders, and peak memory.

    .venv/bin/python benchmarks/dreamfusion_toy.py [--steps 200] [override ...]

Builds the system exactly as launch.py does (same config), then times the training step
(render + SDS + regularisers + backward + Adam) outside Lightning, after a warm-up that lets the
occupancy grid prune empty space. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from framework.config import instantiate  # noqa: E402
from launch import slug  # noqa: E402,F401  (registers schemas and the slug resolver)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="dreamfusion-toy", overrides=args.overrides)
    torch.manual_seed(0)
    data = instantiate(cfg.data)
    system = instantiate(cfg.system, run_dir=tempfile.mkdtemp())
    optimizer = system.configure_optimizers()
    stream = iter(data.train_dataloader())

    def step(i: int) -> None:
        data.update_step(i)
        system.update_step(i)
        batch = next(stream)
        out = system.render(batch)
        losses = system.compute_losses(batch, out)
        total, _ = system.loss_weights.combine(losses, i)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    system.log = lambda *a, **k: None  # no trainer attached: logging is Lightning's job
    t0 = time.perf_counter()
    for i in range(args.warmup):
        step(i)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
        step(i)
    elapsed = time.perf_counter() - t0
    h, w = cfg.data.height, cfg.data.width
    print(f"toy DreamFusion {h}x{w}, batch {cfg.data.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"  warm-up ({args.warmup} steps, incl. exemplar bank): {warm:.2f} s")
    print(f"  training: {args.steps / elapsed:.2f} it/s ({1000 * elapsed / args.steps:.1f} ms/step)")
    print(f"  peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
