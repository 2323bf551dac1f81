"""Score Distillation Sampling (DreamFusion, Poole et al. 2022), written once for every prior.

For a render x mapped into the prior's space as z (VAE latents or pixels), SDS draws
t ~ U[t_min, t_max] and eps ~ N(0, I), forms

    z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps                     (DreamFusion eq. 1)

asks the frozen prior for eps_hat(z_t, t, y) with classifier-free guidance or Perp-Neg (models/guidance/cfg.py),
and pushes the render along

    grad_z = w(t) (eps_hat - eps)                                   (DreamFusion eq. 3)

without back-propagating through the denoiser. It is applied as the detached-target MSE

    loss = 0.5 * || z - (z - grad_z).detach() ||^2 / B

whose gradient with respect to z is exactly grad_z / B, so autograd carries it back through
the encoder and the renderer to the 3D parameters. The t range, the CFG scale, the clamp and the
loss are the distillation-rule base's (models/guidance/rule.py); the forward process is the
prior's (models/priors/base.py `diffuse`).

w(t): 'sds' = 1 - abar_t (DreamFusion), 'uniform' = 1 (Magic3D), 'fantasia3d' = sqrt(abar_t) (1 - abar_t).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from framework.value_checks import check_fields, one_of
from models.guidance.cfg import guided_noise
from models.guidance.rule import (
    WEIGHTINGS,
    DistillationRule,
    DistillationRuleConfig,
    detached_target_loss,
    finite_clamped,
    sds_weight,
)
from models.priors.base import diffuse


def sds_gradient(eps_hat: Tensor, noise: Tensor, weight: Tensor, grad_clip: Optional[float] = None) -> Tensor:
    """w(t) (eps_hat - eps), NaNs zeroed and optionally clamped. eps_hat, noise (B, C, h, w); weight (B,)."""
    return finite_clamped(weight.view(-1, 1, 1, 1) * (eps_hat - noise), grad_clip)


@dataclass
class SDSGuidanceConfig(DistillationRuleConfig):
    _target_: str = "models.guidance.sds.SDSGuidance"
    weighting: str = "sds"
    """w(t): 'sds' = 1 - abar_t, 'uniform' = 1, 'fantasia3d' = sqrt(abar_t) (1 - abar_t)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, weighting=one_of(*WEIGHTINGS))


class SDSGuidance(DistillationRule):
    """Any `DiffusionPrior` + the SDS rule. Returns loss_sds (and diagnostics)."""

    loss_names = ("sds",)
    cfg: SDSGuidanceConfig

    def forward(
        self,
        rgb: Tensor,
        condition: Any,
        batch: dict[str, Any],
        t: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """rgb (B, H, W, 3) in [0, 1] -> {loss_sds, grad_norm, t_mean}.

        `t` (B,) and `noise` may be given (tests, variance studies); otherwise they are drawn.
        """
        z = self.prior.encode(rgb)  # (B, C, h, w), differentiable
        if t is None:
            t = self.sample_timesteps(z.shape[0], z.device)
        if noise is None:
            noise = torch.randn_like(z)
        abar = self.alphas_cumprod_at(t)  # (B,)
        with torch.no_grad():
            z_t = diffuse(z, abar, noise)
            eps_hat = guided_noise(self.prior, z_t, t, condition, batch, self.guidance_scale)
            grad = sds_gradient(eps_hat, noise, sds_weight(abar, self.cfg.weighting), self.grad_clip)
        loss = detached_target_loss(z, grad)
        return {
            "loss_sds": loss,
            "grad_norm": grad.norm(),
            "t_mean": t.float().mean(),
        }
