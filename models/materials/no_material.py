"""Unlit material: the geometry's features are the colour (threestudio's `no-material`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from framework.interfaces import Material
from framework.value_checks import at_least, check_fields, one_of
from models.materials.diffuse_with_point_light import ACTIVATIONS, get_activation


@dataclass
class NoMaterialConfig:
    _target_: str = "models.materials.no_material.NoMaterial"
    n_output_dims: int = 3
    color_activation: str = "sigmoid"

    def __post_init__(self) -> None:
        check_fields(self, n_output_dims=at_least(1), color_activation=one_of(*ACTIVATIONS))


class NoMaterial(Material):
    requires_normal = False

    def __init__(self, cfg: NoMaterialConfig, **runtime: Any):
        super().__init__()
        self.cfg = cfg
        self.activation = get_activation(cfg.color_activation)

    def albedo(self, features: Tensor) -> Tensor:  # (N, F) -> (N, n_output_dims)
        return self.activation(features[..., : self.cfg.n_output_dims])

    def forward(self, features: Tensor, viewdirs: Tensor = None, positions: Tensor = None, light_positions: Tensor = None,
                shading_normal: Tensor | None = None, **kwargs: Any) -> Tensor:  # (N, F) -> (N, n_output_dims)
        return self.albedo(features)
