"""Optimizers from config: a torch.optim class by name, parameter groups by module prefix."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

import torch
from torch import nn

from framework.config import ConfigError
from framework.value_checks import Rule, check_entries, check_fields, greater_than

GROUP_OPTIONS = Rule(
    "must be a mapping of parameter-group options whose lr, where given, is a number > 0",
    lambda group: hasattr(group, "items") and ("lr" not in group or greater_than(0).allows(group["lr"])),
)


@dataclass
class OptimizerConfig:
    name: str = "Adam"
    """A class of torch.optim (Adam, AdamW, Adamax, SGD, ...)."""
    lr: float = 0.01
    """Learning rate of every trainable parameter no entry of `params` claims."""
    args: Dict[str, Any] = field(default_factory=lambda: {"betas": [0.9, 0.99], "eps": 1.0e-15})
    params: Dict[str, Any] = field(default_factory=dict)
    """Module-name prefix -> group options, e.g. {geometry.encoding: {lr: 0.01}, background: {lr: 0.001}}.
    The longest matching prefix wins."""

    def __post_init__(self) -> None:
        check_fields(
            self,
            name=Rule("must name an optimizer class of torch.optim (Adam, AdamW, Adamax, SGD, ...)",
                      lambda v: isinstance(v, str) and isinstance(getattr(torch.optim, v, None), type)),
            lr=greater_than(0),
        )
        check_entries(self, "params", GROUP_OPTIONS)


def build_optimizer(module: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    prefixes = sorted(cfg.params, key=len, reverse=True)
    groups: dict[str, list[nn.Parameter]] = {p: [] for p in prefixes}
    default: list[nn.Parameter] = []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        prefix = next((p for p in prefixes if name == p or name.startswith(p + ".")), None)
        if prefix is None:
            default.append(param)
        else:
            groups[prefix].append(param)
    # A prefix naming no module or parameter at all is a typo; a module without trainable
    # parameters (a fixed background colour) simply contributes no group.
    names = {name for name, _ in module.named_modules()} | {name for name, _ in module.named_parameters()}
    unknown = [p for p in prefixes if p not in names]
    if unknown:
        raise ConfigError(
            f"system.optimizer.params: no module named {unknown}. "
            f"Modules with parameters: {sorted({n.rsplit('.', 1)[0] for n, _ in module.named_parameters()})}"
        )
    param_groups = [{"params": groups[p], "name": p, **dict(cfg.params[p])} for p in prefixes if groups[p]]
    if default:
        param_groups.append({"params": default, "name": "default"})
    args = dict(cfg.args)
    if "betas" in args:
        args["betas"] = tuple(args["betas"])
    return getattr(torch.optim, cfg.name)(param_groups, lr=cfg.lr, **args)
