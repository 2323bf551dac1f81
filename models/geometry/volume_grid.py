"""Dense voxel grid geometry (threestudio's `volume-grid`, the voxel radiance field of SJC).

One learnable tensor of (n_feature_dims + 1) channels at `grid_size` cells spans the box
[-radius, radius]^3; a point reads it by trilinear interpolation (`F.grid_sample`,
align_corners=True, so the outermost cells sit exactly on the box faces). Channel 0 is raw
density, the rest are features:

    density(x) = activation(grid_0(x) + bias(x)),    features(x) = grid_{1:}(x)

No network, so every parameter is local: SJC (Wang et al. 2023, Sec. 5) uses it with Adamax,
a constant density bias (-1.0 in its configs) and an emptiness prior
(framework/regularisers.py) because a dense grid otherwise fills space with faint density
that hallucinates views.

The density bias, its activation, the normals, the density grid and the isosurface are the
density fields' shared ones (models/geometry/density_field.py). Analytic normals are not
offered: the gradient of a trilinear field is piecewise constant, and grid_sample has no
double backward.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.value_checks import at_least, check_fields, list_of, number_at_least
from models.geometry.density_field import DensityField, DensityFieldConfig

NORMAL_TYPES = ("finite_difference", None)


@dataclass
class VolumeGridConfig(DensityFieldConfig):
    _target_: str = "models.geometry.volume_grid.VolumeGrid"
    grid_size: List[int] = field(default_factory=lambda: [100, 100, 100])
    """Cells along x, y, z (threestudio / SJC: 100^3)."""
    init_std: float = 0.0
    """Std of the grid's initial values (threestudio: zeros)."""
    normal_type: Optional[str] = "finite_difference"
    """finite_difference | null (no normals: `output_normal` is ignored, as for SJC's latent NeRF).
    Redeclared from DensityFieldConfig: a different default, and null is allowed."""

    normal_types: ClassVar[tuple] = NORMAL_TYPES

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, grid_size=list_of(at_least(2), length=3), init_std=number_at_least(0))


class VolumeGrid(DensityField):
    """Public tensors: points (N, 3) world; density (N, 1); features (N, n_feature_dims); normal (N, 3)."""

    def __init__(self, cfg: VolumeGridConfig, **runtime: Any):
        super().__init__(cfg)
        nx, ny, nz = (int(s) for s in cfg.grid_size)
        # grid_sample reads a (1, C, D, H, W) volume with coordinates (x, y, z) -> (W, H, D)
        self.grid = nn.Parameter(torch.randn(1, cfg.n_feature_dims + 1, nz, ny, nx) * cfg.init_std)

    def trilinear(self, points: Tensor) -> Tensor:
        """points (N, 3) world -> all grid channels (N, 1 + n_feature_dims), trilinear."""
        coords = (points / self.radius).clamp(-1.0, 1.0).to(self.grid.dtype)
        out = F.grid_sample(self.grid, coords.view(1, 1, 1, -1, 3), mode="bilinear", align_corners=True)
        return out.view(self.grid.shape[1], -1).t()

    def forward_density(self, points: Tensor) -> Tensor:  # (N, 3) -> (N, 1)
        raw = self.trilinear(points)[:, :1]
        return self.activate_density(raw + self.density_bias(points))

    def density_and_features(self, points: Tensor, normals_only: bool = False) -> dict[str, Tensor]:
        """points (N, 3) -> density (N, 1), features (N, F): one lookup for both. normals_only is
        never set (no analytic normals)."""
        values = self.trilinear(points)
        return {
            "density": self.activate_density(values[:, :1] + self.density_bias(points)),
            "features": values[:, 1:],
        }

    def export_features(self, points: Tensor) -> Tensor:  # (N, 3) -> (N, F)
        return self.trilinear(points)[:, 1:]
