"""Writing a model folder in diffusers' layout: the counterpart of hf_loading.py for the priors this
project trains (models/priors/toy/) and the tiny random pipelines of the tests."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

# The parts of a DeepFloyd IF stage-I folder, as model_index.json lists them (the tiny random
# pipeline and the text-to-image toy prior both write this layout).
IF_STAGE_I_PARTS: dict[str, tuple[str, str]] = {
    "unet": ("diffusers", "UNet2DConditionModel"),
    "scheduler": ("diffusers", "DDPMScheduler"),
    "text_encoder": ("transformers", "T5EncoderModel"),
    "tokenizer": ("transformers", "T5Tokenizer"),
}


def save_module_as(module: nn.Module, folder: Path, dtype: torch.dtype) -> None:
    """module.save_pretrained(folder) as safetensors in `dtype` (fp16 halves the files); the module
    keeps its own dtype afterwards."""
    own = next(module.parameters()).dtype
    module.to(dtype)
    try:
        module.save_pretrained(folder, safe_serialization=True)
    finally:
        module.to(own)


def write_model_index(root: Path, class_name: str, parts: dict[str, Any]) -> None:
    """model_index.json: the pipeline class and, per subfolder, [library, class] (or any JSON value)."""
    import diffusers

    index = {"_class_name": class_name, "_diffusers_version": diffusers.__version__}
    index.update({name: list(value) if isinstance(value, tuple) else value for name, value in parts.items()})
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
