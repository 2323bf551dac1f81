"""What a run prints is for a person: library notices that say nothing about this run are left out, and
the run ends with a closing block of its scores and files (`closing_block`). Progress: framework/progress.py.

Dropped: Lightning's advertising tips ("💡 Tip: ... litlogger"), and deprecation notices raised inside
the libraries themselves (Lightning's pytree `LeafSpec`, torch's `all_gather` inside Lightning's DDP
gather), which no change of this project's code or config could act on. Everything else, Lightning's
"GPU available" lines and every warning about this run's own settings included, is kept.
"""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

from framework.progress import duration

LIBRARY_DEPRECATIONS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_library_notices() -> None:
    for pattern in LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())


# ----------------------------------------------------------------------------------------------
# The closing block: what a run ends with, after its last progress line.

SCORE_NAMES = {"iou": "IoU", "chamfer": "Chamfer", "colour_error": "colour error", "n_faces": "faces",
               "n_vertices": "vertices", "watertight": "watertight", "volume_mesh": "volume (mesh)",
               "volume_true": "volume (true)"}
"""Labels of the known metrics, in this order first (the toy world's scores: docs/toy-world.md); any other
metric follows under its own name."""
TIMES = {"train_seconds": "training", "total_seconds": "total"}


def _value_text(key: str, value: Any) -> str:
    if key == "watertight" and isinstance(value, (int, float)):
        return "yes" if value else "no"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run_files(run_dir: Path) -> list[tuple[str, Path]]:
    """(label, path) of what a person opens after a run, each only when it exists: the turntable video (the
    newest), the mesh (OBJ, GLB), the report page, the run directory."""
    files: list[tuple[str, Path]] = []
    videos = sorted((run_dir / "save").glob("*-test.mp4"), key=lambda p: p.stat().st_mtime)
    if videos:
        files.append(("video", videos[-1]))
    export = run_dir / "save" / "export"
    files += [(f"mesh ({name[-3:].upper()})", export / name) for name in ("model.obj", "model.glb") if (export / name).is_file()]
    if (run_dir / "report.html").is_file():
        files.append(("report", run_dir / "report.html"))
    files.append(("run", run_dir))
    return files


def closing_block(metrics: dict[str, Any], run_dir: Path, status: str = "done") -> str:
    """The scores, times and files of a finished run, aligned in one column:

        scores
          IoU            0.944
          Chamfer        0.0123
          ...
        time
          training       3m58s
        files
          video          outputs/.../save/it1000-test.mp4
          mesh (OBJ)     outputs/.../save/export/model.obj
          mesh (GLB)     outputs/.../save/export/model.glb
          report         outputs/.../report.html
          run            outputs/...
        status           done
    """
    run_dir = Path(run_dir)
    scores = [k for k in SCORE_NAMES if k in metrics] + [k for k in metrics if k not in SCORE_NAMES and k not in TIMES]
    sections = [
        ("scores", [(SCORE_NAMES.get(k, k.replace("_", " ")), _value_text(k, metrics[k])) for k in scores]),
        ("time", [(TIMES[k], duration(float(metrics[k]))) for k in TIMES if k in metrics]),
        ("files", [(label, str(path)) for label, path in run_files(run_dir)]),
    ]
    width = max([len(label) for _, rows in sections for label, _ in rows] + [len("status")]) + 4
    lines = [""]
    for title, rows in sections:
        if rows:
            lines.append(title)
            lines += [f"  {label:<{width - 2}}{value}" for label, value in rows]
    lines.append(f"{'status':<{width}}{status}")
    return "\n".join(lines)
