"""Stopping on a signal without losing the run: finish the step, write ckpts/last.ckpt, say how to resume.

SIGTERM (a scheduler's preemption, `kill`), SIGUSR1 (SLURM's warning before the time limit, with
`#SBATCH --signal=USR1@90`) and SIGINT (Ctrl-C) during training each end the run the same way:

1. the step under way finishes (with its validation, when one is due);
2. `ckpts/last.ckpt` is written (atomically: framework/checkpoints.py), holding the step reached and the
   random states that make the resumed run draw what this one would have (framework/random_state.py);
3. the step and the exact resume command are printed, status.json says `stopped`, and the exit code is
   4 (framework/errors.py EXIT_STOPPED).

This builds on Lightning's signal connector, which during `fit` already turns SIGTERM into
`trainer.received_sigterm` and, at the end of the step, raises SIGTERMException (and, under SLURM
with auto-requeue, handles SIGUSR1 by saving an hpc checkpoint and requeueing the job). `Preemption`
installs its handler after Lightning's (`on_train_start`), calls the handler it replaced for SIGTERM
and SIGUSR1 (Lightning's), and sets the same flag for the three signals, so Lightning's loop stops at
the same place whatever the signal; `on_exception` then writes the checkpoint. A second Ctrl-C leaves
at once, without saving. Lightning puts the previous handlers back when `fit` ends.
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from framework.errors import RunStopped
from framework.run_directory import write_status

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def resume_command(run_dir: Path) -> str:
    """The command that continues this run: launch.py's own command line (under Hydra), with resume=
    pointing at last.ckpt and without hydra.run.dir= (a resumed run continues in its checkpoint's folder)."""
    checkpoint = run_dir / "ckpts" / "last.ckpt"
    config_name, overrides = "<method>", []
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            hydra_cfg = HydraConfig.get()
            config_name = hydra_cfg.job.config_name
            overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(("resume=", "hydra.run.dir="))]
    except ImportError:
        pass
    words = ["python", "launch.py", "--config-name", config_name, *overrides, f"resume={checkpoint}"]
    return " ".join(shlex.quote(w) for w in words)


class Preemption(pl.Callback):
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.signum: Optional[int] = None
        self.stopped: Optional[dict[str, Any]] = None  # set once the checkpoint is written

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "ckpts" / "last.ckpt"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for signum in SIGNALS:
            previous = signal.getsignal(signum)
            signal.signal(signum, self._handler(trainer, previous))

    def _handler(self, trainer: pl.Trainer, previous: Any):
        def handle(signum: int, frame: Any) -> None:
            if signum == signal.SIGINT and self.signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: leave now (Lightning's own KeyboardInterrupt exit)
            if signum != signal.SIGINT and callable(previous):
                previous(signum, frame)  # Lightning's: SIGTERM -> received_sigterm; SLURM's SIGUSR1 -> requeue
            first = self.signum is None
            self.signum = self.signum or signum
            trainer._signal_connector.received_sigterm = True  # Lightning's stop flag, read at the end of the step
            if first and trainer.is_global_zero and "SLURM_JOB_ID" in os.environ:
                # told now, not only once saved: should SLURM kill the job before the step ends, the
                # requeued job still finds this run (launch.py requeued_job_resume) and its last checkpoint
                write_status(self.run_dir, "stopping", signal=signal.Signals(signum).name, step=trainer.global_step,
                             slurm_job_id=os.environ["SLURM_JOB_ID"])
            if first and trainer.is_global_zero:
                print(f"\nreceived {signal.Signals(signum).name}: finishing step {trainer.global_step + 1}, then writing "
                      f"{self.checkpoint_path}", file=sys.stderr, flush=True)

        return handle

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        path = self.checkpoint_path
        for callback in trainer.checkpoint_callbacks:
            # ModelCheckpoint keeps writing last.ckpt after a resume (instead of a last-v1.ckpt beside it)
            if isinstance(callback, ModelCheckpoint) and callback.save_last and Path(callback.dirpath or "") == path.parent:
                callback.last_model_path = str(path)
        trainer.save_checkpoint(path)
        self.stopped = {"step": trainer.global_step, "signal": signal.Signals(self.signum or signal.SIGTERM).name,
                        "checkpoint": str(path)}

    def stop_error(self) -> RunStopped:
        """The RunStopped a stopped `fit` ends with (runner.py raises it)."""
        command = resume_command(self.run_dir)
        job = {"slurm_job_id": os.environ["SLURM_JOB_ID"]} if "SLURM_JOB_ID" in os.environ else {}
        if self.stopped is None:  # stopped outside a training step: the checkpoints already written hold the run
            name = signal.Signals(self.signum).name if self.signum else "SIGTERM"
            status = {"signal": name, "checkpoint": None, "resume": command, **job}
            return RunStopped(f"stopped by {name} before a step finished; no checkpoint was written now. "
                              f"To continue from the last one written: {command}", status)
        status = {**self.stopped, "resume": command, **job}
        return RunStopped(
            f"stopped by {self.stopped['signal']} at step {self.stopped['step']}; {self.stopped['checkpoint']} holds "
            f"that step. To continue: {command}", status)
