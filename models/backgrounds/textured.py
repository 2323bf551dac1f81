"""A small learnable texture over view directions (threestudio's `textured-background`).

The direction's spherical coordinates index an (n_output_dims, height, width) texture by
bilinear interpolation: rows follow the polar angle from +z (top row looks up, DESIGN.md's +z
up), columns the azimuth atan2(y, x) from -180 to 180 degrees. SJC (Wang et al. 2023) renders
Stable Diffusion latents directly and uses a 4 x 4, 4-channel texture with no activation: a
background that can take any latent colour but has too few texels to paint the object.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.interfaces import Background
from framework.value_checks import at_least, check_fields, number_at_least, one_of
from models.materials.diffuse_with_point_light import ACTIVATIONS, get_activation


@dataclass
class TexturedBackgroundConfig:
    _target_: str = "models.backgrounds.textured.TexturedBackground"
    n_output_dims: int = 3
    height: int = 64
    width: int = 64
    color_activation: str = "sigmoid"  # sigmoid | none | clamp
    init_std: float = 1.0
    """Std of the texture's initial values (threestudio: randn)."""

    def __post_init__(self) -> None:
        check_fields(
            self,
            n_output_dims=at_least(1),
            height=at_least(1),
            width=at_least(1),
            color_activation=one_of(*ACTIVATIONS),
            init_std=number_at_least(0),
        )


def direction_to_uv(dirs: Tensor) -> Tensor:
    """Unit directions (N, 3) -> grid_sample coordinates (N, 2) in [-1, 1]: (azimuth, polar)."""
    x, y, z = dirs.unbind(-1)
    polar = torch.atan2(torch.sqrt(x * x + y * y), z) / math.pi  # 0 (up) .. 1 (down)
    azimuth = torch.atan2(y, x) / math.pi  # -1 .. 1
    return torch.stack([azimuth, polar * 2.0 - 1.0], dim=-1)


class TexturedBackground(Background):
    def __init__(self, cfg: TexturedBackgroundConfig, **runtime: Any):
        super().__init__()
        self.cfg = cfg
        self.activation = get_activation(cfg.color_activation)
        self.texture = nn.Parameter(torch.randn(1, cfg.n_output_dims, cfg.height, cfg.width) * cfg.init_std)

    def forward(self, dirs: Tensor) -> Tensor:  # (B, H, W, 3) unit -> (B, H, W, n_output_dims)
        uv = direction_to_uv(dirs.reshape(-1, 3)).to(self.texture.dtype)
        # reflection padding keeps the azimuth seam and the poles continuous-ish, like threestudio
        colour = F.grid_sample(self.texture, uv.view(1, -1, 1, 2), mode="bilinear", padding_mode="reflection", align_corners=False)
        colour = colour.view(self.cfg.n_output_dims, -1).t().reshape(*dirs.shape[:-1], self.cfg.n_output_dims)
        return self.activation(colour)
