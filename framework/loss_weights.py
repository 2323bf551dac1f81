"""Loss weights: `lambda_<name>` schedules multiplying the `loss_<name>` terms a step produces.

Every term a guidance or regulariser returns must have a weight, and every weight must name a
term something can produce: both mistakes are configuration errors that name the key, raised
before training starts where possible (DESIGN.md: unknown or missing weights are an error).
A weight set to null is no weight at all (a config built on another method's drops its term so).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from framework.config import ConfigError
from framework.schedule import Schedule


class LossWeights:
    def __init__(self, weights: Mapping[str, Any], producible: Iterable[str]):
        producible = set(producible)
        self.schedules: dict[str, Schedule] = {}
        for key, spec in weights.items():
            if spec is None:
                continue  # null: no weight, e.g. a config built on another method's drops a term it has not
            if not key.startswith("lambda_"):
                raise ConfigError(f"system.loss.{key}: loss weights are named lambda_<term>, e.g. lambda_sds")
            name = key[len("lambda_") :]
            if name not in producible:
                raise ConfigError(
                    f"system.loss.{key}: no part of this system produces loss_{name}. "
                    f"Known terms: {', '.join(sorted('lambda_' + n for n in producible))}"
                )
            self.schedules[name] = Schedule.parse(spec, name=f"system.loss.{key}")

    def weight(self, name: str, step: int) -> float:
        if name not in self.schedules:
            raise ConfigError(f"loss_{name} was produced but system.loss.lambda_{name} is not set; add it (0 disables)")
        return self.schedules[name](step)

    def active(self, name: str) -> bool:
        """Whether a regulariser is worth computing at all (its weight is not always zero)."""
        return name in self.schedules and not self.schedules[name].is_zero

    def combine(self, losses: Mapping[str, Tensor], step: int) -> tuple[Tensor, dict[str, float]]:
        """sum_name lambda_name(step) * loss_name -> (total, {name: value, lambda_name: weight}).

        A non-finite term with a non-zero weight makes the total non-finite; the step is then skipped
        by framework/nonfinite_guard.py, which names the term. A zero-weighted term is left out."""
        total: Tensor | None = None
        logged: dict[str, float] = {}
        for key, value in losses.items():
            name = key[len("loss_") :]
            w = self.weight(name, step)
            logged[key] = float(value.detach())
            logged[f"lambda_{name}"] = w
            if w != 0.0:
                total = value * w if total is None else total + value * w
        if total is None:
            raise ConfigError(f"every loss weight is zero at step {step}: nothing to optimise")
        return total, logged
