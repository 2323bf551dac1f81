"""A single background colour, optionally learned (threestudio's `solid-color-background`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List

import torch
from torch import Tensor, nn

from framework.interfaces import Background
from framework.value_checks import check_fields, list_of, number


@dataclass
class SolidColorBackgroundConfig:
    _target_: str = "models.backgrounds.solid_color.SolidColorBackground"
    color: List[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    learned: bool = False

    def __post_init__(self) -> None:
        check_fields(self, color=list_of(number(), min_length=1))


class SolidColorBackground(Background):
    def __init__(self, cfg: SolidColorBackgroundConfig, **runtime: Any):
        super().__init__()
        self.cfg = cfg
        color = torch.tensor(list(cfg.color), dtype=torch.float32)
        if cfg.learned:
            self.color = nn.Parameter(color)
        else:
            self.register_buffer("color", color)

    def forward(self, dirs: Tensor) -> Tensor:  # (B, H, W, 3) -> (B, H, W, 3)
        return self.color.to(dirs.dtype).expand(*dirs.shape[:-1], self.color.shape[0])
