"""Run a method from its Hydra config.

    python launch.py --config-name dreamfusion-toy system.prompt="a blue torus"
    python launch.py --config-name dreamfusion-toy mode=export resume=outputs/.../ckpts/last.ckpt
    python launch.py --config-name dreamfusion-toy -m system.prompt="a red cube","a green cone"
    python launch.py --config-name dreamfusion-toy -m hydra/launcher=joblib system.prompt="a red cube","a green cone"

The run directory outputs/<name>/<tag>@<timestamp>/ is Hydra's output directory (configs/base.yaml),
claimed exclusively (framework/run_directory.py). Exit codes: framework/errors.py. A multirun's jobs
each fail alone; its summary and exit status: framework/sweep_callback.py (docs/running.md, Sweeps).
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from framework import run_directory
from framework.distributed import is_main_process
from framework.errors import EXIT_CRASH, EXIT_DONE, EXIT_STOPPED, EXIT_USER_INPUT, RunStopped, TrainingFailed, UserError
from framework.extensions import register_extensions
from framework.report import write_report
from framework.runner import run
from framework.value_checks import unknown_key_message
from systems.schemas import SCHEMAS, register_schemas


def slug(text: str) -> str:
    """A prompt as a directory name: 'a red cube.' -> 'a_red_cube'."""
    return re.sub(r"[^A-Za-z0-9@,.+-]+", "_", str(text)).strip("_.") or "run"


def prompt_tag(*, _root_: DictConfig) -> str:
    """The default run tag: the prompt as a directory name, or for image-to-3D the picture's file name
    (data.image_path's stem). Reads them without resolving, so a missing one is reported by name in
    `run` instead of failing here."""
    system, data = _root_._get_node("system"), _root_._get_node("data")
    if system is not None and "prompt" in system:
        return "no-prompt" if OmegaConf.is_missing(system, "prompt") else slug(system.prompt)
    if data is not None and "image_path" in data and not OmegaConf.is_missing(data, "image_path"):
        return slug(Path(str(data.image_path)).stem)
    return "no-prompt"


register_schemas()
# configs/hydra/launcher/{joblib,submitit_slurm}.yaml take the plugins' names and extend their schemas
# explicitly (systems/schemas.py); Hydra also matches each with the plugin's node of the same name, and warns.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema", category=UserWarning)
if not OmegaConf.has_resolver("slug"):
    OmegaConf.register_new_resolver("slug", slug)
    OmegaConf.register_new_resolver("prompt_tag", prompt_tag)
    # cached: Hydra may resolve the run directory more than once; it must be claimed once
    OmegaConf.register_new_resolver("unique_dir", run_directory.claim, use_cache=True)
    OmegaConf.register_new_resolver("run_dir", run_directory.run_dir, use_cache=True)
    OmegaConf.register_new_resolver("config_subdir", run_directory.config_subdir, use_cache=True)


# absolute, so the config folder is found when launch is imported as a module too (tests call cli)
@hydra.main(config_path=str(Path(__file__).resolve().parent / "configs"), config_name="dreamfusion-toy", version_base="1.3")
def main(cfg: DictConfig) -> int | None:
    """One run. A single run ends the process with its exit code; a job of a multirun (-m) returns its code
    instead, so a failing job fails alone and the sweep's summary (framework/sweep_callback.py) reports it."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        run_and_record(cfg, run_dir)
        return None
    job = {"job": hydra_cfg.job.num, "overrides": list(hydra_cfg.overrides.task)}
    try:
        run_and_record(cfg, run_dir, job=job)
    except SystemExit as stop:
        if stop.code == EXIT_STOPPED:
            raise  # a signal (preemption, Ctrl-C) stops the sweep, not just this job
        return stop.code if isinstance(stop.code, int) else EXIT_CRASH
    except Exception:  # a crash: this job's traceback, and the next job runs (a KeyboardInterrupt stops the sweep)
        traceback.print_exc()
        sys.stderr.flush()
        return EXIT_CRASH
    return EXIT_DONE


def run_and_record(cfg: DictConfig, run_dir: Path, job: dict[str, Any] | None = None) -> None:
    """`run`, with the run directory's status.json. A failure ends in sys.exit(code) (a crash re-raises). A
    job of a multirun (`job` = its number and overrides, recorded in status.json) keeps the directory of a
    run that never started, so the sweep's folder holds one folder per job, each with its status."""
    start = time.monotonic()
    if not is_main_process():  # a DDP rank > 0 (a copy of this command Lightning started): rank 0 keeps the books
        run(cfg, run_dir)
        return

    def record(status: str, **info: Any) -> None:
        try:
            run_directory.write_status(run_dir, status, **info, seconds=round(time.monotonic() - start, 2), **(job or {}))
        except OSError as error:  # an unwritable run directory was the run's own error, already told
            print(f"(no status.json in {run_dir}: {error.strerror})", file=sys.stderr)
        page = write_report(run_dir, {"status": status, **info}) if status != "done" else None  # done: the runner's
        if page is not None:  # what a failed or stopped run left: its losses, images, error
            print(f"report: {page}", file=sys.stderr, flush=True)

    try:
        run(cfg, run_dir)
    except RunStopped as stop:  # a signal: the checkpoint is written (framework/preemption.py)
        print(f"stopped: {stop}", file=sys.stderr, flush=True)
        record("stopped", exit_code=stop.exit_code, **stop.status)
        sys.exit(stop.exit_code)
    except (UserError, TrainingFailed) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        if isinstance(error, UserError) and job is None and run_directory.discard_if_unused(run_dir):
            print(f"(the run directory {run_dir} was removed: the run had not started)", file=sys.stderr)
        else:
            record("failed", exit_code=error.exit_code, error=str(error).splitlines()[0])
        sys.exit(error.exit_code)
    except BaseException as error:  # a crash or a kill: the traceback is printed by the caller
        if run_dir.is_dir():
            record("failed", exit_code=EXIT_CRASH, error=repr(error)[:300])
        raise
    record("done", exit_code=EXIT_DONE)


def check_output_root(argv: list[str]) -> None:
    """Hydra creates the run directory before any of our code runs; check its place first so an
    unwritable one, or one that already holds another run, is a clear error rather than a traceback
    or a mixed folder."""
    named = overrides_of(argv, "hydra.run.dir", "hydra.sweep.dir")
    for target in list(named.values()) or ["outputs"]:
        path = Path(target).absolute()
        while not path.exists():
            path = path.parent
        if not (path.is_dir() and os.access(path, os.W_OK | os.X_OK)):
            raise UserError(
                f"cannot create the run directory {target}: {path} is not a writable directory. "
                "Run from a writable folder or choose one with hydra.run.dir=<dir>."
            )
    if "hydra.run.dir" in named and is_main_process() and run_directory.holds_a_run(Path(named["hydra.run.dir"])) and not resumes_into(
        argv, Path(named["hydra.run.dir"])
    ):
        raise UserError(
            f"hydra.run.dir={named['hydra.run.dir']} already holds a run (checkpoints, images or logs); a new run "
            "there would mix the two. Choose a new directory, or leave hydra.run.dir out to get a fresh "
            "outputs/<name>/<tag>@<time>/; to continue that run pass resume=<its ckpts/last.ckpt>."
        )


def overrides_of(argv: list[str], *keys: str) -> dict[str, str]:
    """{key: value} of the command line's `key=value` overrides among `keys` (read before Hydra composes)."""
    return {k: a.split("=", 1)[1] for a in argv for k in keys if a.startswith(k + "=")}


def resumes_into(argv: list[str], run_dir: Path) -> bool:
    """True for a training run resumed from a checkpoint of `run_dir` itself (it continues there)."""
    values = overrides_of(argv, "resume", "mode")
    resumed = run_directory.resumed_run_dir(values.get("resume"))
    return values.get("mode", "train") == "train" and resumed is not None and resumed == run_dir.absolute()


def describe_hydra_error(error: Exception) -> str:
    """Hydra's composition error as one message, with the cause and a fix. Hydra's own advice for an
    unknown key (`+key=...`) is replaced: that key would be refused before training anyway."""
    cause = error.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and dataclasses.is_dataclass(getattr(cause, "object_type", None)):
        return unknown_key_message(cause.full_key, cause.object_type)
    lines = [line for line in str(error).splitlines() if not line.startswith("To append to your config use")]
    if isinstance(cause, OmegaConfBaseException):
        lines += [line for line in str(cause).splitlines() if line.strip()]
    return "\n".join(lines)


def requeued_job_resume(argv: list[str]) -> list[str]:
    """A SLURM job requeued after SIGUSR1 (framework/preemption.py) runs its batch script again, with the same
    command line: add resume= for the run this job stopped, so it continues instead of starting over."""
    job, restarts = os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_RESTART_COUNT", "0")
    named = overrides_of(argv, "resume", "hydra.run.dir")
    if not job or not restarts.isdigit() or int(restarts) < 1 or "resume" in named:
        return argv
    roots = [Path(named["hydra.run.dir"])] if "hydra.run.dir" in named else [Path("outputs")]
    checkpoint = run_directory.stopped_run_of_job(job, roots)
    if checkpoint is None:
        return argv
    print(f"SLURM job {job} requeued: continuing from {checkpoint}", file=sys.stderr, flush=True)
    return [*argv, f"resume={checkpoint}"]


def cli(argv: list[str]) -> int:
    """launch.py's whole command line -> its exit code (framework/errors.py). In-process callable (tests)."""
    argv = requeued_job_resume(argv)
    try:
        check_output_root(argv)
        register_extensions(argv, SCHEMAS)  # a user package's schemas, named by hydra.searchpath=[pkg://...] (framework/extensions.py)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    # Hydra then raises what it would print, so composition errors get the message above and exit 2,
    # and crashes keep their whole traceback.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    GlobalHydra.instance().clear()
    saved_argv, sys.argv = sys.argv, [sys.argv[0] if sys.argv else "launch.py", *argv]  # hydra.main reads sys.argv
    try:
        main()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (EXIT_DONE if stop.code is None else EXIT_CRASH)
    except (HydraException, OmegaConfBaseException) as error:
        print(f"error: {describe_hydra_error(error)}", file=sys.stderr)
        return EXIT_USER_INPUT
    finally:
        sys.argv = saved_argv
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
