"""The end of a multirun: the sweep directory's summary, the failed jobs named, the sweep's exit status.

configs/base.yaml lists `SweepSummary` under `hydra.callbacks`. Hydra calls `on_multirun_end` in the
process that launched the sweep, after every job has returned, whichever the launcher (basic, joblib,
submitit_local, submitit_slurm), so the summary is read from the files the jobs wrote
(framework/sweep_summary.py), not from the launcher's return values.

The table lists every run under the sweep directory. The exit status and the line naming the failed
jobs count this sweep's jobs: the runs whose status.json was written after the sweep started (an
earlier sweep into the same `hydra.sweep.dir` is listed but not counted). A failed job makes the
process exit with framework.sweep_summary.exit_code: 2 when every failure was the user's input, else
the highest code.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from framework import sweep_page, sweep_summary
from framework.run_directory import STATUS_FILE

# status.json times are compared with the sweep's start; allow for file systems with coarse times
CLOCK_SLACK_S = 2.0


class SweepSummary(Callback):
    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        rows = sweep_summary.collect(folder)
        if not rows:
            print(f"sweep: no run wrote a {STATUS_FILE} under {folder}", file=sys.stderr, flush=True)
            raise SystemExit(1)
        sweep_summary.write(folder, rows)
        ours = [r for r in rows if self.written_since_start(folder / r["run_dir"])]
        done = sum(r["status"] == "done" for r in ours)
        print(f"sweep: {done} of {len(ours)} jobs done; summary: {folder / sweep_summary.MARKDOWN_FILE}, "
              f"{folder / sweep_page.HTML_FILE}", flush=True)
        code = sweep_summary.exit_code(ours)
        if code:
            print(f"sweep: {sweep_summary.describe_failures(ours)}", file=sys.stderr, flush=True)
            raise SystemExit(code)  # BaseException: Hydra's callback wrapper passes it on to launch.cli

    def written_since_start(self, run_dir: Path) -> bool:
        try:
            return (run_dir / STATUS_FILE).stat().st_mtime >= self.started - CLOCK_SLACK_S
        except OSError:
            return False
