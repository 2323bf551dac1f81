"""NonFiniteGuard: a NaN step changes no parameter and the run goes on; NaN at every step stops it."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from framework.nonfinite_guard import NonFiniteGuard


class Line(pl.LightningModule):
    """y = w x + b fitted by Adam; `nan_steps` are the steps whose loss is made NaN."""

    def __init__(self, nan_steps: set[int], nan_in: str = "loss"):
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.nan_steps, self.nan_in = nan_steps, nan_in
        self.after_step: dict[int, torch.Tensor] = {}
        self.loss_terms: dict[str, float] = {}

    def training_step(self, batch, batch_idx):
        x = torch.linspace(-1, 1, 8)[:, None]
        loss = ((self.layer(x) - 3 * x) ** 2).mean()
        if self.global_step in self.nan_steps:
            if self.nan_in == "loss":
                loss = loss * float("nan")
            else:  # finite loss, NaN gradient: sqrt's derivative at 0 is inf, times 0 is NaN
                loss = loss + torch.sqrt(self.layer.weight.sum() * 0).sum()
        self.loss_terms = {"loss_fit": float(loss.detach())}
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.after_step[self.global_step] = torch.cat([p.detach().flatten().clone() for p in self.parameters()])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(1000, 1), batch_size=1)


def fit(model: Line, steps: int, max_in_a_row: int = 3) -> NonFiniteGuard:
    guard = NonFiniteGuard(max_in_a_row)
    trainer = pl.Trainer(max_steps=steps, callbacks=[guard], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model)
    return guard


def test_a_nan_loss_leaves_the_parameters_unchanged_and_training_continues(capsys):
    model = Line(nan_steps={3})
    guard = fit(model, steps=6)
    # on_train_batch_end sees global_step already advanced: after_step[k] = parameters after k steps
    assert torch.equal(model.after_step[4], model.after_step[3])  # step 3 skipped
    assert not torch.equal(model.after_step[5], model.after_step[4])  # and training goes on
    assert torch.isfinite(model.after_step[6]).all()
    assert guard.skipped_total == 1 and guard.failure is None
    assert "step 3: loss_fit is nan; the step is skipped" in capsys.readouterr().out


def test_a_nan_gradient_with_a_finite_loss_is_skipped_too(capsys):
    model = Line(nan_steps={2}, nan_in="gradient")
    guard = fit(model, steps=4)
    assert torch.equal(model.after_step[3], model.after_step[2])
    assert guard.skipped_total == 1
    assert "step 2: the gradient of a parameter group (shape (1, 1)) is not finite" in capsys.readouterr().out


def test_the_optimiser_state_is_not_touched_by_a_skipped_step():
    clean, skipped = Line(nan_steps=set()), Line(nan_steps={2})
    skipped.load_state_dict(clean.state_dict())
    fit(clean, steps=2)
    fit(skipped, steps=3)  # steps 0, 1, then the skipped step 2
    assert torch.equal(skipped.after_step[3], clean.after_step[2])


def test_nan_at_every_step_stops_the_run_and_names_the_term():
    model = Line(nan_steps=set(range(100)))
    guard = fit(model, steps=50, max_in_a_row=4)
    assert guard.failure is not None and guard.skipped_total == 4
    assert "4 steps in a row" in guard.failure and "loss_fit is nan" in guard.failure
    assert "system.optimizer.lr" in guard.failure  # says what to change
    assert max(model.after_step) == 4  # stopped, not run to 50
    first = model.after_step[1]
    assert all(torch.equal(first, model.after_step[k]) for k in model.after_step)


def test_the_gradient_check_finds_one_bad_element_and_no_false_alarm_on_huge_finite_values():
    """The one-sum check: finite float32 extremes (whose float32 sum would overflow) pass; a single
    NaN, +Inf or -Inf anywhere, or +Inf and -Inf in two tensors, is caught and named."""
    big, small = nn.Parameter(torch.zeros(100_000)), nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.Adam([{"params": [small], "name": "small"}, {"params": [big], "name": "big"}])
    big.grad, small.grad = torch.full((100_000,), 3.0e38), torch.full((3,), -3.0e38)
    assert NonFiniteGuard._bad_gradient(optimizer) == ""
    for bad in (float("nan"), float("inf"), float("-inf")):
        big.grad = torch.full((100_000,), 3.0e38)
        big.grad[70_123] = bad
        assert NonFiniteGuard._bad_gradient(optimizer) == "the gradient of big (shape (100000,)) is not finite"
    big.grad, small.grad = torch.zeros(100_000), torch.tensor([0.0, float("inf"), 0.0])
    big.grad[5] = float("-inf")
    assert NonFiniteGuard._bad_gradient(optimizer) == "the gradient of small (shape (3,)) is not finite"
