"""Batches of toy-world renders with their prompts, for training the text-to-image toy prior.

The renders come from models/priors/toy/dataset.py (held-out prompts excluded), generated once and
cached to `cache_path` (regenerated when the cached file was made with other settings). Each batch
draws images at random; a share of them is captioned with the view-dependent prompt of its camera
("a red cube, front view", DreamFusion's suffixes, or six views with diagonal ones; `view_directions`
must equal the prompt processor's thresholds of the method that uses the prior), so the prior
understands the prompts that view-dependent prompting will send it. A horizontal flip
(azimuth -> -azimuth, which keeps the view suffix) doubles the views cheaply.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset

from framework.data.render_cache import CachedRendersDataModule, load_or_make
from framework.value_checks import at_least, between, check_fields
from models.priors.toy.dataset import ToyDatasetConfig, generate
from models.prompt_processors.view_dependent import ViewDirections, view_prompts


@dataclass
class ToyImagesDataConfig:
    _target_: str = "models.priors.toy.training.image_data.ToyImagesDataModule"
    dataset: ToyDatasetConfig = field(default_factory=ToyDatasetConfig)
    cache_path: str = "outputs/datasets/toy-text-images.pt"
    """Where the generated renders are kept (relative paths: to the working directory)."""
    batch_size: int = 32
    view_prompt_probability: float = 0.5
    """Share of captions with the camera's view suffix (', front view', ...)."""
    view_directions: ViewDirections = field(default_factory=ViewDirections)
    """Which view suffix a camera gets; the method using the prior must assign views the same way."""
    flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, batch_size=at_least(1), view_prompt_probability=between(0, 1))


def load_or_generate(cfg: ToyDatasetConfig, path: str | os.PathLike) -> dict[str, Any]:
    """The renders for cfg, from the cache at `path` when it was made with the same settings."""
    return load_or_make(path, vars(cfg), lambda: generate(cfg))


class ToyImageBatches(IterableDataset):
    """Endless batches {"images": (B, 3, R, R) in [-1, 1], "prompts": list of B str}."""

    def __init__(self, data: dict[str, Any], cfg: ToyImagesDataConfig):
        self.images = data["images"]  # (N, R, R, 3) uint8
        self.prompts = data["prompts"]
        self.prompt_index = data["prompt_index"]
        self.directions = cfg.view_directions.assign(data["elevation"], data["azimuth"])  # (N,) view indices
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(cfg.seed)

    def caption(self, i: int, with_view: bool) -> str:
        prompt = self.prompts[int(self.prompt_index[i])]
        if not with_view:
            return prompt
        return view_prompts(prompt, diagonal_views=self.cfg.view_directions.diagonal_views)[int(self.directions[i])]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        g, b = self.generator, self.cfg.batch_size
        while True:
            rows = torch.randint(len(self.images), (b,), generator=g)
            images = self.images[rows].permute(0, 3, 1, 2).float() / 127.5 - 1.0
            if self.cfg.flip:
                flip = torch.rand(b, generator=g) < 0.5
                images[flip] = images[flip].flip(-1)
            with_view = torch.rand(b, generator=g) < self.cfg.view_prompt_probability
            prompts = [self.caption(int(i), bool(v)) for i, v in zip(rows, with_view)]
            yield {"images": images, "prompts": prompts}


class ToyImagesDataModule(CachedRendersDataModule):
    def __init__(self, cfg: ToyImagesDataConfig, **runtime_objects: Any):
        super().__init__(cfg)

    def load(self) -> dict[str, Any]:
        return load_or_generate(self.cfg.dataset, self.cfg.cache_path)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(ToyImageBatches(self.data, self.cfg), batch_size=None, num_workers=0)
