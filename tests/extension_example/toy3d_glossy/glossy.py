"""A glossy material: Lambertian shading plus a Blinn-Phong highlight from the point light.

    rgb = albedo * (ambient + diffuse * max(0, n . l)) + specular * max(0, n . h)^shininess

l: the unit vector from the point to the light, h = normalize(l + v) with v towards the camera. The
texture export bakes `albedo`, without the highlight. It uses only toy3d's public pieces: the Material
interface (framework/interfaces.py) and the value rules (framework/value_checks.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.interfaces import Material
from framework.value_checks import between, check_fields, number_at_least


@dataclass
class GlossyConfig:
    _target_: str = "toy3d_glossy.glossy.Glossy"
    ambient: float = 0.4  # light every surface gets
    diffuse: float = 0.6  # the Lambertian share, times max(0, n . l)
    specular: float = 0.2  # the highlight's strength (white)
    shininess: float = 16.0  # the Blinn-Phong exponent: larger, smaller and sharper highlights

    def __post_init__(self) -> None:
        check_fields(self, ambient=between(0, 1), diffuse=between(0, 1), specular=between(0, 1),
                     shininess=number_at_least(1))


class Glossy(Material):
    requires_normal = True

    def __init__(self, cfg: GlossyConfig, **runtime: Any):
        super().__init__()
        self.cfg = cfg

    def albedo(self, features: Tensor) -> Tensor:  # (N, F) -> (N, 3)
        return torch.sigmoid(features[..., :3])

    def forward(
        self,
        features: Tensor,  # (N, F)
        viewdirs: Tensor,  # (N, 3) unit, from the camera towards the point
        positions: Tensor,  # (N, 3)
        light_positions: Tensor,  # (N, 3)
        shading_normal: Tensor | None = None,  # (N, 3) unit
        shading: str | None = None,  # force 'albedo' | 'textureless' | 'diffuse'; None: the full shading
    ) -> Tensor:  # (N, 3) in [0, 1]
        albedo = self.albedo(features)
        if shading == "albedo":
            return albedo
        if shading_normal is None:
            raise ValueError("Glossy needs shading_normal (requires_normal = True)")
        light_dir = F.normalize(light_positions - positions, dim=-1)
        half = F.normalize(light_dir - viewdirs, dim=-1)
        lambert = (shading_normal * light_dir).sum(-1, keepdim=True).clamp(min=0.0)
        highlight = (shading_normal * half).sum(-1, keepdim=True).clamp(min=0.0) ** self.cfg.shininess
        base = torch.ones_like(albedo) if shading == "textureless" else albedo
        return (base * (self.cfg.ambient + self.cfg.diffuse * lambert) + self.cfg.specular * highlight).clamp(0.0, 1.0)
