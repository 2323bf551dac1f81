"""The base every distillation rule extends (SDS, SJC, and VSD next): a frozen prior, the
step-dependent settings, and the detached-target loss that turns a gradient into a loss.

A distillation rule maps a render z in the prior's space (models/priors/base.py) to a gradient
grad_z without back-propagating through the denoiser. What every rule shares:

- the prior, built from its own config node (`prior._target_`), or handed in by a test;
- the t range: t ~ U{floor(T min), ..., floor(T max)} with min / max `Schedule`s of fractions of
  the prior's T (threestudio's convention), re-read every step by `update_step`;
- the CFG scale (a `Schedule`, in this project's one convention, models/guidance/cfg.py);
- an optional clamp of the gradient (a `Schedule`; score debiasing uses a rising clamp), after
  non-finite entries are zeroed;
- the loss 0.5 ||z - (z - grad).detach()||^2 / B, whose gradient with respect to z is grad / B,
  so autograd carries grad back through the encoder and the renderer to the 3D parameters.

The weighting w(t) of SDS-like rules (SDS, VSD, image-conditioned SDS) lives here too; its config
field is each such rule's own, since SJC has none (its gradient is scaled by the VE sigma instead).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor

from framework.config import instantiate
from framework.interfaces import Guidance
from framework.schedule import Schedule
from framework.value_checks import between, check_fields, check_order, greater_than, optional, schedule_of
from models.priors.base import DiffusionPrior

WEIGHTINGS = ("sds", "uniform", "fantasia3d")


def sds_weight(alphas_cumprod_t: Tensor, weighting: str) -> Tensor:
    """w(t) for abar_t (B,) -> (B,): 'sds' = 1 - abar_t (DreamFusion), 'uniform' = 1 (Magic3D),
    'fantasia3d' = sqrt(abar_t) (1 - abar_t)."""
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
    and the CFG scale, read from a `DistillationRuleConfig`."""

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


def finite_clamped(grad: Tensor, grad_clip: Optional[float]) -> Tensor:
    """grad with NaN / inf entries zeroed, then clamped to [-grad_clip, grad_clip] when given."""
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    if grad_clip is not None:
        grad = grad.clamp(-grad_clip, grad_clip)
    return grad


def detached_target_loss(z: Tensor, grad: Tensor) -> Tensor:
    """0.5 ||z - (z - grad).detach()||^2 / B: its gradient w.r.t. z is grad / B."""
    target = (z - grad).detach()
    return 0.5 * ((z - target) ** 2).sum() / z.shape[0]


@dataclass
class DistillationRuleConfig:
    """The fields every rule has; each rule's config extends it with its own `_target_` and
    defaults (published values differ per method)."""

    prior: Any = None
    """The diffusion prior's config node (its own `_target_`)."""
    guidance_scale: Any = 100.0
    """Schedule: classifier-free guidance scale in this project's (diffusers') convention: eps_u + s (eps_c - eps_u)."""
    min_step_percent: Any = 0.02
    """Schedule: lower end of t as a fraction of the prior's T."""
    max_step_percent: Any = 0.98
    """Schedule: upper end of t as a fraction of the prior's T."""
    grad_clip: Any = None
    """Schedule or None: clamp of the gradient (score debiasing uses a rising clamp)."""

    def __post_init__(self) -> None:
        check_fields(
            self,
            guidance_scale=schedule_of(greater_than(0)),
            min_step_percent=schedule_of(between(0, 1)),
            max_step_percent=schedule_of(between(0, 1)),
            grad_clip=optional(schedule_of(greater_than(0))),
        )
        check_order(self, "min_step_percent", "max_step_percent")


class DistillationRule(Guidance):
    """A `DiffusionPrior` and the settings of the current step; subclasses write `forward`.

    After `update_step(step)`: `min_step`, `max_step` (integer t bounds), `grad_clip` and
    `guidance_scale` hold that step's values.
    """

    def __init__(self, cfg: DistillationRuleConfig, prior: DiffusionPrior | None = None):
        super().__init__()
        self.cfg = cfg
        self.prior = prior if prior is not None else instantiate(cfg.prior)
        self.schedules = StepSchedules(cfg)
        self.update_step(0)

    def update_step(self, global_step: int) -> None:
        self.min_step, self.max_step, self.grad_clip, self.guidance_scale = self.schedules.at(
            global_step, self.prior.num_train_timesteps
        )
        self.prior.update_step(global_step)

    def sample_timesteps(self, batch_size: int, device: torch.device) -> Tensor:
        """t (B,) long, uniform over this step's [min_step, max_step]."""
        return torch.randint(self.min_step, self.max_step + 1, (batch_size,), device=device)

    def alphas_cumprod_at(self, t: Tensor) -> Tensor:
        """abar_t (B,) of the prior's schedule, on t's device."""
        return self.prior.alphas_cumprod.to(t.device)[t]
