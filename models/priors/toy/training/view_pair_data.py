"""Training pairs for the view-conditioned toy prior (Zero-1-to-3 form): two views of one toy scene.

Every scene is a training prompt of the toy world (models/priors/toy/dataset.training_prompts:
single shapes and composites, never a held-out prompt), seen from `views_per_scene` cameras drawn
exactly as the toy method configs draw theirs (RandomCameraIterableDataset with the toy ranges, no
perturbation; its stratified azimuths put the views of one scene all round the object), rendered
by the toy renderer. The renders are generated once and cached to `cache_path` (the training
process then only indexes tensors); each training batch forms fresh random (cond, target) pairs
among the views of random scenes, so a render serves in many pairs.

Batch (B = batch_size): target, cond (B, 3, H, W) in [-1, 1]; cond_/target_ elevation, azimuth
(degrees) and distance (B,); T (B, 4), Zero-1-to-3's relative pose (models/priors/zero123.py `relative_pose`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, List

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from framework.data.render_cache import CachedRendersDataModule, load_or_make
from framework.value_checks import at_least, between, check_fields, greater_than, increasing_pair, inside
from models.priors.toy.dataset import camera_sampler, training_prompts
from models.priors.toy.render import RENDERER_VERSION, render_scene
from models.priors.toy.scenes import parse_prompt
from models.priors.zero123 import relative_pose


@dataclass
class ToyViewPairsDataConfig:
    _target_: str = "models.priors.toy.training.view_pair_data.ToyViewPairsDataModule"
    cache_path: str = "outputs/cache/toy-view-pairs.pt"
    """Where the rendered views are kept: generated once when missing (or made with other settings), then reused."""
    n_scenes: int = 2000
    views_per_scene: int = 8
    resolution: int = 32
    supersample: int = 2
    composite_fraction: float = 0.5
    """Share of scenes showing a two-object prompt (the rest: single shapes)."""
    elevation_range: List[float] = field(default_factory=lambda: [-10.0, 60.0])
    """Camera ranges: those of the toy camera preset (configs/data/random-camera-toy.yaml)."""
    camera_distance_range: List[float] = field(default_factory=lambda: [1.4, 1.8])
    fovy_range: List[float] = field(default_factory=lambda: [35.0, 45.0])
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(
            self,
            n_scenes=at_least(1),
            views_per_scene=at_least(2),
            resolution=at_least(1),
            supersample=at_least(1),
            composite_fraction=between(0, 1),
            elevation_range=increasing_pair(between(-90, 90)),
            camera_distance_range=increasing_pair(greater_than(0)),
            fovy_range=increasing_pair(inside(0, 180)),
            batch_size=at_least(1),
        )


def generate_views(cfg: ToyViewPairsDataConfig) -> dict[str, Any]:
    """-> {"images": uint8 (S, V, H, W, 3), "prompt_index": long (S,), "prompts": list[str],
    "elevation", "azimuth", "distance", "fovy": (S, V), "c2w": (S, V, 4, 4), "config": dict}."""
    singles, composites = training_prompts()
    prompts = singles + composites
    g = torch.Generator().manual_seed(cfg.seed)
    s, v, res = cfg.n_scenes, cfg.views_per_scene, cfg.resolution
    is_composite = torch.rand(s, generator=g) < cfg.composite_fraction
    index = torch.where(
        is_composite,
        len(singles) + torch.randint(len(composites), (s,), generator=g),
        torch.randint(len(singles), (s,), generator=g),
    )
    cameras = camera_sampler(cfg, batch_size=v, seed=cfg.seed)
    images = torch.empty(s, v, res, res, 3, dtype=torch.uint8)
    keys = ("c2w", "fovy", "elevation", "azimuth", "distance")
    cams: dict[str, list[Tensor]] = {k: [] for k in keys}
    parsed: dict[int, Any] = {}
    for i in range(s):
        batch = cameras.sample()
        for k in keys:
            cams[k].append(batch[k])
        scene = parsed.setdefault(int(index[i]), parse_prompt(prompts[int(index[i])]))
        rgb = render_scene(scene, batch["c2w"], batch["fovy"], res, res, supersample=cfg.supersample)["rgb"]
        images[i] = (rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
    out: dict[str, Any] = {k: torch.stack(x) for k, x in cams.items()}
    out.update(images=images, prompt_index=index, prompts=prompts, config=_cache_key(cfg))
    return out


def _cache_key(cfg: ToyViewPairsDataConfig) -> dict[str, Any]:
    keys = ("n_scenes", "views_per_scene", "resolution", "supersample", "composite_fraction", "elevation_range",
            "camera_distance_range", "fovy_range", "seed")
    key = {k: (list(getattr(cfg, k)) if isinstance(getattr(cfg, k), (list, tuple)) else getattr(cfg, k)) for k in keys}
    key["renderer"] = RENDERER_VERSION
    return key


def load_or_generate(cfg: ToyViewPairsDataConfig) -> dict[str, Any]:
    """The cached views for cfg, rendering (and saving) them first if the cache is missing or stale."""
    return load_or_make(cfg.cache_path, _cache_key(cfg), lambda: generate_views(cfg))


class ToyViewPairs(IterableDataset):
    """Endless random batches of (cond, target) view pairs; each pair = two distinct views of one scene."""

    def __init__(self, data: dict[str, Any], batch_size: int, seed: int = 0):
        self.data = data
        self.batch_size = batch_size
        self.seed = seed

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        info = torch.utils.data.get_worker_info()
        g = torch.Generator().manual_seed(self.seed + (info.id if info is not None else 0))
        while True:
            yield self.sample(g)

    def sample(self, g: torch.Generator) -> dict[str, Tensor]:
        images = self.data["images"]
        s, v = images.shape[:2]
        b = self.batch_size
        scene = torch.randint(s, (b,), generator=g)
        ci = torch.randint(v, (b,), generator=g)
        ti = (ci + torch.randint(1, v, (b,), generator=g)) % v  # a different view of the same scene
        out: dict[str, Tensor] = {"scene": scene, "prompt_index": self.data["prompt_index"][scene]}
        for name, view in (("cond", ci), ("target", ti)):
            out[name] = images[scene, view].permute(0, 3, 1, 2).float() / 127.5 - 1.0
            for k in ("elevation", "azimuth", "distance"):
                out[f"{name}_{k}"] = self.data[k][scene, view].float()
        out["T"] = relative_pose(
            out["cond_elevation"], out["cond_azimuth"], out["cond_distance"],
            out["target_elevation"], out["target_azimuth"], out["target_distance"],
        )
        return out


class ToyViewPairsDataModule(CachedRendersDataModule):
    def __init__(self, cfg: ToyViewPairsDataConfig, **runtime_objects: Any):
        super().__init__(cfg)

    def load(self) -> dict[str, Any]:
        return load_or_generate(self.cfg)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(ToyViewPairs(self.data, self.cfg.batch_size, self.cfg.seed), batch_size=None, num_workers=0)
