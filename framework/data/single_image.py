"""Image-to-3D data (Zero-1-to-3): the reference image at its camera, plus random views around it.

Key names follow threestudio's SingleImageDataModule so its configs read the same here. Each
training batch is the random-view batch of `RandomCameraIterableDataset` (built from the nested
`random_camera` config) with the reference view added under `batch["reference"]`:

    batch = {c2w (B,4,4), fovy (B,), elevation, azimuth, distance (B,), camera_position,
             light_position (B,3), rays_o, rays_d (B,H,W,3), height, width,          # random views
             "reference": {c2w (1,4,4), fovy (1,), elevation, azimuth, distance (1,),
                           camera_position, light_position (1,3), rays_o, rays_d (1,h,w,3),
                           height, width,
                           rgb (1,h,w,3) over white in [0,1], mask (1,h,w,1) in {0,1},
                           depth (1,h,w,1) in [0,1] and normal (1,h,w,3) in [-1,1] when present}}

The reference camera sits at (default_elevation_deg, default_azimuth_deg, default_camera_distance)
looking at the origin with up +z and vertical field of view default_fovy_deg, without perturbation,
in framework.cameras' conventions. Its resolution (height, width) and the random views' resolution
and batch size follow their own `resolution_milestones` schedules; `update_step` moves both.
Validation and test are the random-camera turntables (`random_camera.eval_*`, `n_val_views`,
`n_test_views`). The reference tensors are shared between steps: treat them as read-only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from framework import cameras
from framework.data.random_camera import (
    RandomCameraDataConfig,
    RandomCameraIterableDataset,
    TurntableDataset,
    check_scheduled,
    sampler_step,
    value_at_step,
)
from framework.data.reference_image import BACKGROUND_REMOVALS, ReferenceImage, check_mask, load_reference_image
from framework.value_checks import (
    FieldValueError,
    at_least,
    between,
    check_fields,
    each,
    greater_than,
    inside,
    list_of,
    one_of,
    optional,
)


@dataclass
class SingleImageDataConfig:
    _target_: str = "framework.data.single_image.SingleImageDataModule"
    image_path: str = "???"
    """The reference image: an RGBA PNG (mask = alpha > 0.5), or RGB with mask_path or background_removal.
    `<stem>_depth.png` and `<stem>_normal.png` beside it are loaded when present."""
    mask_path: Optional[str] = None
    """A mask image of the same size (greyscale, alpha or RGB); object where value > 0.5 of its maximum."""
    background_removal: Optional[str] = None
    """null, "white" (plain background: the image's corner colour within background_tolerance) or
    "rembg" (the optional rembg package: pip install rembg; its model downloads on first use)."""
    background_tolerance: float = 0.05
    """For background_removal=white: the largest per-channel difference (in [0, 1]) from the corner colour
    that still counts as background."""
    recenter_fraction: Optional[float] = None
    """null: the image as it is. Else the object is scaled so its mask's bounding box's larger side is this
    fraction of the frame, and centred (the preprocessing threestudio recommends leaves a 0.2 border: 0.8)."""
    height: Any = 96
    """Reference-view height: an int, or a list used with `resolution_milestones`."""
    width: Any = 96
    resolution_milestones: List[int] = field(default_factory=list)
    """Steps at which the reference height/width move to their next list entry (threestudio's convention)."""
    default_elevation_deg: float = 0.0
    """Reference camera elevation (degrees above the xy-plane)."""
    default_azimuth_deg: float = 0.0
    """Reference camera azimuth (degrees; 0 = on +x, the front)."""
    default_camera_distance: float = 1.2
    default_fovy_deg: float = 60.0
    """Reference camera vertical field of view (degrees)."""
    default_light_distance: Optional[float] = None
    """The reference view's light sits on the line from the origin through the reference camera (a
    head-light, as threestudio's reference view has): null puts it at the camera, a number at that
    distance from the origin along the camera's direction."""
    random_camera: RandomCameraDataConfig = field(default_factory=RandomCameraDataConfig)
    """The random training views (their batch_size may be scheduled too) and the val/test turntables."""

    def __post_init__(self) -> None:
        check_fields(
            self,
            background_removal=optional(one_of(*BACKGROUND_REMOVALS)),
            background_tolerance=between(0, 1),
            recenter_fraction=optional(inside(0, 1, include_high=True)),
            height=each(at_least(1)),
            width=each(at_least(1)),
            resolution_milestones=list_of(at_least(0), ascending=True),
            default_elevation_deg=between(-90, 90),
            default_camera_distance=greater_than(0),
            default_fovy_deg=inside(0, 180),
            default_light_distance=optional(greater_than(0)),
        )
        if self.background_removal is not None and self.mask_path is not None:
            raise FieldValueError(
                "background_removal", self.background_removal,
                "must be null when mask_path is set: set only one of mask_path and background_removal (both give the mask)",
            )


def wrapped_azimuth(azimuth_deg: float) -> float:
    """The batch convention keeps azimuths in [-180, 180); the camera is the same either way."""
    return (float(azimuth_deg) + 180.0) % 360.0 - 180.0


def reference_camera(cfg: SingleImageDataConfig, height: int, width: int) -> dict[str, Any]:
    """The reference camera's batch entries at (height, width), batch dimension 1 (module docstring)."""
    elevation = torch.tensor([float(cfg.default_elevation_deg)])
    azimuth = torch.tensor([wrapped_azimuth(cfg.default_azimuth_deg)])
    distance = torch.tensor([float(cfg.default_camera_distance)])
    fovy = torch.deg2rad(torch.tensor([float(cfg.default_fovy_deg)]))
    c2w = cameras.orbit_c2w(elevation, azimuth, distance)
    position = c2w[:, :3, 3].clone()
    if cfg.default_light_distance is None:
        light = position.clone()
    else:
        light = F.normalize(position, dim=-1) * float(cfg.default_light_distance)
    return cameras.camera_batch(c2w, fovy, elevation, azimuth, distance, position, light, height, width)


def image_entries(image: ReferenceImage) -> dict[str, Tensor]:
    """rgb (1,H,W,3), mask (1,H,W,1), and depth (1,H,W,1) / normal (1,H,W,3) when the image has them."""
    entries = {"rgb": image.rgb[None], "mask": image.mask[None]}
    if image.depth is not None:
        entries["depth"] = image.depth[None]
    if image.normal is not None:
        entries["normal"] = image.normal[None]
    return entries


class SingleImageIterableDataset(IterableDataset):
    """Endless training batches (already batched: use with batch_size=None)."""

    def __init__(self, cfg: SingleImageDataConfig, references: dict[tuple[int, int], dict[str, Any]]):
        self.cfg = cfg
        self.references = references  # (height, width) -> the reference entries at that resolution
        self.random_views = RandomCameraIterableDataset(cfg.random_camera)
        self.step = 0

    def update_step(self, global_step: int) -> None:
        self.step = global_step
        self.random_views.update_step(global_step)

    def reference_size(self) -> tuple[int, int]:
        cfg = self.cfg
        return (
            value_at_step(cfg.height, cfg.resolution_milestones, self.step),
            value_at_step(cfg.width, cfg.resolution_milestones, self.step),
        )

    def sample(self) -> dict[str, Any]:
        batch = self.random_views.sample()
        batch["reference"] = dict(self.references[self.reference_size()])  # a new dict, shared tensors
        return batch

    def __iter__(self):
        while True:
            yield self.sample()


class SingleImageDataModule(pl.LightningDataModule):
    """Reads and checks the image when built: a bad input is a ConfigError before training starts."""

    def __init__(self, cfg: SingleImageDataConfig):
        super().__init__()
        self.cfg = cfg
        for key in ("height", "width"):
            check_scheduled(getattr(cfg, key), cfg.resolution_milestones, key)
        self.image = load_reference_image(
            cfg.image_path, cfg.mask_path, cfg.background_removal, cfg.background_tolerance, cfg.recenter_fraction
        )
        self.references = {size: self._reference_at(*size) for size in self._scheduled_sizes()}
        self.train_dataset = SingleImageIterableDataset(cfg, self.references)
        # plain floats for the guidance, which conditions on the reference view's pose
        self.reference_elevation_deg = float(cfg.default_elevation_deg)
        self.reference_azimuth_deg = wrapped_azimuth(cfg.default_azimuth_deg)
        self.reference_camera_distance = float(cfg.default_camera_distance)
        self.reference_fovy_deg = float(cfg.default_fovy_deg)

    def _scheduled_sizes(self) -> list[tuple[int, int]]:
        cfg = self.cfg
        steps = [0, *cfg.resolution_milestones]
        sizes = [
            (value_at_step(cfg.height, cfg.resolution_milestones, s), value_at_step(cfg.width, cfg.resolution_milestones, s))
            for s in steps
        ]
        return list(dict.fromkeys(sizes))  # distinct, in schedule order

    def _reference_at(self, height: int, width: int) -> dict[str, Any]:
        image = self.image.resized(height, width)
        # a small object can vanish at a low reference resolution: say so now, not as a zero mask loss
        check_mask(image.coverage, self.image.source, f" at the reference resolution {height}x{width}")
        return {**reference_camera(self.cfg, height, width), **image_entries(image)}

    @property
    def has_depth(self) -> bool:
        return self.image.depth is not None

    @property
    def has_normal(self) -> bool:
        return self.image.normal is not None

    def reference_image(self) -> tuple[Tensor, dict[str, Any]]:
        """The image the guidance conditions on, at the image's full resolution:
        -> rgb (1, H, W, 3) composited over white in [0, 1], and the reference camera's entries at (H, W)."""
        height, width = self.image.size
        return self.image.rgb[None], reference_camera(self.cfg, height, width)

    def update_step(self, global_step: int) -> None:
        self.train_dataset.update_step(global_step)

    def state_dict(self) -> dict[str, Any]:
        """The random views' camera sampler, for an exact resume (as RandomCameraDataModule's)."""
        return {"train_cameras": self.train_dataset.random_views.state_dict(sampler_step(self))}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "train_cameras" in state_dict:
            self.train_dataset.random_views.load_state_dict(state_dict["train_cameras"])
            self.train_dataset.step = self.train_dataset.random_views.step

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_dataset, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        rc = self.cfg.random_camera
        return DataLoader(TurntableDataset(rc, rc.n_val_views), batch_size=None, num_workers=0)

    def test_dataloader(self) -> DataLoader:
        rc = self.cfg.random_camera
        return DataLoader(TurntableDataset(rc, rc.n_test_views), batch_size=None, num_workers=0)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
