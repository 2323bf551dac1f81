"""Zero-1-to-3 image-to-3D (Liu et al. 2023, as threestudio's zero123 system runs it): a NeRF fitted
to one picture, its unseen sides filled in by a view-conditioned prior.

Each step has two sub-steps whose losses are summed (threestudio's "accumulate"):

- random views (the data module's random-camera batch): image-conditioned SDS
  (models/guidance/zero123.py: the prior is told the reference picture and the relative camera),
  plus the volume regularisers (orientation, sparsity, opacity) and normal smoothness in 2D
  (neighbouring pixels of the normal image) and 3D (normals at jittered sample points);
- the reference view (`batch["reference"]`, rendered from exactly the picture's camera):
  `rgb` = MSE between the render and the picture composited over the rendered background,
  `mask` = MSE between the render's opacity and the picture's mask, optional `depth` (the
  picture's depth map aligned to the render's by a least-squares scale and shift over the
  mask, then MSE) and `normal` (1 - cosine of world normals over the mask), plus orientation,
  opacity and normal smoothness.

The reference render uses `reference_shading` ('albedo' = threestudio's ambient ratio 1; the toy
world's pictures are shaded, so its config says 'diffuse'). The guidance computes its condition
once, from the data module's full-size picture, when fitting starts. Checkpoints hold the NeRF,
never the frozen prior (systems/frozen_guidance.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import Tensor

from framework.base_system import BaseSystem, BaseSystemConfig
from framework.config import ConfigError, instantiate
from framework.interfaces import Component, Evaluator, Mesh
from framework.regularisers import opacity_entropy_loss, orientation_loss, sparsity_loss
from framework.value_checks import check_fields, one_of, optional
from models.geometry.surface_colour import textured_isosurface
from systems.frozen_guidance import FrozenGuidanceCheckpoints

SHADINGS = ("albedo", "diffuse", "textureless")
REFERENCE_LOSSES = ("rgb", "mask", "depth", "normal")
REGULARISER_LOSSES = ("orient", "sparsity", "opaque", "normal_smooth", "3d_normal_smooth")


@dataclass
class Zero123Config(BaseSystemConfig):
    _target_: str = "systems.zero123.Zero123"
    geometry: Any = MISSING
    material: Any = MISSING
    background: Any = MISSING
    renderer: Any = MISSING
    guidance: Any = MISSING
    """An image-conditioned distillation rule with `set_reference(rgb, elevation, azimuth, distance)`."""
    reference_shading: Optional[str] = "albedo"
    """Shading of the reference render: 'albedo' (threestudio: ambient ratio 1, the picture's colours
    are the albedo), 'diffuse' (the picture is shaded as the material shades: the toy world), or null
    (the material's own training choice)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, reference_shading=optional(one_of(*SHADINGS)))


def normal_smoothness(out: dict[str, Tensor]) -> Tensor:
    """Mean squared difference of neighbouring pixels of the rendered normal image comp_normal (B, H, W, 3)."""
    normal = out["comp_normal"]
    return (normal[:, 1:] - normal[:, :-1]).square().mean() + (normal[:, :, 1:] - normal[:, :, :-1]).square().mean()


def normal_smoothness_3d(out: dict[str, Tensor]) -> Tensor:
    """Mean |n(x) - n(x + jitter)| over the packed samples: smooth surfaces in 3D (needs the renderer's
    return_normal_perturb)."""
    if "normal_perturb" not in out:
        raise ConfigError("system.loss.lambda_3d_normal_smooth needs system.renderer.return_normal_perturb=true")
    return (out["normal"] - out["normal_perturb"]).abs().mean()


def aligned_depth_loss(depth: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """MSE between the rendered depth (1, H, W, 1) and the picture's depth map fitted to it by scale and
    shift (least squares, no gradient) over the mask (1, H, W, 1): a depth map from a monocular
    estimator is known only up to those two."""
    inside = mask[..., 0] > 0.5
    pred, gt = depth[..., 0][inside], target[..., 0][inside].to(depth)
    if pred.numel() < 2:
        return depth.sum() * 0.0
    with torch.no_grad():
        design = torch.stack([gt, torch.ones_like(gt)], dim=-1)  # (N, 2)
        scale_shift = torch.linalg.lstsq(design, pred[:, None]).solution  # (2, 1)
        fitted = (design @ scale_shift)[:, 0]
    return F.mse_loss(pred, fitted)


def normal_loss(comp_normal: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """1 - mean cosine between the rendered world normals and the picture's normal map (1, H, W, 3)
    in [-1, 1], over the mask (1, H, W, 1). comp_normal is (n + 1) / 2 scaled by opacity."""
    inside = mask[..., 0] > 0.5
    pred = comp_normal[inside] * 2.0 - 1.0
    return 1.0 - F.cosine_similarity(pred, target[inside].to(pred), dim=-1).mean()


class Zero123(FrozenGuidanceCheckpoints, BaseSystem):
    def __init__(self, cfg: Zero123Config, run_dir: Optional[str] = None):
        super().__init__(cfg, run_dir)
        self.geometry = instantiate(cfg.geometry)
        self.material = instantiate(cfg.material)
        self.background = instantiate(cfg.background)
        self.renderer = instantiate(
            cfg.renderer, geometry=self.geometry, material=self.material, background=self.background
        )
        self.guidance = instantiate(cfg.guidance)
        self.guidance.requires_grad_(False)
        self._evaluator = instantiate(cfg.evaluator) if cfg.evaluator is not None else None
        self.setup_losses()

    # ---- parts -------------------------------------------------------------------------------
    def owned_components(self) -> list[Component]:
        return [self.geometry, self.material, self.background, self.renderer, self.guidance]

    def producible_losses(self) -> list[str]:
        return list(self.guidance.loss_names) + list(REFERENCE_LOSSES) + list(REGULARISER_LOSSES)

    @property
    def evaluator(self) -> Optional[Evaluator]:
        return self._evaluator

    def on_fit_start(self) -> None:
        datamodule = self.trainer.datamodule
        if not hasattr(datamodule, "reference_image"):
            raise ConfigError(
                f"the zero123 system needs the single-image data module (data=single-image), got {type(datamodule).__name__}"
            )
        rgb, _ = datamodule.reference_image()
        self.guidance.set_reference(
            rgb.to(self.device), datamodule.reference_elevation_deg, datamodule.reference_azimuth_deg,
            datamodule.reference_camera_distance,
        )

    # ---- a step ------------------------------------------------------------------------------
    def render(self, batch: dict[str, Any], shading: Optional[str] = None) -> dict[str, Tensor]:
        return self.renderer(batch["rays_o"], batch["rays_d"], batch["light_position"], shading=shading)

    def compute_losses(self, batch: dict[str, Any], out: dict[str, Tensor]) -> dict[str, Tensor]:
        losses = self.logged_guidance_losses(self.guidance(out["comp_rgb"], None, batch))
        reference = batch["reference"]
        ref_out = self.render(reference, shading=self.cfg.reference_shading)
        losses.update(self.reference_losses(reference, ref_out))
        self._add_regularisers(losses, out, ref_out)
        return losses

    def reference_losses(self, reference: dict[str, Any], out: dict[str, Tensor]) -> dict[str, Tensor]:
        """loss_rgb, loss_mask and, when the picture has them and their weights are on, loss_depth and loss_normal."""
        mask = reference["mask"].to(out["opacity"])
        target = reference["rgb"].to(out["comp_rgb"]) * mask + out["comp_rgb_bg"] * (1.0 - mask)
        losses = {"loss_rgb": F.mse_loss(out["comp_rgb"], target), "loss_mask": F.mse_loss(out["opacity"], mask)}
        for name, key in (("depth", "depth"), ("normal", "normal")):
            if self.loss_weights.active(name) and key not in reference:
                raise ConfigError(
                    f"system.loss.lambda_{name} is on but the picture has no {key} map: put <image stem>_{key}.png "
                    f"beside it or set system.loss.lambda_{name}=0"
                )
        if self.loss_weights.active("depth"):
            losses["loss_depth"] = aligned_depth_loss(out["depth"], reference["depth"], mask)
        if self.loss_weights.active("normal"):
            losses["loss_normal"] = normal_loss(out["comp_normal"], reference["normal"], mask)
        return losses

    def _add_regularisers(self, losses: dict[str, Tensor], out: dict[str, Tensor], ref_out: dict[str, Tensor]) -> None:
        """threestudio's placement: sparsity on the random views only; orientation, opacity and normal
        smoothness on both renders (summed)."""
        both: dict[str, Callable[[dict[str, Tensor]], Tensor]] = {
            "orient": orientation_loss, "opaque": opacity_entropy_loss, "normal_smooth": normal_smoothness,
            "3d_normal_smooth": normal_smoothness_3d,
        }
        for name, regulariser in both.items():
            if self.loss_weights.active(name):
                losses[f"loss_{name}"] = regulariser(out) + regulariser(ref_out)
        if self.loss_weights.active("sparsity"):
            losses["loss_sparsity"] = sparsity_loss(out)

    # ---- export ------------------------------------------------------------------------------
    def export_mesh(self) -> tuple[Mesh, Callable[[Tensor], Tensor]]:
        return textured_isosurface(self.geometry, self.material)
