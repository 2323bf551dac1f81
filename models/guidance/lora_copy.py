"""The score model of the renders in VSD: a LoRA copy of a prior's UNet told the camera.

ProlificDreamer (Wang et al. 2023, Sec. 4.2) learns eps_phi(x_t, t, y, c), the noise prediction of
the distribution of the current renders, as a low-rank adaptation of the pretrained UNet with the
camera c as an extra input. Here, as in threestudio's stable-diffusion-vsd guidance:

- LoRA of rank 4 on the attention projections (to_q, to_k, to_v, to_out.0) of every attention
  block, self and cross, added with peft through diffusers' adapter API
  (`UNet2DConditionModel.add_adapter`). Not diffusers' removed `LoRAAttnProcessor`, which pins
  threestudio to diffusers < 0.20. Initialised as threestudio's LoRA layers are (down ~ N(0, 1/r),
  up = 0), so the copy starts equal to the prior.
- The camera embedding: the flattened 4x4 camera-to-world matrix -> Linear - SiLU - Linear to the
  time-embedding width, set as the UNet's class embedding for the LoRA pass only, so the UNet
  adds it to the timestep embedding.

One model or two. With one, the adapter sits on the prior's own UNet and is off (LoRA scale 0, no
class embedding) outside the LoRA pass, so the pretrained pass is the prior: the low-memory option. With two, it sits on a
second UNet (e.g. SD-2.1, v-prediction, beside SD-2.1-base) whose base weights are frozen too.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")


class CameraEmbedding(nn.Module):
    """c2w (B, 4, 4) or (B, 16) -> (B, D): Linear(16, D) - SiLU - Linear(D, D), D the UNet's
    time-embedding width (diffusers' TimestepEmbedding, as threestudio uses)."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, c2w: Tensor) -> Tensor:
        return self.net(c2w.reshape(c2w.shape[0], 16).float())


def time_embedding_width(unet: nn.Module) -> int:
    """Width of a diffusers UNet's timestep embedding (what a class embedding is added to)."""
    return int(unet.time_embedding.linear_2.out_features)


def set_lora_scale(unet: nn.Module, scale: float) -> None:
    """Scale every LoRA layer of `unet` (peft's LoraLayer.set_scale): 0 is the base model, 1 the
    adapted one. A scale rather than peft's disable_adapters, which would also clear the adapter's
    requires_grad and so hide it from the optimiser."""
    from peft.tuners.lora import LoraLayer

    for module in unet.modules():
        if isinstance(module, LoraLayer):
            for adapter in module.active_adapters:
                module.set_scale(adapter, scale)


def add_lora(unet: nn.Module, rank: int, target_modules: Sequence[str] = LORA_TARGET_MODULES) -> list[nn.Parameter]:
    """Add a LoRA adapter of `rank` to `unet`'s attention projections (peft), at scale 0 (off);
    -> its parameters, in fp32 (trained with AdamW even when the base weights are fp16)."""
    from peft import LoraConfig

    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(target_modules))
    )
    params = [p for name, p in unet.named_parameters() if "lora_" in name]
    if not params:
        raise ValueError(f"no attention projection named {list(target_modules)} in the UNet: nothing for LoRA to adapt")
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    set_lora_scale(unet, 0.0)
    return params


@contextmanager
def lora_pass(unet: nn.Module, camera_embedding: CameraEmbedding) -> Iterator[None]:
    """Within: `unet` runs as the LoRA copy (LoRA scale 1, the camera embedding as its class
    embedding, so forward needs `class_labels` = c2w (B, 16)); after: as it was (scale 0)."""
    previous = unet.class_embedding
    unet.class_embedding = camera_embedding
    set_lora_scale(unet, 1.0)
    try:
        yield
    finally:
        set_lora_scale(unet, 0.0)
        unet.class_embedding = previous


def zero_cameras_with_probability(c2w: Tensor, probability: float, generator: torch.Generator | None = None) -> Tensor:
    """c2w (B, 16) with each row zeroed with `probability`: the LoRA copy also learns the
    camera-free score, which the camera CFG of eps_est subtracts."""
    keep = torch.rand(c2w.shape[0], device=c2w.device, generator=generator) >= probability
    return c2w * keep[:, None].to(c2w.dtype)
