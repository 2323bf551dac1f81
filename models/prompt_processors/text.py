"""Text prompt processors for Stable Diffusion (CLIP) and DeepFloyd IF (T5).

At construction the processor embeds, once, the prompt, the negative prompt and the four (six with
diagonal views) view-dependent prompts ("<prompt>, front view", ...; per-view overrides allowed), through the
on-disk cache (models/prompt_processors/embedding_cache.py) keyed by model and prompt. Only on a
cache miss is the text encoder loaded, and it is released right after embedding (a T5-XXL would
otherwise hold ~9 GB for the whole run). Each step, `forward()` returns a `TextCondition` that
picks the rows for the batch's cameras (view-dependent prompting, Perp-Neg).
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from framework.config import ConfigError
from framework.interfaces import PromptProcessor
from framework.value_checks import FieldValueError, at_least, between, check_fields, list_of, number, one_of, optional
from models.priors.hf_loading import ModelSource, looks_like_path, resolve_local
from models.prompt_processors.embedding_cache import EmbeddingCache
from models.prompt_processors.text_condition import PerpNegFunctions, TextCondition
from models.prompt_processors.view_dependent import ViewDirections, view_prompts


TEXT_SUBFOLDERS = ("text_encoder", "tokenizer")


def text_model_key(family: str, name_or_path: str) -> str:
    """Cache key of a text encoder: the processor family and the hub id, or for a local folder (found
    as the loading code finds it: from the working directory, else the project root) its absolute
    path and the size and modification time of every file in its text_encoder/ and tokenizer/.

    A prior retrained and saved over its old folder (as the toy priors are) changes the key, so the
    cache never serves embeddings of an encoder that is no longer there. (Keyed by path alone, it
    did: runs paired the retrained toy UNet with the first stage's text embeddings.)"""
    folder = Path(resolve_local(name_or_path)) if looks_like_path(name_or_path) else None
    if folder is None or not folder.is_dir():
        return f"{family}:{name_or_path}"
    files = sorted(f for sub in TEXT_SUBFOLDERS if (folder / sub).is_dir() for f in (folder / sub).rglob("*") if f.is_file())
    stats = [(f.relative_to(folder), f.stat()) for f in files]
    stamp = ";".join(f"{name}:{st.st_size}:{st.st_mtime_ns}" for name, st in stats)
    return f"{family}:{folder.resolve()}:{stamp}"


def default_text_cache_dir() -> Path:
    """$TOY3D_CACHE/text_embeddings, else ~/.cache/toy3d/text_embeddings."""
    env = os.environ.get("TOY3D_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "toy3d") / "text_embeddings"


@dataclass
class TextPromptProcessorConfig:
    prompt: str = "???"
    negative_prompt: str = ""
    """Embedded as the 'unconditional' branch of classifier-free guidance ('' = truly unconditional)."""
    pretrained_model_name_or_path: str = "???"
    """The model whose text encoder / tokenizer (text_encoder/, tokenizer/) embed the prompts."""
    local_files_only: bool = True
    view_dependent_prompting: bool = True
    """Append ', front view' / ', side view' / ', backside view' / ', overhead view' by camera (DreamFusion 3.2)."""
    front_threshold: float = 45.0
    """|azimuth| below this (degrees) is a front view."""
    back_threshold: float = 45.0
    """|azimuth| above 180 minus this is a back view."""
    overhead_threshold: float = 60.0
    """elevation above this (degrees) is an overhead view."""
    diagonal_threshold: Optional[float] = None
    """None: the four DreamFusion views. Else also ', front side view' / ', backside side view' where
    |azimuth| is within this of 45 / 135 degrees: only for a prior trained with those words (the toy prior)."""
    view_prompt_overrides: Dict[str, str] = field(default_factory=dict)
    """Full replacement texts for some views, e.g. {front: "a corgi's face"}; keys side|front|back|overhead
    (and front_side|back_side with diagonal views)."""
    use_perp_neg: bool = False
    """Perp-Neg (Armandpour et al. 2023): push away from the other views' prompts (fixes Janus faces).
    The guidance's scale keeps its one meaning; threestudio's Perp-Neg scale s' is s' here, not s' + 1
    as for its plain CFG (models/guidance/cfg.py)."""
    perp_neg_f_sb: List[float] = field(default_factory=lambda: [1.0, 0.5, -0.606])
    perp_neg_f_fsb: List[float] = field(default_factory=lambda: [1.0, 0.5, 0.967])
    perp_neg_f_fs: List[float] = field(default_factory=lambda: [4.0, 0.5, -2.426])
    perp_neg_f_sf: List[float] = field(default_factory=lambda: [4.0, 0.5, -2.426])
    use_cache: bool = True
    cache_dir: Optional[str] = None
    """Where embeddings are cached; None: $TOY3D_CACHE/text_embeddings or ~/.cache/toy3d/text_embeddings."""
    text_encoder_device: str = "auto"
    """auto (CUDA when present) | cpu (keeps a large T5 off the GPU: slower, less GPU memory) | cuda."""
    half_precision_text_encoder: bool = True
    """fp16 text encoder on CUDA (always fp32 on CPU)."""

    def __post_init__(self) -> None:
        perp_neg_function = list_of(number(), length=3)  # (a, b, c) of a exp(-b r) + c
        check_fields(
            self,
            front_threshold=between(0, 180),
            back_threshold=between(0, 180),
            overhead_threshold=between(-90, 90),
            diagonal_threshold=optional(between(0, 180)),
            perp_neg_f_sb=perp_neg_function,
            perp_neg_f_fsb=perp_neg_function,
            perp_neg_f_fs=perp_neg_function,
            perp_neg_f_sf=perp_neg_function,
            text_encoder_device=one_of("auto", "cpu", "cuda"),
        )
        if self.use_perp_neg and self.diagonal_threshold is not None:
            raise FieldValueError(
                "use_perp_neg", True,
                "must be false with diagonal views: Perp-Neg mixes the front / side / back prompts only "
                "(set diagonal_threshold=null to use it)",
            )


class TextPromptProcessor(PromptProcessor):
    """Subclasses give the model family: `what`, and how to load and run its text encoder."""

    what = "text encoder"

    def __init__(self, cfg: TextPromptProcessorConfig, **runtime_objects: Any) -> None:
        super().__init__()
        self.cfg = cfg
        if not str(cfg.prompt).strip():
            raise ConfigError("system.prompt is empty: give a text prompt, e.g. system.prompt=\"a hamburger\"")
        self.directions = ViewDirections(
            cfg.front_threshold, cfg.back_threshold, cfg.overhead_threshold, cfg.diagonal_threshold
        )
        try:
            self.view_texts = view_prompts(cfg.prompt, dict(cfg.view_prompt_overrides), self.directions.diagonal_views)
        except KeyError as error:  # an override for a view that does not exist
            raise ConfigError(f"prompt_processor.view_prompt_overrides: {error.args[0]}") from None
        self.cache = EmbeddingCache(str(cfg.cache_dir or default_text_cache_dir())) if cfg.use_cache else None
        self.encoder_loads = 0
        embeddings = self.embed([cfg.prompt, cfg.negative_prompt, *self.view_texts])  # (2 + V, L, D)
        # Buffers, so Lightning moves them with the system; not persistent: they are recomputed or cached.
        self.register_buffer("text", embeddings[0:1], persistent=False)
        self.register_buffer("uncond", embeddings[1:2], persistent=False)
        self.register_buffer("text_views", embeddings[2:], persistent=False)

    # ---- what a model family provides ------------------------------------------------------
    def load_text_encoder(self, source: ModelSource, dtype: torch.dtype) -> tuple[Any, torch.nn.Module]:
        """-> (tokenizer, text encoder) of the model."""
        raise NotImplementedError

    def encode_prompts(self, tokenizer: Any, encoder: torch.nn.Module, prompts: list[str], device: torch.device) -> Tensor:
        """prompts (N,) -> embeddings (N, L, D), the sequence the UNet cross-attends to."""
        raise NotImplementedError

    # ---- shared -----------------------------------------------------------------------------
    def model_key(self) -> str:
        """Cache key of the model (see `text_model_key`)."""
        return text_model_key(type(self).__name__, str(self.cfg.pretrained_model_name_or_path))

    def embed(self, prompts: list[str]) -> Tensor:
        """prompts (N,) -> float32 CPU embeddings (N, L, D), from the cache where possible."""
        if self.cache is None:
            return self._compute(prompts)
        return self.cache.get_or_compute(self.model_key(), prompts, self._compute)

    def _device(self) -> torch.device:
        wanted = self.cfg.text_encoder_device
        if wanted == "cuda" and not torch.cuda.is_available():
            raise ConfigError("prompt_processor.text_encoder_device=cuda but no CUDA device is available; use auto or cpu")
        return torch.device("cuda" if wanted != "cpu" and torch.cuda.is_available() else "cpu")

    def _compute(self, prompts: list[str]) -> Tensor:
        source = ModelSource(
            self.cfg.pretrained_model_name_or_path,
            what=self.what,
            config_key="system.guidance.prior.pretrained_model_name_or_path",
            subfolders=list(TEXT_SUBFOLDERS),
            local_files_only=self.cfg.local_files_only,
        )
        device = self._device()
        dtype = torch.float16 if (device.type == "cuda" and self.cfg.half_precision_text_encoder) else torch.float32
        tokenizer, encoder = self.load_text_encoder(source, dtype)
        self.encoder_loads += 1
        encoder.to(device).eval().requires_grad_(False)
        with torch.no_grad():
            embeddings = self.encode_prompts(tokenizer, encoder, prompts, device).float().cpu()
        # Free the encoder now: nothing holds it after this frame, so its memory goes back.
        del encoder, tokenizer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return embeddings

    def forward(self) -> TextCondition:
        c = self.cfg
        return TextCondition(
            prompt=c.prompt,
            text=self.text,
            uncond=self.uncond,
            text_views=self.text_views,
            view_dependent=c.view_dependent_prompting,
            directions=self.directions,
            use_perp_neg=c.use_perp_neg,
            perp_neg=PerpNegFunctions(c.perp_neg_f_sb, c.perp_neg_f_fsb, c.perp_neg_f_fs, c.perp_neg_f_sf),
        )


@dataclass
class StableDiffusionPromptProcessorConfig(TextPromptProcessorConfig):
    _target_: str = "models.prompt_processors.text.StableDiffusionPromptProcessor"
    pretrained_model_name_or_path: str = "stabilityai/stable-diffusion-2-1-base"


class StableDiffusionPromptProcessor(TextPromptProcessor):
    """CLIP text encoder: the last hidden states of prompts padded to the tokenizer's 77 tokens."""

    what = "Stable Diffusion text encoder (CLIP)"

    def load_text_encoder(self, source: ModelSource, dtype: torch.dtype) -> tuple[Any, torch.nn.Module]:
        from transformers import AutoTokenizer, CLIPTextModel

        tokenizer = source.load(AutoTokenizer, "tokenizer")
        return tokenizer, source.load(CLIPTextModel, "text_encoder", dtype=dtype)

    def encode_prompts(self, tokenizer: Any, encoder: torch.nn.Module, prompts: list[str], device: torch.device) -> Tensor:
        tokens = tokenizer(
            prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )
        return encoder(tokens.input_ids.to(device))[0]  # (N, 77, D) last_hidden_state


@dataclass
class DeepFloydIFPromptProcessorConfig(TextPromptProcessorConfig):
    _target_: str = "models.prompt_processors.text.DeepFloydIFPromptProcessor"
    pretrained_model_name_or_path: str = "DeepFloyd/IF-I-XL-v1.0"
    max_length: int = 77
    """T5 tokens per prompt (IF's pipelines use 77)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, max_length=at_least(1))


class DeepFloydIFPromptProcessor(TextPromptProcessor):
    """T5 encoder (IF): hidden states of prompts padded to 77 tokens, with the attention mask."""

    what = "DeepFloyd IF text encoder (T5)"

    def load_text_encoder(self, source: ModelSource, dtype: torch.dtype) -> tuple[Any, torch.nn.Module]:
        from transformers import AutoTokenizer, T5EncoderModel

        tokenizer = source.load(AutoTokenizer, "tokenizer")
        return tokenizer, source.load(T5EncoderModel, "text_encoder", dtype=dtype)

    def encode_prompts(self, tokenizer: Any, encoder: torch.nn.Module, prompts: list[str], device: torch.device) -> Tensor:
        check_vocabulary(tokenizer, prompts, str(self.cfg.pretrained_model_name_or_path))
        tokens = tokenizer(
            prompts,
            padding="max_length",
            max_length=self.cfg.max_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        return encoder(tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device))[0]


class UnknownWordsError(ConfigError):
    """A prompt has words the model's tokenizer can only map to <unk> (the toy prior's closed vocabulary)."""


def check_vocabulary(tokenizer: Any, prompts: list[str], model: str) -> None:
    """Raise UnknownWordsError when a prompt tokenizes to <unk>: the model would silently see another
    prompt. T5's real vocabulary covers ordinary text; the toy prior's knows only the toy words."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return
    for prompt in prompts:
        if unk not in tokenizer(prompt).input_ids:
            continue
        unknown = [w for w in prompt.replace(",", " ").replace(".", " ").split() if unk in tokenizer(w).input_ids]
        words = sorted({piece.lstrip("▁") for piece in tokenizer.get_vocab()} - {""})
        known = f" It knows: {' '.join(w for w in words if not w.startswith('<'))}." if len(words) <= 200 else ""
        raise UnknownWordsError(
            f"prompt {prompt!r}: the tokenizer of {model!r} does not know {unknown or 'some characters'} "
            f"(they would become <unk>).{known} Rephrase the prompt (system.prompt, or the negative / view prompts)."
        )
