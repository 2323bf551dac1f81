"""The random streams a training step draws from, kept in every checkpoint so a resumed run draws what
the uninterrupted run would have drawn.

A step draws from two kinds of stream:

- **Global streams**: torch's CPU generator (and CUDA's, when CUDA is in use), numpy's and Python's
  `random`. The parts use them: the volume renderer's stratified samples and normal jitter, the
  occupancy grid's update (every n steps, keyed on global_step), the material's shading choice, the
  guidance's timesteps and noise (models/guidance/*.py). `RandomState` stores their states in each
  checkpoint (`checkpoint["toy3d_rng"]`) and puts them back just before the first step of a resumed
  run, after everything Lightning and the parts do between loading a checkpoint and that step.
- **Generators a part owns**: the camera sampler of the random-camera and single-image data modules
  (`framework/data/random_camera.py`, a `torch.Generator`). Those modules save and restore it through
  the LightningDataModule's own `state_dict` / `load_state_dict`, which Lightning calls. The toy
  prior's exemplar banks are drawn once from fixed seeds when built and draw nothing per step.

Validation inside training draws from the global streams under `fork` (the states are put back when it
ends), so a checkpoint saved before a validation and one saved after it hold the same states, and a
validation never shifts the training's random numbers.
"""
from __future__ import annotations

import random
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch

RNG_KEY = "toy3d_rng"


def global_states() -> dict[str, Any]:
    """Tensors, ints and tuples only: Lightning loads checkpoints with torch.load(weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_global_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RandomState(pl.Callback):
    """Global random states into checkpoints and back on resume; validation during training forked."""

    def __init__(self) -> None:
        self._outside_validation: Optional[dict[str, Any]] = None
        self._to_restore: Optional[dict[str, Any]] = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = self._outside_validation or global_states()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._to_restore = checkpoint.get(RNG_KEY)  # older checkpoints have none: the seed's streams then

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        # callbacks run before the LightningModule's hook, so this precedes the parts' update_step
        if self._to_restore is not None:
            set_global_states(self._to_restore)
            self._to_restore = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._outside_validation = global_states()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._outside_validation is not None:
            set_global_states(self._outside_validation)
            self._outside_validation = None
