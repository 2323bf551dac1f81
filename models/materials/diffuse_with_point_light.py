"""Lambertian material lit by a point light plus ambient light (DreamFusion Sec. 3.1, threestudio).

rgb = albedo * (ambient + diffuse * max(0, n . l)), l the unit vector from the point to the
light. Training augments shading as DreamFusion does, one choice per call (the whole batch):
albedo only during the first `ambient_only_steps`, then albedo only with probability
1 - diffuse_prob, else with probability textureless_prob the shading of a white albedo
("textureless"), else the full Lambertian colour. Evaluation always returns the Lambertian
colour (threestudio returns albedo in evaluation during the warm-up; we do not, so validation
images show the shape from the first step).
With ambient 0.4, diffuse 0.6 and the light at the camera centre this is the toy world's shading.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.interfaces import Material
from framework.value_checks import at_least, between, check_fields, increasing_pair, list_of, number_at_least, one_of, optional

ACTIVATIONS = {"sigmoid": torch.sigmoid, "none": lambda x: x, "clamp": lambda x: x.clamp(0.0, 1.0)}


def get_activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown colour activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


@dataclass
class DiffuseWithPointLightConfig:
    _target_: str = "models.materials.diffuse_with_point_light.DiffuseWithPointLight"
    ambient_light_color: List[float] = field(default_factory=lambda: [0.1, 0.1, 0.1])
    diffuse_light_color: List[float] = field(default_factory=lambda: [0.9, 0.9, 0.9])
    ambient_only_steps: int = 1000
    diffuse_prob: float = 0.75
    textureless_prob: float = 0.5
    albedo_activation: str = "sigmoid"
    soft_shading: bool = False  # Magic3D: random ambient/diffuse split (diffuse ~ U(0, 1), ambient = 1 - diffuse)
    ambient_ratio_range: Optional[List[float]] = None
    """Training only: ambient ratio r ~ U[lo, hi] per render, ambient = r, diffuse = 1 - r (threestudio's
    zero123: [0.5, 1.0]); None: the configured light colours."""

    def __post_init__(self) -> None:
        check_fields(
            self,
            ambient_light_color=list_of(number_at_least(0), length=3),
            diffuse_light_color=list_of(number_at_least(0), length=3),
            ambient_only_steps=at_least(0),
            diffuse_prob=between(0, 1),
            textureless_prob=between(0, 1),
            albedo_activation=one_of(*ACTIVATIONS),
            ambient_ratio_range=optional(increasing_pair(between(0, 1))),
        )


class DiffuseWithPointLight(Material):
    requires_normal = True

    def __init__(self, cfg: DiffuseWithPointLightConfig, **runtime: Any):
        super().__init__()
        self.cfg = cfg
        self.activation = get_activation(cfg.albedo_activation)
        self.register_buffer("ambient", torch.tensor(list(cfg.ambient_light_color), dtype=torch.float32), persistent=False)
        self.register_buffer("diffuse", torch.tensor(list(cfg.diffuse_light_color), dtype=torch.float32), persistent=False)
        self.global_step = 0

    def update_step(self, global_step: int) -> None:
        self.global_step = global_step

    def albedo(self, features: Tensor) -> Tensor:  # (N, F) -> (N, 3)
        return self.activation(features[..., :3])

    def choose_shading(self) -> str:
        """'albedo' | 'textureless' | 'diffuse' for this call (threestudio's augmentation)."""
        if not self.training:
            return "diffuse"
        if self.global_step < self.cfg.ambient_only_steps or random.random() > self.cfg.diffuse_prob:
            return "albedo"
        return "textureless" if random.random() < self.cfg.textureless_prob else "diffuse"

    def forward(
        self,
        features: Tensor,  # (N, F)
        viewdirs: Tensor,  # (N, 3) unused: Lambertian
        positions: Tensor,  # (N, 3)
        light_positions: Tensor,  # (N, 3)
        shading_normal: Tensor | None = None,  # (N, 3) unit
        shading: str | None = None,  # force 'albedo' | 'textureless' | 'diffuse'
    ) -> Tensor:  # (N, 3)
        albedo = self.albedo(features)
        shading = shading or self.choose_shading()
        if shading == "albedo":
            return albedo
        if shading not in ("textureless", "diffuse"):
            raise ValueError(f"unknown shading {shading!r}; use albedo | textureless | diffuse")
        if shading == "textureless":
            albedo = torch.ones_like(albedo)  # the colour a white surface would have
        return self.shade(albedo, positions, light_positions, shading_normal)

    def shade(
        self,
        albedo: Tensor,  # (N, 3)
        positions: Tensor,  # (N, 3)
        light_positions: Tensor,  # (N, 3)
        shading_normal: Tensor | None,  # (N, 3) unit (or zero: ambient only)
    ) -> Tensor:  # (N, 3) albedo (clamped to [0, 1]) * (ambient + diffuse * max(0, n . l))
        """The Lambertian colour of given albedos: what `forward` does after the albedo, and what a
        renderer shading once per ray (VolumeRenderer's shade_at: surface) calls with composited values."""
        if shading_normal is None:
            raise ValueError("DiffuseWithPointLight needs shading_normal (requires_normal = True)")
        if self.training and self.cfg.soft_shading:
            diffuse = torch.full_like(self.diffuse, random.random())
            ambient = 1.0 - diffuse
        elif self.training and self.cfg.ambient_ratio_range is not None:
            ambient = torch.full_like(self.ambient, random.uniform(*self.cfg.ambient_ratio_range))
            diffuse = 1.0 - ambient
        else:
            diffuse, ambient = self.diffuse, self.ambient
        light_dir = F.normalize(light_positions - positions, dim=-1)
        cos = (shading_normal * light_dir).sum(-1, keepdim=True).clamp(min=0.0)
        return albedo.clamp(0.0, 1.0) * (ambient + cos * diffuse)
