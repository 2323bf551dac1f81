"""Where a run's time goes: a per-step breakdown the user turns on with `trainer.step_times=true`.

The parts of a training step are timed where they happen: the renderer, the guidance and the
system wrap theirs in `section("render/sampling")` etc. (nested names, '/'-separated), and the
`StepTimes` callback times what Lightning drives: the whole step, the backward pass, the
optimiser step. Validation, the test video and the export are timed as phases. At the end of the
run the table is printed and written to <run>/step_times.json (seconds, calls, ms per step, share of
the step time).

`section` costs one global lookup when no StepTimes is active, so the calls stay in the code. On
CUDA each boundary synchronises the device (kernels run asynchronously; without the sync a section
would time the launch, not the work), so a run with step_times on is a little slower there.

Lightning's own profilers pass through unchanged (`trainer.profiler=simple|advanced|pytorch`, written
to <run>/profiler*.txt); this breakdown adds what they can't see: the parts inside training_step.
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator, Optional

import pytorch_lightning as pl
import torch

from framework.run_directory import write_json

_ACTIVE: Optional["StepTimes"] = None


@contextlib.contextmanager
def section(name: str) -> Iterator[None]:
    """Time the enclosed code as `name` inside the section around it (e.g. "train step/render/sampling")
    when a StepTimes is active; a no-op otherwise."""
    clock = _ACTIVE
    if clock is None:
        yield
        return
    clock.enter(name)
    try:
        yield
    finally:
        clock.leave(name)


class StepTimes(pl.Callback):
    """Accumulates seconds and calls per nested name; `finish` prints the table and writes step_times.json.

    Names nest by where they run: a render during a training step is "train step/render", during
    validation "validation/render"; the table gives each its ms per training step and share of it."""

    STEP = "train step"
    PHASES = ("validation", "test video", "export")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[tuple[str, float]] = []  # (full name, start)
        self._sync = False

    # ---- the clock ---------------------------------------------------------------------------
    def now(self) -> float:
        if self._sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def enter(self, name: str) -> None:
        full = f"{self._stack[-1][0]}/{name}" if self._stack else name
        self._stack.append((full, self.now()))

    def leave(self, name: str) -> None:
        # unwind to the innermost `name` (a hook whose partner never ran, e.g. an exception, is dropped)
        while self._stack:
            full, start = self._stack.pop()
            if full.rsplit("/", 1)[-1] == name:
                self.seconds[full] += self.now() - start
                self.calls[full] += 1
                return

    def activate(self) -> None:
        global _ACTIVE
        _ACTIVE = self

    def deactivate(self) -> None:
        global _ACTIVE
        if _ACTIVE is self:
            _ACTIVE = None

    # ---- Lightning's part of a step -----------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._sync = trainer.strategy.root_device.type == "cuda"
        self.activate()

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        self.enter(self.STEP)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.enter("backward")

    def on_after_backward(self, trainer, pl_module) -> None:
        self.leave("backward")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.enter("optimizer")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch: Any, batch_idx: int) -> None:
        if self._stack and self._stack[-1][0].endswith("/optimizer"):  # the step runs between its hook and here
            self.leave("optimizer")
        self.leave(self.STEP)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.enter("validation")

    def on_validation_end(self, trainer, pl_module) -> None:
        self.leave("validation")

    def on_test_start(self, trainer, pl_module) -> None:
        self.enter("test video")

    def on_test_end(self, trainer, pl_module) -> None:
        self.leave("test video")

    # ---- the table ---------------------------------------------------------------------------
    def table(self) -> dict[str, dict[str, float]]:
        """name -> seconds, calls, ms_per_step (per training step), share_of_step (of the steps' total time).
        Inside the step, "other" is what no part names (losses, logging, Lightning's loop)."""
        steps = max(1, self.calls.get(self.STEP, 0))
        step_seconds = self.seconds.get(self.STEP, 0.0)
        seconds = dict(self.seconds)
        calls = dict(self.calls)
        parts = [n for n in seconds if n.startswith(self.STEP + "/") and n.count("/") == 1]
        if step_seconds > 0 and parts:
            seconds[self.STEP + "/other"] = max(0.0, step_seconds - sum(seconds[n] for n in parts))
            calls[self.STEP + "/other"] = calls[self.STEP]
        rows = {}
        for name in sorted(seconds, key=self._order):
            rows[name] = {
                "seconds": round(seconds[name], 4),
                "calls": calls[name],
                "ms_per_step": round(1000.0 * seconds[name] / steps, 3),
                "share_of_step": round(seconds[name] / step_seconds, 4) if step_seconds > 0 else 0.0,
            }
        return rows

    def _order(self, name: str) -> tuple:
        top = name.split("/", 1)[0]
        rank = 0 if top == self.STEP else (1 + self.PHASES.index(top) if top in self.PHASES else 9)
        return (rank, top, name.endswith("/other"), name)

    def format(self) -> str:
        rows = self.table()
        lines = [f"time per part ({self.calls.get(self.STEP, 0)} training steps; a step's parts in ms per step and % of the step):"]
        for name, row in rows.items():
            label = "  " * name.count("/") + name.rsplit("/", 1)[-1]
            if name.startswith(self.STEP):
                lines.append(f"  {label:<30s} {row['ms_per_step']:9.2f} ms {100 * row['share_of_step']:6.1f} %  {row['seconds']:9.2f} s")
            else:
                lines.append(f"  {label:<30s} {'':9s}    {'':6s}    {row['seconds']:9.2f} s  ({row['calls']}x)")
        return "\n".join(lines)

    def finish(self, run_dir: Path) -> None:
        """Print the breakdown and write <run>/step_times.json."""
        self.deactivate()
        if not self.seconds:
            return
        write_json(Path(run_dir) / "step_times.json", self.table())
        print("\n" + self.format() + f"\n  (written to {Path(run_dir) / 'step_times.json'})", flush=True)
