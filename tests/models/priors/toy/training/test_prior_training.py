"""The learning-rate schedule shared by the prior-training systems."""
from __future__ import annotations

import math

import pytest

from models.priors.toy.training.prior_training import PriorTrainingConfig, PriorTrainingSystem


def test_constant_rate_after_warm_up_by_default():
    system = PriorTrainingSystem(PriorTrainingConfig(warmup_steps=10))
    assert system.lr_factor(0) == pytest.approx(0.1)
    assert system.lr_factor(9) == 1.0
    assert system.lr_factor(5000) == 1.0


def test_cosine_decay_between_the_given_steps():
    cfg = PriorTrainingConfig(warmup_steps=10, lr_decay_start=100, lr_decay_end=200, lr_final_ratio=0.1)
    system = PriorTrainingSystem(cfg)
    assert system.lr_factor(99) == 1.0
    assert system.lr_factor(100) == pytest.approx(1.0)
    assert system.lr_factor(150) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert system.lr_factor(200) == pytest.approx(0.1)
    assert system.lr_factor(1000) == pytest.approx(0.1)
    rates = [system.lr_factor(step) for step in range(100, 201)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize("start, end", [(100, None), (None, 200), (200, 100)])
def test_half_given_or_backwards_decay_is_a_clear_error(start, end):
    with pytest.raises(ValueError, match="lr_decay_end"):
        PriorTrainingSystem(PriorTrainingConfig(lr_decay_start=start, lr_decay_end=end))
