"""What a guidance needs from a diffusion prior (DESIGN.md: guidance = a prior + a distillation rule).

A prior is a frozen denoiser `eps_hat(x_t, t, condition)` with its noise schedule, plus how a
render maps into its space. Stable Diffusion (latent, VAE encode), DeepFloyd IF (pixels at 64²),
the toy exact-score prior and the trained toy UNets all fill this interface, so every
distillation rule (SDS, VSD, SJC, ...) works with every prior of the right kind.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from framework.interfaces import Component


class DiffusionPrior(Component):
    """A frozen noise predictor and its schedule.

    `alphas_cumprod` (T,) is abar_t of the prior's own discrete schedule (DDPM convention:
    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps). Its guidance calls `update_step` every step.
    """

    alphas_cumprod: Tensor  # (T,)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def encode(self, rgb: Tensor) -> Tensor:
        """rgb (B, H, W, 3) in [0, 1], differentiable -> x (B, C, h, w) in the prior's space."""
        raise NotImplementedError

    def decode(self, x: Tensor) -> Tensor:
        """x (B, C, h, w) -> rgb (B, h', w', 3) in [0, 1], for visualising targets."""
        raise NotImplementedError

    def predict_noise(
        self,
        x_t: Tensor,  # (B, C, h, w)
        t: Tensor,  # (B,) long, in [0, T)
        condition: Any,  # what the prompt processor produced
        batch: dict[str, Any],  # the camera batch (camera-conditioned priors read it)
        need_uncond: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """-> (eps_cond (B, C, h, w), eps_uncond (B, C, h, w) or None when not needed).

        Called under no_grad by the rules; priors that batch cond+uncond in one forward do so here.
        """
        raise NotImplementedError
