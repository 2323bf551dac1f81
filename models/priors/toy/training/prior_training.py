"""Training a diffusion prior through the launcher: what the text-to-image and the view-conditioned
toy priors share.

A prior-training system is a LightningModule the runner (framework/runner.py) drives like any
method, through the same contract (framework/interfaces.py `RunnableSystem`):
`trainer.fit` (checkpoints every N steps, `resume=<ckpt>` continues, `seed` fixes the run),
then `trainer.test`, which samples the final grids and runs the automatic sample check, then
`export()`, which writes the trained prior as a diffusers folder under save/pretrained/ and returns
the check's figures (saved to metrics.json by the runner).

This base class holds the parts that are the same for every prior:
- the DDPM training objective, || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2
  (Ho et al. 2020, Eq. 14, "L_simple"), with t uniform;
- AdamW with a linear warm-up;
- an exponential moving average of the weights (diffusers' EMAModel), kept in checkpoints and
  used for sampling and export: a small prior trained for a few thousand steps samples far
  better from its EMA weights.
Subclasses say which modules train, how a batch becomes (x_0, condition), how to sample and
check, and how to write the folder.
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from framework.value_checks import (
    FieldValueError,
    at_least,
    between,
    check_fields,
    greater_than,
    number_at_least,
    one_of,
    optional,
)
from models.priors.base import diffuse


@dataclass
class PriorTrainingConfig:
    lr: float = 5.0e-4
    weight_decay: float = 0.0
    warmup_steps: int = 200
    lr_decay_start: Optional[int] = None
    """Step from which the learning rate falls along a half cosine to `lr_final_ratio * lr` at
    `lr_decay_end` (and stays there); None keeps it constant after the warm-up. A run resumed from a
    constant-rate checkpoint can anneal this way: a falling rate lets the weights settle."""
    lr_decay_end: Optional[int] = None
    lr_final_ratio: float = 0.0
    ema_decay: float = 0.999
    """Decay of the weights' moving average (with diffusers' EMA warm-up, so early steps average less)."""
    condition_dropout: float = 0.1
    """Share of training examples whose condition is replaced by the unconditional one, so that the
    same network also predicts eps_uncond for classifier-free guidance (Ho & Salimans 2022)."""
    sample_steps: int = 25
    """DDIM steps of the sample grids."""
    sample_guidance_scale: float = 3.0
    """Guidance scale of the sample grids, eps_u + s (eps_c - eps_u)."""
    save_dtype: str = "float16"
    """dtype of the exported weights: float16 (half the size) or float32."""

    def __post_init__(self) -> None:
        check_fields(
            self,
            lr=greater_than(0),
            weight_decay=number_at_least(0),
            warmup_steps=at_least(0),
            lr_decay_start=optional(at_least(0)),
            lr_decay_end=optional(at_least(0)),
            lr_final_ratio=number_at_least(0),
            ema_decay=between(0, 1),
            condition_dropout=between(0, 1),
            sample_steps=at_least(1),
            sample_guidance_scale=greater_than(0),
            save_dtype=one_of("float16", "float32"),
        )
        start, end = self.lr_decay_start, self.lr_decay_end
        if (start is None) != (end is None) or (start is not None and end <= start):
            raise FieldValueError(
                "lr_decay_end", end,
                f"must be given with lr_decay_start and be > it (lr_decay_start={start!r}); or both null, "
                "for a constant rate after the warm-up",
            )


class PriorTrainingSystem(pl.LightningModule):
    def __init__(self, cfg: PriorTrainingConfig, run_dir: Optional[str] = None):
        super().__init__()
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else Path(".")
        self.metrics: dict[str, float] = {}

    # ---- what a prior provides --------------------------------------------------------------
    def trained_modules(self) -> nn.ModuleDict:
        """Every module the optimizer updates (and the EMA averages)."""
        raise NotImplementedError

    def training_loss(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """{"loss": scalar, ...other logged scalars} for one batch."""
        raise NotImplementedError

    def sample_and_check(self, tag: str) -> dict[str, float]:
        """Sample the grids (PNG files under save/), run the automatic check, -> its figures."""
        raise NotImplementedError

    def save_pretrained(self, folder: Path) -> None:
        """Write the prior in diffusers' folder layout."""
        raise NotImplementedError

    # ---- shared machinery ------------------------------------------------------------------
    @property
    def save_dir(self) -> Path:
        return self.run_dir / "save"

    def initialise_for_training(self) -> None:
        """Called by the runner before a fresh run; the EMA starts from the initial weights."""

    def setup_ema(self) -> None:
        """Call at the end of the subclass's __init__, once trained_modules() exists."""
        from diffusers.training_utils import EMAModel

        self.ema = EMAModel(self.trained_modules().parameters(), decay=self.cfg.ema_decay, use_ema_warmup=True)

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Temporarily swap the EMA weights in (sampling, export)."""
        params = list(self.trained_modules().parameters())
        self.ema.to(params[0].device)
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.trained_modules().parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_factor(self, step: int) -> float:
        """Learning rate at `step` over cfg.lr: linear warm-up, then constant or a cosine decay."""
        cfg = self.cfg
        factor = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        if cfg.lr_decay_start is None or step < cfg.lr_decay_start:
            return factor
        progress = min(1.0, (step - cfg.lr_decay_start) / (cfg.lr_decay_end - cfg.lr_decay_start))
        return factor * (cfg.lr_final_ratio + (1.0 - cfg.lr_final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def noised(self, x0: Tensor, alphas_cumprod: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x0 (B, C, H, W) -> (x_t, t (B,) long, eps): the forward process q(x_t | x_0) at uniform t."""
        b = x0.shape[0]
        t = torch.randint(0, alphas_cumprod.shape[0], (b,), device=x0.device)
        eps = torch.randn_like(x0)
        return diffuse(x0, alphas_cumprod.to(x0.device)[t], eps), t, eps

    def drop_mask(self, batch_size: int, device: torch.device) -> Tensor:
        """(B,) bool: which examples train the unconditional branch."""
        return torch.rand(batch_size, device=device) < self.cfg.condition_dropout

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        losses = self.training_loss(batch)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"prior training loss is {loss.item()} at step {self.global_step}: lower system.lr or resume "
                "from the last checkpoint (the checkpoints written so far are intact)"
            )
        for key, value in losses.items():
            self.log(f"train/{key}", value.detach(), prog_bar=key == "loss", on_step=True, on_epoch=False)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ema.step(self.trained_modules().parameters())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])

    @torch.no_grad()
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if self.trainer.sanity_checking or batch_idx > 0:
            return
        with self.ema_weights():
            figures = self.sample_and_check(f"it{self.global_step}")
        for key, value in figures.items():
            if key.count("/") == 1:  # the per-split means; per-prompt figures are in the test's metrics
                self.log(f"val/{key}", float(value), on_step=False, on_epoch=True, batch_size=1)

    @torch.no_grad()
    def test_step(self, batch: Any, batch_idx: int) -> None:
        if batch_idx > 0:
            return
        with self.ema_weights():
            self.metrics = self.sample_and_check(f"it{self.global_step}-final")
        (self.save_dir / "sample_check.json").write_text(json.dumps(self.metrics, indent=2))

    @torch.no_grad()
    def export(self) -> dict[str, float]:
        folder = self.save_dir / "pretrained"
        with self.ema_weights():
            self.save_pretrained(folder)
        print(f"trained prior written to {folder}", flush=True)
        return dict(self.metrics)
