"""Image-conditioned SDS (Zero-1-to-3, Liu et al. 2023; threestudio's zero123 guidance), written as SDS.

A view-conditioned prior eps_hat(z_t, t | reference view, T) (models/priors/zero123.py: the reference view's
CLIP embedding and pose T as one cross-attention token, its latent concatenated to z_t) replaces the text
condition of DreamFusion. Everything else is SDS (models/guidance/sds.py), unchanged:

    z_t  = sqrt(abar_t) z + sqrt(1 - abar_t) eps,  t ~ U{floor(T min), ..., floor(T max)}
    eps_hat = eps_u + s (eps_c - eps_u)             eps_u: image token and concat latent both zeros
    grad_z  = w(t) (eps_hat - eps),  w(t) = 1 - abar_t
    loss    = 0.5 || z - (z - grad_z).detach() ||^2 / B          (dL/dz = grad_z / B)

The reference view is given once, `set_reference(rgb, elevation, azimuth, distance)`, before training:
the prior encodes it (CLIP embedding, VAE latent) and keeps it; each step's pose T comes from the target
cameras of the camera batch (its `elevation`, `azimuth`, `distance` (B,)) against the reference camera.
The stored view is not part of the guidance's state_dict (the prior is frozen and never checkpointed), so
a system calls set_reference again whenever it builds the guidance, resumed runs included.
The text-style `condition` argument of `forward` (what a system's prompt processor produces) is not
used: the reference view is the condition. So this rule works with any prior that has
`set_condition_image(rgb, elevation_deg, azimuth_deg, distance)` and reads the stored view when
`predict_noise(x_t, t, None, batch, need_uncond)` is called with condition None (the Zero-1-to-3 /
Stable Zero123 prior, the toy view prior, an exact-score toy view prior).

threestudio's published defaults (configs/zero123.yaml; REFERENCE.md): CFG scale 3 in the diffusers
convention eps_u + s (eps_c - eps_u), which is this project's (models/guidance/cfg.py), so it carries over
as is; t min 0.4 -> 0.2 and max 0.85 -> 0.5 over steps 0-200 (threestudio's [0, 0.4, 0.2, 200]);
Stable Zero123: min 0.7 -> 0.3, max 0.98 -> 0.8 over steps 50-200. The options in
configs/system/guidance/zero123*.yaml carry them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from framework.config import ConfigError
from models.guidance.sds import SDSGuidance, SDSGuidanceConfig
from models.priors.base import DiffusionPrior


@dataclass
class Zero123GuidanceConfig(SDSGuidanceConfig):
    """SDS's fields (prior, guidance_scale, min / max_step_percent, grad_clip, weighting) with threestudio's
    zero123 defaults. The prior must be view-conditioned (`prior/zero123`)."""

    _target_: str = "models.guidance.zero123.Zero123Guidance"
    guidance_scale: Any = 3.0
    """Schedule: CFG scale, eps_u + s (eps_c - eps_u) (threestudio's zero123 3.0 is in this convention already)."""
    min_step_percent: Any = field(default_factory=lambda: [[0, 0.4], [200, 0.2]])
    """Schedule: lower end of t (fraction of T); threestudio's zero123 [0, 0.4, 0.2, 200]."""
    max_step_percent: Any = field(default_factory=lambda: [[0, 0.85], [200, 0.5]])
    """Schedule: upper end of t (fraction of T); threestudio's zero123 [0, 0.85, 0.5, 200]."""
    weighting: str = "sds"
    """w(t) = 1 - abar_t (threestudio's zero123 and stable zero123 guidances); 'uniform' / 'fantasia3d' as SDS."""


class Zero123Guidance(SDSGuidance):
    """A view-conditioned prior + SDS. Call `set_reference` once, then `forward` each step -> loss_sds."""

    cfg: Zero123GuidanceConfig

    def __init__(self, cfg: Zero123GuidanceConfig, prior: DiffusionPrior | None = None):
        super().__init__(cfg, prior)
        if not callable(getattr(self.prior, "set_condition_image", None)):
            raise ConfigError(
                f"the zero123 guidance needs a view-conditioned prior with set_condition_image (prior/zero123); "
                f"got {type(self.prior).__name__}. Set system.guidance.prior to a Zero-1-to-3 prior"
            )
        self.reference: Optional[dict[str, float]] = None
        """The reference camera (elevation, azimuth in degrees, distance) once set_reference was called."""

    @torch.no_grad()
    def set_reference(self, rgb: Tensor, elevation_deg: float, azimuth_deg: float, distance: float) -> None:
        """The reference view rgb (1, H, W, 3) in [0, 1], composited over white, and its camera (degrees,
        world units; the camera batch's conventions). The prior computes its condition from it once."""
        if rgb.ndim != 4 or rgb.shape[0] != 1 or rgb.shape[-1] != 3:
            raise ValueError(
                f"the reference view must be rgb (1, H, W, 3) in [0, 1], composited over white; got {tuple(rgb.shape)}"
            )
        lo, hi = float(rgb.min()), float(rgb.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise ValueError(f"the reference view must lie in [0, 1] (not 0-255 or [-1, 1]); got values in [{lo:.3g}, {hi:.3g}]")
        camera = {"elevation": float(elevation_deg), "azimuth": float(azimuth_deg), "distance": float(distance)}
        self.prior.set_condition_image(rgb.float().clamp(0.0, 1.0), camera["elevation"], camera["azimuth"], camera["distance"])
        self.reference = camera

    def forward(
        self,
        rgb: Tensor,
        condition: Any,
        batch: dict[str, Any],
        t: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """rgb (B, H, W, 3) in [0, 1], rendered from the batch's cameras -> {loss_sds, grad_norm, t_mean}.

        `batch` must hold the target cameras `elevation`, `azimuth` (B,) in degrees and `distance` (B,).
        `condition` (a prompt processor's output, or None) is ignored: the reference view conditions the prior.
        `t` (B,) and `noise` (B, C, h, w) may be fixed (tests); otherwise drawn as SDS draws them.
        """
        if self.reference is None:
            raise RuntimeError(
                "Zero123Guidance.forward before set_reference: give the reference view first, "
                "guidance.set_reference(rgb (1, H, W, 3) in [0, 1], elevation_deg, azimuth_deg, distance)"
            )
        # condition None: the prior reads the reference view it stored in set_reference
        return super().forward(rgb, None, batch, t=t, noise=noise)
