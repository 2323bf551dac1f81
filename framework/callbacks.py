"""Lightning callbacks every run uses: the config snapshot and a progress bar with the losses.

(framework/nonfinite_guard.py holds the guard against NaN steps; framework/checkpoints.py the atomic writes.)"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import TQDMProgressBar

from framework.checkpoints import RUN_RECORD_KEY, run_record


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


class LossProgressBar(TQDMProgressBar):
    """tqdm bar (it/s is tqdm's own rate) showing the loss terms with short names."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return {k.replace("train/", ""): (f"{v:.3g}" if isinstance(v, float) else v) for k, v in metrics.items()}
