"""The trained text-to-image toy prior: an IF-stage-I-like pixel UNet, a small T5 text encoder and a
tokenizer over the toy vocabulary, saved in diffusers' folder layout.

It is built from the same classes as DeepFloyd IF stage I (UNet2DConditionModel with
SimpleCrossAttn blocks and a text projection, T5EncoderModel, T5Tokenizer, DDPMScheduler with a
cosine schedule, epsilon prediction), so `DeepFloydIFPrior` and `DeepFloydIFPromptProcessor` load
and use it unchanged; only the sizes differ.

Resolution 32x32, not IF's 64x64: the toy scenes are flat-coloured, smoothly shaded primitives
whose colour and silhouette are clear at 32², the SDS path resizes renders to the UNet's own size
anyway, and on the 2-core CPU a training step at 32² costs a quarter of one at 64², which is what
makes training the prior within the hour possible.

The tokenizer knows whole words only (the toy grammar's words plus the view suffixes), no letters:
a word outside the vocabulary becomes <unk>, which the prompt processor rejects with a clear error
(models/prompt_processors/text.py) instead of silently embedding a different prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List

import torch

from models.priors.hf_saving import IF_STAGE_I_PARTS, save_module_as, write_model_index
from models.priors.toy.scenes import COLOURS, SHAPES

# Every word of the toy grammar and of the view-dependent suffixes ("<prompt>, front view").
TOY_VOCABULARY: tuple[str, ...] = (
    ("a", "an", "on", "top", "of") + tuple(COLOURS) + SHAPES + ("side", "front", "backside", "overhead", "view")
)
PUNCTUATION: tuple[str, ...] = (",", ".")
MAX_TOKENS = 77  # what DeepFloydIFPromptProcessor pads to (IF's pipelines use 77)


@dataclass
class ToyTextPriorArchitecture:
    sample_size: int = 32
    block_out_channels: List[int] = field(default_factory=lambda: [32, 64, 128])
    """UNet widths per resolution (32², 16², 8²); cross-attention at 16² and 8² and in the middle."""
    layers_per_block: int = 1
    attention_head_dim: int = 32
    text_width: int = 64
    """T5 d_model: the width of the embeddings the UNet cross-attends to (after its text projection)."""
    text_layers: int = 2
    text_heads: int = 4
    text_ff: int = 128


def toy_tokenizer():
    """A T5Tokenizer (Unigram, as T5's sentencepiece model) whose pieces are the toy words only."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -8.0)]
    pieces += [("▁" + w, -1.0) for w in TOY_VOCABULARY] + [(p, -1.0) for p in PUNCTUATION]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=MAX_TOKENS)


def build_text_to_image(arch: ToyTextPriorArchitecture, seed: int = 0) -> dict[str, Any]:
    """Randomly initialised parts -> {"unet", "text_encoder", "tokenizer", "scheduler"}."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    channels = tuple(arch.block_out_channels)
    n_attn = len(channels) - 1
    unet = UNet2DConditionModel(
        sample_size=arch.sample_size,
        in_channels=3,
        out_channels=3,  # IF also predicts a variance (6 channels); SDS reads only the first 3, so we skip it
        layers_per_block=arch.layers_per_block,
        block_out_channels=channels,
        down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * n_attn,
        up_block_types=("SimpleCrossAttnUpBlock2D",) * n_attn + ("ResnetUpsampleBlock2D",),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        cross_attention_dim=channels[1],
        encoder_hid_dim=arch.text_width,
        encoder_hid_dim_type="text_proj",
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
        attention_head_dim=arch.attention_head_dim,
        norm_num_groups=min(32, channels[0]),
        resnet_time_scale_shift="scale_shift",
    )
    tokenizer = toy_tokenizer()
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=arch.text_width,
            d_kv=arch.text_width // arch.text_heads,
            d_ff=arch.text_ff,
            num_layers=arch.text_layers,
            num_heads=arch.text_heads,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="epsilon", variance_type="fixed_small")
    return {"unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def tokenize(tokenizer: Any, prompts: list[str]) -> dict[str, torch.Tensor]:
    """Exactly as DeepFloydIFPromptProcessor tokenizes: padded to MAX_TOKENS, with the attention mask."""
    return tokenizer(
        prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True, add_special_tokens=True, return_tensors="pt"
    )


def save_text_to_image_folder(root: str | Path, parts: dict[str, Any], dtype: torch.dtype = torch.float16) -> Path:
    """Write the parts in diffusers' IF layout; network weights as safetensors in `dtype`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("unet", "text_encoder"):
        save_module_as(parts[name], root / name, dtype)
    parts["tokenizer"].save_pretrained(root / "tokenizer")
    parts["scheduler"].save_pretrained(root / "scheduler")
    write_model_index(root, "IFPipeline", IF_STAGE_I_PARTS)
    return root
