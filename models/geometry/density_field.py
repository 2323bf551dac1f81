"""The base of the NeRF-style density fields: what ImplicitVolume and VolumeGrid share.

Both geometries are a raw density r(x) plus features over the box [-radius, radius]^3, and
differ only in how they store it (a hash grid + MLPs, models/geometry/implicit_volume.py; a
dense voxel grid, models/geometry/volume_grid.py). Everything downstream of r(x) is one
piece of code, here, so the two cannot drift apart:

    density(x) = activation(r(x) + bias(x))

- the density bias, the "blob" that starts optimisation from a soft ball (DreamFusion
  Sec. 3.1 / Magic3D), and the activation (softplus, or exp with a clamped gradient);
- normals, -grad(density) normalised (DreamFusion eq. 4 region), by autograd ('analytic',
  twice differentiable so an orientation loss trains them) or by central differences
  ('finite_difference': six more density evaluations, no second derivatives);
- the isosurface for export: the density on a regular grid, cavity filling and space carving,
  marching cubes at a fixed or automatic (`auto_threshold`) level.

A subclass stores the field: it implements `density_and_features` and `forward_density`, and
narrows its config's `normal_types` when it cannot offer every kind of normal.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.interfaces import Geometry, Mesh
from framework.space_carving import CarvingViewsConfig, carving_cameras, unseen_cells
from framework.value_checks import at_least, check_fields, either, greater_than, number, number_at_least, one_of

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


@dataclass
class DensityFieldConfig:
    """The fields every density field reads. Subclasses add their own and may redeclare a field
    to change its default (VolumeGridConfig does so for `normal_type`)."""

    _target_: str = "???"
    """The class to build; each subclass's config sets its own (declared here so it comes first)."""
    radius: float = 1.0
    """Half the side of the bounding box [-radius, radius]^3 the field lives in."""
    n_feature_dims: int = 3
    """Feature channels per point, which the material turns into colour."""
    density_activation: str = "softplus"
    """softplus | exp (exp with Instant-NGP's clamped gradient)."""
    density_bias: Any = "blob_magic3d"
    """Added to the raw density before the activation: blob_magic3d (scale (1 - |x| / std)) |
    blob_dreamfusion (scale exp(-|x|^2 / (2 std^2))) | a number (a constant offset)."""
    density_blob_scale: float = 10.0
    """The blob's height (the raw density added at the centre)."""
    density_blob_std: float = 0.5
    """The blob's width in world units (blob_magic3d: where its bias reaches 0)."""
    normal_type: str = "analytic"
    """analytic | finite_difference; a subclass may narrow or widen the choice (`normal_types`)."""
    finite_difference_eps: float = 0.01
    """Half the step of the central differences, in world units."""
    isosurface_resolution: int = 128
    """Samples per axis of the density grid that marching cubes meshes."""
    isosurface_threshold: Any = 25.0
    """The density level of the surface: a float, or "auto" (see `auto_threshold`)."""
    isosurface_chunk: int = 2**18
    """Points per density evaluation while sampling the grid (bounds the memory)."""
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

    normal_types: ClassVar[tuple] = ("analytic", "finite_difference")
    """The normal_type values this field accepts (None: no normals at all)."""

    def __post_init__(self) -> None:
        check_fields(
            self,
            radius=greater_than(0),
            n_feature_dims=at_least(0),
            density_activation=one_of("softplus", "exp"),
            density_bias=either(one_of("blob_magic3d", "blob_dreamfusion"), number()),
            density_blob_scale=number_at_least(0),
            density_blob_std=greater_than(0),
            normal_type=one_of(*self.normal_types),
            finite_difference_eps=greater_than(0),
            isosurface_resolution=at_least(2),
            isosurface_threshold=either(one_of("auto"), greater_than(0)),
            isosurface_chunk=at_least(1),
            isosurface_cavity_max_opening=number_at_least(0),
        )


class DensityField(Geometry):
    """Public tensors: points (N, 3) world; density (N, 1); features (N, n_feature_dims); normal (N, 3)."""

    def __init__(self, cfg: DensityFieldConfig):
        super().__init__()
        self.cfg = cfg
        self.radius = float(cfg.radius)

    # ------------------------------------------------------------------ what a subclass stores
    def density_and_features(self, points: Tensor, normals_only: bool = False, encoding: Tensor | None = None) -> dict[str, Tensor]:
        """points (N, 3) world -> density (N, 1) activated, features (N, F) raw (absent when F = 0).

        normals_only: the points' gradient is taken for analytic normals only, never by
        loss.backward (the hash grid then skips the work only loss.backward would need).
        encoding: what `density_and_encoding` returned for these points, to reuse (never passed
        when it returned None)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ density
    def density_bias(self, points: Tensor) -> Tensor:  # (N, 3) world -> (N, 1)
        b = self.cfg.density_bias
        if b == "blob_magic3d":
            return self.cfg.density_blob_scale * (1.0 - points.norm(dim=-1, keepdim=True) / self.cfg.density_blob_std)
        if b == "blob_dreamfusion":
            r2 = (points * points).sum(-1, keepdim=True)
            return self.cfg.density_blob_scale * torch.exp(-0.5 * r2 / self.cfg.density_blob_std**2)
        return points.new_full((points.shape[0], 1), float(b))

    def activate_density(self, raw: Tensor) -> Tensor:  # (N, 1) raw + bias -> (N, 1) >= 0
        return F.softplus(raw) if self.cfg.density_activation == "softplus" else _TruncExp.apply(raw)

    # ------------------------------------------------------------------ full forward
    def forward(self, points: Tensor, output_normal: bool = False, encoding: Tensor | None = None) -> dict[str, Tensor]:
        """points (N, 3) world -> density (N, 1), features (N, F) raw, normal (N, 3) unit outward
        (when asked and normal_type is not null).

        encoding: `density_and_encoding(points)[1]`, computed earlier without gradients (the
        renderer's early-stop pass): the same outputs and gradients, one interpolation fewer.
        With analytic normals the points are re-leafed (their own gradient is not propagated)."""
        analytic = output_normal and self.cfg.normal_type == "analytic"
        grad_enabled = torch.is_grad_enabled()
        # create_graph only while training with gradients on, so an orientation loss trains normals
        create_graph = analytic and grad_enabled and self.training
        with torch.set_grad_enabled(grad_enabled or analytic):
            if analytic:
                points = points.detach().requires_grad_(True)
            reuse = {} if encoding is None else {"encoding": encoding}
            # normals_only lets the hash grid drop d(enc)/dx from a plain backward pass (create_graph=False),
            # which is exactly the pass that gives eval-time normals: so only while training them
            out = self.density_and_features(points, normals_only=create_graph, **reuse)
            if analytic:
                density = out["density"]
                (grad,) = torch.autograd.grad(density, points, torch.ones_like(density), create_graph=create_graph)
                out["normal"] = F.normalize(-grad, dim=-1)
            elif output_normal and self.cfg.normal_type == "finite_difference":
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

    def preview_mesh(self, resolution: int) -> Mesh:
        """The live viewer's surface: the density grid at `resolution` meshed at the export's threshold
        (enclosed pockets filled; no space carving, no opening closing: a preview, not the export)."""
        from framework.isosurface import marching_cubes

        field_ = self.density_grid(resolution)
        threshold = self.cfg.isosurface_threshold
        if threshold == "auto":
            threshold = auto_threshold(field_, 2.0 * self.radius / (resolution - 1))
        return marching_cubes(field_, radius=self.radius, threshold=float(threshold), inside="above",
                              fill_cavities=self.cfg.isosurface_fill_cavities)


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
