"""Training data for the trained toy priors: toy-world renders with their prompts and cameras.

Every image is a render of a toy scene (TOYWORLD.md) by the toy renderer, from a camera drawn
exactly as the training runs draw theirs (framework/data/random_camera.py, with the toy method
configs' ranges and no perturbation), so a prior trained on it has seen the views SDS will ask
about. Prompts held out by TOYWORLD.md never appear: they measure generalisation.

    python -m models.priors.toy.dataset out/toy-32.pt --n-images 20000 --resolution 32

The file holds uint8 images (N, H, W, 3), prompt indices into `prompts`, and the cameras
(c2w (N, 4, 4), fovy radians, elevation / azimuth degrees, distance), as a torch.save dict.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List

import torch
from torch import Tensor

from framework.data.random_camera import RandomCameraDataConfig, RandomCameraIterableDataset
from framework.value_checks import at_least, between, check_fields, greater_than, increasing_pair, inside
from models.priors.toy.render import render_scene
from models.priors.toy.scenes import composite_prompts, is_held_out, parse_prompt, single_shape_prompts


@dataclass
class ToyDatasetConfig:
    n_images: int = 20000
    resolution: int = 32
    composite_fraction: float = 0.5
    """Share of images showing a two-object prompt (the rest: single shapes)."""
    elevation_range: List[float] = field(default_factory=lambda: [-10.0, 60.0])
    """Camera ranges: those of configs/data/random-camera-toy.yaml (and the other toy method configs)."""
    camera_distance_range: List[float] = field(default_factory=lambda: [1.4, 1.8])
    fovy_range: List[float] = field(default_factory=lambda: [35.0, 45.0])
    supersample: int = 2
    """Render at supersample x resolution and average down (anti-aliased edges)."""
    chunk: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(
            self,
            n_images=at_least(1),
            resolution=at_least(1),
            composite_fraction=between(0, 1),
            elevation_range=increasing_pair(between(-90, 90)),
            camera_distance_range=increasing_pair(greater_than(0)),
            fovy_range=increasing_pair(inside(0, 180)),
            supersample=at_least(1),
            chunk=at_least(1),
        )


def training_prompts() -> tuple[list[str], list[str]]:
    """(single-shape prompts, composite prompts) a trained toy prior may see: all but the held-out ones."""
    singles = [p for p in single_shape_prompts() if not is_held_out(p)]
    composites = [p for p in composite_prompts() if not is_held_out(p)]
    return singles, composites


def camera_sampler(cfg: ToyDatasetConfig | Any, batch_size: int, seed: int) -> RandomCameraIterableDataset:
    """Cameras as the toy method configs draw them (no perturbation); `.sample()` -> a batch dict.
    cfg: any config with elevation_range, camera_distance_range and fovy_range (the view pairs' too)."""
    return RandomCameraIterableDataset(
        RandomCameraDataConfig(
            height=1, width=1, batch_size=batch_size, elevation_range=list(cfg.elevation_range),
            camera_distance_range=list(cfg.camera_distance_range), fovy_range=list(cfg.fovy_range),
            camera_perturb=0.0, center_perturb=0.0, up_perturb=0.0, light_sample_strategy="headlight", seed=seed,
        )
    )


def render_views(prompt: str, n: int, cfg: ToyDatasetConfig, seed: int) -> Tensor:
    """n renders of one prompt's scene from toy cameras -> rgb (n, R, R, 3) in [0, 1]."""
    batch = camera_sampler(cfg, n, seed).sample()
    res = cfg.resolution
    return render_scene(parse_prompt(prompt), batch["c2w"], batch["fovy"], res, res, supersample=cfg.supersample)["rgb"]


def generate(cfg: ToyDatasetConfig) -> dict[str, object]:
    """-> {"images": uint8 (N, H, W, 3), "prompt_index": long (N,), "prompts": list[str], "c2w": (N, 4, 4),
    "fovy": (N,), "elevation": (N,), "azimuth": (N,), "distance": (N,), "config": dict}."""
    singles, composites = training_prompts()
    prompts = singles + composites
    g = torch.Generator().manual_seed(cfg.seed)
    is_composite = torch.rand(cfg.n_images, generator=g) < cfg.composite_fraction
    index = torch.where(
        is_composite,
        len(singles) + torch.randint(len(composites), (cfg.n_images,), generator=g),
        torch.randint(len(singles), (cfg.n_images,), generator=g),
    )
    cameras = camera_sampler(cfg, cfg.chunk, cfg.seed)
    n, res = cfg.n_images, cfg.resolution
    images = torch.empty(n, res, res, 3, dtype=torch.uint8)
    keys = ("c2w", "fovy", "elevation", "azimuth", "distance")
    cams: dict[str, list[Tensor]] = {k: [] for k in keys}
    scenes = {}
    for start in range(0, n, cfg.chunk):
        batch = cameras.sample()
        stop = min(n, start + cfg.chunk)
        for k in keys:
            cams[k].append(batch[k][: stop - start])
        # one render call per distinct scene in the chunk
        for i in index[start:stop].unique().tolist():
            rows = (index[start:stop] == i).nonzero()[:, 0]
            scene = scenes.setdefault(i, parse_prompt(prompts[i]))
            rgb = render_scene(scene, batch["c2w"][rows], batch["fovy"][rows], res, res, supersample=cfg.supersample)["rgb"]
            images[start + rows] = (rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
    out: dict[str, object] = {k: torch.cat(v) for k, v in cams.items()}
    out.update(images=images, prompt_index=index, prompts=prompts, config=vars(cfg).copy())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--n-images", type=int, default=ToyDatasetConfig.n_images)
    parser.add_argument("--resolution", type=int, default=ToyDatasetConfig.resolution)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = ToyDatasetConfig(n_images=args.n_images, resolution=args.resolution, seed=args.seed)
    start = time.perf_counter()
    data = generate(cfg)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, args.out)
    print(f"{cfg.n_images} images at {cfg.resolution}² of {len(data['prompts'])} prompts -> {args.out} "
          f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
