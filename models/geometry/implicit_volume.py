"""NeRF-style density field: hash grid + two small MLPs (threestudio's `implicit-volume`).

density(x) = activation(mlp_density(enc(x)) + bias(x)), features(x) = mlp_feature(enc(x)),
with the points normalised from the box [-radius, radius]^3 to [0, 1]^3 before encoding.
The bias, activation, normals (analytic or finite-difference) and isosurface are the density
fields' shared ones (models/geometry/density_field.py); this file adds the networks and the
progressive hash grid.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from torch import Tensor, nn

from framework.value_checks import at_least, check_fields, optional
from models.encodings.hash_grid import HashGridConfig, HashGridEncoding
from models.geometry.density_field import DensityField, DensityFieldConfig
from models.geometry.density_field import auto_threshold  # noqa: F401  (its home before density_field.py)


def make_mlp(n_in: int, n_out: int, hidden: int, n_hidden_layers: int) -> nn.Sequential:
    """ReLU MLP without biases (threestudio's VanillaMLP / tcnn FullyFusedMLP)."""
    dims = [n_in] + [hidden] * n_hidden_layers + [n_out]
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=False))
        if i < len(dims) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


@dataclass
class ImplicitVolumeConfig(DensityFieldConfig):
    _target_: str = "models.geometry.implicit_volume.ImplicitVolume"
    pos_encoding: HashGridConfig = field(default_factory=HashGridConfig)
    """The hash-grid encoding of the normalised points."""
    mlp_hidden_dims: int = 64
    """Width of the hidden layers of both MLPs (density and features)."""
    mlp_n_hidden_layers: int = 1
    """Hidden layers of each MLP."""
    start_level: Optional[int] = None
    """Progressive hash grid: hash-grid levels active at start_step (None = all levels from the start)."""
    start_step: int = 0
    """Progressive hash grid: the step from which levels are added."""
    update_steps: int = 500
    """Progressive hash grid: steps between adding one more level."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(
            self,
            mlp_hidden_dims=at_least(1),
            mlp_n_hidden_layers=at_least(0),
            start_level=optional(at_least(1)),
            start_step=at_least(0),
            update_steps=at_least(1),
        )


class ImplicitVolume(DensityField):
    """Public tensors: points (N, 3) world; density (N, 1); features (N, n_feature_dims); normal (N, 3)."""

    def __init__(self, cfg: ImplicitVolumeConfig, **runtime: Any):
        super().__init__(cfg)
        self.encoding = HashGridEncoding(cfg.pos_encoding, in_dims=3)
        n_enc = self.encoding.n_output_dims
        self.density_network = make_mlp(n_enc, 1, cfg.mlp_hidden_dims, cfg.mlp_n_hidden_layers)
        self.feature_network = (
            make_mlp(n_enc, cfg.n_feature_dims, cfg.mlp_hidden_dims, cfg.mlp_n_hidden_layers) if cfg.n_feature_dims > 0 else None
        )
        if cfg.start_level is not None:
            self.encoding.set_active_levels(cfg.start_level)

    # ------------------------------------------------------------------ density
    def normalize(self, points: Tensor) -> Tensor:  # world (N, 3) -> [0, 1]^3
        return (points + self.radius) / (2.0 * self.radius)

    def _encode(self, points: Tensor, normals_only: bool = False, encoding: Tensor | None = None) -> Tensor:
        return self.encoding(self.normalize(points), normals_only=normals_only, precomputed=encoding)

    def _density(self, enc: Tensor, points: Tensor) -> Tensor:  # encoding (N, E), points (N, 3) -> (N, 1)
        return self.activate_density(self.density_network(enc) + self.density_bias(points))

    def forward_density(self, points: Tensor, normals_only: bool = False) -> Tensor:  # (N, 3) -> (N, 1)
        return self._density(self._encode(points, normals_only), points)

    def density_and_encoding(self, points: Tensor) -> tuple[Tensor, Tensor | None]:
        """forward_density, and the hash-grid encoding of the points when a later forward can reuse it."""
        enc = self._encode(points)
        return self._density(enc, points), (enc if self.encoding.reusable_output else None)

    def density_and_features(self, points: Tensor, normals_only: bool = False, encoding: Tensor | None = None) -> dict[str, Tensor]:
        """points (N, 3) -> density (N, 1), features (N, F) when n_feature_dims > 0: one encoding for both."""
        enc = self._encode(points, normals_only=normals_only, encoding=encoding)
        out = {"density": self._density(enc, points)}
        if self.feature_network is not None:
            out["features"] = self.feature_network(enc)
        return out

    # ------------------------------------------------------------------ schedule
    def update_step(self, global_step: int) -> None:
        """Progressive hash grid (threestudio's ProgressiveBandHashGrid):
        start_level + max(step - start_step, 0) // update_steps levels are active."""
        if self.cfg.start_level is None:
            return
        extra = max(global_step - self.cfg.start_step, 0) // self.cfg.update_steps
        self.encoding.set_active_levels(self.cfg.start_level + extra)
