"""framework/optim.py: groups by module prefix; torch's fused update where a config asks for it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from framework.config import ConfigError
from framework.optim import OptimizerConfig, build_optimizer

ADAM_ARGS = {"betas": [0.9, 0.99], "eps": 1.0e-15}


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def train(module: nn.Module, cfg: OptimizerConfig, steps: int = 10) -> nn.Module:
    optimizer = build_optimizer(module, cfg)
    torch.manual_seed(1)
    for _ in range(steps):
        optimizer.zero_grad()
        module(torch.randn(16, 4)).square().mean().backward()
        optimizer.step()
    return module


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_fused_is_the_same_update_as_the_default_loop(name):
    fused_cfg = OptimizerConfig(name=name, args={**ADAM_ARGS, "fused": True})
    assert build_optimizer(model(), fused_cfg).defaults["fused"] is True
    fused = train(model(), fused_cfg)
    loop = train(model(), OptimizerConfig(name=name, args=ADAM_ARGS))
    for a, b in zip(fused.parameters(), loop.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_groups_take_the_longest_prefix_and_a_prefix_naming_no_module_is_a_config_error():
    optimizer = build_optimizer(model(), OptimizerConfig(params={"0": {"lr": 0.5}, "0.bias": {"lr": 0.25}}))
    by_name = {group["name"]: group for group in optimizer.param_groups}
    assert by_name["0.bias"]["lr"] == 0.25 and len(by_name["0.bias"]["params"]) == 1
    assert by_name["0"]["lr"] == 0.5 and len(by_name["0"]["params"]) == 1
    assert len(by_name["default"]["params"]) == 2
    with pytest.raises(ConfigError, match="no module named"):
        build_optimizer(model(), OptimizerConfig(params={"encoder": {"lr": 0.1}}))
