"""Stable Diffusion as a `DiffusionPrior`: a frozen latent UNet, its VAE and its DDPM schedule.

Loaded with diffusers' `from_pretrained(id_or_local_dir, subfolder=...)` (unet/, vae/, scheduler/)
through models/priors/hf_loading.py: never downloaded implicitly, and missing weights stop the run
within seconds with a `MissingWeightsError` naming the model, where it looked and how to fix it.

Space: latents z = vae.encode(2 rgb - 1) * scaling_factor, (B, 4, h, w) with h = UNet sample_size
(64 for SD-2.1-base, i.e. renders resized to 512²). v-prediction checkpoints are converted to
eps so every distillation rule sees an eps-predictor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.value_checks import at_least, check_fields, optional
from models.priors.hf_loading import MissingWeightsError, ModelSource
from models.priors.text_conditioned import DiffusersUNetOptions, TextConditionedPrior

__all__ = ["MissingWeightsError", "StableDiffusionPrior", "StableDiffusionPriorConfig"]

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-1-base"


@dataclass
class StableDiffusionPriorConfig(DiffusersUNetOptions):
    _target_: str = "models.priors.stable_diffusion.StableDiffusionPrior"
    pretrained_model_name_or_path: str = DEFAULT_MODEL
    rgb_as_latents: bool = False
    """The render already is a latent image (B, H, W, 4): resize it, skip the VAE."""
    vae_chunk_size: Optional[int] = None
    """Encode/decode at most this many images at once (memory), None = all."""

    def __post_init__(self) -> None:
        check_fields(self, vae_chunk_size=optional(at_least(0)))


class StableDiffusionPrior(TextConditionedPrior):
    """Frozen SD UNet + VAE. Public tensors: rgb (B, H, W, 3) in [0, 1]; latents (B, 4, h, w)."""

    def __init__(self, cfg: StableDiffusionPriorConfig, **runtime_objects: Any):
        super().__init__()
        self.cfg = cfg
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        source = ModelSource(
            cfg.pretrained_model_name_or_path,
            what="Stable Diffusion",
            config_key="system.guidance.prior.pretrained_model_name_or_path",
            subfolders=["unet", "vae", "scheduler", "text_encoder", "tokenizer"],
            local_files_only=cfg.local_files_only,
        )
        self.weights_dtype = self._weights_dtype(cfg)
        load = dict(torch_dtype=self.weights_dtype, variant=cfg.variant)
        scheduler = source.load(DDPMScheduler, "scheduler")
        self.unet = self._prepare_unet(source.load(UNet2DConditionModel, "unet", **load), cfg)
        vae = source.load(AutoencoderKL, "vae", **load)
        vae.requires_grad_(False)
        self.vae = vae.eval()
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise MissingWeightsError(f"{source.name!r}: unsupported scheduler prediction_type {self.prediction_type!r}")
        self.set_noise_schedule(scheduler.alphas_cumprod)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_size = int(self.unet.config.sample_size)
        self.image_size = self.latent_size * self.vae_scale_factor

    def train(self, mode: bool = True) -> "StableDiffusionPrior":
        # The networks stay in eval mode whatever Lightning does with the system.
        super().train(mode)
        self.unet.eval()
        self.vae.eval()
        return self

    def _chunks(self, x: Tensor) -> list[Tensor]:
        size = self.cfg.vae_chunk_size
        return [x] if not size or size >= x.shape[0] else list(x.split(int(size)))

    def encode(self, rgb: Tensor) -> Tensor:
        """rgb (B, H, W, 3) in [0, 1] (or (B, H, W, 4) latents with rgb_as_latents) -> (B, 4, h, w).

        Differentiable (the SDS gradient flows back through the VAE encoder).
        """
        if self.cfg.rgb_as_latents:
            if rgb.ndim != 4 or rgb.shape[-1] != 4:
                raise ValueError(
                    f"rgb_as_latents=True needs a 4-channel render (B, H, W, 4) to use as SD latents, got {tuple(rgb.shape)}"
                )
            lat = rgb.permute(0, 3, 1, 2)
            return F.interpolate(lat, (self.latent_size, self.latent_size), mode="bilinear", align_corners=False)
        if rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise ValueError(f"encode expects rgb (B, H, W, 3), got {tuple(rgb.shape)}")
        x = rgb.permute(0, 3, 1, 2)
        x = F.interpolate(x, (self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = (x * 2.0 - 1.0).to(self.weights_dtype)
        scale = self.vae.config.scaling_factor
        latents = torch.cat([self.vae.encode(c).latent_dist.sample() for c in self._chunks(x)]) * scale
        return latents.to(rgb.dtype)

    def decode(self, x: Tensor) -> Tensor:
        """latents (B, 4, h, w) -> rgb (B, h * f, w * f, 3) in [0, 1], f = VAE scale factor."""
        z = (x / self.vae.config.scaling_factor).to(self.weights_dtype)
        img = torch.cat([self.vae.decode(c).sample for c in self._chunks(z)])
        return ((img.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)
