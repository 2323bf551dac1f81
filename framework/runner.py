"""What `launch.py` does with a composed config: build, then train / validate / test / export.

Kept free of Hydra's decorator so tests and notebooks can call `run(cfg, run_dir)` directly.
The system it runs is a LightningModule that also fills framework.interfaces.RunnableSystem.
"""
from __future__ import annotations

import contextlib
import csv
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.exceptions import SIGTERMException

from framework.allocator import keep_freed_memory
from framework.callbacks import ConfigSnapshot, progress_bar
from framework.checkpoints import AtomicCheckpointIO, check_fits, check_method, read_checkpoint
from framework.config import ConfigError, check_missing, instantiate
from framework.console import closing_block, quiet_library_notices
from framework.progress import announce
from framework.distributed import process_rank
from framework.media_logging import TensorBoardEventsLogger
from framework.run_directory import write_json
from framework.errors import TrainingFailed
from framework.interfaces import RunnableSystem
from framework.live_viewer import LiveViewer, close_viewers
from framework.nonfinite_guard import NonFiniteGuard
from framework.preemption import Preemption
from framework.random_state import RandomState
from framework.report import write_report
from framework.step_times import StepTimes, section
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


class AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing metrics.csv is continued (a resumed run's rows follow
    the first run's) instead of deleted. Rows at or after `from_step` are dropped first: a run resumed from
    an older checkpoint logs those steps again."""

    def __init__(self, log_dir: str, from_step: Optional[int]):
        self._from_step = from_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            keys, rows = list(reader.fieldnames or []), list(reader)
        if self._from_step is not None:
            kept = [r for r in rows if not r.get("step") or int(float(r["step"])) < self._from_step]
            if len(kept) != len(rows):
                with open(path, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=keys)
                    writer.writeheader()
                    writer.writerows(kept)
        self.metrics_keys = keys


class AppendingCSVLogger(CSVLogger):
    def __init__(self, *args: Any, from_step: Optional[int] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._from_step = from_step

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(self.log_dir, self._from_step)
        return self._experiment


def hydra_config_subdir() -> str:
    """Hydra's output_subdir for this run (configs, or configs/resume-<k> for a resumed run), configs without Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return str(HydraConfig.get().output_subdir or "configs") if HydraConfig.initialized() else "configs"


def slurm_environment() -> list[Any]:
    """Under a SLURM batch job: Lightning's SLURM environment, requeueing the job on SIGUSR1 (SLURM's warning
    signal, `#SBATCH --signal=USR1@90`); framework/preemption.py stops the run after the step as well."""
    if "SLURM_JOB_ID" not in os.environ or "SLURM_NTASKS" not in os.environ or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return []
    return [SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR1)]


def build_trainer(cfg: DictConfig, run_dir: Path, resumed_step: Optional[int] = None) -> pl.Trainer:
    loggers: list[Any] = []
    if cfg.logger.csv:
        loggers.append(AppendingCSVLogger(save_dir=str(run_dir), name="csv_logs", version="", from_step=resumed_step))
    if cfg.logger.tensorboard:
        loggers.append(TensorBoardEventsLogger(save_dir=str(run_dir), name="tb_logs", version=""))
    if cfg.logger.wandb:
        from pytorch_lightning.loggers import WandbLogger

        try:
            import wandb  # noqa: F401
        except ImportError as error:
            raise ConfigError("logger.wandb=true needs Weights & Biases: pip install '.[wandb]' (or logger.wandb=false)") from error
        # WANDB_MODE=offline keeps the run in <run>/wandb/ for a later `wandb sync`
        loggers.append(WandbLogger(project=cfg.logger.wandb_project, name=f"{cfg.name}/{run_dir.name}", save_dir=str(run_dir)))
    callbacks: list[pl.Callback] = [
        ConfigSnapshot(cfg, str(run_dir), hydra_config_subdir()),
        NonFiniteGuard(cfg.trainer.max_nonfinite_steps),
        RandomState(),
        Preemption(run_dir),
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
        callbacks.append(progress_bar(refresh_rate=10))  # tqdm on a terminal, one line per refresh in a log
    if cfg.trainer.step_times:
        callbacks.append(StepTimes())
    if cfg.viewer.enabled and cfg.mode == "train" and process_rank() == 0:
        callbacks.append(LiveViewer(cfg.viewer, run_dir))  # serving from here: a taken port stops the run now
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
        plugins=[AtomicCheckpointIO(), *slurm_environment()],
        default_root_dir=str(run_dir),
        enable_model_summary=False,
        profiler=lightning_profiler(t.profiler, run_dir),
        inference_mode=False,  # analytic normals differentiate the density even when evaluating
    )


