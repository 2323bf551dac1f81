"""Score Jacobian Chaining (Wang et al., CVPR 2023): a voxel radiance field lifted by PAAS scores.

The step is DreamFusion's (render, guidance, regularisers), with SJC's parts chosen in config:
a dense voxel grid (models/geometry/volume_grid.py), the SJC/PAAS rule
(models/guidance/sjc.py), the emptiness prior log(1 + scale * w) with its step-up schedule,
Adamax. Renders are either RGB (the toy world) or, with Stable Diffusion and
`rgb_as_latents`, 4-channel SD latents rendered directly (no VAE in the training loop):

- validation and test images of a latent render are decoded by the prior's VAE
  (`self.guidance.prior.decode`), side by side with normals and opacity upsampled to match;
- the exported texture of a latent field cannot go through the VAE (it decodes images, not
  surface points), so each baked latent is mapped to RGB by a per-point linear approximation
  rgb = (latent @ M + b + 1) / 2. M and b default to the SD-1.x/2.x VAE factors ComfyUI
  (comfy/latent_formats.py, class SD15; SD-2.1 shares that VAE) uses for its previews, fitted
  on scaled latents (VAE latent * 0.18215, the space the prior works in). It gives the rough
  colours, not the detail, of a decode: the honest limit of baking latents per point.

For RGB renders export is DreamFusion's: the material's albedo seen head-on at the surface.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, List

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from framework.interfaces import Material, Mesh
from framework.regularisers import EMPTINESS_SCALE, REGULARISERS, emptiness_loss
from framework.value_checks import check_fields, greater_than, list_of, number
from models.geometry.surface_colour import rendered_surface_albedo
from systems.dreamfusion import DreamFusion, DreamFusionConfig

# ComfyUI comfy/latent_formats.py, SD15.latent_rgb_factors (rows: latent channels, columns: R, G, B)
SD_LATENT_RGB_FACTORS = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
]


@dataclass
class SJCConfig(DreamFusionConfig):
    _target_: str = "systems.sjc.SJC"
    emptiness_scale: float = EMPTINESS_SCALE
    """s in the emptiness loss log(1 + s * w) (threestudio / SJC: 10); its weight is loss.lambda_emptiness."""
    latent_to_rgb: List[List[float]] = field(default_factory=lambda: [list(r) for r in SD_LATENT_RGB_FACTORS])
    """(C_latent, 3) matrix M of the per-point latent -> RGB export approximation (latent renders only)."""
    latent_to_rgb_bias: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(
            self,
            emptiness_scale=greater_than(0),
            latent_to_rgb=list_of(list_of(number(), length=3), min_length=1),
            latent_to_rgb_bias=list_of(number(), length=3),
        )


class LatentAsRGB(Material):
    """Wraps a latent material so export bakes RGB: albedo = clamp((latent @ M + b + 1) / 2, 0, 1).

    The map is affine, so it commutes with the normalised alpha compositing of
    rendered_surface_albedo (up to the final clamp)."""

    def __init__(self, material: Material, matrix: Tensor, bias: Tensor):
        super().__init__()
        self.material = material
        self.register_buffer("matrix", matrix, persistent=False)  # (C, 3)
        self.register_buffer("bias", bias, persistent=False)  # (3,)

    def albedo(self, features: Tensor) -> Tensor:  # (N, F) -> (N, 3)
        latent = self.material.albedo(features)
        return ((latent @ self.matrix.to(latent) + self.bias.to(latent) + 1.0) / 2.0).clamp(0.0, 1.0)


class SJC(DreamFusion):
    def __init__(self, cfg: SJCConfig, run_dir: str | None = None):
        super().__init__(cfg, run_dir)
        matrix = torch.tensor(cfg.latent_to_rgb, dtype=torch.float32)
        bias = torch.tensor(cfg.latent_to_rgb_bias, dtype=torch.float32)
        self._latent_matrix, self._latent_bias = matrix, bias

    # ---- what the field renders ----------------------------------------------------------------
    @torch.no_grad()
    def render_channels(self) -> int:
        """Channels the material produces: 3 (RGB) or 4 (SD latents)."""
        device = next(self.geometry.parameters()).device
        features = self.geometry.export_features(torch.zeros(1, 3, device=device))
        return int(self.material.albedo(features).shape[-1])

    # ---- a step ----------------------------------------------------------------------------------
    def regularisers(self) -> dict[str, Callable[[dict[str, Any]], Tensor]]:
        # emptiness at this method's own scale s in log(1 + s * w)
        return {**REGULARISERS, "emptiness": partial(emptiness_loss, scale=self.cfg.emptiness_scale)}

    # ---- images ----------------------------------------------------------------------------------
    def _visual(self, out: dict[str, Tensor]) -> np.ndarray:
        if out["comp_rgb"].shape[-1] == 3:
            return super()._visual(out)
        from framework.video import image_grid

        latents = out["comp_rgb"][:1].permute(0, 3, 1, 2)  # (1, C, H, W)
        rgb = self.guidance.prior.decode(latents)[0]  # (H', W', 3)
        size = rgb.shape[:2]

        def upsample(image: Tensor) -> Tensor:  # (H, W, C) -> (H', W', C)
            return F.interpolate(image.permute(2, 0, 1)[None].float(), size=size, mode="nearest")[0].permute(1, 2, 0)

        panels = [rgb]
        if "comp_normal" in out:
            panels.append(upsample(out["comp_normal"][0]))
        panels.append(upsample(out["opacity"][0]).expand(-1, -1, 3))
        return image_grid([p.detach().float().clamp(0, 1).cpu().numpy() for p in panels])

    # ---- export ----------------------------------------------------------------------------------
    def export_mesh(self) -> tuple[Mesh, Callable[[Tensor], Tensor]]:
        if self.render_channels() == 3:
            return super().export_mesh()
        mesh = self.geometry.isosurface()
        material = LatentAsRGB(self.material, self._latent_matrix, self._latent_bias)
        device = next(self.geometry.parameters()).device
        has_normals = "normal" in self.geometry(torch.zeros(1, 3, device=device), output_normal=True)

        def albedo(points: Tensor) -> Tensor:  # (N, 3) -> (N, 3)
            if has_normals:
                return rendered_surface_albedo(self.geometry, material, points)
            # no normals (SJC's latent grid has none): the colour at the point itself
            return material.albedo(self.geometry.export_features(points))

        return mesh, albedo
