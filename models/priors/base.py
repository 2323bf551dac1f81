"""What a distillation rule needs from a diffusion prior, and the DDPM arithmetic every prior shares.

DESIGN.md: guidance = a prior + a distillation rule. A prior is a frozen denoiser
`eps_hat(x_t, t, condition)` with its noise schedule, plus how a render maps into its space.
Stable Diffusion (latent, VAE encode), DeepFloyd IF (pixels at 64²), Zero-1-to-3, the toy
exact-score prior and the trained toy UNets all fill this interface, so every distillation rule
(models/guidance/: SDS, SJC, VSD, ...) works with every prior of the right kind.

The noise schedule is the prior's own discrete DDPM schedule, abar_t = prod_{s <= t} (1 - beta_s):

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                  (DDPM, Ho et al. 2020, eq. 4)

This package sits below prompt_processors/ and guidance/ (docs/architecture.md): the prior
states what it takes, the layers above produce it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import Tensor

from framework.interfaces import Component


class CameraBatchCondition(ABC):
    """A condition that picks what the prior reads per camera batch (e.g. the view-dependent
    prompt of each camera); the prompt processors above this package produce it."""

    @abstractmethod
    def for_batch(self, batch: dict[str, Any]) -> Any:
        """The condition for this camera batch, in the form the prior's predict_noise reads."""


class DiffusionPrior(Component):
    """A frozen noise predictor and its schedule.

    `alphas_cumprod` (T,) is abar_t of the prior's own discrete schedule (DDPM convention above).
    Its guidance calls `update_step` every step.
    """

    alphas_cumprod: Tensor  # (T,)

    def set_noise_schedule(self, alphas_cumprod: Tensor) -> None:
        """Store abar_t (T,) from the prior's scheduler. Non-persistent: it comes from the
        scheduler's config, not from our checkpoints."""
        self.register_buffer("alphas_cumprod", alphas_cumprod.detach().float().clone(), persistent=False)

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

    takes_text_embeddings: ClassVar[bool] = False
    """Whether this prior has `eps_from_embeddings` (text-conditioned priors: SD, IF, the toy text prior)."""

    def eps_from_embeddings(self, x_t: Tensor, t: Tensor, embeddings: Tensor) -> Tensor:
        """x_t (N, C, h, w), t (N,) long, embeddings (N, L, D) -> eps (N, C, h, w) in one forward.

        What Perp-Neg needs: its own stack of embeddings (positive, unconditional, negatives) in one
        call. Text-conditioned priors (models/priors/text_conditioned.py) have it."""
        raise NotImplementedError(f"{type(self).__name__} is not conditioned on text embeddings")


def diffuse(z: Tensor, alphas_cumprod_t: Tensor, noise: Tensor) -> Tensor:
    """z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps (DDPM eq. 4; DreamFusion eq. 1). z, noise (B, C, h, w); abar_t (B,)."""
    abar = alphas_cumprod_t.view(-1, 1, 1, 1)
    return abar.sqrt() * z + (1.0 - abar).sqrt() * noise


def v_to_eps(v: Tensor, x_t: Tensor, alphas_cumprod_t: Tensor) -> Tensor:
    """v (B, C, h, w), x_t (B, C, h, w), abar_t (B,) -> eps (B, C, h, w).

    diffusers (Salimans & Ho 2022, eq. 'v'): v = sqrt(abar) eps - sqrt(1 - abar) x_0 with
    x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps, hence
        eps = sqrt(abar) v + sqrt(1 - abar) x_t
    (substitute: abar eps - sqrt(abar(1-abar)) x_0 + sqrt(abar(1-abar)) x_0 + (1-abar) eps = eps).
    """
    abar = alphas_cumprod_t.to(v.dtype).view(-1, 1, 1, 1)
    return abar.sqrt() * v + (1.0 - abar).sqrt() * x_t
