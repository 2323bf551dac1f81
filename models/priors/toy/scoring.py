"""Scores an exported mesh against its toy scene (TOYWORLD.md, 'Scoring a run').

Metrics (all in world coordinates, +z up; an OBJ exported with `export.up_axis=+y` is rotated back
first, so both axes score the same file the same):

- iou: volumetric IoU on the cell centres of a regular G^3 grid over [-0.6, 0.6]^3; truth is
  scene.sdf < 0, the mesh's inside is decided by ray parity (below).
- chamfer: symmetric mean L2 distance, (mean_{p in M} min_{q in S} |p - q| +
  mean_{q in S} min_{p in M} |p - q|) / 2, M and S n uniform (area-weighted) samples on the mesh
  and on the true surface (scipy cKDTree). World units; not squared. A perfect mesh scores the
  sampling floor, not 0 (about 0.0025 for the sphere with 100k samples each; it falls like
  1/sqrt(n)), so compare chamfer values only at equal n_surface_samples.
- colour_error: on the mesh samples, the texture (bilinear, via the samples' interpolated UVs)
  versus the albedo of the nearest true primitive (scene.albedo), mean absolute difference
  over samples and channels. The texture file is sRGB-encoded (framework/colour_space.py) and is
  decoded to linear albedo before the comparison; `score_mesh` takes the decoded (linear) texture.
  NaN when the mesh has no UVs or texture.

Inside test, hand-written because trimesh.contains needs embree to be fast: a parity
voxeliser. For each grid column along an axis, every triangle whose projection covers the
column contributes one crossing; a grid point is inside when an odd number of crossings lie
below it. Points exactly on a projected edge or vertex are resolved by simulation of
simplicity (a consistent infinitesimal shift of the column), so shared edges count once and a
closed mesh gives exact parity. For a mesh that is not closed a hole corrupts the parity of the
columns through it; we therefore vote over the three axis directions (inside when at least two
say so), which repairs isolated holes and is identical to single-axis parity for closed meshes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from scipy.spatial import cKDTree

from framework.interfaces import Evaluator
from framework.value_checks import at_least, check_fields

from .scenes import ToyScene, parse_prompt

GRID_HALF_EXTENT = 0.6


def grid_centres(resolution: int, half_extent: float = GRID_HALF_EXTENT) -> np.ndarray:
    """Cell-centre coordinates along one axis. -> (G,)"""
    step = 2.0 * half_extent / resolution
    return -half_extent + (np.arange(resolution) + 0.5) * step


def _parity_along_z(tri: np.ndarray, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, canon: np.ndarray) -> np.ndarray:
    """Odd-crossing test along +z for the grid xs x ys x zs. tri (F, 3, 3) float64 -> bool (X, Y, Z).

    canon (F, 3, 2) int: per triangle edge (edge e joins corners e and e+1) the corner indices in
    a canonical order (lower vertex id first), so a shared edge is evaluated bit-identically by
    both triangles that use it.
    """
    nx, ny, nz = len(xs), len(ys), len(zs)
    x0, dx = xs[0], xs[1] - xs[0]
    y0, dy = ys[0], ys[1] - ys[0]
    lo, hi = tri[:, :, :2].min(1), tri[:, :, :2].max(1)
    i0 = np.clip(np.ceil((lo[:, 0] - x0) / dx - 1e-9), 0, nx).astype(np.int64)
    i1 = np.clip(np.floor((hi[:, 0] - x0) / dx + 1e-9), -1, nx - 1).astype(np.int64)
    j0 = np.clip(np.ceil((lo[:, 1] - y0) / dy - 1e-9), 0, ny).astype(np.int64)
    j1 = np.clip(np.floor((hi[:, 1] - y0) / dy + 1e-9), -1, ny - 1).astype(np.int64)
    ci, cj = np.maximum(i1 - i0 + 1, 0), np.maximum(j1 - j0 + 1, 0)
    counts = ci * cj
    total = int(counts.sum())
    crossings = np.zeros(nx * ny * (nz + 1), dtype=np.int64)
    if total:
        face = np.repeat(np.arange(len(tri)), counts)
        local = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        col_i = i0[face] + local // cj[face]
        col_j = j0[face] + local % cj[face]
        px, py = xs[col_i], ys[col_j]
        t = tri[face]  # (P, 3, 3)
        # 2D orientation of the projected triangle: which side of each edge is inside
        e1, e2 = t[:, 1, :2] - t[:, 0, :2], t[:, 2, :2] - t[:, 0, :2]
        area2 = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        inside = area2 != 0.0
        lam = []
        for e in range(3):
            a = t[np.arange(total), canon[face, e, 0]]
            b = t[np.arange(total), canon[face, e, 1]]
            w = (b[:, 0] - a[:, 0]) * (py - a[:, 1]) - (b[:, 1] - a[:, 1]) * (px - a[:, 0])
            # simulation of simplicity: shift the column by (eps, eps^2); sign of the shift term
            ex, ey = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
            tie = np.where(ey != 0.0, -np.sign(ey), np.sign(ex))
            w_sign = np.where(w != 0.0, np.sign(w), tie)
            # the opposite corner's side of the canonical edge = inside side
            opposite = 3 - canon[face, e, 0] - canon[face, e, 1]
            c = t[np.arange(total), opposite]
            side = np.sign((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
            inside &= w_sign == side
            lam.append(np.abs(w))
        if inside.any():
            f = np.nonzero(inside)[0]
            lam_arr = np.stack([lam[1][f], lam[2][f], lam[0][f]], axis=-1)  # weight of corner 0, 1, 2
            # edge e is opposite corner (e + 2) % 3; barycentric weight of a corner ~ |w| of its opposite edge
            z = (lam_arr * t[f, :, 2]).sum(-1) / lam_arr.sum(-1).clip(min=1e-300)
            k = np.searchsorted(zs, z, side="right")  # grid points k' >= k lie above the crossing
            col = col_i[f] * ny + col_j[f]
            np.add.at(crossings, col * (nz + 1) + k, 1)
    below = np.cumsum(crossings.reshape(nx * ny, nz + 1), axis=-1)[:, :nz]
    return (below % 2 == 1).reshape(nx, ny, nz)


def inside_mesh(vertices: np.ndarray, faces: np.ndarray, resolution: int, half_extent: float = GRID_HALF_EXTENT) -> np.ndarray:
    """Which cell centres of the G^3 grid over [-h, h]^3 lie inside the mesh. -> bool (G, G, G) indexed [x, y, z].

    vertices (V, 3), faces (F, 3). Majority vote of ray parity along x, y and z (module docstring).
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    c = grid_centres(resolution, half_extent)
    if len(f) == 0:
        return np.zeros((resolution,) * 3, dtype=bool)
    # OBJ loaders split vertices at UV seams: merge exact duplicates so that the two triangles
    # of a shared edge name the same vertex ids (the tie rule below relies on it)
    v, inverse = np.unique(v, axis=0, return_inverse=True)
    f = inverse.reshape(-1)[f]
    # canonical corner order per edge (corner e -> e+1), lower vertex id first
    a_corner = np.array([0, 1, 2])
    b_corner = np.array([1, 2, 0])
    swap = f[:, a_corner] > f[:, b_corner]  # (F, 3)
    canon = np.stack([np.where(swap, b_corner, a_corner), np.where(swap, a_corner, b_corner)], axis=-1)
    votes = np.zeros((resolution,) * 3, dtype=np.int8)
    for axis in range(3):
        perm = [(axis + 1) % 3, (axis + 2) % 3, axis]  # ray along `axis`
        tri = v[f][:, :, perm]
        par = _parity_along_z(tri, c, c, c, canon)  # indexed [perm0, perm1, axis]
        votes += np.transpose(par, np.argsort(perm)).astype(np.int8)
    return votes >= 2


