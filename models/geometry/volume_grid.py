"""Dense voxel grid geometry (threestudio's `volume-grid`, the voxel radiance field of SJC).

One learnable tensor of (n_feature_dims + 1) channels at `grid_size` cells spans the box
[-radius, radius]^3; a point reads it by trilinear interpolation (`F.grid_sample`,
align_corners=True, so the outermost cells sit exactly on the box faces). Channel 0 is raw
density, the rest are features:

    density(x) = activation(grid_0(x) + bias(x)),    features(x) = grid_{1:}(x)

No network, so every parameter is local: SJC (Wang et al. 2023, Sec. 5) uses it with Adamax
and an emptiness prior (framework/regularisers.py) because a dense grid otherwise fills space
with faint density that hallucinates views.

The density bias, its activation, finite-difference normals, the density grid and the
isosurface are ImplicitVolume's own functions, shared by reference (this config uses the same
field names), so the two geometries cannot drift apart. Analytic normals are not offered: the
gradient of a trilinear field is piecewise constant, and grid_sample has no double backward.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.interfaces import Geometry
from framework.space_carving import CarvingViewsConfig
from models.geometry.implicit_volume import ImplicitVolume

NORMAL_TYPES = (None, "finite_difference")


@dataclass
class VolumeGridConfig:
    _target_: str = "models.geometry.volume_grid.VolumeGrid"
    radius: float = 1.0
    grid_size: List[int] = field(default_factory=lambda: [100, 100, 100])
    """Cells along x, y, z (threestudio / SJC: 100^3)."""
    n_feature_dims: int = 3
    density_activation: str = "softplus"  # softplus | exp
    density_bias: Any = "blob_magic3d"  # blob_magic3d | blob_dreamfusion | a float (SJC: -1.0)
    density_blob_scale: float = 10.0
    density_blob_std: float = 0.5
    init_std: float = 0.0
    """Std of the grid's initial values (threestudio: zeros)."""
    normal_type: Optional[str] = "finite_difference"
    """finite_difference | null (no normals: `output_normal` is ignored, as for SJC's latent NeRF)."""
    finite_difference_eps: float = 0.01
    isosurface_resolution: int = 128
    isosurface_threshold: Any = 25.0  # a float, or "auto" (models/geometry/implicit_volume.py auto_threshold)
    isosurface_chunk: int = 2**18
    isosurface_fill_cavities: bool = True  # see ImplicitVolumeConfig
    isosurface_cavity_max_opening: float = 0.0  # see ImplicitVolumeConfig
    isosurface_fill_unseen: Optional[CarvingViewsConfig] = None  # see ImplicitVolumeConfig


class VolumeGrid(Geometry):
    """Public tensors: points (N, 3) world; density (N, 1); features (N, n_feature_dims); normal (N, 3)."""

    # shared with ImplicitVolume (same cfg field names), see the module docstring
    density_bias = ImplicitVolume.density_bias  # (N, 3) -> (N, 1)
    activate_density = ImplicitVolume.activate_density  # (N, 1) raw -> (N, 1) >= 0
    finite_difference_normal = ImplicitVolume.finite_difference_normal  # (N, 3) -> (N, 3) unnormalised
    density_grid = ImplicitVolume.density_grid  # -> (R, R, R) on linspace(-radius, radius, R)^3
    isosurface = ImplicitVolume.isosurface  # -> Mesh

    def __init__(self, cfg: VolumeGridConfig, **runtime: Any):
        super().__init__()
        self.cfg = cfg
        self.radius = float(cfg.radius)
        if cfg.density_activation not in ("softplus", "exp"):
            raise ValueError(f"density_activation must be softplus | exp, got {cfg.density_activation!r}")
        if cfg.normal_type not in NORMAL_TYPES:
            raise ValueError(f"normal_type must be finite_difference | null, got {cfg.normal_type!r}")
        if isinstance(cfg.density_bias, str) and cfg.density_bias not in ("blob_magic3d", "blob_dreamfusion"):
            raise ValueError(f"density_bias must be blob_magic3d | blob_dreamfusion | a number, got {cfg.density_bias!r}")
        if len(cfg.grid_size) != 3 or min(cfg.grid_size) < 2:
            raise ValueError(f"grid_size must be three sizes >= 2 (x, y, z), got {list(cfg.grid_size)}")
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

    def forward(self, points: Tensor, output_normal: bool = False) -> dict[str, Tensor]:
        """points (N, 3) world -> density (N, 1), features (N, F) raw, normal (N, 3) unit outward
        (only when asked and normal_type is finite_difference)."""
        values = self.trilinear(points)
        out = {
            "density": self.activate_density(values[:, :1] + self.density_bias(points)),
            "features": values[:, 1:],
        }
        if output_normal and self.cfg.normal_type == "finite_difference":
            out["normal"] = F.normalize(self.finite_difference_normal(points), dim=-1)
        return out

    def export_features(self, points: Tensor) -> Tensor:  # (N, 3) -> (N, F)
        return self.trilinear(points)[:, 1:]
