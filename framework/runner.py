"""What `launch.py` does with a composed config: build, then train / validate / test / export.

Kept free of Hydra's decorator so tests and notebooks can call `run(cfg, run_dir)` directly.
The system it runs is a LightningModule that also fills framework.interfaces.RunnableSystem.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from framework.callbacks import ConfigSnapshot, LossProgressBar
from framework.config import ConfigError, check_missing, instantiate
from framework.interfaces import RunnableSystem
from framework.value_checks import check_config_values


def check_run_config(cfg: DictConfig) -> None:
    """Everything that can be checked before anything heavy is built."""
    check_missing(cfg)
    check_config_values(cfg)
    if cfg.mode != "train" and not cfg.resume:
        raise ConfigError(f"mode={cfg.mode} evaluates a trained model: also pass resume=<path to a .ckpt>")
    for key in ("resume", "weights"):
        path = cfg.get(key)
        if path and not Path(path).is_file():
            raise ConfigError(f"{key}={path}: no such checkpoint file (runs keep theirs in outputs/<name>/<run>/ckpts/)")


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"cannot write the run directory {run_dir} ({error.strerror}). "
            "Choose a writable place, e.g. hydra.run.dir=/tmp/my-run, or fix its permissions."
        ) from error


def load_weights(system: pl.LightningModule, path: str, strict: bool) -> None:
    """Model parameters from a checkpoint, nothing else (no optimizer state, no step)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    system.on_load_checkpoint(checkpoint)
    result = system.load_state_dict(checkpoint["state_dict"], strict=strict)
    print(f"initialised weights from {path} (missing: {len(result.missing_keys)}, unexpected: {len(result.unexpected_keys)})")


def build_trainer(cfg: DictConfig, run_dir: Path) -> pl.Trainer:
    loggers: list[Any] = []
    if cfg.logger.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv_logs", version=""))
    if cfg.logger.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tb_logs", version=""))
    if cfg.logger.wandb:
        from pytorch_lightning.loggers import WandbLogger

        loggers.append(WandbLogger(project=cfg.logger.wandb_project, name=f"{cfg.name}/{run_dir.name}", save_dir=str(run_dir)))
    callbacks: list[pl.Callback] = [
        ConfigSnapshot(cfg, str(run_dir)),
        ModelCheckpoint(
            dirpath=str(run_dir / "ckpts"),
            filename="step{step:06d}",
            auto_insert_metric_name=False,
            every_n_train_steps=cfg.checkpoint.every_n_train_steps,
            save_last=cfg.checkpoint.save_last,
            save_top_k=cfg.checkpoint.save_top_k,
        ),
    ]
    if cfg.trainer.enable_progress_bar:
        callbacks.append(LossProgressBar(refresh_rate=10))
    t = cfg.trainer
    return pl.Trainer(
        max_steps=t.max_steps,
        val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=None,
        log_every_n_steps=t.log_every_n_steps,
        num_sanity_val_steps=t.num_sanity_val_steps,
        enable_progress_bar=t.enable_progress_bar,
        precision=resolve_precision(t.precision, t.accelerator),
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
        inference_mode=False,  # analytic normals differentiate the density even when evaluating
    )


def resolve_precision(precision: Any, accelerator: str) -> Any:
    """Method configs ask for threestudio's '16-mixed'; fp16 autocast exists only on CUDA, so a CPU run
    uses '32-true' instead (and says so) rather than failing."""
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and str(precision) in ("16-mixed", "16", "16-true"):
        print(f"note: trainer.precision={precision} needs CUDA; this CPU run uses 32-true", flush=True)
        return "32-true"
    return precision


def run(cfg: DictConfig, run_dir: str | os.PathLike) -> dict[str, float]:
    check_run_config(cfg)
    run_dir = Path(run_dir)
    check_writable(run_dir)
    print(f"run directory: {run_dir}", flush=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data)
    system: RunnableSystem = instantiate(cfg.system, run_dir=str(run_dir))  # and a pl.LightningModule
    if cfg.weights:
        load_weights(system, cfg.weights, strict=False)
    elif cfg.mode == "train" and not cfg.resume:
        system.initialise_for_training()
    trainer = build_trainer(cfg, run_dir)

    metrics: dict[str, float] = {}
    start = time.perf_counter()
    if cfg.mode == "train":
        trainer.fit(system, datamodule=datamodule, ckpt_path=cfg.resume)
        metrics["train_seconds"] = time.perf_counter() - start
        trainer.test(system, datamodule=datamodule)
        metrics.update(system.export())
    elif cfg.mode == "validate":
        trainer.validate(system, datamodule=datamodule, ckpt_path=cfg.resume)
    elif cfg.mode == "test":
        trainer.test(system, datamodule=datamodule, ckpt_path=cfg.resume)
    elif cfg.mode == "export":
        load_weights(system, cfg.resume, strict=True)
        metrics.update(system.export())
    metrics["total_seconds"] = time.perf_counter() - start
    for logger in trainer.loggers:
        logger.log_metrics({f"final/{k}": v for k, v in metrics.items()}, step=trainer.global_step)
        logger.save()

    with open(run_dir / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=2)
    report(metrics, run_dir)
    return metrics


def report(metrics: dict[str, float], run_dir: Path) -> None:
    print(f"\nrun directory: {run_dir}", file=sys.stdout)
    for key, value in metrics.items():
        print(f"  {key:>16s}: {value:.4f}" if isinstance(value, float) else f"  {key:>16s}: {value}")
    sys.stdout.flush()
