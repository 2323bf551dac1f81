"""Checkpoints hold the 3D model and the guidance's trainable part (VSD's LoRA copy), never the frozen prior.

A frozen diffusion prior is gigabytes that its own files already hold; saving it per run would
multiply disk use and slow every checkpoint. Every system with a guidance calls these two from its
`on_save_checkpoint` / `on_load_checkpoint` (`FrozenGuidanceCheckpoints` adds both hooks).
"""
from __future__ import annotations

from typing import Any

from torch import nn

FROZEN_PREFIXES = ("guidance.", "prompt_processor.")


def trainable_guidance_keys(guidance: nn.Module) -> set[str]:
    """State-dict keys (system level, 'guidance.'-prefixed) of the guidance's trainable parameters."""
    trainable = {id(p) for p in guidance.trainable_parameters()}
    return {f"guidance.{n}" for n, p in guidance.named_parameters() if id(p) in trainable}


def drop_frozen_weights(guidance: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Remove the frozen prior's (and prompt processor's) weights from a checkpoint about to be saved."""
    state = checkpoint["state_dict"]
    keep = trainable_guidance_keys(guidance)
    for key in [k for k in state if k.startswith(FROZEN_PREFIXES) and k not in keep]:
        del state[key]


def restore_frozen_weights(system: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Fill a loaded checkpoint's frozen keys from the system itself (its prior was loaded from its own
    files); the guidance's trained weights stay those of the file."""
    state = checkpoint["state_dict"]
    for key, value in system.state_dict().items():
        if key.startswith(FROZEN_PREFIXES):
            state.setdefault(key, value)


class FrozenGuidanceCheckpoints:
    """Mixin (before the LightningModule base) for a system with a `guidance`: its checkpoints hold
    the trainable part only, and loading one fills the frozen part from the system."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        drop_frozen_weights(self.guidance, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_frozen_weights(self, checkpoint)
