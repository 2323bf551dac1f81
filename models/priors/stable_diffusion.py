"""Stable Diffusion as a `DiffusionPrior`: a frozen latent UNet, its VAE and its DDPM schedule.

Loaded with diffusers' `from_pretrained(id_or_local_dir, subfolder=...)` (unet/, vae/, scheduler/),
never downloaded implicitly: the project runs offline, so missing weights stop the run within
seconds with a `MissingWeightsError` that names the model, where it looked and how to fix it
(DESIGN.md, 'Priors').

Space: latents z = vae.encode(2 rgb - 1) * scaling_factor, (B, 4, h, w) with h = UNet sample_size
(64 for SD-2.1-base, i.e. renders resized to 512²). v-prediction checkpoints are converted to
eps so every distillation rule sees an eps-predictor.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.config import UserError
from models.guidance.prior import DiffusionPrior


class MissingWeightsError(UserError):
    """The prior's weights are neither in the local folder nor in the Hugging Face cache."""


@dataclass
class StableDiffusionPriorConfig:
    _target_: str = "models.priors.stable_diffusion.StableDiffusionPrior"
    pretrained_model_name_or_path: str = "stabilityai/stable-diffusion-2-1-base"
    """A hub id (looked up in the HF cache) or a local folder with unet/, vae/, scheduler/."""
    local_files_only: bool = True
    """Never touch the network (also forced by HF_HUB_OFFLINE=1)."""
    half_precision_weights: bool = True
    """fp16 weights on CUDA; always fp32 on CPU (fp16 convolutions are slow or missing there)."""
    rgb_as_latents: bool = False
    """The render already is a latent image (B, H, W, 4): resize it, skip the VAE."""
    vae_chunk_size: Optional[int] = None
    """Encode/decode at most this many images at once (memory), None = all."""
    enable_attention_slicing: bool = False


def _offline(cfg: StableDiffusionPriorConfig) -> bool:
    # Read the env at call time: huggingface_hub.constants caches it at import.
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(cfg.local_files_only) or env


def _looks_like_path(name: str) -> bool:
    """A hub id is 'org/name' (at most one '/'); anything else that names a file system location is a path."""
    return (
        os.path.exists(name)
        or os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.strip("/").count("/") > 1
    )


def _missing_message(name: str, is_local: bool, detail: str) -> str:
    from huggingface_hub import constants

    if is_local:
        where = f"the local folder {name!r}"
        download = (
            f"fill it once with network access: `huggingface-cli download {StableDiffusionPriorConfig.pretrained_model_name_or_path} "
            f"--local-dir {name}`"
        )
    else:
        where = f"the Hugging Face cache {constants.HF_HUB_CACHE!r} (offline, local files only)"
        download = f"download them once with network access: `huggingface-cli download {name}`"
    return (
        f"Stable Diffusion weights for {name!r} were not found in {where}.\n"
        f"Fix: {download}; or point to a local folder holding unet/, vae/ and scheduler/ with "
        f"`system.guidance.prior.pretrained_model_name_or_path=/path/to/folder`.\n"
        f"(underlying error: {detail})"
    )


def _load_errors() -> tuple[type[BaseException], ...]:
    """The exceptions diffusers/huggingface_hub raise for absent weights (OSError covers
    EnvironmentError and requests' errors; HFValidationError is a ValueError for malformed ids)."""
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError

    errors: list[type[BaseException]] = [OSError, LocalEntryNotFoundError, EntryNotFoundError, HFValidationError]
    try:
        import httpx  # huggingface_hub >= 1.0 transport; its connection errors are not OSErrors

        errors.append(httpx.TransportError)
    except ImportError:
        pass
    return tuple(errors)


