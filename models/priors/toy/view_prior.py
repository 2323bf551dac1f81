"""The view-conditioned toy prior's architecture: Zero-1-to-3's parts at toy size, and its folder layout.

Zero-1-to-3 (Liu et al. 2023) conditions a Stable Diffusion UNet on a view in two ways: the view's
VAE latent concatenated to the noisy latent (8 input channels) and one cross-attention token,
cc_projection(concat(CLIP image embedding, T)). The toy prior keeps both paths and the real classes
(UNet2DConditionModel, CLIPVisionModelWithProjection, a Linear cc_projection, DDPMScheduler) but
works in pixel space at 32² without a VAE (the toy world is flat-shaded shapes on white; a CPU core
must train it in under an hour): UNet input = 3 noisy-target channels + 3 cond-view channels.

The folder written by `save_view_prior_folder` mirrors the community Zero1to3StableDiffusionPipeline
(model_index.json; unet/, image_encoder/, cc_projection/, scheduler/, feature_extractor/), minus vae/,
and is what models/priors/zero123.py loads. The image encoder's input: the cond view resized to
image_size and normalised with feature_extractor's mean / std (0.5, i.e. [-1, 1], not CLIP's
statistics: the encoder is trained from scratch on toy renders).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import torch

from models.priors.hf_saving import save_module_as, write_model_index

POSE_DIM = 4  # Zero-1-to-3's T: [d polar (rad), sin d azimuth, cos d azimuth, d distance]
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]


@dataclass
class ToyViewPriorArch:
    """Sizes of the toy view prior. Timed on one CPU thread, batch 32, one training step (forward, backward,
    AdamW): widths (32, 64, 128) with 8 heads 2.6 s, with 2 heads 1.6 s; (32, 64, 64) with 2 heads 1.2 s (the
    default: the budget is <= 1.3 s for a ~3000-step run in under an hour on one core)."""

    image_size: int = 32
    block_out_channels: List[int] = field(default_factory=lambda: [32, 64, 64])
    """UNet widths at 32², 16², 8²; cross-attention at 16² and 8² (and the 8² mid block)."""
    layers_per_block: int = 1
    attention_head_dim: int = 2
    """diffusers' UNet2DConditionModel reads this as the NUMBER of heads (its historical naming). Few wide heads
    run much faster on a CPU than many 8-wide ones (flash attention per head dominates the step at 16²)."""
    norm_num_groups: int = 8
    cross_attention_dim: int = 64
    encoder_patch_size: int = 4
    encoder_hidden_size: int = 64
    encoder_layers: int = 2
    encoder_heads: int = 4
    encoder_projection_dim: int = 64
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"


def build_view_prior(arch: ToyViewPriorArch, seed: Optional[int] = None) -> dict[str, Any]:
    """-> {"unet", "image_encoder", "cc_projection", "scheduler", "feature_extractor"}, freshly initialised."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from models.priors.zero123 import CCProjection

    if seed is not None:
        torch.manual_seed(seed)
    channels = tuple(int(c) for c in arch.block_out_channels)
    n = len(channels)
    unet = UNet2DConditionModel(
        sample_size=arch.image_size,
        in_channels=6,  # noisy target (3) + cond view (3), Zero-1-to-3's channel concatenation
        out_channels=3,
        block_out_channels=channels,
        layers_per_block=arch.layers_per_block,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=arch.cross_attention_dim,
        attention_head_dim=arch.attention_head_dim,
        norm_num_groups=arch.norm_num_groups,
    )
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            image_size=arch.image_size,
            patch_size=arch.encoder_patch_size,
            hidden_size=arch.encoder_hidden_size,
            intermediate_size=4 * arch.encoder_hidden_size,
            num_hidden_layers=arch.encoder_layers,
            num_attention_heads=arch.encoder_heads,
            projection_dim=arch.encoder_projection_dim,
        )
    )
    cc_projection = CCProjection(in_features=arch.encoder_projection_dim + POSE_DIM, out_features=arch.cross_attention_dim)
    scheduler = DDPMScheduler(
        num_train_timesteps=arch.num_train_timesteps, beta_schedule=arch.beta_schedule, prediction_type="epsilon",
        clip_sample=True,
    )
    feature_extractor = CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": arch.image_size}, do_center_crop=True,
        crop_size={"height": arch.image_size, "width": arch.image_size}, do_normalize=True,
        image_mean=IMAGE_MEAN, image_std=IMAGE_STD,
    )
    return {"unet": unet, "image_encoder": image_encoder, "cc_projection": cc_projection, "scheduler": scheduler,
            "feature_extractor": feature_extractor}


def save_view_prior_folder(root: str | Path, parts: dict[str, Any], dtype: torch.dtype = torch.float32) -> Path:
    """Write parts (as build_view_prior returns) in the Zero1to3StableDiffusionPipeline layout; weights as
    safetensors in `dtype` (the modules are cast back to their own dtype afterwards)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("unet", "image_encoder", "cc_projection"):
        save_module_as(parts[name], root / name, dtype)
    parts["scheduler"].save_pretrained(root / "scheduler")
    index: dict[str, Any] = {
        "unet": ("diffusers", "UNet2DConditionModel"),
        "image_encoder": ("transformers", "CLIPVisionModelWithProjection"),
        "cc_projection": ("models.priors.zero123", "CCProjection"),
        "scheduler": ("diffusers", "DDPMScheduler"),
        "requires_safety_checker": False,
    }
    if parts.get("feature_extractor") is not None:
        parts["feature_extractor"].save_pretrained(root / "feature_extractor")
        index["feature_extractor"] = ("transformers", "CLIPImageProcessor")
    write_model_index(root, "Zero1to3StableDiffusionPipeline", index)
    return root
