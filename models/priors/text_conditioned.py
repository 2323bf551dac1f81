"""The part Stable Diffusion and DeepFloyd IF share: a frozen UNet conditioned on text embeddings.

`predict_noise` is written once here (one batched UNet forward on [cond, uncond]); each prior only
loads its UNet and says how renders map into its space; one UNet forward (`unet_output`, also
used on a LoRA copy of the UNet by VSD) and its conversion to eps (`eps_from_embeddings`) are
written here too. Perp-Neg (models/guidance/cfg.py `guided_noise`) calls `eps_from_embeddings`
directly with its own stack of embeddings. The speed and memory options of a diffusers UNet on CUDA live here too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from models.priors.base import CameraBatchCondition, DiffusionPrior, v_to_eps


@dataclass
class DiffusersUNetOptions:
    """Loading, precision and memory options every diffusers-UNet prior takes."""

    pretrained_model_name_or_path: str = "???"
    """A hub id (looked up in the HF cache) or a local folder in diffusers' layout."""
    local_files_only: bool = True
    """Never touch the network (also forced by HF_HUB_OFFLINE=1)."""
    half_precision_weights: bool = True
    """fp16 weights on CUDA; always fp32 on CPU (fp16 convolutions are slow or missing there)."""
    variant: Optional[str] = None
    """Weight file variant to load ('fp16' for repos that ship diffusion_pytorch_model.fp16.*)."""
    channels_last: bool = True
    """CUDA only: NHWC memory format for the UNet's convolutions (faster with fp16 tensor cores)."""
    enable_attention_slicing: bool = False
    """Compute attention in slices: less peak memory, a little slower. Otherwise diffusers' default
    processors, which on torch >= 2 call F.scaled_dot_product_attention (flash / memory-efficient kernels)."""
    torch_compile: bool = False
    """CUDA only: torch.compile the UNet (minutes of compilation, then faster steps)."""


class TextConditionedPrior(DiffusionPrior):
    """A frozen `unet` conditioned on text embeddings; `prediction_type` is its scheduler's
    ('epsilon' or 'v_prediction')."""

    takes_text_embeddings = True
    weights_dtype: torch.dtype = torch.float32
    prediction_type: str = "epsilon"
    unet: nn.Module

    def _weights_dtype(self, options: DiffusersUNetOptions) -> torch.dtype:
        return torch.float16 if (options.half_precision_weights and torch.cuda.is_available()) else torch.float32

    def _prepare_unet(self, unet: nn.Module, options: DiffusersUNetOptions) -> nn.Module:
        """Freeze, eval, and apply the memory / speed options that help on CUDA."""
        unet.requires_grad_(False)
        unet.eval()
        if options.enable_attention_slicing:
            unet.set_attention_slice("auto")
        if torch.cuda.is_available():
            if options.channels_last:
                unet.to(memory_format=torch.channels_last)
            if options.torch_compile:
                unet = torch.compile(unet)
        return unet

    def unet_output(self, unet: nn.Module, x_t: Tensor, t: Tensor, embeddings: Tensor, **unet_kwargs: Any) -> Tensor:
        """The raw prediction (N, C, h, w) of `unet` (the prior's own, or a LoRA copy of it) for
        x_t (N, C, h, w), t (N,) long and embeddings (N, L, D): one forward in the weights' dtype,
        the learned-variance channels of IF-style UNets dropped. `unet_kwargs` pass through
        (class_labels, cross_attention_kwargs)."""
        dtype = self.weights_dtype
        out = unet(x_t.to(dtype), t.to(x_t.device), encoder_hidden_states=embeddings.to(dtype), **unet_kwargs).sample
        return out[:, : x_t.shape[1]].to(x_t.dtype)

    def eps_from_embeddings(self, x_t: Tensor, t: Tensor, embeddings: Tensor) -> Tensor:
        """x_t (N, C, h, w), t (N,) long, embeddings (N, L, D) -> eps (N, C, h, w), one forward
        (v-prediction converted)."""
        out = self.unet_output(self.unet, x_t, t, embeddings)
        if self.prediction_type == "v_prediction":
            out = v_to_eps(out, x_t, self.alphas_cumprod.to(x_t.device)[t])
        return out

    @staticmethod
    def _expand(emb: Tensor, batch_size: int, key: str) -> Tensor:
        if emb.ndim != 3 or emb.shape[0] not in (1, batch_size):
            raise ValueError(f"condition[{key!r}] must be (B or 1, L, D) with B={batch_size}, got {tuple(emb.shape)}")
        return emb.expand(batch_size, -1, -1)

    def predict_noise(
        self,
        x_t: Tensor,  # (B, C, h, w)
        t: Tensor,  # (B,) long in [0, T)
        condition: Any,  # a CameraBatchCondition (TextCondition), or {"text_embeddings": (B|1, L, D), "uncond_embeddings": (B|1, L, D)}
        batch: dict[str, Any],
        need_uncond: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """-> (eps_cond (B, C, h, w), eps_uncond (B, C, h, w) or None); one forward on [cond, uncond]."""
        if isinstance(condition, CameraBatchCondition):
            condition = condition.for_batch(batch)
        if not isinstance(condition, dict) or "text_embeddings" not in condition:
            raise ValueError(
                f"{type(self).__name__} needs a TextCondition or {{'text_embeddings': (B, L, D), 'uncond_embeddings': ...}}; "
                "is system.prompt_processor a text prompt processor for this model?"
            )
        b = x_t.shape[0]
        emb = self._expand(condition["text_embeddings"], b, "text_embeddings")
        if not need_uncond:
            return self.eps_from_embeddings(x_t, t, emb), None
        if condition.get("uncond_embeddings") is None:
            raise ValueError("guidance_scale != 1 needs condition['uncond_embeddings'] (B or 1, L, D)")
        emb = torch.cat([emb, self._expand(condition["uncond_embeddings"], b, "uncond_embeddings")])
        eps_cond, eps_uncond = self.eps_from_embeddings(torch.cat([x_t, x_t]), torch.cat([t, t]), emb).chunk(2)
        return eps_cond, eps_uncond
