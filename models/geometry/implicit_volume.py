"""NeRF-style density field: hash grid + two small MLPs (threestudio's `implicit-volume`).

density(x) = activation(mlp_density(enc(x)) + bias(x)), features(x) = mlp_feature(enc(x)),
with the points normalised from the box [-radius, radius]^3 to [0, 1]^3 before encoding.
The density bias is the "blob" that starts optimisation from a soft ball (DreamFusion
Sec. 3.1 / Magic3D). Normals are -grad(density) normalised (DreamFusion eq. 4 region), either
by autograd ('analytic', twice differentiable so an orientation loss trains them) or by central
differences ('finite_difference', cheaper on CPU: six more density evaluations, no second
derivatives through the hash grid).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.interfaces import Geometry, Mesh
from framework.space_carving import CarvingViewsConfig, carving_cameras, unseen_cells
from models.encodings.hash_grid import HashGridConfig, HashGridEncoding

log = logging.getLogger(__name__)


class _TruncExp(torch.autograd.Function):
    """exp whose gradient is clamped (Instant-NGP's trunc_exp): keeps early steps from exploding."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15.0))


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
class ImplicitVolumeConfig:
    _target_: str = "models.geometry.implicit_volume.ImplicitVolume"
    radius: float = 1.0
    n_feature_dims: int = 3
    pos_encoding: HashGridConfig = field(default_factory=HashGridConfig)
    mlp_hidden_dims: int = 64
    mlp_n_hidden_layers: int = 1
    density_activation: str = "softplus"  # softplus | exp
    density_bias: Any = "blob_magic3d"  # blob_magic3d | blob_dreamfusion | a float
    density_blob_scale: float = 10.0
    density_blob_std: float = 0.5
    normal_type: str = "analytic"  # analytic | finite_difference
    finite_difference_eps: float = 0.01
    start_level: Optional[int] = None  # progressive hash grid: None = all levels from the start
    start_step: int = 0
    update_steps: int = 500
    isosurface_resolution: int = 128
    isosurface_threshold: Any = 25.0  # a float, or "auto" (see `auto_threshold`)
    isosurface_chunk: int = 2**18
    isosurface_fill_cavities: bool = True
    """Make empty pockets enclosed by the surface solid before meshing. No view ever sees inside an
    opaque object, so renders leave its interior density free, and SDS often hollows it out (a
    sphere's mesh came out as a shell of 0.65x the solid volume); a solid object has no such
    pockets, and without this the exported mesh gets an inner, inward-facing shell."""
    isosurface_cavity_max_opening: float = 0.0
    """With isosurface_fill_cavities, pockets whose openings to the outside are at most about this
    wide (world units) are filled too (0: only fully enclosed ones). A hollowed shell is often
    pierced by gaps narrower than a training pixel, which the prior cannot see."""
    isosurface_fill_unseen: Optional[CarvingViewsConfig] = None
    """The training cameras: empty cells that none of their views sees (behind the surface in every
    view) are made solid before meshing (space carving, framework/space_carving.py). This reaches
    hollows that open where no camera looks, such as an underside, which cavity filling keeps.
    null: off."""


class ImplicitVolume(Geometry):
    def __init__(self, cfg: ImplicitVolumeConfig, **runtime: Any):
        super().__init__()
        self.cfg = cfg
        self.radius = float(cfg.radius)
        if cfg.density_activation not in ("softplus", "exp"):
            raise ValueError(f"density_activation must be softplus | exp, got {cfg.density_activation!r}")
        if cfg.normal_type not in ("analytic", "finite_difference"):
            raise ValueError(f"normal_type must be analytic | finite_difference, got {cfg.normal_type!r}")
        if isinstance(cfg.density_bias, str) and cfg.density_bias not in ("blob_magic3d", "blob_dreamfusion"):
            raise ValueError(f"density_bias must be blob_magic3d | blob_dreamfusion | a number, got {cfg.density_bias!r}")
        self.encoding = HashGridEncoding(cfg.pos_encoding, in_dims=3)
        n_enc = self.encoding.n_output_dims
        self.density_network = make_mlp(n_enc, 1, cfg.mlp_hidden_dims, cfg.mlp_n_hidden_layers)
        self.feature_network = (
            make_mlp(n_enc, cfg.n_feature_dims, cfg.mlp_hidden_dims, cfg.mlp_n_hidden_layers) if cfg.n_feature_dims > 0 else None
        )
        if cfg.start_level is not None:
            self.encoding.set_active_levels(cfg.start_level)

    # ------------------------------------------------------------------ density
    def density_bias(self, points: Tensor) -> Tensor:  # (N, 3) world -> (N, 1)
        b = self.cfg.density_bias
        if b == "blob_magic3d":
            return self.cfg.density_blob_scale * (1.0 - points.norm(dim=-1, keepdim=True) / self.cfg.density_blob_std)
        if b == "blob_dreamfusion":
            r2 = (points * points).sum(-1, keepdim=True)
            return self.cfg.density_blob_scale * torch.exp(-0.5 * r2 / self.cfg.density_blob_std**2)
        return points.new_full((points.shape[0], 1), float(b))

    def activate_density(self, raw: Tensor) -> Tensor:
        return F.softplus(raw) if self.cfg.density_activation == "softplus" else _TruncExp.apply(raw)

    def normalize(self, points: Tensor) -> Tensor:  # world (N, 3) -> [0, 1]^3
        return (points + self.radius) / (2.0 * self.radius)

    def _encode(self, points: Tensor, normals_only: bool = False) -> Tensor:
        return self.encoding(self.normalize(points), normals_only=normals_only)

    def forward_density(self, points: Tensor, normals_only: bool = False) -> Tensor:  # (N, 3) -> (N, 1)
        raw = self.density_network(self._encode(points, normals_only)) + self.density_bias(points)
        return self.activate_density(raw)

    # ------------------------------------------------------------------ full forward
    def forward(self, points: Tensor, output_normal: bool = False) -> dict[str, Tensor]:
        """points (N, 3) world -> density (N, 1), features (N, F) raw, normal (N, 3) unit outward.

        With analytic normals the points are re-leafed (their own gradient is not propagated)."""
        analytic = output_normal and self.cfg.normal_type == "analytic"
        grad_enabled = torch.is_grad_enabled()
        # create_graph only while training with gradients on, so an orientation loss trains normals
        create_graph = analytic and grad_enabled and self.training
        with torch.set_grad_enabled(grad_enabled or analytic):
            if analytic:
                points = points.detach().requires_grad_(True)
            # normals_only: x's gradient is wanted inside autograd.grad below, never by loss.backward
            enc = self._encode(points, normals_only=analytic)
            density = self.activate_density(self.density_network(enc) + self.density_bias(points))
            out = {"density": density}
            if self.feature_network is not None:
                out["features"] = self.feature_network(enc)
            if analytic:
                (grad,) = torch.autograd.grad(density, points, torch.ones_like(density), create_graph=create_graph)
                out["normal"] = F.normalize(-grad, dim=-1)
            elif output_normal:
                out["normal"] = F.normalize(self.finite_difference_normal(points), dim=-1)
        if analytic and not create_graph:
            out = {k: v.detach() for k, v in out.items()} if not grad_enabled else {**out, "normal": out["normal"].detach()}
        return out

    def finite_difference_normal(self, points: Tensor) -> Tensor:  # (N, 3) -> (N, 3) unnormalised
        eps = self.cfg.finite_difference_eps
        offsets = points.new_tensor([[eps, 0, 0], [-eps, 0, 0], [0, eps, 0], [0, -eps, 0], [0, 0, eps], [0, 0, -eps]])
        shifted = (points.detach()[:, None, :] + offsets).clamp(-self.radius, self.radius)
        d = self.forward_density(shifted.reshape(-1, 3)).reshape(-1, 6)
        return -0.5 * (d[:, 0::2] - d[:, 1::2]) / eps

    # ------------------------------------------------------------------ schedule
    def update_step(self, global_step: int) -> None:
        """Progressive hash grid (threestudio's ProgressiveBandHashGrid):
        start_level + max(step - start_step, 0) // update_steps levels are active."""
        if self.cfg.start_level is None:
            return
        extra = max(global_step - self.cfg.start_step, 0) // self.cfg.update_steps
        self.encoding.set_active_levels(self.cfg.start_level + extra)

    # ------------------------------------------------------------------ isosurface
    @torch.no_grad()
    def density_grid(self, resolution: int | None = None) -> Tensor:
        """Density on torch.linspace(-radius, radius, R)^3, indexed [x, y, z] -> (R, R, R)."""
        res = resolution or self.cfg.isosurface_resolution
        device = next(self.parameters()).device
        lin = torch.linspace(-self.radius, self.radius, res, device=device)
        pts = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3)
        chunks = [self.forward_density(c) for c in pts.split(self.cfg.isosurface_chunk)]
        return torch.cat(chunks).reshape(res, res, res)

    def isosurface(self) -> Mesh:
        from framework.isosurface import marching_cubes  # written elsewhere; imported only when used

        field_ = self.density_grid()
        spacing = 2.0 * self.radius / (field_.shape[0] - 1)
        threshold = self.cfg.isosurface_threshold
        if threshold == "auto":
            threshold = auto_threshold(field_, spacing)
        unseen = None
        if self.cfg.isosurface_fill_unseen is not None:
            views = self.cfg.isosurface_fill_unseen
            c2w, fovy = carving_cameras(views)
            unseen = unseen_cells(field_.cpu() > float(threshold), self.radius, c2w, fovy, views.resolution)
        return marching_cubes(
            field_, radius=self.radius, threshold=float(threshold), inside="above",
            fill_cavities=self.cfg.isosurface_fill_cavities,
            cavity_closing=math.ceil(0.5 * self.cfg.isosurface_cavity_max_opening / spacing),
            solid=unseen,
        )


