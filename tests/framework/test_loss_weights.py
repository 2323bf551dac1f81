import pytest
import torch

from framework.config import ConfigError
from framework.loss_weights import LossWeights


def test_weighted_sum_and_logging():
    lw = LossWeights({"lambda_sds": 1.0, "lambda_orient": [[0, 10.0], [10, 20.0]]}, ["sds", "orient", "sparsity"])
    total, logged = lw.combine({"loss_sds": torch.tensor(2.0), "loss_orient": torch.tensor(1.0)}, step=5)
    assert total.item() == pytest.approx(2.0 + 15.0)
    assert logged["lambda_orient"] == 15.0 and logged["loss_sds"] == 2.0
    assert lw.active("orient") and not lw.active("sparsity")


def test_unknown_and_missing_weights_are_errors():
    with pytest.raises(ConfigError, match="lambda_sdss"):
        LossWeights({"lambda_sdss": 1.0}, ["sds"])
    lw = LossWeights({"lambda_sds": 1.0}, ["sds", "orient"])
    with pytest.raises(ConfigError, match="lambda_orient"):
        lw.combine({"loss_sds": torch.tensor(1.0), "loss_orient": torch.tensor(1.0)}, 0)


def test_a_nan_term_makes_the_total_nan_unless_its_weight_is_zero():
    lw = LossWeights({"lambda_sds": 1.0, "lambda_orient": 0.0}, ["sds", "orient"])
    total, logged = lw.combine({"loss_sds": torch.tensor(float("nan")), "loss_orient": torch.tensor(1.0)}, 3)
    assert torch.isnan(total) and logged["loss_sds"] != logged["loss_sds"]  # the guard skips the step
    total, _ = lw.combine({"loss_sds": torch.tensor(2.0), "loss_orient": torch.tensor(float("inf"))}, 3)
    assert total.item() == 2.0


def test_a_null_weight_is_no_weight():
    lw = LossWeights({"lambda_sds": None, "lambda_vsd": 1.0}, ["vsd", "lora"])  # loss_sds is nobody's term here
    assert not lw.active("sds")
    with pytest.raises(ConfigError, match="lambda_sds is not set"):
        lw.combine({"loss_vsd": torch.tensor(1.0), "loss_sds": torch.tensor(1.0)}, 0)