def sample_mesh(
    vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0, uvs: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """n area-weighted uniform points on a mesh -> points (n, 3), and their interpolated UVs (n, 2) if uvs (V, 2) given."""
    rng = np.random.default_rng(seed)
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)
    face = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    bary = np.stack([1.0 - s, s * (1.0 - r2), s * r2], axis=-1)  # (n, 3)
    points = (bary[:, :, None] * tri[face]).sum(1)
    if uvs is None:
        return points, None
    uv = (bary[:, :, None] * np.asarray(uvs, dtype=np.float64)[f[face]]).sum(1)
    return points, uv


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup, OBJ convention (v = 0 is the image's bottom row), clamped at borders.

    texture (H, W, C) float in [0, 1]; uv (n, 2) -> (n, C)
    """
    h, w = texture.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0.0, w - 1.0)
    y = np.clip((1.0 - uv[:, 1]) * h - 0.5, 0.0, h - 1.0)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = texture[y0, x0] * (1.0 - fx) + texture[y0, x1] * fx
    bottom = texture[y1, x0] * (1.0 - fx) + texture[y1, x1] * fx
    return top * (1.0 - fy) + bottom * fy


def score_mesh(
    vertices: np.ndarray,  # (V, 3) world coordinates, +z up
    faces: np.ndarray,  # (F, 3)
    scene: ToyScene | str,
    uvs: np.ndarray | None = None,  # (V, 2) per-vertex UVs (OBJ convention)
    texture: np.ndarray | None = None,  # (H, W, 3) float in [0, 1], LINEAR albedo
    grid_resolution: int = 128,
    n_surface_samples: int = 100_000,
    seed: int = 0,
) -> dict[str, float]:
    """-> {"iou", "chamfer", "colour_error", "n_faces", "n_vertices", "volume_mesh", "volume_true"} (module docstring)."""
    scene = parse_prompt(scene) if isinstance(scene, str) else scene
    g = grid_resolution
    inside = inside_mesh(vertices, faces, g)
    c = torch.from_numpy(grid_centres(g)).float()
    grid = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), dim=-1).reshape(-1, 3)
    truth = np.concatenate([(scene.sdf(chunk) < 0).numpy() for chunk in grid.split(1 << 20)]).reshape(g, g, g)
    union = np.logical_or(inside, truth).sum()
    iou = float(np.logical_and(inside, truth).sum() / union) if union else 0.0
    cell = (2.0 * GRID_HALF_EXTENT / g) ** 3
    out: dict[str, float] = {
        "iou": iou,
        "n_faces": float(len(faces)),
        "n_vertices": float(len(vertices)),
        "volume_mesh": float(inside.sum() * cell),
        "volume_true": float(truth.sum() * cell),
    }
    if len(faces) == 0:
        out.update(chamfer=math.inf, colour_error=math.nan)
        return out
    has_colour = uvs is not None and texture is not None
    mesh_pts, mesh_uv = sample_mesh(vertices, faces, n_surface_samples, seed, uvs if has_colour else None)
    true_pts = scene.sample_surface(n_surface_samples, seed).double().numpy()
    d_mt, _ = cKDTree(true_pts).query(mesh_pts)
    d_tm, _ = cKDTree(mesh_pts).query(true_pts)
    out["chamfer"] = float(0.5 * (d_mt.mean() + d_tm.mean()))
    if has_colour:
        colour = sample_texture(np.asarray(texture, dtype=np.float64)[..., :3], mesh_uv)
        true_albedo = scene.albedo(torch.from_numpy(mesh_pts).float()).double().numpy()
        out["colour_error"] = float(np.abs(colour - true_albedo).mean())
    else:
        out["colour_error"] = math.nan
    return out


@dataclass
class ToySceneEvaluatorConfig:
    _target_: str = "models.priors.toy.scoring.ToySceneEvaluator"
    scene: Optional[str] = None
    """The toy prompt of the true scene (TOYWORLD.md); text-to-3D configs set the run's prompt. None: the
    picture is of no known scene (image-to-3D of a user's image) and the run is not scored."""
    grid_resolution: int = 128
    n_surface_samples: int = 100000
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, grid_resolution=at_least(1), n_surface_samples=at_least(1))


class ToySceneEvaluator(Evaluator):
    """Reads `export_dir/model.obj` (+ its UVs, rotated back to world axes) and `texture_kd.png` (sRGB, decoded to
    linear albedo) and scores them against the scene: the scores are those of the files a user gets."""

    def __init__(self, cfg: ToySceneEvaluatorConfig, **runtime_objects: Any) -> None:
        self.cfg = cfg
        self.scene = parse_prompt(cfg.scene) if cfg.scene is not None else None  # a bad prompt fails before training

    def evaluate(self, export_dir: str) -> dict[str, float]:
        if self.scene is None:
            print("not scored: no toy scene named (set system.evaluator.scene=\"<toy prompt>\" to score against it)")
            return {}
        import trimesh
        from PIL import Image

        from framework.colour_space import decode_srgb8
        from framework.export import OBJ_AXES, read_obj_up_axis

        export = Path(export_dir)
        obj = export / "model.obj"
        if not obj.exists():
            raise FileNotFoundError(f"no exported mesh to score: {obj} does not exist")
        mesh = trimesh.load(obj, process=False, force="mesh")
        uvs = getattr(mesh.visual, "uv", None)
        texture = None
        png = export / "texture_kd.png"
        if uvs is not None and png.exists():
            texture = decode_srgb8(np.asarray(Image.open(png).convert("RGB")))
        world = np.asarray(mesh.vertices) @ OBJ_AXES[read_obj_up_axis(obj)]  # file axes -> world, exact (0/±1 entries)
        return score_mesh(
            world,
            np.asarray(mesh.faces),
            self.scene,
            uvs=None if uvs is None else np.asarray(uvs),
            texture=texture,
            grid_resolution=self.cfg.grid_resolution,
            n_surface_samples=self.cfg.n_surface_samples,
            seed=self.cfg.seed,
        )
