"""A dataset of renders kept in one torch file, reused while it was made with the same settings.

Both toy-prior datasets (models/priors/toy/image_data.py, models/priors/toy/view_pair_data.py) take minutes
to render, so they are made once and cached; a file made with other settings (its "config" entry)
is made again, and the file is replaced atomically so a killed run never leaves half of one.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader


def comparable(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings with every sequence as a list of floats (YAML lists arrive as ListConfig)."""
    return {k: (v if isinstance(v, (int, float, str, bool)) or v is None else [float(x) for x in v]) for k, v in settings.items()}


def load_or_make(path: str | os.PathLike, settings: Mapping[str, Any], make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The dict saved at `path` if its "config" entry equals `settings`; else make() it (it must record
    `settings` as its "config"), save it and return it."""
    path = Path(path)
    if path.is_file():
        data = torch.load(path, map_location="cpu", weights_only=False)
        if comparable(data.get("config") or {}) == comparable(settings):
            return data
        print(f"{path} was made with other settings: making it again", flush=True)
    print(f"making {path} ...", flush=True)
    start = time.perf_counter()
    data = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(data, tmp)
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
    print(f"made {path} in {time.perf_counter() - start:.1f} s", flush=True)
    return data


class CachedRendersDataModule(pl.LightningDataModule):
    """A data module over renders kept by `load_or_make`: `load()` runs once, on first use.

    The prior-training systems that use it validate and test by sampling on their own, so their
    validation and test loaders hold one item: Lightning only needs a step to call."""

    def __init__(self, cfg: Any):
        super().__init__()
        self.cfg = cfg
        self.data: dict[str, Any] | None = None

    def load(self) -> dict[str, Any]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            self.data = self.load()

    def _one_item(self) -> DataLoader:
        return DataLoader([0], batch_size=None)

    val_dataloader = _one_item
    test_dataloader = _one_item
