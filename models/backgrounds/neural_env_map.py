"""A background colour predicted from the view direction (threestudio's
`neural-environment-map-background`): spherical-harmonics encoding of the direction (the basis
tcnn's SphericalHarmonics encoding uses, written in PyTorch so it runs on CPU) and a small MLP.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
from torch import Tensor, nn

from framework.interfaces import Background
from framework.value_checks import at_least, between, check_fields, list_of, number, one_of, optional
from models.materials.diffuse_with_point_light import ACTIVATIONS, get_activation


def spherical_harmonics(dirs: Tensor, degree: int) -> Tensor:
    """Real SH basis of bands 0..degree-1 (degree**2 values, tcnn's convention). (N, 3) unit -> (N, degree**2)"""
    if not 1 <= degree <= 4:
        raise ValueError(f"spherical harmonics degree must be 1..4, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.94617469575755997 * zz - 0.31539156525251999,
            -1.0925484305920792 * x * z,
            0.54627421529603959 * (xx - yy),
        ]
    if degree > 3:
        out += [
            0.59004358992664352 * y * (-3.0 * xx + yy),
            2.8906114426405538 * x * y * z,
            0.45704579946446572 * y * (1.0 - 5.0 * zz),
            0.3731763325901154 * z * (5.0 * zz - 3.0),
            0.45704579946446572 * x * (1.0 - 5.0 * zz),
            1.4453057213202769 * z * (xx - yy),
            0.59004358992664352 * x * (-xx + 3.0 * yy),
        ]
    return torch.stack(out, -1)


@dataclass
class NeuralEnvironmentMapBackgroundConfig:
    _target_: str = "models.backgrounds.neural_env_map.NeuralEnvironmentMapBackground"
    n_output_dims: int = 3
    color_activation: str = "sigmoid"
    sh_degree: int = 3
    mlp_hidden_dims: int = 16
    mlp_n_hidden_layers: int = 1
    random_aug: bool = False  # training: with random_aug_prob, one random colour for the whole image
    random_aug_prob: float = 0.5
    eval_color: Optional[List[float]] = None  # outside training, this colour instead (None: the network)

    def __post_init__(self) -> None:
        check_fields(
            self,
            n_output_dims=at_least(1),
            color_activation=one_of(*ACTIVATIONS),
            sh_degree=between(1, 4),
            mlp_hidden_dims=at_least(1),
            mlp_n_hidden_layers=at_least(0),
            random_aug_prob=between(0, 1),
            eval_color=optional(list_of(number(), length=self.n_output_dims)),
        )


class NeuralEnvironmentMapBackground(Background):
    def __init__(self, cfg: NeuralEnvironmentMapBackgroundConfig, **runtime: Any):
        super().__init__()
        self.cfg = cfg
        self.activation = get_activation(cfg.color_activation)
        dims = [cfg.sh_degree**2] + [cfg.mlp_hidden_dims] * cfg.mlp_n_hidden_layers + [cfg.n_output_dims]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1], bias=False))
            if i < len(dims) - 2:
                layers.append(nn.ReLU(inplace=True))
        self.network = nn.Sequential(*layers)

    def forward(self, dirs: Tensor) -> Tensor:  # (B, H, W, 3) unit -> (B, H, W, n_output_dims)
        if not self.training and self.cfg.eval_color is not None:
            color = torch.tensor(list(self.cfg.eval_color), dtype=dirs.dtype, device=dirs.device)
            return color.expand(*dirs.shape[:-1], self.cfg.n_output_dims)
        feats = spherical_harmonics(dirs.reshape(-1, 3), self.cfg.sh_degree)
        color = self.activation(self.network(feats)).reshape(*dirs.shape[:-1], self.cfg.n_output_dims)
        if self.training and self.cfg.random_aug and random.random() < self.cfg.random_aug_prob:
            # `color * 0` keeps the network in the graph (DDP sees every parameter used)
            rand = torch.rand(dirs.shape[0], 1, 1, self.cfg.n_output_dims, device=dirs.device, dtype=dirs.dtype)
            color = color * 0 + rand.expand_as(color)
        return color
