"""Run directories: claimed exclusively, marked with their status, removed when a run never started.

`outputs/<name>/<tag>@<YYYYMMDD-HHMMSS>` names a run by the second it started, so two runs started
in the same second (a sweep on a cluster, two shells) would share one folder. `claim` creates the
folder with `os.mkdir`, which fails when the name exists, and then tries `<name>-1`, `<name>-2`, ...:
whichever process creates a name owns it. configs/base.yaml routes Hydra's run and sweep
directories through it (the `unique_dir` resolver registered by launch.py).

`status.json` in each run directory says how the run ended (`running`, `done`, `failed`,
`stopped`), with the exit code and the first line of the error, for people and sweep summaries.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
HYDRA_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}


def claim(path: str | os.PathLike) -> str:
    """Create `path` (or the first free `path-<k>`) and return the absolute path of the one created."""
    base = os.fspath(path).rstrip("/")
    parent = os.path.dirname(base)
    if parent:
        os.makedirs(parent, exist_ok=True)
    for k in range(10_000):
        candidate = base if k == 0 else f"{base}-{k}"
        try:
            os.mkdir(candidate)
            return os.path.abspath(candidate)
        except FileExistsError:
            continue
    raise FileExistsError(f"every name {base}-<k> up to 9999 is taken")


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


def write_json(path: Path, record: dict[str, Any]) -> None:
    """A JSON file replaced atomically (a reader, or a kill, never leaves half a file)."""
    tmp = path.parent / f".{path.name}.{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def write_status(run_dir: Path, status: str, **info: Any) -> None:
    write_json(run_dir / STATUS_FILE, {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **info})


def read_status(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def discard_if_unused(run_dir: Path) -> bool:
    """Remove a run directory that holds only its configs (a run stopped by bad input before it began)."""
    if run_dir.is_dir() and not holds_a_run(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
        return True
    return False