def auto_threshold(field_: Tensor, step: float, opaque_depth: float = 3.0) -> float:
    """A density level whose surface sits where rendered opacity crosses 0.5.

    Along a ray, opacity = 1 - exp(-integral of density) crosses 0.5 where the optical depth
    reaches ln 2. We march along every grid line of the density grid from both ends (six
    axis-aligned view directions), find the first sample where the accumulated optical depth
    reaches ln 2 and read the density there; the median over lines is the threshold. Only lines
    that end clearly opaque (optical depth >= `opaque_depth`, opacity >= 0.95) count: they cross
    the object's front surface, whereas lines that barely reach ln 2 graze the silhouette and
    cross it wherever their integral happens to run out. A surface at that level is where a
    view sees the object's front become half opaque. Falls back to all lines reaching ln 2, then
    to the mean density (threestudio's 'auto') when none does.

    field_ (R, R, R) density; step: grid spacing in world units.
    """
    half = math.log(2.0)
    for need in (opaque_depth, half):
        values = []
        for dim in range(3):
            for flip in (False, True):
                f = field_.movedim(dim, -1).reshape(-1, field_.shape[dim])
                f = f.flip(-1) if flip else f
                depth = torch.cumsum(f, -1) * step  # optical depth after each sample (left Riemann sum)
                hit = depth[:, -1] >= need
                if hit.any():
                    target = torch.full((int(hit.sum()), 1), half, device=f.device, dtype=f.dtype)
                    first = torch.searchsorted(depth[hit].contiguous(), target).clamp(max=f.shape[1] - 1)
                    values.append(f[hit].gather(1, first).squeeze(1))
        if values:
            return float(torch.cat(values).median())
    log.warning("isosurface_threshold='auto': no ray through the density grid becomes half opaque; using the mean density")
    return float(field_.mean())
