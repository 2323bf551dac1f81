"""Progress a person reads: a tqdm bar on a terminal, one plain line per update in a log.

A terminal redraws a bar in place. A log (`make demo > log 2>&1`, a cluster job's output, CI, pytest's
capture) keeps every redraw, so there each update is a line of its own, and only a handful of them:

    rendering the exemplar bank of 'a red cube' 1024/4096 views  85 views/s  eta 36s

The training loop's bar is framework/callbacks.py's (the same line format, `step 120/1000  loss_sds
0.123  2.1 it/s  eta 3m05s`). `progress` here is for the work before the first step that takes more
than a few seconds and has a count: the toy prior's exemplar banks and candidate renders. Work
without a count (compiling the hash grid's C++ kernel, loading a model's weights) says what it is
doing with `announce`. Both write to stderr, like tqdm, so stdout keeps the run's own lines.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator
from typing import Any, Optional, TextIO


def is_terminal(stream: Any) -> bool:
    """True when `stream` is an interactive terminal (a redrawn bar shows there), False for a file or pipe."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def duration(seconds: float) -> str:
    """A length of time as a person says it: 42s, 3m05s, 1h02m."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def singular(unit: str) -> str:
    """views -> view, geometries -> geometry (a rate below one: seconds per view)."""
    if unit.endswith("ies"):
        return unit[:-3] + "y"
    return unit[:-1] if unit.endswith("s") and len(unit) > 1 else unit


def rate_text(rate: float, unit: str) -> str:
    """2.1 it/s, 85 views/s; below one per second as seconds each (12.3 s/it), as tqdm does."""
    if not math.isfinite(rate) or rate <= 0:
        return ""
    if rate < 1:
        return f"{1 / rate:.3g} s/{singular(unit)}"
    return f"{rate:.3g} {unit}/s"


def progress_line(what: str, done: int, total: Optional[int], *, unit: str = "", fields: Optional[dict[str, Any]] = None,
                  rate: float = math.nan, rate_unit: str = "it", elapsed: Optional[float] = None) -> str:
    """`what done/total unit  key value ...  rate  eta` (eta while unfinished, `in <elapsed>` when done)."""
    count = f"{done}/{total}" if total else f"{done}"
    parts = [f"{what} {count}{' ' + unit if unit else ''}"]
    parts += [f"{key} {value}" for key, value in (fields or {}).items()]
    if rate_text(rate, rate_unit):
        parts.append(rate_text(rate, rate_unit))
    if total and done >= total and elapsed is not None:
        parts.append(f"in {duration(elapsed)}")
    elif total and math.isfinite(rate) and rate > 0:
        parts.append(f"eta {duration((total - done) / rate)}")
    return "  ".join(parts)


def line_due(done: int, total: int, previous: int, lines: int) -> bool:
    """Whether a log gets a line at count `done` (the last line was at `previous`): at about every
    1/lines of the total, and at the end; so a log holds about `lines` lines however long the work."""
    if done >= total:
        return done > previous
    every = max(1, math.ceil(total / max(1, lines)))
    return done // every > previous // every


def header(what: str, total: int, unit: str = "", note: str = "") -> str:
    """The line that starts a piece of work: `what (4096 views; note) ...`."""
    return f"{what} ({'; '.join(filter(None, [f'{total} {unit}'.strip(), note]))}) ..."


class LineProgress:
    """tqdm's `update` / `close` for a log: a line when the work starts (unless `delay`), about `lines` lines
    while it runs, and one at the end with the time it took. With `delay` seconds, nothing is printed for
    work that ends sooner (a cache that turned out warm), and the first line comes at the first update after."""

    def __init__(self, what: str, total: int, unit: str = "", *, lines: int = 10, delay: float = 0.0,
                 note: str = "", stream: Optional[TextIO] = None):
        self.what, self.total, self.unit, self.lines, self.delay = what, int(total), unit, lines, delay
        self.stream = stream if stream is not None else sys.stderr
        self.done, self.printed_at = 0, 0
        self.start = time.perf_counter()
        self.started = False
        if delay <= 0:
            self._write(header(what, total, unit, note))
            self.started = True

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        elapsed = time.perf_counter() - self.start
        if not self.started and elapsed < self.delay:
            return
        if not self.started or line_due(self.done, self.total, self.printed_at, self.lines):
            self.started = True
            self.printed_at = self.done
            self._write(progress_line(self.what, self.done, self.total, unit=self.unit, elapsed=elapsed,
                                      rate=self.done / elapsed if elapsed > 0 else math.nan, rate_unit=self.unit or "it"))

    def close(self) -> None:
        if self.started and self.printed_at < self.done:  # an end short of `total` (stopped early) still gets its line
            self.printed_at = self.done
            elapsed = time.perf_counter() - self.start
            self._write(progress_line(self.what, self.done, self.total, unit=self.unit, elapsed=elapsed,
                                      rate=self.done / elapsed if elapsed > 0 else math.nan, rate_unit=self.unit or "it"))


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@contextlib.contextmanager
def progress(what: str, total: int, unit: str = "", *, note: str = "", delay: float = 0.0, show: bool = True,
             stream: Optional[TextIO] = None) -> Iterator[Any]:
    """A progress bar for `total` units of work, to stderr: tqdm on a terminal, LineProgress in a log.

        with progress("rendering the exemplar bank of 'a red cube'", 4096, "views") as bar:
            for chunk in chunks:
                ...
                bar.update(len(chunk))

    `note` goes on the first line only (a cache's place). `delay`: show nothing for work that ends sooner (tqdm's own `delay`); `show=False`: nothing at all
    (a caller that shows one bar for several such pieces of work)."""
    stream = stream if stream is not None else sys.stderr
    if not show:
        bar: Any = _Silent()
    elif is_terminal(stream):
        from tqdm import tqdm

        if note and delay <= 0:
            print(header(what, total, unit, note), file=stream, flush=True)
        bar = tqdm(total=total, desc=what, unit=f" {unit}" if unit else "it", file=stream, delay=delay,
                        dynamic_ncols=True, leave=True)
    else:
        bar = LineProgress(what, total, unit, delay=delay, note=note, stream=stream)
    try:
        yield bar
    finally:
        bar.close()


@contextlib.contextmanager
def announce(what: str, *, stream: Optional[TextIO] = None, report_after: float = 2.0) -> Iterator[None]:
    """Say what a wait without a count is for, before it starts (`what ...`), and how long it took
    (`what: done in 58s`) when that was more than `report_after` seconds."""
    stream = stream if stream is not None else sys.stderr
    print(f"{what} ...", file=stream, flush=True)
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    if elapsed >= report_after:
        print(f"{what}: done in {duration(elapsed)}", file=stream, flush=True)
