"""DeepFloyd IF stage I as a `DiffusionPrior`: pixel-space SDS at the UNet's resolution (64²).

Only stage I is used (DreamFusion-IF, Magic3D-coarse-IF): the render is resized to 64² and mapped
to [-1, 1], no VAE. The UNet predicts eps and a learned variance (6 channels); SDS needs eps, the
first 3. The T5 text embeddings are computed once by the prompt processor
(models/prompt_processors/deepfloyd_if.py), so only the UNet lives here. Loading, offline
behaviour and the missing-weights error are shared with Stable Diffusion (models/priors/hf_loading.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch.nn.functional as F
from torch import Tensor

from models.priors.hf_loading import MissingWeightsError, ModelSource
from models.priors.text_conditioned import DiffusersUNetOptions, TextConditionedPrior

DEFAULT_MODEL = "DeepFloyd/IF-I-XL-v1.0"


@dataclass
class DeepFloydIFPriorConfig(DiffusersUNetOptions):
    _target_: str = "models.priors.deepfloyd_if.DeepFloydIFPrior"
    pretrained_model_name_or_path: str = DEFAULT_MODEL
    variant: Optional[str] = None
    """'fp16' loads the repo's half-precision files (threestudio does so on CUDA); None the full ones."""


class DeepFloydIFPrior(TextConditionedPrior):
    """Frozen IF-I UNet. Public tensors: rgb (B, H, W, 3) in [0, 1]; pixels x (B, 3, 64, 64) in [-1, 1]."""

    def __init__(self, cfg: DeepFloydIFPriorConfig, **runtime_objects: Any):
        super().__init__()
        self.cfg = cfg
        from diffusers import DDPMScheduler, UNet2DConditionModel

        source = ModelSource(
            cfg.pretrained_model_name_or_path,
            what="DeepFloyd IF (stage I)",
            config_key="system.guidance.prior.pretrained_model_name_or_path",
            subfolders=["unet", "scheduler", "text_encoder", "tokenizer"],
            local_files_only=cfg.local_files_only,
        )
        self.weights_dtype = self._weights_dtype(cfg)
        scheduler = source.load(DDPMScheduler, "scheduler")
        unet = source.load(UNet2DConditionModel, "unet", torch_dtype=self.weights_dtype, variant=cfg.variant)
        if scheduler.config.prediction_type != "epsilon":
            raise MissingWeightsError(f"{source.name!r}: IF stage I predicts epsilon; got {scheduler.config.prediction_type!r}")
        self.unet = self._prepare_unet(unet, cfg)
        self.channels = int(unet.config.in_channels)  # of x (pixels); the UNet outputs 2x with the learned variance
        self.image_size = int(unet.config.sample_size)
        self.set_noise_schedule(scheduler.alphas_cumprod)

    def train(self, mode: bool = True) -> "DeepFloydIFPrior":
        super().train(mode)
        self.unet.eval()
        return self

    def encode(self, rgb: Tensor) -> Tensor:
        """rgb (B, H, W, 3) in [0, 1], differentiable -> x (B, 3, s, s) = 2 resize(rgb) - 1, s = UNet size."""
        if rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise ValueError(f"encode expects rgb (B, H, W, 3), got {tuple(rgb.shape)}")
        x = F.interpolate(rgb.permute(0, 3, 1, 2), (self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x * 2.0 - 1.0

    def decode(self, x: Tensor) -> Tensor:
        """x (B, 3, s, s) in [-1, 1] -> rgb (B, s, s, 3) in [0, 1]."""
        return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)
