"""What `launch.py` does with a composed config: build, then train / validate / test / export.

Kept free of Hydra's decorator so tests and notebooks can call `run(cfg, run_dir)` directly.
The system it runs is a LightningModule that also fills framework.interfaces.RunnableSystem.
"""
from __future__ import annotations

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
from framework.checkpoints import AtomicCheckpointIO, check_fits, check_method, read_checkpoint
from framework.config import ConfigError, check_missing, instantiate
from framework.distributed import process_rank
from framework.run_directory import write_json
from framework.errors import TrainingFailed
from framework.interfaces import RunnableSystem
from framework.nonfinite_guard import NonFiniteGuard
from framework.value_checks import check_config_values


def check_run_config(cfg: DictConfig) -> None:
    """Everything that can be checked before anything heavy is built."""
    check_missing(cfg)
    check_config_values(cfg)
    if cfg.mode != "train" and not cfg.resume:
        raise ConfigError(f"mode={cfg.mode} evaluates a trained model: also pass resume=<path to a .ckpt>")
    if cfg.resume and cfg.weights:
        raise ConfigError("pass resume= (continue a run) or weights= (start a new run from its model), not both")


def read_checkpoints(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Every checkpoint the run names, read and checked to be of this method, before anything heavy is built."""
    found = {}
    for key in ("resume", "weights"):
        if cfg.get(key):
            checkpoint = read_checkpoint(cfg[key], key)
            check_method(checkpoint, Path(cfg[key]), key, cfg, allow_other=key == "weights" and cfg.partial_weights)
            found[key] = checkpoint
    return found


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


def load_weights(system: pl.LightningModule, checkpoint: dict[str, Any], path: str, key: str, cfg: DictConfig) -> None:
    """Model parameters from a checkpoint, nothing else (no optimizer state, no step). It must fill the
    whole model unless partial_weights=true (then the tensors that fit are loaded, and the share said)."""
    partial = key == "weights" and cfg.partial_weights
    comparison = check_fits(system, checkpoint, Path(path), key, cfg, partial=partial)
    state = {name: checkpoint["state_dict"][name] for name in comparison.matched}
    checkpoint = {**checkpoint, "state_dict": state}
    system.on_load_checkpoint(checkpoint)
    system.load_state_dict(checkpoint["state_dict"], strict=not partial)
    print(f"initialised weights from {path}: {comparison.summary()}", flush=True)


def build_trainer(cfg: DictConfig, run_dir: Path) -> pl.Trainer:
    loggers: list[Any] = []
    if cfg.logger.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv_logs", version=""))
    if cfg.logger.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tb_logs", version=""))
    if cfg.logger.wandb:
        from pytorch_lightning.loggers import WandbLogger

        try:
            import wandb  # noqa: F401
        except ImportError as error:
            raise ConfigError("logger.wandb=true needs Weights & Biases: pip install '.[wandb]' (or logger.wandb=false)") from error
        # WANDB_MODE=offline keeps the run in <run>/wandb/ for a later `wandb sync`
        loggers.append(WandbLogger(project=cfg.logger.wandb_project, name=f"{cfg.name}/{run_dir.name}", save_dir=str(run_dir)))
    callbacks: list[pl.Callback] = [
        ConfigSnapshot(cfg, str(run_dir)),
        NonFiniteGuard(cfg.trainer.max_nonfinite_steps),
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
    check_accelerator(t.accelerator)
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
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(run_dir),
        enable_model_summary=False,
        inference_mode=False,  # analytic normals differentiate the density even when evaluating
    )


def check_accelerator(accelerator: str) -> None:
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but no CUDA GPU is visible to torch (torch {torch.__version__}, "
            f"cuda build {torch.version.cuda}). Use trainer.accelerator=cpu, or auto to take a GPU when there is one."
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator=mps but Apple's MPS is not available here; use trainer.accelerator=cpu or auto")


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
    rank = process_rank()
    if rank == 0:
        print(f"run directory: {run_dir}", flush=True)
    pl.seed_everything(cfg.seed + rank, workers=True, verbose=False)  # each DDP rank its own cameras and noise

    checkpoints = read_checkpoints(cfg)

    datamodule = instantiate(cfg.data)
    system: RunnableSystem = instantiate(cfg.system, run_dir=str(run_dir))  # and a pl.LightningModule
    if cfg.weights:
        load_weights(system, checkpoints["weights"], cfg.weights, "weights", cfg)
    elif cfg.resume:
        check_fits(system, checkpoints["resume"], Path(cfg.resume), "resume", cfg)
    elif cfg.mode == "train":
        system.initialise_for_training()
    trainer = build_trainer(cfg, run_dir)

    metrics: dict[str, float] = {}
    start = time.perf_counter()
    if cfg.mode == "train":
        trainer.fit(system, datamodule=datamodule, ckpt_path=cfg.resume)
        metrics["train_seconds"] = time.perf_counter() - start
        stop_if_failed(trainer)
        trainer.test(system, datamodule=datamodule)  # each rank renders its share of the turntable; rank 0 writes it
        if trainer.global_rank != 0:
            return {}  # rank 0 alone exports, scores and writes metrics.json
        metrics.update(system.export())
    elif cfg.mode == "validate":
        trainer.validate(system, datamodule=datamodule, ckpt_path=cfg.resume)
    elif cfg.mode == "test":
        trainer.test(system, datamodule=datamodule, ckpt_path=cfg.resume)
    elif cfg.mode == "export":
        load_weights(system, checkpoints["resume"], cfg.resume, "resume", cfg)
        metrics.update(system.export())
    metrics["total_seconds"] = time.perf_counter() - start
    for logger in trainer.loggers:
        logger.log_metrics({f"final/{k}": v for k, v in metrics.items()}, step=trainer.global_step)
        logger.save()

    write_json(run_dir / "metrics.json", metrics)
    report(metrics, run_dir)
    return metrics


def stop_if_failed(trainer: pl.Trainer) -> None:
    for callback in trainer.callbacks:
        if isinstance(callback, NonFiniteGuard) and callback.failure:
            raise TrainingFailed(callback.failure)


def report(metrics: dict[str, float], run_dir: Path) -> None:
    print(f"\nrun directory: {run_dir}", file=sys.stdout)
    for key, value in metrics.items():
        print(f"  {key:>16s}: {value:.4f}" if isinstance(value, float) else f"  {key:>16s}: {value}")
    sys.stdout.flush()