def lightning_profiler(name: Optional[str], run_dir: Path) -> Any:
    """trainer.profiler=simple|advanced|pytorch: Lightning's profiler, writing its report into the run directory."""
    if name is None:
        return None
    from pytorch_lightning import profilers

    kinds = {"simple": profilers.SimpleProfiler, "advanced": profilers.AdvancedProfiler, "pytorch": profilers.PyTorchProfiler}
    return kinds[name](dirpath=str(run_dir), filename="profiler")


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
    quiet_library_notices()
    check_run_config(cfg)
    if cfg.trainer.keep_freed_memory:
        keep_freed_memory()
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
    trainer = build_trainer(cfg, run_dir, resumed_step=checkpoints["resume"].get("global_step") if cfg.resume and cfg.mode == "train" else None)
    try:
        metrics = run_mode(cfg, run_dir, trainer, system, datamodule, checkpoints)
    finally:
        close_viewers(trainer)  # the live viewer's server, however the run ends
    if cfg.mode == "train" and trainer.global_rank != 0:
        return {}  # rank 0 alone exports, scores and writes metrics.json
    for logger in trainer.loggers:
        logger.log_metrics({f"final/{k}": v for k, v in metrics.items()}, step=trainer.global_step)
        logger.save()

    write_json(run_dir / "metrics.json", metrics)
    for callback in trainer.callbacks:
        if isinstance(callback, StepTimes):
            callback.finish(run_dir)
    if rank == 0:
        write_report(run_dir)  # <run>/report.html (framework/report.py), before the closing block that names it
    report(metrics, run_dir)  # last: the closing block ends the output
    return metrics


def run_mode(cfg: DictConfig, run_dir: Path, trainer: pl.Trainer, system: Any, datamodule: Any,
             checkpoints: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The work of `cfg.mode`: the metrics rank 0 writes ({} on the other ranks of a training run)."""
    metrics: dict[str, float] = {}
    start = time.perf_counter()
    if cfg.mode == "train":
        with stop_on_signal(trainer):
            trainer.fit(system, datamodule=datamodule, ckpt_path=cfg.resume)
            metrics["train_seconds"] = time.perf_counter() - start
            stop_if_failed(trainer)
            trainer.test(system, datamodule=datamodule)  # each rank renders its share of the turntable; rank 0 writes it
        if trainer.global_rank != 0:
            return {}  # rank 0 alone exports, scores and writes metrics.json
        with announce("exporting to save/export/ (and scoring, for a toy scene)"), section("export"):  # a minute or two on a CPU
            metrics.update(system.export())
    elif cfg.mode == "validate":
        trainer.validate(system, datamodule=datamodule, ckpt_path=cfg.resume)
    elif cfg.mode == "test":
        trainer.test(system, datamodule=datamodule, ckpt_path=cfg.resume)
    elif cfg.mode == "export":
        load_weights(system, checkpoints["resume"], cfg.resume, "resume", cfg)
        metrics.update(system.export())
    metrics["total_seconds"] = time.perf_counter() - start
    return metrics


@contextlib.contextmanager
def stop_on_signal(trainer: pl.Trainer):
    """Lightning's SIGTERMException (SIGTERM, SIGUSR1, SIGINT during fit or test: framework/preemption.py)
    as a RunStopped, which names the step, the checkpoint and the resume command (exit code 4)."""
    try:
        yield
    except SIGTERMException:
        preemption = next(c for c in trainer.callbacks if isinstance(c, Preemption))
        raise preemption.stop_error() from None


def stop_if_failed(trainer: pl.Trainer) -> None:
    for callback in trainer.callbacks:
        if isinstance(callback, NonFiniteGuard) and callback.failure:
            raise TrainingFailed(callback.failure)


def report(metrics: dict[str, float], run_dir: Path) -> None:
    """The closing block: scores, times, the video, mesh and report paths, the run directory (framework/console.py)."""
    print(closing_block(metrics, run_dir), file=sys.stdout, flush=True)
