"""The table of a folder of runs: one row per run directory (every `status.json` under the folder).

    python -m framework.sweep_summary outputs/dreamfusion-toy/sweep@20261201-160000

prints the Markdown table and writes `summary.csv`, `summary.md` and `summary.html` (the runs side by side,
framework/sweep_page.py) in the folder. A multirun writes
the same two files in its sweep directory when it ends (framework/sweep_callback.py).

A row is read from the run directory's `status.json` (status, exit code, first line of the error, the
job number and overrides of a sweep job, its wall time in `seconds`), `metrics.json` (every metric the
run exported: iou, chamfer, colour_error for toy-world runs) and `configs/overrides.yaml` (the
overrides, when status.json lacks them).
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import yaml

from framework import sweep_page
from framework.run_directory import STATUS_FILE, folder_argument, read_json, read_status

CSV_FILE = "summary.csv"
MARKDOWN_FILE = "summary.md"
FIRST_METRICS = ("iou", "chamfer", "colour_error")  # listed first when present; then the rest, by name
TIMINGS = ("train_seconds", "total_seconds")  # metrics.json's timings: the wall time column, not metrics


def read_run(run_dir: Path, folder: Path) -> dict[str, Any]:
    """One row: the run directory's status, overrides, metrics and wall time."""
    status = read_status(run_dir) or {}
    metrics = read_json(run_dir / "metrics.json") or {}
    overrides = status.get("overrides")
    if overrides is None:
        try:
            overrides = yaml.safe_load((run_dir / "configs" / "overrides.yaml").read_text()) or []
        except (OSError, yaml.YAMLError):
            overrides = []
    seconds = status.get("seconds", metrics.get("total_seconds"))
    return {
        "job": status.get("job"),
        "overrides": [str(o) for o in overrides],
        "status": status.get("status", "unknown"),
        "exit_code": status.get("exit_code"),
        "error": str(status.get("error") or "").splitlines()[0] if status.get("error") else "",
        "metrics": {k: v for k, v in metrics.items() if k not in TIMINGS},
        "seconds": seconds,
        "run_dir": str(run_dir.relative_to(folder)) if run_dir != folder else ".",
    }


def collect(folder: str | Path) -> list[dict[str, Any]]:
    """Every run under `folder` (recursively), sweep jobs in job order first, then the rest by directory."""
    folder = Path(folder)
    rows = [read_run(path.parent, folder) for path in sorted(folder.rglob(STATUS_FILE))]
    return sorted(rows, key=lambda r: (r["job"] is None, r["job"] if r["job"] is not None else 0, r["run_dir"]))


def common_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """The overrides every run of the table has (a sweep's fixed ones), in the first run's order."""
    if len(rows) < 2:
        return []
    shared = set.intersection(*(set(r["overrides"]) for r in rows))
    return [o for o in rows[0]["overrides"] if o in shared]


def varying(row: dict[str, Any], common: list[str]) -> str:
    """A run's own overrides: those not common to every run of the table (what the sweep varied)."""
    return " ".join(o for o in row["overrides"] if o not in common)


def metric_names(rows: list[dict[str, Any]]) -> list[str]:
    found = {k for r in rows for k in r["metrics"]}
    return [k for k in FIRST_METRICS if k in found] + sorted(found - set(FIRST_METRICS))


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The header and the cells as text: one row per run. `overrides` is what differs between the runs; the
    CSV's last column, `all_overrides`, has each run's whole list."""
    names = metric_names(rows)
    common = common_overrides(rows)
    header = ["job", "overrides", "status", "exit_code", "error", *names, "seconds", "run_dir", "all_overrides"]
    cells = [
        [
            "" if r["job"] is None else str(r["job"]),
            varying(r, common),
            r["status"],
            "" if r["exit_code"] is None else str(r["exit_code"]),
            r["error"],
            *(number(r["metrics"].get(k)) for k in names),
            number(r["seconds"], digits=1),
            r["run_dir"],
            " ".join(r["overrides"]),
        ]
        for r in rows
    ]
    return header, cells


def number(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.{digits}f}"
    return str(value)


MARKDOWN_ERROR_CHARS = 120


def shortened(error: str) -> str:
    return error if len(error) <= MARKDOWN_ERROR_CHARS else error[: MARKDOWN_ERROR_CHARS - 1] + "…"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table without the all_overrides column (the common overrides are said once, above it), errors
    cut at MARKDOWN_ERROR_CHARS."""
    header, cells = table(rows)
    header, cells = header[:-1], [c[:-1] for c in cells]
    error = header.index("error")
    for c in cells:
        c[error] = shortened(c[error])

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|").replace("\n", " ") for v in values) + " |"

    done = sum(r["status"] == "done" for r in rows)
    common = common_overrides(rows)
    head = [f"{len(rows)} runs, {done} done, {len(rows) - done} failed or unfinished."]
    if common:
        head.append("Overrides of every run: `" + " ".join(common) + "`")
    return "\n\n".join(["\n".join(head), "\n".join([line(header), line(["---"] * len(header)), *(line(c) for c in cells)])]) + "\n"


def write(folder: str | Path, rows: list[dict[str, Any]]) -> str:
    """summary.csv, summary.md and the page of the runs side by side, summary.html (framework/sweep_page.py),
    in `folder`; returns the Markdown."""
    folder = Path(folder)
    header, cells = table(rows)
    with open(folder / CSV_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(cells)
    text = markdown(rows)
    (folder / MARKDOWN_FILE).write_text(text)
    sweep_page.write_page(folder, rows, metric_names(rows), common_overrides(rows), header, cells)
    return text


def failures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] != "done"]


def exit_code(rows: list[dict[str, Any]]) -> int:
    """A sweep's exit status: 0 when every run is done, 2 when every failure was the user's input, else the
    highest exit code (a run without one, e.g. still `running` after its process died, counts as a crash, 1)."""
    codes = [r["exit_code"] if isinstance(r["exit_code"], int) and r["exit_code"] > 0 else 1 for r in failures(rows)]
    if not codes:
        return 0
    return 2 if all(c == 2 for c in codes) else max(codes)


def describe_failures(rows: list[dict[str, Any]]) -> str:
    """One line naming each failed run: its job number, overrides, exit code and error (cut short)."""
    failed = failures(rows)
    common = common_overrides(rows)
    parts = [
        f"job {r['job'] if r['job'] is not None else r['run_dir']} ({varying(r, common) or 'no overrides'}): "
        f"{r['status']}, exit {r['exit_code']}" + (f", {shortened(r['error'])}" if r["error"] else "")
        for r in failed
    ]
    return f"{len(failed)} of {len(rows)} runs failed: " + "; ".join(parts)


def main(argv: list[str]) -> int:
    folder = folder_argument(argv, "python -m framework.sweep_summary <folder of runs>")
    if folder is None:
        return 2
    rows = collect(folder)
    if not rows:
        print(f"error: no run under {folder} (no */{STATUS_FILE})", file=sys.stderr)
        return 2
    print(write(folder, rows), end="")
    print(f"\nwritten: {folder / CSV_FILE}, {folder / MARKDOWN_FILE}, {folder / sweep_page.HTML_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
