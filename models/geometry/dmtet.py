"""DMTet geometry (Shen et al. 2021; threestudio's `tetrahedra-sdf-grid`), Magic3D's refine stage.

A tetrahedral grid of [-radius, radius]^3 with N cells per side (built by
models/geometry/tetrahedral_grid.py at any N) carries a learnable SDF value per vertex
(**sdf < 0 inside**) and a learnable vertex offset bounded by tanh (DMTet eq. 1 region):

    v = v_grid + tanh(deformation) * deformation_scale * (2 radius / N).

`isosurface()` runs marching tetrahedra (models/geometry/marching_tetrahedra.py) on the
deformed grid, so the mesh's vertices are differentiable w.r.t. both the SDF and the offsets;
only the tets of cubes whose corners change sign are built (a 128^3 grid has 12.6 M tets).
Surface colour comes from a hash-grid encoding + MLP evaluated at surface points, the same
networks as ImplicitVolume (so a coarse NeRF's texture can be inherited by copying them).

`forward(points)` over arbitrary points (the Geometry interface) evaluates the SDF
piecewise-linearly on the *undeformed* grid (exact there, approximate once vertices moved),
and reports a stand-in density for tools that expect one; a DMTet is rendered by
rasterising `isosurface()` (models/renderers/mesh_renderer.py), not by ray marching.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from framework.interfaces import Geometry, Mesh
from framework.value_checks import at_least, between, check_fields, greater_than, number_at_least, one_of, optional
from models.encodings.hash_grid import HashGridConfig, HashGridEncoding
from models.geometry.density_field import auto_threshold
from models.geometry.implicit_volume import make_mlp
from models.geometry.marching_tetrahedra import marching_tetrahedra
from models.geometry.tetrahedral_grid import cell_tets, locate

log = logging.getLogger(__name__)


@dataclass
class DMTetConfig:
    _target_: str = "models.geometry.dmtet.DMTet"
    radius: float = 1.0
    isosurface_resolution: int = 128  # N, cells per side of the tet grid
    isosurface_deformable_grid: bool = True
    # offsets bounded to deformation_scale cells; 0.5 keeps vertices from swapping along an axis
    # (threestudio bounds them by one cell: 1.0)
    deformation_scale: float = 0.5
    fix_geometry: bool = False  # texture-only refinement: SDF and offsets frozen
    n_feature_dims: int = 3
    pos_encoding: HashGridConfig = field(default_factory=HashGridConfig)
    mlp_hidden_dims: int = 64
    mlp_n_hidden_layers: int = 1
    shape_init: Optional[str] = "sphere"  # analytic start: sphere | None (sdf = +1: empty until initialised)
    shape_init_radius: float = 0.5  # world units
    init_chunk: int = 2**18  # points per density query when initialising from a geometry
    # Cleaning a coarse NeRF's level set when initialising from it (see `clean_level_set`):
    fill_cavities: bool = True  # enclosed empty bubbles become inside (they would be hidden inner surfaces)
    min_component_fraction: float = 0.01  # inside blobs smaller than this fraction of the largest are dropped

    def __post_init__(self) -> None:
        check_fields(
            self,
            radius=greater_than(0),
            isosurface_resolution=at_least(2),
            deformation_scale=number_at_least(0),
            n_feature_dims=at_least(0),
            mlp_hidden_dims=at_least(1),
            mlp_n_hidden_layers=at_least(0),
            shape_init=optional(one_of("sphere")),
            shape_init_radius=greater_than(0),
            init_chunk=at_least(1),
            min_component_fraction=between(0, 1),
        )


class DMTet(Geometry):
    def __init__(self, cfg: DMTetConfig, **runtime: Any):
        super().__init__()
        self.cfg = cfg
        self.radius = float(cfg.radius)
        n = int(cfg.isosurface_resolution)
        self.resolution = n
        self.cell = 2.0 * self.radius / n
        lin = torch.linspace(-self.radius, self.radius, n + 1)
        grid = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), dim=-1).reshape(-1, 3)
        # rebuilt from the config, so not stored in checkpoints
        self.register_buffer("grid_vertices", grid, persistent=False)
        self.sdf = nn.Parameter(torch.ones(grid.shape[0]))  # (V,)
        self.deformation = nn.Parameter(torch.zeros(grid.shape[0], 3), requires_grad=cfg.isosurface_deformable_grid)
        if cfg.fix_geometry:
            self.sdf.requires_grad_(False)
            self.deformation.requires_grad_(False)
        self.encoding = HashGridEncoding(cfg.pos_encoding, in_dims=3)
        self.feature_network = (
            make_mlp(self.encoding.n_output_dims, cfg.n_feature_dims, cfg.mlp_hidden_dims, cfg.mlp_n_hidden_layers)
            if cfg.n_feature_dims > 0
            else None
        )
        if cfg.shape_init == "sphere":
            self.initialize_from_shape("sphere", radius=cfg.shape_init_radius)

    # ------------------------------------------------------------------ mesh
    def vertices(self) -> Tensor:
        """Deformed grid vertices (V, 3)."""
        if not self.cfg.isosurface_deformable_grid:
            return self.grid_vertices
        return self.grid_vertices + torch.tanh(self.deformation) * (self.cfg.deformation_scale * self.cell)

    def crossing_tets(self) -> Tensor:
        """(T', 4) long: the tets of every cube whose 8 corners do not all have the same sign."""
        n = self.resolution
        inside = (self.sdf.detach() < 0).reshape(n + 1, n + 1, n + 1)
        corners = [inside[i : i + n, j : j + n, k : k + n] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
        any_in = corners[0].clone()
        all_in = corners[0].clone()
        for c in corners[1:]:
            any_in |= c
            all_in &= c
        cells = (any_in & ~all_in).nonzero()
        return cell_tets(cells, n)

    def isosurface(self) -> Mesh:
        """The zero level set as a Mesh, vertices differentiable w.r.t. sdf and deformation."""
        tets = self.crossing_tets()
        # deform only the vertices of crossed cubes (a few % of a fine grid): the rest never
        # reach the mesh, and tanh over all of them would dominate the cost at N >= 128
        used = torch.zeros(self.sdf.shape[0], dtype=torch.bool, device=tets.device)
        used[tets.reshape(-1)] = True
        ids = used.nonzero()[:, 0]
        remap = torch.cumsum(used.long(), 0) - 1
        verts = self.grid_vertices[ids]
        if self.cfg.isosurface_deformable_grid:
            verts = verts + torch.tanh(self.deformation[ids]) * (self.cfg.deformation_scale * self.cell)
        return marching_tetrahedra(verts, self.sdf[ids], remap[tets])

    # ------------------------------------------------------------------ fields at points
    def normalize(self, points: Tensor) -> Tensor:  # world (N, 3) -> [0, 1]^3
        return ((points + self.radius) / (2.0 * self.radius)).clamp(0.0, 1.0)

    def export_features(self, points: Tensor) -> Tensor:
        """points (N, 3) -> raw features (N, F) (a material turns them into albedo)."""
        if self.feature_network is None:
            return points.new_zeros(points.shape[0], 0)
        return self.feature_network(self.encoding(self.normalize(points)))

    def forward_sdf(self, points: Tensor) -> Tensor:
        """points (N, 3) -> sdf (N, 1), piecewise-linear on the undeformed grid's tets."""
        idx, w = locate(points, self.resolution, self.radius)
        return (self.sdf[idx] * w).sum(-1, keepdim=True)

    def forward_density(self, points: Tensor) -> Tensor:
        """points (N, 3) -> a stand-in density (N, 1): 1/cell deep inside, falling linearly to 0
        over one cell around the zero level (opaque within a few cells). Only for tools that
        need a density (e.g. volume-rendered previews); DMTet itself is rasterised."""
        sdf = self.forward_sdf(points)
        return (0.5 - sdf / self.cell).clamp(0.0, 1.0) / self.cell

    def forward(self, points: Tensor, output_normal: bool = False) -> dict[str, Tensor]:
        """points (N, 3) -> features (N, F), sdf (N, 1), density (N, 1), normal (N, 3) if asked
        (the normalised gradient of the piecewise-linear sdf: constant per tet)."""
        out = {"features": self.export_features(points)}
        if output_normal:
            with torch.enable_grad():
                p = points.detach().requires_grad_(True)
                sdf = self.forward_sdf(p)
                (grad,) = torch.autograd.grad(sdf.sum(), p)
            out["normal"] = torch.nn.functional.normalize(grad, dim=-1)
        sdf = self.forward_sdf(points)
        out["sdf"] = sdf
        out["density"] = (0.5 - sdf / self.cell).clamp(0.0, 1.0) / self.cell
        return out

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def initialize_from_shape(self, shape: Union[str, Callable[[Tensor], Tensor]] = "sphere", radius: float = 0.5) -> None:
        """Set the SDF from an analytic shape: 'sphere' (centred, `radius`, world units) or a
        callable mapping points (N, 3) -> signed distances (N,) (negative inside).

        The exact signed distance is used (not an occupancy): its zero crossing along every grid
        edge is then located by marching tetrahedra's linear interpolation with second-order
        error, and the values are in world units, so the first refinement steps move a surface
        that already sits where the shape is. Offsets are reset to zero."""
        pts = self.grid_vertices
        if callable(shape):
            sdf = shape(pts).reshape(-1)
        elif shape == "sphere":
            sdf = pts.norm(dim=-1) - float(radius)
        else:
            raise ValueError(f"unknown analytic shape {shape!r}; use 'sphere' or pass an SDF callable")
        self.sdf.data.copy_(sdf.to(self.sdf))
        self.deformation.data.zero_()

    @torch.no_grad()
    def initialize_from_geometry(self, geometry: Geometry, threshold: Union[float, str] = "auto", copy_network: bool = True) -> float:
        """Start from an implicit density field (Magic3D's coarse ImplicitVolume); returns the
        density threshold used.

        The SDF is the coarse field's level function on the tet grid's vertices, normalised:
        sdf = clamp((threshold - density) / threshold, -1, 1) (threestudio uses
        clamp(threshold - density, -1, 1)). Its zero level is exactly the coarse stage's
        isosurface at the same threshold, up to tets versus cubes, so the refinement starts
        from the shape the coarse stage exported; a true distance would need a distance
        transform of that surface and only changes magnitudes, which marching tetrahedra does
        not see beyond the crossing points. Dividing by the threshold makes the values
        independent of the density's scale (the SDF learning rate means the same for any
        coarse run); the clamp keeps far-away values from dominating. threshold: a float, or
        'auto' (models/geometry/density_field.py `auto_threshold`: where rendered opacity
        crosses 0.5). copy_network: also copy the hash-grid encoding and feature MLP, so the
        texture is inherited (needs the same encoding / MLP config and radius)."""
        n = self.resolution
        pts = self.grid_vertices.to(next(geometry.parameters()).device)
        inner = float(getattr(geometry, "radius", self.radius))
        chunks = [geometry.forward_density(c.clamp(-inner, inner)) for c in pts.split(self.cfg.init_chunk)]
        density = torch.cat(chunks).reshape(-1).to(self.sdf)
        if threshold == "auto":
            threshold = auto_threshold(density.reshape(n + 1, n + 1, n + 1), self.cell)
            log.info("DMTet init: automatic density threshold %.4g", threshold)
        threshold = float(threshold)
        if threshold <= 0:
            raise ValueError(f"density threshold must be > 0, got {threshold}")
        sdf = ((threshold - density) / threshold).clamp(-1.0, 1.0)
        self.sdf.data.copy_(clean_level_set(sdf.reshape(n + 1, n + 1, n + 1), self.cfg).reshape(-1))
        self.deformation.data.zero_()
        if not (density > threshold).any():
            log.warning("DMTet init: no grid vertex has density above %.4g; the mesh is empty", threshold)
        if copy_network:
            self.copy_texture_networks(geometry)
        return threshold

    @torch.no_grad()
    def initialize_from_dmtet(self, other: "DMTet", copy_network: bool = True) -> None:
        """Take over another DMTet's surface exactly: its SDF and vertex offsets (ProlificDreamer's
        texture stage starts from its geometry stage so). The grids must be the same (radius,
        resolution, deformation); copy_network also copies the texture networks."""
        keys = ("radius", "isosurface_resolution", "isosurface_deformable_grid", "deformation_scale")
        differ = [f"{k} {getattr(other.cfg, k)} vs {getattr(self.cfg, k)}" for k in keys if getattr(other.cfg, k) != getattr(self.cfg, k)]
        if differ:
            raise ValueError(f"the tetrahedral grids differ (source vs this DMTet: {'; '.join(differ)})")
        self.sdf.data.copy_(other.sdf.to(self.sdf))
        self.deformation.data.copy_(other.deformation.to(self.deformation))
        if copy_network:
            self.copy_texture_networks(other)

    @torch.no_grad()
    def copy_texture_networks(self, geometry: Geometry) -> None:
        """Copy the hash-grid encoding and feature MLP of `geometry` (the same configs and radius needed)."""
        source_radius = float(getattr(geometry, "radius", self.radius))
        if abs(source_radius - self.radius) > 1e-6:
            raise ValueError(f"copy_network needs the same radius (source {source_radius}, DMTet {self.radius}): the encoding normalises by it")
        for name in ("encoding", "feature_network"):
            src, dst = getattr(geometry, name, None), getattr(self, name)
            if src is None or dst is None:
                raise ValueError(f"cannot inherit the texture: {name} missing on the {'source geometry' if src is None else 'DMTet'}")
            try:
                dst.load_state_dict(src.state_dict())
            except RuntimeError as err:
                raise ValueError(f"cannot copy {name} from the source geometry: configs differ ({err})") from err


def clean_level_set(sdf: Tensor, cfg: DMTetConfig) -> Tensor:
    """sdf (R, R, R) on the grid (negative inside) -> the same with cavities filled and floaters removed.

    A NeRF's density has enclosed low-density bubbles and small detached blobs ("floaters"); at a
    level set they become closed inner surfaces and specks that rasterization and the scores
    (Chamfer samples every surface) see, though no view of the object does. Empty regions not
    connected to the grid's border (6-connectivity, framework.isosurface.enclosed_cavities) are set
    inside; inside regions smaller than `min_component_fraction` of the largest are set outside.
    scipy's connected-component labelling does the work (CPU, once per initialisation).
    """
    import numpy as np
    from scipy import ndimage

    values = sdf.detach().cpu().numpy().copy()
    inside = values < 0
    if cfg.fill_cavities:
        from framework.isosurface import enclosed_cavities

        cavity = enclosed_cavities(inside)
        values[cavity] = -np.abs(values[cavity]).clip(min=1e-3)
        inside |= cavity
    if cfg.min_component_fraction > 0:
        labels, count = ndimage.label(inside)
        if count > 1:
            sizes = np.bincount(labels.ravel())[1:]
            small = np.isin(labels, 1 + np.nonzero(sizes < cfg.min_component_fraction * sizes.max())[0])
            values[small] = np.abs(values[small]).clip(min=1e-3)
    return torch.from_numpy(values).to(sdf)
