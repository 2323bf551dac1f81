"""Tiny randomly initialised Stable Diffusion, DeepFloyd IF and Zero-1-to-3 folders, of the real classes.

The real weights can't be fetched on machines without network access (this project's CI), but
the code that loads and runs them must still be exercised. These builders write folders in
diffusers' layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) whose
parts are the same classes as the released models, only a few kilobytes large, with a tokenizer
written from a small vocabulary. The tests load them through the project's own loading code, and
a user can smoke-test an install without weights:

    python -m models.priors.tiny_pipelines sd /tmp/tiny-sd
    python launch.py --config-name dreamfusion-sd system.prompt="a red cube" trainer.max_steps=2 \
        system.guidance.prior.pretrained_model_name_or_path=/tmp/tiny-sd system.geometry.isosurface_threshold=auto

(`zero123` / `stable-zero123` write a Zero-1-to-3 folder, for `system.guidance.prior.pretrained_model_name_or_path`
of the zero123 guidance options, with `system.guidance.prior.pose_convention` set to match.)

Outputs of such a run are noise, by construction.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from models.priors.hf_saving import IF_STAGE_I_PARTS, write_model_index

# Words the tiny tokenizers know as whole tokens; anything else is spelt letter by letter (CLIP)
# or maps to <unk> piece by piece (T5). Enough for view-dependent toy prompts.
VOCABULARY = (
    "a an the of on top red green blue yellow white black sphere cube cylinder cone torus "
    "front side backside overhead view hamburger"
).split()
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [",", "."]
TEXT_WIDTH = 32  # hidden size of the tiny text encoders = the UNets' cross-attention width


def clip_tokenizer(words: list[str] = VOCABULARY):
    """A CLIPTokenizer over letters plus whole-word merges for `words` (byte-level BPE, as CLIP)."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for c in LETTERS:
            vocab.setdefault(c + suffix, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]  # CLIP marks the end of a word with </w>
        current = pieces[0]
        for piece in pieces[1:]:
            merges.append((current, piece))
            current += piece
            vocab.setdefault(current, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def t5_tokenizer(words: list[str] = VOCABULARY):
    """A T5Tokenizer (Unigram, as T5's sentencepiece model) over `words` and single letters."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [("▁" + w, -1.0) for w in words] + [(c, -5.0) for c in LETTERS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=77)


def save_tiny_stable_diffusion(root: str | Path, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """A Stable-Diffusion-2-style folder: latent UNet (8² latents), VAE (16² images), CLIP text encoder."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root = Path(root)
    torch.manual_seed(seed)
    UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=32,
    ).save_pretrained(root / "unet")
    AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=16,
    ).save_pretrained(root / "vae")
    DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=prediction_type
    ).save_pretrained(root / "scheduler")
    tokenizer = clip_tokenizer()
    tokenizer.save_pretrained(root / "tokenizer")
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_WIDTH,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).save_pretrained(root / "text_encoder")
    write_model_index(
        root,
        "StableDiffusionPipeline",
        {
            "unet": ("diffusers", "UNet2DConditionModel"),
            "vae": ("diffusers", "AutoencoderKL"),
            "scheduler": ("diffusers", "DDPMScheduler"),
            "text_encoder": ("transformers", "CLIPTextModel"),
            "tokenizer": ("transformers", "CLIPTokenizer"),
        },
    )
    return root


