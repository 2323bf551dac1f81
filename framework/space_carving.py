"""Space carving: the empty cells of an occupancy grid that no training camera sees.

Score distillation constrains only what its cameras see. Behind the first surface along every
training ray, density is free: SDS can leave an object hollow, and where no view reaches (the
underside, when every camera looks from the horizon or above) the hollow can open to the
outside, so it is no enclosed pocket and cavity filling (framework/isosurface.py) keeps it. An
orange cube came out as a box with no bottom face: a shell whose inside opened downwards.

Space carving (Kutulakos & Seitz, "A Theory of Shape by Space Carving", 2000) keeps a cell empty
only when some view sees through it: here, when the cell lies in front of the first occupied
cell along its pixel's ray in at least one view. Every other empty cell that some view frames is
hidden behind the surface in all views, and is reported so the mesher can count it solid. Cells
that no view frames are left alone.

Each view is a depth map of the first occupied cell along every pixel ray (a ray march through
the grid), and each cell is projected into it (a shadow-map test). The depth map is max-pooled
over 3 x 3 pixels and a cell must lie half a cell in front of the hit, so that a cell near a
silhouette or a grazing surface, whose own ray is not quite its pixel's, counts as seen: the
errors fall on the side of filling less.

Written here because the libraries that carve (Open3D's VoxelGrid.carve_depth_map) would add a
large dependency for one function. Cameras follow framework/cameras.py (OpenGL c2w, +z up).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.cameras import focal_from_fovy, get_rays, orbit_c2w
from framework.value_checks import at_least, between, check_fields, greater_than, increasing_pair, inside


@dataclass
class CarvingViewsConfig:
    """The training cameras, as a grid of views on their orbit (the method's data config ranges)."""

    elevation_range: List[float] = field(default_factory=lambda: [-10.0, 60.0])
    """Degrees; the elevations are spread evenly over it, both ends included."""
    camera_distance: float = 1.6
    fovy_deg: float = 40.0
    n_elevations: int = 6
    n_azimuths: int = 16
    """Azimuths evenly spaced over the full circle."""
    resolution: int = 96
    """Side of each view's depth map in pixels."""

    def __post_init__(self) -> None:
        check_fields(
            self,
            elevation_range=increasing_pair(between(-90, 90)),
            camera_distance=greater_than(0),
            fovy_deg=inside(0, 180),
            n_elevations=at_least(1),
            n_azimuths=at_least(1),
            resolution=at_least(1),
        )


def carving_cameras(cfg: CarvingViewsConfig) -> tuple[Tensor, Tensor]:
    """-> c2w (N, 4, 4), fovy (N,) radians: every elevation with every azimuth."""
    low, high = (float(v) for v in cfg.elevation_range)
    elevation = torch.linspace(low, high, cfg.n_elevations) if cfg.n_elevations > 1 else torch.tensor([0.5 * (low + high)])
    azimuth = torch.arange(cfg.n_azimuths, dtype=torch.float32) * (360.0 / cfg.n_azimuths)
    el, az = torch.meshgrid(elevation, azimuth, indexing="ij")
    el, az = el.reshape(-1), az.reshape(-1)
    c2w = orbit_c2w(el, az, torch.full_like(el, cfg.camera_distance))
    return c2w, torch.full_like(el, math.radians(cfg.fovy_deg))


def first_hit_distance(inside: Tensor, radius: float, c2w: Tensor, fovy: Tensor, resolution: int) -> Tensor:
    """Distance along each pixel ray to the first inside cell (inf where the ray meets none).

    inside (R, R, R) bool on torch.linspace(-radius, radius, R) per axis, indexed [x, y, z];
    c2w (4, 4); fovy () radians -> (resolution, resolution). Steps of half a cell, nearest cell, so
    that a ray crossing a wall one cell thick at a slant still lands in it.
    """
    n = inside.shape[0]
    cell = 2.0 * radius / (n - 1)
    rays_o, rays_d = get_rays(c2w[None], fovy[None], resolution, resolution)
    rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    centre_distance = float(c2w[:3, 3].norm())
    reach = math.sqrt(3.0) * radius  # the box lies within this of the origin
    t = torch.arange(max(centre_distance - reach, 0.0), centre_distance + reach, 0.5 * cell)
    hit_t = torch.full((rays_o.shape[0],), math.inf)
    flat = inside.reshape(-1)
    for rows in torch.arange(rays_o.shape[0]).split(1024):
        points = rays_o[rows, None, :] + rays_d[rows, None, :] * t[None, :, None]  # (r, T, 3)
        index = torch.round((points + radius) / cell).long()
        valid = ((index >= 0) & (index < n)).all(-1)
        index = index.clamp(0, n - 1)
        hit = flat[(index[..., 0] * n + index[..., 1]) * n + index[..., 2]] & valid  # (r, T)
        first = hit.float().argmax(-1)
        hit_t[rows] = torch.where(hit.any(-1), t[first], torch.tensor(math.inf))
    return hit_t.reshape(resolution, resolution)


def project(points: Tensor, c2w: Tensor, fovy: Tensor, resolution: int) -> tuple[Tensor, Tensor, Tensor]:
    """World points (P, 3) into one view -> pixel row (P,), column (P,) (long; outside the frame
    where not in [0, resolution)), and distance from the camera (P,). The inverse of get_rays:
    a point at distance t along pixel (i, j)'s ray lands in pixel (i, j) at distance t."""
    rel = points - c2w[:3, 3]
    cam = rel @ c2w[:3, :3]  # coordinates along the camera's right, up and back axes
    depth = -cam[:, 2]  # OpenGL: the camera looks down its -z
    focal = focal_from_fovy(fovy, resolution)
    safe = depth.clamp_min(1e-6)
    col = torch.floor(cam[:, 0] / safe * focal + 0.5 * resolution)
    row = torch.floor(0.5 * resolution - cam[:, 1] / safe * focal)
    behind = depth <= 0
    col = torch.where(behind, torch.full_like(col, -1), col)
    return row.long(), col.long(), rel.norm(dim=-1)


def unseen_cells(inside: Tensor, radius: float, c2w: Tensor, fovy: Tensor, resolution: int = 96) -> Tensor:
    """The empty cells that some view frames and no view sees (module docstring).

    inside (R, R, R) bool as in `first_hit_distance`; c2w (N, 4, 4); fovy (N,) radians
    -> (R, R, R) bool, never true where `inside` is.
    """
    n = inside.shape[0]
    cell = 2.0 * radius / (n - 1)
    axis = torch.linspace(-radius, radius, n)
    empty = ~inside.reshape(-1)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)[empty]
    framed = torch.zeros(points.shape[0], dtype=torch.bool)
    unseen = torch.arange(points.shape[0])  # cells no view has seen yet: most go in the first views
    for view in range(c2w.shape[0]):
        hit = first_hit_distance(inside, radius, c2w[view], fovy[view], resolution)
        # neighbouring pixels' hits too: a cell near a silhouette may sit on the far side of its pixel's ray
        hit = F.max_pool2d(hit.nan_to_num(posinf=1e30)[None, None], 3, stride=1, padding=1)[0, 0]
        row, col, distance = project(points[unseen], c2w[view], fovy[view], resolution)
        in_frame = (row >= 0) & (row < resolution) & (col >= 0) & (col < resolution)
        surface = hit[row.clamp(0, resolution - 1), col.clamp(0, resolution - 1)]
        framed[unseen[in_frame]] = True
        unseen = unseen[~(in_frame & (distance < surface - 0.5 * cell))]
    hidden = torch.zeros(points.shape[0], dtype=torch.bool)
    hidden[unseen] = True
    out = torch.zeros(n**3, dtype=torch.bool)
    out[empty] = framed & hidden
    return out.reshape(n, n, n)
