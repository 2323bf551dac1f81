"""Lightning callbacks every run uses: the config snapshot and the training's progress with the losses
(a tqdm bar on a terminal, one line per refresh in a log: `progress_bar`).

(framework/nonfinite_guard.py holds the guard against NaN steps; framework/checkpoints.py the atomic writes.)"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Optional, TextIO

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar

from framework.checkpoints import RUN_RECORD_KEY, run_record
from framework.progress import duration, is_terminal, line_due, progress_line


class ConfigSnapshot(pl.Callback):
    """Writes the composed config (interpolations resolved) to <run>/configs/parsed.yaml.

    Hydra itself stores the config as composed (config.yaml), the overrides and its own settings
    in the same folder. A run resumed in its own directory writes them to configs/resume-<k>/ (Hydra's
    output_subdir then, framework/run_directory.py config_subdir), leaving the first run's in place.
    """

    def __init__(self, cfg: DictConfig, run_dir: str, config_subdir: str = "configs"):
        self.cfg = cfg
        self.path = Path(run_dir) / config_subdir / "parsed.yaml"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.cfg, self.path, resolve=True)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Each checkpoint names the run that wrote it (method, config), so loading it elsewhere is checked."""
        checkpoint[RUN_RECORD_KEY] = run_record(self.cfg)


def short_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The progress bar's metrics as shown: no version number, `train/` dropped, 3 significant digits."""
    metrics = {k: v for k, v in metrics.items() if k != "v_num"}
    return {k.replace("train/", ""): (f"{v:.3g}" if isinstance(v, float) else v) for k, v in metrics.items()}


class LossProgressBar(TQDMProgressBar):
    """tqdm bar on a terminal (it/s is tqdm's own rate) showing the loss terms with short names."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        return short_metrics(super().get_metrics(trainer, pl_module))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Lightning's, with one redraw per refresh: it sets the count (a redraw) and then the losses (a second)."""
        n = batch_idx + 1
        bar = self.train_progress_bar
        if bar is not None and not bar.disable and self._should_update(n, bar.total):
            bar.n = n
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # redraws once, with the new count


class LossLinePrinter(ProgressBar):
    """The training's progress in a log (stdout is a file or a pipe, where a redrawn bar leaves every
    redraw behind): one plain line per refresh,

        step 120/1000  loss_sds 0.123  2.1 it/s  eta 3m05s

    at the first step, every `refresh_rate` steps and at the last; in a long run every `ceil(max_steps /
    max_lines)` steps instead, so a run's log holds about `max_lines` of them. The rate is the steps per
    second since the line before (validation included); the first line has none (its step holds the set-up). A validation says when it ends, and the test
    (the turntable) gets a few lines of its own. Steps count from 0 at a fresh start and go on from the
    checkpoint's step in a resumed run."""

    def __init__(self, refresh_rate: int = 10, max_lines: int = 100, test_lines: int = 4, stream: Optional[TextIO] = None):
        super().__init__()
        self.refresh_rate, self.max_lines, self.test_lines = refresh_rate, max_lines, test_lines
        self.stream = stream
        self._enabled = True
        self._every = refresh_rate
        self._first_step = 0
        self._mark = (0, 0.0)  # (step, time) of the last line
        self._train_start = 0.0
        self._eval_start = 0.0
        self._test_printed = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _write(self, line: str) -> None:
        print(line, file=self.stream if self.stream is not None else sys.stdout, flush=True)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        return short_metrics(super().get_metrics(trainer, pl_module))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._first_step = trainer.global_step
        self._mark = (trainer.global_step, time.perf_counter())
        self._train_start = self._mark[1]
        self._every = self.refresh_rate
        if trainer.max_steps and trainer.max_steps > 0:
            self._every = max(self.refresh_rate, math.ceil(trainer.max_steps / self.max_lines))

    def step_due(self, step: int, max_steps: int) -> bool:
        """Whether training step `step` (1-based, the global step after it) gets a line."""
        return step == self._first_step + 1 or step % self._every == 0 or step == max_steps

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        step, max_steps = trainer.global_step, trainer.max_steps
        if not self._enabled or not self.step_due(step, max_steps):
            return
        now = time.perf_counter()
        last_step, last_time = self._mark
        rate = (step - last_step) / (now - last_time) if now > last_time and step > last_step else math.nan
        if step == self._first_step + 1:
            rate = math.nan  # the first step holds the set-up (an exemplar bank's render): no rate, no eta from it
        self._mark = (step, now)
        self._write(progress_line("step", step, max_steps if max_steps > 0 else None, fields=self.get_metrics(trainer, pl_module),
                                  rate=rate, elapsed=now - self._train_start))  # the last line: `in <training time>`

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and not trainer.sanity_checking:
            views = int(self.total_val_batches) if math.isfinite(self.total_val_batches) else "?"
            self._write(f"validation at step {trainer.global_step}: {views} view{'' if views == 1 else 's'} "
                        f"in {duration(time.perf_counter() - self._eval_start)}")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start = time.perf_counter()
        self._test_printed = 0

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        batches = trainer.num_test_batches
        total = batches[dataloader_idx] if isinstance(batches, list) else batches
        done = batch_idx + 1
        if not self._enabled or not math.isfinite(total) or not line_due(done, int(total), self._test_printed, self.test_lines):
            return
        self._test_printed = done
        elapsed = time.perf_counter() - self._eval_start
        self._write(progress_line("test", done, int(total), unit="views", rate=done / elapsed if elapsed > 0 else math.nan,
                                  rate_unit="views", elapsed=elapsed))


def progress_bar(refresh_rate: int = 10, stream: Any = None) -> ProgressBar:
    """The training's progress: tqdm's bar when stdout is a terminal, LossLinePrinter's lines otherwise."""
    if is_terminal(stream if stream is not None else sys.stdout):
        return LossProgressBar(refresh_rate=refresh_rate)
    return LossLinePrinter(refresh_rate=refresh_rate, stream=stream)