def save_tiny_deepfloyd_if(root: str | Path, seed: int = 0) -> Path:
    """A DeepFloyd-IF-stage-I-style folder: pixel UNet (16² images, 6 output channels = eps and
    learned variance, T5 projection), T5 encoder, cosine schedule with learned-range variance."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    root = Path(root)
    torch.manual_seed(seed)
    UNet2DConditionModel(
        sample_size=16,
        in_channels=3,
        out_channels=6,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("SimpleCrossAttnDownBlock2D", "ResnetDownsampleBlock2D"),
        up_block_types=("ResnetUpsampleBlock2D", "SimpleCrossAttnUpBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        cross_attention_dim=64,
        encoder_hid_dim=TEXT_WIDTH,
        encoder_hid_dim_type="text_proj",
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
        attention_head_dim=8,
        norm_num_groups=32,
        resnet_time_scale_shift="scale_shift",
    ).save_pretrained(root / "unet")
    DDPMScheduler(
        beta_schedule="squaredcos_cap_v2", variance_type="learned_range", prediction_type="epsilon"
    ).save_pretrained(root / "scheduler")
    tokenizer = t5_tokenizer()
    tokenizer.save_pretrained(root / "tokenizer")
    T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=TEXT_WIDTH,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    ).save_pretrained(root / "text_encoder")
    write_model_index(root, "IFPipeline", IF_STAGE_I_PARTS)
    return root


def save_tiny_zero123(
    root: str | Path, pose_convention: str = "zero123", seed: int = 0, projection: str = "cc_projection"
) -> Path:
    """A Zero-1-to-3-style folder in latent space like the real model: an 8-input-channel UNet on 4² latents
    (noisy latent + the reference view's latent), a VAE that downsamples 8x (32² images, as 256² -> 32² for the
    real one), a CLIP vision encoder with projection, the pose projection, a DDPM epsilon schedule with
    Zero-1-to-3's betas (scaled-linear 0.00085-0.012), and a CLIPImageProcessor with CLIP's statistics.

    `projection`: "cc_projection" writes the community Zero1to3StableDiffusionPipeline layout (kxic/zero123-xl);
    "clip_camera_projection" DreamGaussian's Zero123Pipeline layout (ashawkey/*-diffusers). Stable Zero123 has
    the same parts as zero123-xl; only its pose vector differs, so `pose_convention` changes no weight: it is
    written into model_index.json as "pose_convention", which Zero123Prior checks against its config (the
    published folders carry no such entry; there the config alone decides).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from models.priors.zero123 import CLIP_MEAN, CLIP_STD, PROJECTION_LAYOUTS, check_pose_convention

    check_pose_convention(pose_convention)
    if projection not in PROJECTION_LAYOUTS:
        raise ValueError(f"projection {projection!r} is not one of {list(PROJECTION_LAYOUTS)}")
    root = Path(root)
    torch.manual_seed(seed)
    width, image_size, latent_size = 32, 32, 4  # cross-attention width = CLIP projection width, as 768 in the real one
    UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=8,  # noisy latent (4) + the reference view's latent (4), Zero-1-to-3's channel concatenation
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=width,
        attention_head_dim=2,
        norm_num_groups=8,
    ).save_pretrained(root / "unet")
    AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),  # four blocks: 8x down, as Stable Diffusion 1.x's VAE
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=image_size,
    ).save_pretrained(root / "vae")
    CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            image_size=image_size,
            patch_size=8,
            hidden_size=width,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            projection_dim=width,
        )
    ).save_pretrained(root / "image_encoder")
    if projection == "cc_projection":
        projector = PROJECTION_LAYOUTS[projection](in_features=width + 4, out_features=width)
    else:
        projector = PROJECTION_LAYOUTS[projection](embedding_dim=width, additional_embeddings=4)
    projector.save_pretrained(root / projection)
    DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="epsilon", clip_sample=False
    ).save_pretrained(root / "scheduler")
    CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": image_size}, do_center_crop=True,
        crop_size={"height": image_size, "width": image_size}, do_normalize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD,
    ).save_pretrained(root / "feature_extractor")
    pipeline = "Zero1to3StableDiffusionPipeline" if projection == "cc_projection" else "Zero123Pipeline"
    projection_class = "CCProjection" if projection == "cc_projection" else "CLIPCameraProjection"
    write_model_index(
        root,
        pipeline,
        {
            "unet": ("diffusers", "UNet2DConditionModel"),
            "vae": ("diffusers", "AutoencoderKL"),
            "image_encoder": ("transformers", "CLIPVisionModelWithProjection"),
            projection: ("models.priors.zero123", projection_class),
            "scheduler": ("diffusers", "DDPMScheduler"),
            "feature_extractor": ("transformers", "CLIPImageProcessor"),
            "requires_safety_checker": False,
            "pose_convention": pose_convention,
        },
    )
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["sd", "if", "zero123", "stable-zero123"])
    parser.add_argument("folder")
    args = parser.parse_args()
    if args.kind in ("zero123", "stable-zero123"):
        print(save_tiny_zero123(args.folder, pose_convention=args.kind))
        return
    builder = save_tiny_stable_diffusion if args.kind == "sd" else save_tiny_deepfloyd_if
    print(builder(args.folder))


if __name__ == "__main__":
    main()
