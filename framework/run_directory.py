"""Run directories: claimed exclusively, marked with their status, removed when a run never started.

`outputs/<name>/<tag>@<YYYYMMDD-HHMMSS>` names a run by the second it started, so two runs started
in the same second (a sweep on a cluster, two shells) would share one folder. `claim` creates the
folder with `os.mkdir`, which fails when the name exists, and then tries `<name>-1`, `<name>-2`, ...:
whichever process creates a name owns it. configs/base.yaml routes Hydra's run and sweep
directories through it (the `unique_dir` resolver registered by launch.py).

A training run resumed from a checkpoint of a run directory (`resume=<run>/ckpts/last.ckpt`, where
`<run>/configs/` exists) continues in that directory instead (`run_dir`): its logs, checkpoints and
images are added to the first run's. Hydra's config copies of the resumed run go to
`configs/resume-<k>/` (`config_subdir`), so the first run's `configs/` stays as it was. Naming another
folder with `hydra.run.dir=` still puts the resumed run there. validate/test/export with `resume=`
get a new folder: they would otherwise replace the run's metrics.json, status.json and export.

`status.json` in each run directory says how the run ended (`running`, `done`, `failed`,
`stopped`; `stopping` while a SLURM job stops on a signal), with the exit code and the first line of the error, for people and sweep summaries.
"""
from __future__ import annotations

import json
import os
import sys
import shutil
import time
from pathlib import Path
from typing import Any, Optional

STATUS_FILE = "status.json"
HYDRA_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}


def claim(path: str | os.PathLike, first_suffix: int = 0) -> str:
    """Create `path` (or the first free `path-<k>`) and return the absolute path of the one created.
    With `first_suffix` k0 > 0 the names tried are `path-<k0>`, `path-<k0 + 1>`, ... only."""
    base = os.fspath(path).rstrip("/")
    parent = os.path.dirname(base)
    if parent:
        os.makedirs(parent, exist_ok=True)
    for k in range(first_suffix, 10_000):
        candidate = base if k == 0 else f"{base}-{k}"
        try:
            os.mkdir(candidate)
            return os.path.abspath(candidate)
        except FileExistsError:
            continue
    raise FileExistsError(f"every name {base}-<k> up to 9999 is taken")


def resumed_run_dir(resume: str | os.PathLike | None) -> Path | None:
    """The run directory a checkpoint belongs to (`<run>/ckpts/<file>.ckpt` beside `<run>/configs/`), or None."""
    if not resume:
        return None
    checkpoint = Path(os.fspath(resume)).absolute()
    run = checkpoint.parent.parent
    if checkpoint.parent.name == "ckpts" and (run / "configs").is_dir():
        return run
    return None


def run_dir(default: str, resume: str | None, mode: str) -> str:
    """Hydra's run directory (configs/base.yaml): the resumed run's own directory for a training run
    resumed from one of its checkpoints, else a new one claimed from `default` (`claim`)."""
    resumed = resumed_run_dir(resume) if mode == "train" else None
    return str(resumed) if resumed is not None else claim(default)


def config_subdir(output_dir: str) -> str:
    """Where Hydra writes its config copies inside the run directory: `configs`, or for a run continued
    in a directory whose `configs/` already holds a run's, the next free `configs/resume-<k>`."""
    configs = Path(output_dir) / "configs"
    if not (configs / "config.yaml").is_file():
        return "configs"
    return os.path.relpath(claim(configs / "resume", first_suffix=1), output_dir)


def stopped_run_of_job(job_id: str, roots: list[Path]) -> Path | None:
    """The checkpoint of the run a SLURM job stopped on a signal (its status.json, `stopped`, or `stopping`
    when the job was killed before the step ended, names the job), under `roots` (run directories, or
    outputs/ two levels up from them), or None."""
    candidates = []
    for root in roots:
        candidates += [root / STATUS_FILE, *root.glob(f"*/*/{STATUS_FILE}")]
    for path in candidates:
        status = read_status(path.parent) if path.is_file() else None
        if status and status.get("status") in ("stopped", "stopping") and status.get("slurm_job_id") == job_id:
            checkpoint = Path(status.get("checkpoint") or path.parent / "ckpts" / "last.ckpt")
            if checkpoint.is_file():
                return checkpoint
    return None


def holds_a_run(path: Path) -> bool:
    """True when `path` has anything a run writes beyond Hydra's config copies and job log (checkpoints,
    images, metrics, logs)."""
    if not path.is_dir():
        return False
    for item in path.rglob("*"):
        if not item.is_file() or item.name == STATUS_FILE:
            continue
        hydra_own = (item.parent == path / "configs" and item.name in HYDRA_FILES | {"parsed.yaml"}) or (
            item.parent == path and item.suffix == ".log"
        )
        if not hydra_own:
            return True
    return False


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, record: dict[str, Any]) -> None:
    """A JSON file replaced atomically (a reader, or a kill, never leaves half a file)."""
    tmp = path.parent / f".{path.name}.{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def write_status(run_dir: Path, status: str, **info: Any) -> None:
    write_json(run_dir / STATUS_FILE, {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **info})


def read_status(run_dir: Path) -> dict[str, Any] | None:
    return read_json(run_dir / STATUS_FILE)


def discard_if_unused(run_dir: Path) -> bool:
    """Remove a run directory that holds only its configs (a run stopped by bad input before it began)."""
    if run_dir.is_dir() and not holds_a_run(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
        return True
    return False


def folder_argument(argv: list[str], usage: str) -> Optional[Path]:
    """The one existing folder a `python -m framework.<tool> <folder>` command takes, or None once the usage or the
    error is printed (the command then exits 2)."""
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(f"usage: {usage}", file=sys.stderr)
        return None
    folder = Path(argv[0])
    if not folder.is_dir():
        print(f"error: {folder} is not a folder", file=sys.stderr)
        return None
    return folder
