"""Steps whose loss or gradient is NaN/Inf are skipped; too many in a row stop the run with the reason.

A non-finite step left alone writes NaN into every parameter it touches, and the run trains
nothing from then on, silently. The guard checks each step after the backward pass, before the
optimiser: when the loss or any gradient is not finite it drops the gradients (`grad = None`, so
the optimiser leaves those parameters and their moments as they were), counts the step and logs
`train/nonfinite_steps`. After `trainer.max_nonfinite_steps` such steps in a row it stops
training; the runner then ends the run with `TrainingFailed`, naming the loss term that went
non-finite first, and the checkpoints already written stay (the skipped steps changed nothing).

The loss terms come from the system's `loss_terms` (framework/base_system.py keeps the last
step's weighted terms there); other LightningModules get the total only.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import pytorch_lightning as pl
import torch


class NonFiniteGuard(pl.Callback):
    def __init__(self, max_in_a_row: int):
        self.max_in_a_row = max_in_a_row
        self.skipped_total = 0
        self.in_a_row = 0
        self.first_cause: Optional[str] = None
        self.failure: Optional[str] = None
        self._loss_finite = True
        self._cause = ""

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        self._loss_finite = bool(torch.isfinite(loss.detach()).all())
        self._cause = "" if self._loss_finite else self._bad_term(pl_module, loss)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        cause = self._cause if not self._loss_finite else self._bad_gradient(optimizer)
        self._loss_finite, self._cause = True, ""
        if not cause:
            self.in_a_row, self.first_cause = 0, None
            return
        optimizer.zero_grad(set_to_none=True)  # the optimiser skips parameters without a gradient
        self.skipped_total += 1
        self.in_a_row += 1
        self.first_cause = self.first_cause or cause
        pl_module.log("train/nonfinite_steps", float(self.skipped_total), on_step=True, on_epoch=False)
        if self.in_a_row == 1:
            print(f"\nwarning: step {trainer.global_step}: {cause}; the step is skipped (parameters unchanged)", flush=True)
        if self.in_a_row >= self.max_in_a_row and self.failure is None:
            first_step = trainer.global_step - self.in_a_row + 1
            self.failure = (
                f"training stopped at step {trainer.global_step}: {self.in_a_row} steps in a row were non-finite "
                f"(trainer.max_nonfinite_steps={self.max_in_a_row}), the first at step {first_step}: {self.first_cause}. "
                "Lower the learning rate (system.optimizer.lr) or the guidance scale, or check the loss weights; "
                "the checkpoints in ckpts/ hold the last finite parameters."
            )
            trainer.should_stop = True

    @staticmethod
    def _bad_term(pl_module: pl.LightningModule, loss: torch.Tensor) -> str:
        for name, value in getattr(pl_module, "loss_terms", {}).items():
            if not math.isfinite(float(value)):
                return f"{name} is {float(value)}"
        return f"the loss is {float(loss.detach())}"

    @staticmethod
    def _bad_gradient(optimizer: Any) -> str:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # One float64 sum over every gradient, one host sync: it is finite exactly when every element
        # is (a NaN or an Inf reaches the sum; float64 cannot overflow on float32 values). A tensor-by-
        # tensor isfinite().all() costs ~7x as much per step; it runs only to name the culprit.
        if not grads or math.isfinite(float(torch.stack([g.sum(dtype=torch.float64) for g in grads]).sum())):
            return ""
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                if parameter.grad is not None and not bool(torch.isfinite(parameter.grad).all()):
                    name = group.get("name", "a parameter group")
                    return f"the gradient of {name} (shape {tuple(parameter.shape)}) is not finite"
        return ""