class StableDiffusionPrior(DiffusionPrior):
    """Frozen SD UNet + VAE. Public tensors: rgb (B, H, W, 3) in [0, 1]; latents (B, 4, h, w)."""

    def __init__(self, cfg: StableDiffusionPriorConfig, **runtime_objects: Any):
        super().__init__()
        self.cfg = cfg
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        name = str(cfg.pretrained_model_name_or_path)
        is_local = _looks_like_path(name)
        if is_local:
            name = os.path.expanduser(name)
            if not os.path.isdir(name):
                raise MissingWeightsError(_missing_message(name, True, "no such directory"))
        self.weights_dtype = torch.float16 if (cfg.half_precision_weights and torch.cuda.is_available()) else torch.float32
        kwargs = dict(local_files_only=_offline(cfg))
        try:
            unet = UNet2DConditionModel.from_pretrained(name, subfolder="unet", torch_dtype=self.weights_dtype, **kwargs)
            vae = AutoencoderKL.from_pretrained(name, subfolder="vae", torch_dtype=self.weights_dtype, **kwargs)
            scheduler = DDPMScheduler.from_pretrained(name, subfolder="scheduler", **kwargs)
        except _load_errors() as err:
            raise MissingWeightsError(_missing_message(name, is_local, f"{type(err).__name__}: {err}")) from err

        for module in (unet, vae):
            module.requires_grad_(False)
            module.eval()
        if cfg.enable_attention_slicing:
            unet.set_attention_slice("auto")
        self.unet = unet
        self.vae = vae
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise MissingWeightsError(f"{name!r}: unsupported scheduler prediction_type {self.prediction_type!r}")
        # Non-persistent: it comes from the scheduler config, not from our checkpoints.
        self.register_buffer("alphas_cumprod", scheduler.alphas_cumprod.detach().float().clone(), persistent=False)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_size = int(unet.config.sample_size)
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

    @staticmethod
    def _expand(emb: Tensor, batch_size: int, key: str) -> Tensor:
        if emb.ndim != 3 or emb.shape[0] not in (1, batch_size):
            raise ValueError(f"condition[{key!r}] must be (B or 1, L, D) with B={batch_size}, got {tuple(emb.shape)}")
        return emb.expand(batch_size, -1, -1)

    def predict_noise(
        self,
        x_t: Tensor,  # (B, 4, h, w)
        t: Tensor,  # (B,) long in [0, T)
        condition: Any,  # {"text_embeddings": (B or 1, L, D), "uncond_embeddings": (B or 1, L, D)}
        batch: dict[str, Any],
        need_uncond: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """-> (eps_cond (B, 4, h, w), eps_uncond (B, 4, h, w) or None); one UNet forward on [cond, uncond]."""
        if not isinstance(condition, dict) or "text_embeddings" not in condition:
            raise ValueError("StableDiffusionPrior needs condition = {'text_embeddings': (B, L, D), 'uncond_embeddings': ...}")
        b = x_t.shape[0]
        emb = self._expand(condition["text_embeddings"], b, "text_embeddings")
        x_in, t_in = x_t, t
        if need_uncond:
            if condition.get("uncond_embeddings") is None:
                raise ValueError("guidance_scale != 1 needs condition['uncond_embeddings'] (B or 1, L, D)")
            emb = torch.cat([emb, self._expand(condition["uncond_embeddings"], b, "uncond_embeddings")])
            x_in, t_in = torch.cat([x_t, x_t]), torch.cat([t, t])
        dtype = self.weights_dtype
        out = self.unet(x_in.to(dtype), t_in.to(x_t.device), encoder_hidden_states=emb.to(dtype)).sample.to(x_t.dtype)
        if self.prediction_type == "v_prediction":
            out = self.v_to_eps(out, torch.cat([x_t] * (2 if need_uncond else 1)), self.alphas_cumprod.to(x_t.device)[t_in])
        if need_uncond:
            eps_cond, eps_uncond = out.chunk(2)
            return eps_cond, eps_uncond
        return out, None

    @staticmethod
    def v_to_eps(v: Tensor, x_t: Tensor, abar_t: Tensor) -> Tensor:
        """v (B, C, h, w), x_t (B, C, h, w), abar_t (B,) -> eps (B, C, h, w).

        diffusers (Salimans & Ho 2022, eq. 'v'): v = sqrt(abar) eps - sqrt(1 - abar) x_0 with
        x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps, hence
            eps = sqrt(abar) v + sqrt(1 - abar) x_t
        (substitute: abar eps - sqrt(abar(1-abar)) x_0 + sqrt(abar(1-abar)) x_0 + (1-abar) eps = eps).
        """
        abar = abar_t.to(v.dtype).view(-1, 1, 1, 1)
        return abar.sqrt() * v + (1.0 - abar).sqrt() * x_t
