"""Score Jacobian Chaining (Wang et al., CVPR 2023) with Perturb-and-Average Scoring, for any prior.

SJC reads a diffusion model as a denoiser D(z, sigma) in the variance-exploding form and
chains its 2D score through the renderer's Jacobian (the paper's central identity:
grad_theta log q(theta) = E_pi[ grad_x log p(x_pi) J_pi ]). For a DDPM prior with abar_t:

    sigma_t = sqrt((1 - abar_t) / abar_t)                      (VE <-> VP, as in Karras et al. 2022)
    z = y + sigma n,            n ~ N(0, I)                    perturb the clean render y
    x_t = z / sqrt(1 + sigma^2) = sqrt(abar) y + sqrt(1 - abar) n   (the DDPM input: the prior is unchanged)
    D(z, sigma) = z - sigma eps_hat(x_t, t)                    (denoiser from the noise prediction)

A clean render is out of distribution for a denoiser trained on noisy images, so SJC does not
evaluate score(y) = (D(y) - y) / sigma^2 directly but PAAS (the paper's Perturb-and-Average
Scoring and the lemma that justifies it):

    PAAS(y, sigma) = E_n[ D(y + sigma n, sigma) - y ] / sigma^2

an average over noise draws n (the paper's lemma relates it to the score at an inflated noise
level, where the perturbed render is in distribution). The gradient applied to y is the negative score scaled by sigma (the loss
descends, the score ascends), estimated with `n_samples` draws at one t per image:

    variance reduction (var_red):  grad = -(1/K) sum_k (D_k - y) / sigma = (1/K) sum_k (eps_hat_k - n_k)
    without:                        grad = -(1/K) sum_k (D_k - z_k) / sigma = (1/K) sum_k eps_hat_k

(with var_red the injected noise, zero-mean and strongly correlated with eps_hat, is subtracted
as a control variate: same mean, less variance). K = 1 is the single-draw special case that threestudio and the
authors' released code (pals-ttic/sjc, run_sjc.py: one draw per step) use.

Default K: the paper defines PAAS as the expectation and estimates it by Monte Carlo; we could
not find a published sample count for its 3D runs, so the schema default is the authors' own
code's K = 1 and configs choose K (configs/system/guidance/sjc-toy-exact.yaml states its choice).

Classifier-free guidance (and Perp-Neg) goes through models/guidance/cfg.py only (eps_u + s (eps_c - eps_u));
threestudio's SJC scale 100 (eps_c + s (eps_c - eps_u)) is 101 here. The loss is the
detached-target MSE every rule shares (models/guidance/rule.py), so dL/dy = grad / B. Its key is
`loss_sds`, threestudio's key for SJC too, so SDS and SJC systems share `lambda_sds`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from framework.value_checks import at_least, check_fields, optional
from models.guidance.cfg import guided_noise
from models.guidance.rule import DistillationRule, DistillationRuleConfig, detached_target_loss, finite_clamped


def ve_sigma(alphas_cumprod_t: Tensor) -> Tensor:
    """Variance-exploding noise level of a DDPM step: sqrt((1 - abar) / abar). (B,) -> (B,)"""
    return ((1.0 - alphas_cumprod_t) / alphas_cumprod_t).sqrt()


def repeat_draws(value: Any, batch_size: int, n: int) -> Any:
    """Repeat every per-image tensor (leading dim == batch_size) n times, image-major, so a
    batch of B images x n draws can go through one predict_noise call. Dicts are walked; other
    values (scenes, ints, strings) pass unchanged."""
    if n == 1:
        return value
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == batch_size:
        return value.repeat_interleave(n, dim=0)
    if isinstance(value, dict):
        return {k: repeat_draws(v, batch_size, n) for k, v in value.items()}
    return value


@dataclass
class SJCGuidanceConfig(DistillationRuleConfig):
    _target_: str = "models.guidance.sjc.SJCGuidance"
    guidance_scale: Any = 101.0
    """Schedule: CFG scale, this project's convention eps_u + s (eps_c - eps_u); threestudio's SJC 100 is 101 here."""
    min_step_percent: Any = 0.01
    """Schedule: lower end of t as a fraction of the prior's T (threestudio's SJC: 0.01)."""
    max_step_percent: Any = 0.97
    """Schedule: upper end of t (threestudio's SJC: 0.97)."""
    n_samples: int = 1
    """PAAS noise draws per image and step (K above); 1 = single-draw SJC (authors' code, threestudio)."""
    max_batch: Optional[int] = None
    """Most images (B x draws) per predict_noise call; None = all K draws in one call."""
    var_red: bool = True
    """Variance reduction: subtract the injected noise, grad = -(D - y) / sigma."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, n_samples=at_least(1), max_batch=optional(at_least(1)))


class SJCGuidance(DistillationRule):
    """Any `DiffusionPrior` + the SJC/PAAS rule. Returns loss_sds and diagnostics."""

    loss_names = ("sds",)
    cfg: SJCGuidanceConfig

    @torch.no_grad()
    def paas_gradient(
        self,
        y: Tensor,  # (B, C, h, w) clean render in the prior's space
        t: Tensor,  # (B,) long
        noise: Tensor,  # (B, K, C, h, w) the K draws per image
        condition: Any,
        batch: dict[str, Any],
    ) -> Tensor:  # (B, C, h, w)
        """-(1/K) sum_k (D(y + sigma n_k) - y) / sigma (var_red) or -(1/K) sum_k (D_k - z_k) / sigma."""
        b, k = noise.shape[:2]
        sigma = ve_sigma(self.alphas_cumprod_at(t)).view(b, 1, 1, 1, 1)
        z = y[:, None] + sigma * noise  # (B, K, C, h, w): perturb
        x_t = z / (1.0 + sigma**2).sqrt()  # the DDPM x_t the prior was trained on
        per_call = k if self.cfg.max_batch is None else max(1, self.cfg.max_batch // b)
        eps_hat = torch.empty_like(z)
        for start in range(0, k, per_call):
            j = min(k, start + per_call) - start
            flat = x_t[:, start : start + j].reshape(b * j, *y.shape[1:])
            # CFG (or Perp-Neg, when the text condition asks for it) through the project's one formula
            eps = guided_noise(
                self.prior, flat, t.repeat_interleave(j), repeat_draws(condition, b, j), repeat_draws(batch, b, j),
                self.guidance_scale,
            )
            eps_hat[:, start : start + j] = eps.view(b, j, *y.shape[1:])
        denoised = z - sigma * eps_hat  # D(z, sigma)
        reference = y[:, None] if self.cfg.var_red else z
        grad = (-(denoised - reference) / sigma).mean(dim=1)  # average over the draws: PAAS
        return finite_clamped(grad, self.grad_clip)

    def forward(
        self,
        rgb: Tensor,
        condition: Any,
        batch: dict[str, Any],
        t: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """rgb (B, H, W, C) render (C = 3, or 4 for latent renders with rgb_as_latents) ->
        {loss_sds, grad_norm, t_mean, sigma_mean}. `t` (B,) and `noise` (B, K, c, h, w) may be
        given (tests, variance studies); otherwise they are drawn."""
        y = self.prior.encode(rgb)  # (B, c, h, w), differentiable
        b = y.shape[0]
        if t is None:
            t = self.sample_timesteps(b, y.device)
        if noise is None:
            noise = torch.randn(b, self.cfg.n_samples, *y.shape[1:], device=y.device, dtype=y.dtype)
        if noise.shape[:2] != (b, self.cfg.n_samples) or noise.shape[2:] != y.shape[1:]:
            raise ValueError(f"noise must be (B, n_samples, c, h, w) = {(b, self.cfg.n_samples, *y.shape[1:])}, got {tuple(noise.shape)}")
        grad = self.paas_gradient(y.detach(), t, noise, condition, batch)
        loss = detached_target_loss(y, grad)
        return {
            "loss_sds": loss,
            "grad_norm": grad.norm(),
            "t_mean": t.float().mean(),
            "sigma_mean": ve_sigma(self.alphas_cumprod_at(t)).mean(),
        }
