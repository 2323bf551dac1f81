"""Random cameras around the object for training, turntables for validation and test.

Sampling follows threestudio's RandomCameraDataModule so published configs mean the same here:
elevation half the time uniform in degrees and half uniform on the sphere; azimuth stratified
across the batch (`batch_uniform_azimuth`); distance and fovy uniform; optional perturbation of
the camera position, look-at centre and up vector; light positions by one of three strategies.
All camera maths comes from `framework.cameras`.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, List, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset

from framework import cameras
from framework.config import ConfigError
from framework.value_checks import (
    at_least,
    between,
    check_fields,
    each,
    greater_than,
    increasing_pair,
    inside,
    list_of,
    number,
    number_at_least,
    one_of,
)

LIGHT_STRATEGIES = ("dreamfusion", "magic3d", "headlight")


@dataclass
class RandomCameraDataConfig:
    _target_: str = "framework.data.random_camera.RandomCameraDataModule"
    height: Any = 64
    """Training render height: an int, or a list used with `resolution_milestones`."""
    width: Any = 64
    resolution_milestones: List[int] = field(default_factory=list)
    """Steps at which height/width move to their next list entry (threestudio's convention)."""
    batch_size: Any = 1
    """Views per training batch: an int, or a list used with `resolution_milestones` like height/width
    (threestudio's zero123 config lowers it as the resolution grows). `Any` because OmegaConf has no
    union of an int and a list; the rules below check its values, the dataset a list's length when it is built."""
    elevation_range: List[float] = field(default_factory=lambda: [-10.0, 90.0])
    azimuth_range: List[float] = field(default_factory=lambda: [-180.0, 180.0])
    camera_distance_range: List[float] = field(default_factory=lambda: [1.0, 1.5])
    fovy_range: List[float] = field(default_factory=lambda: [40.0, 70.0])
    camera_perturb: float = 0.1
    center_perturb: float = 0.2
    up_perturb: float = 0.02
    light_sample_strategy: str = "dreamfusion"
    """dreamfusion: near the camera direction; magic3d: random in the camera's hemisphere; headlight: at the camera."""
    light_position_perturb: float = 1.0
    light_distance_range: List[float] = field(default_factory=lambda: [0.8, 1.5])
    batch_uniform_azimuth: bool = True
    eval_height: int = 512
    eval_width: int = 512
    eval_elevation_deg: float = 15.0
    eval_camera_distance: float = 1.5
    eval_fovy_deg: float = 70.0
    n_val_views: int = 1
    n_test_views: int = 120
    seed: Optional[int] = None
    """Seed of the camera sampler; None follows the global seed."""

    def __post_init__(self) -> None:
        check_fields(
            self,
            height=each(at_least(1)),
            width=each(at_least(1)),
            resolution_milestones=list_of(at_least(0), ascending=True),
            batch_size=each(at_least(1)),
            elevation_range=increasing_pair(between(-90, 90)),
            azimuth_range=increasing_pair(number()),
            camera_distance_range=increasing_pair(greater_than(0)),
            fovy_range=increasing_pair(inside(0, 180)),
            camera_perturb=number_at_least(0),
            center_perturb=number_at_least(0),
            up_perturb=number_at_least(0),
            light_sample_strategy=one_of(*LIGHT_STRATEGIES),
            light_position_perturb=number_at_least(0),
            light_distance_range=increasing_pair(greater_than(0)),
            eval_height=at_least(1),
            eval_width=at_least(1),
            eval_elevation_deg=between(-90, 90),
            eval_camera_distance=greater_than(0),
            eval_fovy_deg=inside(0, 180),
            n_val_views=at_least(1),
            n_test_views=at_least(1),
        )


def _is_int(value: Any) -> bool:
    """Python, numpy or torch-item integers (callers pass counts computed with numpy); not bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_scheduled(value: Any, milestones: List[int], key: str) -> None:
    """ConfigError unless `value` is an int or a list of len(milestones) + 1 ints (threestudio's
    convention for height, width and batch_size), so a bad schedule fails when the data is built,
    not at the first milestone."""
    if _is_int(value):
        return
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = list(value)
        if all(_is_int(v) for v in values):
            if len(values) == len(milestones) + 1:
                return
            raise ConfigError(
                f"{key} lists need len(resolution_milestones) + 1 entries, got {key}={values} and "
                f"resolution_milestones={list(milestones)}"
            )
    raise ConfigError(f"{key} must be an int or a list of ints (one per resolution_milestones stage), got {value!r}")


def value_at_step(value: Any, milestones: List[int], step: int) -> int:
    """An int as it is; from a list, entry i once `step` has reached milestones[i - 1]."""
    if isinstance(value, numbers.Integral):
        return int(value)
    values = list(value)
    if len(values) != len(milestones) + 1:
        raise ValueError(f"height/width lists need len(resolution_milestones) + 1 entries, got {values} and {milestones}")
    index = sum(step >= m for m in milestones)
    return int(values[index])


class RandomCameraIterableDataset(IterableDataset):
    """An endless stream of camera batches (already batched: use with batch_size=None)."""

    def __init__(self, cfg: RandomCameraDataConfig):
        for key in ("height", "width", "batch_size"):
            check_scheduled(getattr(cfg, key), cfg.resolution_milestones, key)
        self.cfg = cfg
        self.step = 0
        self.generator = torch.Generator()
        if cfg.seed is not None:
            self.generator.manual_seed(cfg.seed)
        else:
            self.generator.manual_seed(torch.initial_seed() % (2**63))
        # Resuming exactly: Lightning fetches a batch ahead of the step it trains, so when a checkpoint is
        # saved the generator has already drawn the next step's cameras. `index` numbers the samples (one
        # per training step, the first of a fresh run 0), and `_before` keeps the generator's state and the
        # step it was told before each of the last few samples, so `state_dict(next_step)` can give the
        # state from which the batch of `next_step` is drawn.
        self.index = 0
        self._before: dict[int, tuple[torch.Tensor, int]] = {}

    def update_step(self, global_step: int) -> None:
        self.step = global_step

    def state_dict(self, next_step: int) -> dict[str, Any]:
        """The sampler as it was before drawing the batch of training step `next_step` (the trainer's
        global_step when a checkpoint is saved)."""
        if next_step in self._before:
            generator, step = self._before[next_step]
        else:  # not drawn yet (nothing fetched ahead)
            generator, step, next_step = self.generator.get_state(), self.step, self.index
        return {"index": next_step, "generator": generator.clone(), "step": step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.index, self.step = int(state["index"]), int(state["step"])
        self.generator.set_state(state["generator"])
        self._before = {}

    def __iter__(self):
        while True:
            yield self.sample()

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=self.generator) * (high - low) + low

    def sample(self) -> dict[str, Any]:
        self._before[self.index] = (self.generator.get_state(), self.step)
        self._before.pop(self.index - 4, None)
        self.index += 1
        cfg = self.cfg
        n = value_at_step(cfg.batch_size, cfg.resolution_milestones, self.step)
        height = value_at_step(cfg.height, cfg.resolution_milestones, self.step)
        width = value_at_step(cfg.width, cfg.resolution_milestones, self.step)
        elevation = self._sample_elevation(n)
        azimuth = self._sample_azimuth(n)
        distance = self._uniform(n, *cfg.camera_distance_range)
        fovy = torch.deg2rad(self._uniform(n, *cfg.fovy_range))

        position = cameras.spherical_to_cartesian(elevation, azimuth, distance)
        position = position + torch.randn(n, 3, generator=self.generator) * cfg.camera_perturb
        center = torch.randn(n, 3, generator=self.generator) * cfg.center_perturb
        up = torch.tensor([0.0, 0.0, 1.0]) + torch.randn(n, 3, generator=self.generator) * cfg.up_perturb
        c2w = cameras.look_at(position, center, up)
        light = self._sample_light(position)
        return cameras.camera_batch(c2w, fovy, elevation, azimuth, distance, position, light, height, width)

    def _sample_elevation(self, n: int) -> torch.Tensor:
        low, high = self.cfg.elevation_range
        if torch.rand(1, generator=self.generator).item() < 0.5:
            return self._uniform(n, low, high)  # uniform in degrees (more views near the poles)
        # uniform on the sphere: sin(elevation) uniform between the range's sines
        s = self._uniform(n, math.sin(math.radians(low)), math.sin(math.radians(high)))
        return torch.rad2deg(torch.asin(s.clamp(-1.0, 1.0)))

    def _sample_azimuth(self, n: int) -> torch.Tensor:
        low, high = self.cfg.azimuth_range
        if self.cfg.batch_uniform_azimuth:
            # one azimuth per equal slice of the range: a batch always sees the object all round
            u = (torch.rand(n, generator=self.generator) + torch.arange(n)) / n
        else:
            u = torch.rand(n, generator=self.generator)
        return u * (high - low) + low

    def _sample_light(self, position: torch.Tensor) -> torch.Tensor:
        cfg, n = self.cfg, position.shape[0]
        if cfg.light_sample_strategy == "headlight":
            return position.clone()
        distance = self._uniform(n, *cfg.light_distance_range)[:, None]
        if cfg.light_sample_strategy == "dreamfusion":
            noise = torch.randn(n, 3, generator=self.generator) * cfg.light_position_perturb
            direction = F.normalize(position + noise, dim=-1)
            return direction * distance
        # magic3d: a random direction within the hemisphere facing the camera
        view = F.normalize(position, dim=-1)
        local = F.normalize(torch.randn(n, 3, generator=self.generator), dim=-1)
        local = torch.where((local * view).sum(-1, keepdim=True) < 0, -local, local)
        return local * distance


class TurntableDataset(Dataset):
    """Evenly spaced views around the object at the evaluation camera."""

    def __init__(self, cfg: RandomCameraDataConfig, n_views: int):
        self.cfg = cfg
        self.views = cameras.turntable(n_views, cfg.eval_elevation_deg, cfg.eval_camera_distance, cfg.eval_fovy_deg)
        self.n_views = n_views

    def __len__(self) -> int:
        return self.n_views

    def __getitem__(self, index: int) -> dict[str, Any]:
        cfg = self.cfg
        c2w = self.views["c2w"][index : index + 1]
        fovy = self.views["fovy"][index : index + 1]
        position = c2w[:, :3, 3]
        light = position.clone() if cfg.light_sample_strategy == "headlight" else F.normalize(position, dim=-1) * 1.5
        views = {k: self.views[k][index : index + 1] for k in ("elevation", "azimuth", "distance")}
        batch = cameras.camera_batch(c2w, fovy, views["elevation"], views["azimuth"], views["distance"], position, light,
                                     cfg.eval_height, cfg.eval_width)
        return {"index": index, **batch}


def sampler_step(datamodule: pl.LightningDataModule) -> int:
    """The training step whose batch comes next: the trainer's global_step (one batch per step)."""
    trainer = getattr(datamodule, "trainer", None)
    return int(trainer.global_step) if trainer is not None else 0


class RandomCameraDataModule(pl.LightningDataModule):
    def __init__(self, cfg: RandomCameraDataConfig):
        super().__init__()
        self.cfg = cfg
        self.train_dataset = RandomCameraIterableDataset(cfg)

    def update_step(self, global_step: int) -> None:
        self.train_dataset.update_step(global_step)

    def state_dict(self) -> dict[str, Any]:
        """The camera sampler's state, for an exact resume (Lightning stores it in each checkpoint)."""
        return {"train_cameras": self.train_dataset.state_dict(sampler_step(self))}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "train_cameras" in state_dict:  # older checkpoints hold none: the seed's stream then
            self.train_dataset.load_state_dict(state_dict["train_cameras"])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_dataset, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TurntableDataset(self.cfg, self.cfg.n_val_views), batch_size=None, num_workers=0)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(TurntableDataset(self.cfg, self.cfg.n_test_views), batch_size=None, num_workers=0)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
