"""Training the text-to-image toy prior (models/priors/toy/text_prior.py) through the launcher.

    python launch.py --config-name train-toy-text-prior

The UNet and the small T5 encoder train together on toy renders and their captions
(models/priors/toy/image_data.py) with the DDPM objective and condition dropout
(models/priors/toy/training/prior_training.py).
The unconditional branch is the embedding of the empty prompt, which is what the prompt processor's
default negative prompt "" embeds, so classifier-free guidance at use matches training.

Samples are drawn with DDIM (Song et al. 2021) under classifier-free guidance, for trained and for
held-out prompts, saved as PNG grids and checked against exemplar renders
(models/priors/toy/training/sample_check.py). The exported folder loads with DeepFloydIFPrior.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from framework.value_checks import at_least, check_fields
from framework.video import save_image
from models.guidance.cfg import classifier_free_guidance
from models.priors.toy.training.sample_check import SampleCheck, summarise
from models.priors.toy.scenes import HELD_OUT_SINGLE_PROMPTS
from models.priors.toy.text_prior import (
    ToyTextPriorArchitecture,
    build_text_to_image,
    save_text_to_image_folder,
    tokenize,
)
from models.priors.toy.training.prior_training import PriorTrainingConfig, PriorTrainingSystem

TRAINED_SINGLES = ["a red cube", "a green sphere", "a blue cone", "a yellow torus", "a purple cylinder"]


@dataclass
class ToyTextPriorTrainingConfig(PriorTrainingConfig):
    _target_: str = "models.priors.toy.training.train_text_prior.ToyTextPriorTraining"
    architecture: ToyTextPriorArchitecture = field(default_factory=ToyTextPriorArchitecture)
    trained_prompts: List[str] = field(default_factory=lambda: list(TRAINED_SINGLES))
    """Prompts the prior saw, sampled and checked at validation and at the end."""
    held_out_prompts: List[str] = field(default_factory=lambda: list(HELD_OUT_SINGLE_PROMPTS))
    """Prompts it never saw (TOYWORLD.md's held-out single shapes, models/priors/toy/scenes.py)."""
    samples_per_prompt: int = 8
    sample_seed: int = 0
    n_check_exemplars: int = 64
    check_cameras: Optional[Any] = None
    """Camera ranges of the sample check's exemplars (a ToyDatasetConfig node); the training config
    points it at the training data's (${data.dataset}). None: the toy method configs' ranges."""
    init_seed: Optional[int] = None
    """Seed of the initial weights; None: the run's seed."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, samples_per_prompt=at_least(1), n_check_exemplars=at_least(1))


class ToyTextPriorTraining(PriorTrainingSystem):
    def __init__(self, cfg: ToyTextPriorTrainingConfig, run_dir: Optional[str] = None, **runtime_objects: Any):
        super().__init__(cfg, run_dir)
        seed = cfg.init_seed if cfg.init_seed is not None else torch.initial_seed() % (2**31)
        parts = build_text_to_image(cfg.architecture, seed=seed)
        self.unet: nn.Module = parts["unet"]
        self.text_encoder: nn.Module = parts["text_encoder"]
        self.tokenizer = parts["tokenizer"]
        self.scheduler = parts["scheduler"]
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.float().clone(), persistent=False)
        self.checker = SampleCheck(n_exemplars=cfg.n_check_exemplars, resolution=cfg.architecture.sample_size, cameras=cfg.check_cameras)
        self.setup_ema()

    def trained_modules(self) -> nn.ModuleDict:
        return nn.ModuleDict({"unet": self.unet, "text_encoder": self.text_encoder})

    def embed(self, prompts: list[str]) -> Tensor:
        """prompts (N,) -> (N, 77, D), as DeepFloydIFPromptProcessor embeds them."""
        tokens = tokenize(self.tokenizer, prompts)
        return self.text_encoder(tokens.input_ids.to(self.device), attention_mask=tokens.attention_mask.to(self.device))[0]

    def training_loss(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        x0 = batch["images"]  # (B, 3, R, R) in [-1, 1]
        drop = self.drop_mask(x0.shape[0], x0.device)
        prompts = ["" if d else p for p, d in zip(batch["prompts"], drop.tolist())]
        x_t, t, eps = self.noised(x0, self.alphas_cumprod)
        eps_hat = self.unet(x_t, t, encoder_hidden_states=self.embed(prompts)).sample
        return {"loss": torch.nn.functional.mse_loss(eps_hat, eps)}

    @torch.no_grad()
    def sample(self, prompt: str, n: int, seed: int) -> Tensor:
        """n DDIM samples of `prompt` under CFG -> rgb (n, R, R, 3) in [0, 1]."""
        from diffusers import DDIMScheduler

        ddim = DDIMScheduler.from_config(self.scheduler.config)
        ddim.set_timesteps(self.cfg.sample_steps)
        size = self.cfg.architecture.sample_size
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 3, size, size, generator=g).to(self.device)
        emb = self.embed([prompt, ""])
        cond, uncond = emb[0:1].expand(n, -1, -1), emb[1:2].expand(n, -1, -1)
        for t in ddim.timesteps:
            tt = torch.full((2 * n,), int(t), device=self.device, dtype=torch.long)
            eps_c, eps_u = self.unet(torch.cat([x, x]), tt, encoder_hidden_states=torch.cat([cond, uncond])).sample.chunk(2)
            x = ddim.step(classifier_free_guidance(eps_u, eps_c, self.cfg.sample_guidance_scale), t, x).prev_sample
        return ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu()

    def sample_and_check(self, tag: str) -> dict[str, float]:
        was_training = self.training
        self.eval()
        figures: dict[str, float] = {}
        for split, prompts in (("trained", self.cfg.trained_prompts), ("held_out", self.cfg.held_out_prompts)):
            rows, per_prompt = [], {}
            for i, prompt in enumerate(prompts):
                samples = self.sample(prompt, self.cfg.samples_per_prompt, self.cfg.sample_seed + i)
                per_prompt[prompt] = self.checker.check(prompt, samples)
                exemplars = self.checker.exemplars(prompt)[: self.cfg.samples_per_prompt]
                rows.append(torch.cat([*exemplars[:2], torch.ones_like(samples[0]), *samples], dim=1))  # 2 truths | gap | samples
            save_image(self.save_dir / f"{tag}-samples-{split}.png", torch.cat(rows, dim=0).numpy().astype(np.float32))
            figures.update(summarise(per_prompt, split))
            figures.update({f"{split}/{p}/{k}": v for p, f in per_prompt.items() for k, v in f.items()})
        self.train(was_training)
        return figures

    def save_pretrained(self, folder: Path) -> None:
        dtype = torch.float16 if self.cfg.save_dtype == "float16" else torch.float32
        save_text_to_image_folder(
            folder,
            {"unet": self.unet, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer, "scheduler": self.scheduler},
            dtype=dtype,
        )
