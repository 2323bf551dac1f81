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
the encoder and the renderer to the 3D parameters.

w(t): 'sds' = 1 - abar_t (DreamFusion), 'uniform' = 1 (Magic3D), 'fantasia3d' = sqrt(abar_t) (1 - abar_t).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor

from framework.config import instantiate
from framework.interfaces import Guidance
from framework.schedule import Schedule
from models.guidance.cfg import guided_noise
from models.guidance.prior import DiffusionPrior

WEIGHTINGS = ("sds", "uniform", "fantasia3d")


def sds_weight(alphas_cumprod_t: Tensor, weighting: str) -> Tensor:
    """w(t) for abar_t (B,) -> (B,)."""
    if weighting == "sds":
        return 1.0 - alphas_cumprod_t
    if weighting == "uniform":
        return torch.ones_like(alphas_cumprod_t)
    if weighting == "fantasia3d":
        return alphas_cumprod_t.sqrt() * (1.0 - alphas_cumprod_t)
    raise ValueError(f"unknown SDS weighting {weighting!r}; choose one of {WEIGHTINGS}")


def timestep_bounds(num_train_timesteps: int, min_step_percent: float, max_step_percent: float) -> tuple[int, int]:
    """Integer t range [floor(T min), floor(T max)] (threestudio's convention)."""
    if not 0.0 <= min_step_percent <= max_step_percent <= 1.0:
        raise ValueError(f"need 0 <= min_step_percent <= max_step_percent <= 1, got {min_step_percent}, {max_step_percent}")
    low = int(num_train_timesteps * min_step_percent)
    high = max(low, min(int(num_train_timesteps * max_step_percent), num_train_timesteps - 1))
    return low, high


class StepSettings(NamedTuple):
    """What a distillation rule uses at one training step."""

    min_step: int
    max_step: int
    grad_clip: Optional[float]
    guidance_scale: float


class StepSchedules:
    """The step-dependent settings every distillation rule shares: the t range, the gradient clamp
    and the CFG scale.

    Reads `min_step_percent`, `max_step_percent` (Schedules of fractions of T), `grad_clip`
    (a Schedule or None) and `guidance_scale` (a Schedule) from the rule's config.
    """

    def __init__(self, cfg: Any):
        self.min_step = Schedule.parse(cfg.min_step_percent, "guidance.min_step_percent")
        self.max_step = Schedule.parse(cfg.max_step_percent, "guidance.max_step_percent")
        self.grad_clip = None if cfg.grad_clip is None else Schedule.parse(cfg.grad_clip, "guidance.grad_clip")
        self.guidance_scale = Schedule.parse(cfg.guidance_scale, "guidance.guidance_scale")

    def at(self, global_step: int, num_train_timesteps: int) -> StepSettings:
        """The settings at this step (t bounds as integer timesteps of the prior's T)."""
        low, high = timestep_bounds(num_train_timesteps, self.min_step(global_step), self.max_step(global_step))
        clip = None if self.grad_clip is None else self.grad_clip(global_step)
        return StepSettings(low, high, clip, self.guidance_scale(global_step))


def diffuse(z: Tensor, alphas_cumprod_t: Tensor, noise: Tensor) -> Tensor:
    """z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps (DreamFusion eq. 1). z, noise (B, C, h, w); abar_t (B,)."""
    abar = alphas_cumprod_t.view(-1, 1, 1, 1)
    return abar.sqrt() * z + (1.0 - abar).sqrt() * noise


def sds_gradient(eps_hat: Tensor, noise: Tensor, weight: Tensor, grad_clip: Optional[float] = None) -> Tensor:
    """w(t) (eps_hat - eps), NaNs zeroed and optionally clamped. eps_hat, noise (B, C, h, w); weight (B,)."""
    grad = weight.view(-1, 1, 1, 1) * (eps_hat - noise)
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    if grad_clip is not None:
        grad = grad.clamp(-grad_clip, grad_clip)
    return grad


def detached_target_loss(z: Tensor, grad: Tensor) -> Tensor:
    """0.5 ||z - (z - grad).detach()||^2 / B: its gradient w.r.t. z is grad / B."""
    target = (z - grad).detach()
    return 0.5 * ((z - target) ** 2).sum() / z.shape[0]


@dataclass
class SDSGuidanceConfig:
    _target_: str = "models.guidance.sds.SDSGuidance"
    prior: Any = None
    """The diffusion prior's config node (its own `_target_`)."""
    guidance_scale: Any = 100.0
    """Schedule: classifier-free guidance scale in this project's (diffusers') convention: eps_u + s (eps_c - eps_u)."""
    weighting: str = "sds"
    min_step_percent: Any = 0.02
    """Schedule: lower end of t as a fraction of the prior's T."""
    max_step_percent: Any = 0.98
    """Schedule: upper end of t as a fraction of the prior's T."""
    grad_clip: Any = None
    """Schedule or None: clamp of the SDS gradient (score debiasing uses a rising clamp)."""


class SDSGuidance(Guidance):
    """Any `DiffusionPrior` + the SDS rule. Returns loss_sds (and diagnostics)."""

    loss_names = ("sds",)

    def __init__(self, cfg: SDSGuidanceConfig, prior: DiffusionPrior | None = None):
        super().__init__()
        if cfg.weighting not in WEIGHTINGS:
            raise ValueError(f"guidance.weighting {cfg.weighting!r} is not one of {WEIGHTINGS}")
        self.cfg = cfg
        self.prior = prior if prior is not None else instantiate(cfg.prior)
        self.schedules = StepSchedules(cfg)
        self.update_step(0)

    def update_step(self, global_step: int) -> None:
        self.min_step, self.max_step, self.grad_clip, self.guidance_scale = self.schedules.at(
            global_step, self.prior.num_train_timesteps
        )
        self.prior.update_step(global_step)

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
        batch_size = z.shape[0]
        if t is None:
            t = torch.randint(self.min_step, self.max_step + 1, (batch_size,), device=z.device)
        if noise is None:
            noise = torch.randn_like(z)
        abar = self.prior.alphas_cumprod.to(z.device)[t]  # (B,)
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
