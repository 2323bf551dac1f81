"""`Schedule`: the one type for values that change with the training step.

Loss weights, timestep ranges, learning-rate factors, material modes... anything that
depends on the global step is written the same way in YAML:

    lambda_sparsity: 1.0                         # a constant
    lambda_orient: [[0, 10.0], [5000, 1000.0]]   # piecewise-linear through (step, value) points
    max_step_percent:                            # the same, spelt out; `mode: step` holds each
      mode: step                                 # value until the next point's step
      points: [[0, 0.98], [5000, 0.5]]

Before the first point the first value holds, after the last point the last value holds.
(threestudio's `[start_step, start_value, end_value, end_step]` is
`[[start_step, start_value], [end_step, end_value]]` here.)
"""
from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from framework.config import ConfigError

MODES = ("linear", "step")


class ScheduleError(ConfigError):
    pass


class Schedule:
    """A piecewise-linear or step-wise function of the global step."""

    def __init__(self, points: Sequence[tuple[float, float]], mode: str = "linear", name: str = "value"):
        if mode not in MODES:
            raise ScheduleError(f"{name}: schedule mode {mode!r} is not one of {MODES}")
        if len(points) == 0:
            raise ScheduleError(f"{name}: a schedule needs at least one [step, value] point")
        steps = [float(p[0]) for p in points]
        if any(b < a for a, b in zip(steps, steps[1:])):
            raise ScheduleError(f"{name}: schedule steps must not decrease, got {steps}")
        self.steps = steps
        self.values = [float(p[1]) for p in points]
        self.mode = mode
        self.name = name

    @classmethod
    def parse(cls, spec: Any, name: str = "value") -> "Schedule":
        """Build from YAML: a number, a list of [step, value] pairs, or {mode, points}."""
        if isinstance(spec, Schedule):
            return spec
        if isinstance(spec, (DictConfig, ListConfig)):
            spec = OmegaConf.to_container(spec, resolve=True)
        if isinstance(spec, bool):
            raise ScheduleError(f"{name}: expected a number or a schedule, got a boolean {spec}")
        if isinstance(spec, (int, float)):
            return cls([(0, float(spec))], name=name)
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"mode", "points"}
            if unknown:
                raise ScheduleError(f"{name}: unknown schedule keys {sorted(unknown)}; use 'mode' and 'points'")
            return cls._from_points(spec.get("points"), spec.get("mode", "linear"), name)
        if isinstance(spec, Sequence) and not isinstance(spec, str):
            return cls._from_points(spec, "linear", name)
        raise ScheduleError(
            f"{name}: cannot read {spec!r} as a schedule; write a number, [[step, value], ...] "
            "or {mode: linear|step, points: [[step, value], ...]}"
        )

    @classmethod
    def _from_points(cls, points: Any, mode: str, name: str) -> "Schedule":
        ok = isinstance(points, Sequence) and all(
            isinstance(p, Sequence) and len(p) == 2 and all(isinstance(x, (int, float)) for x in p) for p in points
        )
        if not ok:
            raise ScheduleError(f"{name}: schedule points must be [[step, value], ...], got {points!r}")
        return cls([tuple(p) for p in points], mode=mode, name=name)

    def __call__(self, step: int) -> float:
        if step <= self.steps[0]:
            return self.values[0]
        if step >= self.steps[-1]:
            return self.values[-1]
        i = bisect.bisect_right(self.steps, step) - 1
        if self.mode == "step":
            return self.values[i]
        s0, s1 = self.steps[i], self.steps[i + 1]
        v0, v1 = self.values[i], self.values[i + 1]
        return v0 + (v1 - v0) * (step - s0) / (s1 - s0)

    @property
    def is_zero(self) -> bool:
        """True when the value is 0 at every step (a disabled loss term)."""
        return all(v == 0.0 for v in self.values)

    def __repr__(self) -> str:
        pts = list(zip(self.steps, self.values))
        return f"Schedule({self.name}, {self.mode}, {pts})"
