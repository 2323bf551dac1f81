"""Isosurface extraction: a scalar field on a regular grid -> a closed, outward-facing `Mesh`.

Marching cubes itself is PyMCubes (`mcubes.marching_cubes`); this file owns the conventions
around it, which is where the bugs live:

- grid layout: `field[i, j, k]` is sampled at `(x_i, y_j, z_k)` with
  `x = torch.linspace(-radius, radius, R)` (same for y and z), i.e. `indexing="ij"`;
- which side is the object: `inside="above"` for densities (object where field > threshold),
  `inside="below"` for signed distances (object where field < threshold);
- closure: the field is padded by one cell of "outside" value, so an object touching the
  bounding box still gives a watertight mesh (needed for containment tests when scoring);
- orientation: faces are wound so normals point outward (positive signed volume), whatever
  winding the installed PyMCubes uses.

Optional cleanup drops small disconnected components (floaters) with trimesh, and optional
cavity filling (scipy.ndimage.binary_fill_holes) makes enclosed empty pockets solid; `solid`
counts given cells inside (the cells no training view sees: framework/space_carving.py).
"""
from __future__ import annotations

from typing import Callable

import mcubes
import numpy as np
import torch
from torch import Tensor

from framework.errors import TrainingFailed
from framework.interfaces import Mesh


class EmptySurfaceError(TrainingFailed, ValueError):
    """The field does not cross the isosurface threshold: there is nothing to mesh at that level (a run
    ends with exit code 3, its checkpoints kept for another threshold)."""

__all__ = ["grid_points", "marching_cubes", "extract_isosurface", "remove_small_components", "enclosed_cavities"]


def grid_points(resolution: int, radius: float) -> Tensor:
    """The (R^3, 3) float32 sample points of an R^3 grid over [-radius, radius]^3.

    Row `i * R^2 + j * R + k` is `(x_i, y_j, z_k)`, so `values.reshape(R, R, R)` gives the
    `field[i, j, k]` layout `marching_cubes` expects.
    """
    x = torch.linspace(-radius, radius, resolution, dtype=torch.float32)
    gx, gy, gz = torch.meshgrid(x, x, x, indexing="ij")
    return torch.stack([gx, gy, gz], dim=-1).reshape(-1, 3)


def _suggest_threshold(values: np.ndarray) -> float:
    # The median splits the grid in half, so it is guaranteed to cross when values vary.
    return float(np.median(values))


def marching_cubes(
    field: Tensor | np.ndarray,  # (R, R, R), field[i, j, k] at (x_i, y_j, z_k)
    radius: float,
    threshold: float,
    inside: str = "above",
    min_component_fraction: float = 0.0,
    fill_cavities: bool = False,
    cavity_closing: int = 0,
    solid: np.ndarray | Tensor | None = None,  # (R, R, R) bool
) -> Mesh:
    """Mesh the level set `field == threshold` in world coordinates, closed and outward-facing.

    inside: "above" (object where field > threshold, densities) or "below" (object where
        field < threshold, SDFs).
    min_component_fraction: drop connected components with fewer than this fraction of the
        faces (0 keeps everything).
    fill_cavities: count outside regions that do not reach the grid's boundary (pockets enclosed
        by the object) as inside, so the mesh has no inner, inward-facing shells.
    cavity_closing: with fill_cavities, a pocket also counts as enclosed when its openings to the
        outside are at most about 2 * cavity_closing cells wide (a morphological closing by a ball of
        that radius in cells decides which pockets are enclosed; only the pockets are filled, the
        openings and the rest of the surface stay as they were).
    solid: cells to count as inside whatever their value, e.g. those no training view sees
        (framework/space_carving.py).
    Returns Mesh(vertices (V, 3) float32, faces (F, 3) long).
    Raises ValueError when the grid has no point on one side of the threshold.
    """
    if inside not in ("above", "below"):
        raise ValueError(f"inside must be 'above' or 'below', got {inside!r}")
    if isinstance(field, Tensor):
        field = field.detach().cpu().numpy()
    vol = np.asarray(field, dtype=np.float64)
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise ValueError(f"field must be a cubic (R, R, R) grid, got shape {vol.shape}")
    if not np.isfinite(vol).all():
        raise ValueError(
            f"field has {int((~np.isfinite(vol)).sum())} non-finite values; "
            "clamp or nan_to_num the field before meshing"
        )
    res = vol.shape[0]
    # Work in the "above" convention throughout: object where vol > iso.
    if inside == "below":
        vol, iso = -vol, -float(threshold)
    else:
        iso = float(threshold)
    n_in = int((vol > iso).sum())
    if n_in == 0 or n_in == vol.size:
        lo, hi = float(np.min(field)), float(np.max(field))
        where = "no grid point" if n_in == 0 else "every grid point"
        raise EmptySurfaceError(
            f"the field has no crossing at threshold {threshold}: {where} is inside "
            f"(inside={inside!r}, field min {lo:.4g}, max {hi:.4g}). "
            f"Choose a threshold between the two, e.g. {_suggest_threshold(np.asarray(field)):.4g}: "
            f"set system.geometry.isosurface_threshold=<value> (or =auto) and export again from the run's "
            f"checkpoint with `mode=export resume=<run dir>/ckpts/last.ckpt`."
        )
    fill = np.zeros(vol.shape, dtype=bool)
    if solid is not None:
        solid = solid.detach().cpu().numpy() if isinstance(solid, Tensor) else np.asarray(solid)
        if solid.shape != vol.shape:
            raise ValueError(f"solid must have the field's shape {vol.shape}, got {solid.shape}")
        fill |= solid.astype(bool)
    if fill_cavities:
        fill |= enclosed_cavities((vol > iso) | fill, cavity_closing)
    if fill.any():
        # Just above the level everywhere in a filled cell: marching cubes puts no surface in a pocket,
        # and its rim's interpolated vertices sit at the original crossing on the solid side.
        vol = np.where(fill, max(float(vol.max()), iso + 1.0), vol)
    # One cell of clearly-outside padding closes surfaces that touch the box.
    pad_value = min(float(vol.min()), iso) - 1.0
    vol = np.pad(vol, 1, mode="constant", constant_values=pad_value)
    verts, tris = mcubes.marching_cubes(vol, iso)
    if len(tris) == 0:  # pragma: no cover - guarded above; kept for odd PyMCubes builds
        raise ValueError(f"marching cubes produced no triangles at threshold {threshold}")
    spacing = 2.0 * radius / (res - 1)
    verts = (np.asarray(verts, dtype=np.float64) - 1.0) * spacing - radius  # undo the pad
    # Cap vertices interpolate towards the pad layer just outside the box; snap them back.
    verts = np.clip(verts, -radius, radius)
    tris = np.asarray(tris, dtype=np.int64)
    # Orientation check on the mesh itself: a closed outward mesh has positive signed volume
    # (divergence theorem). Robust to PyMCubes versions that wind the other way.
    a, b, c = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
    if np.einsum("ij,ij->i", a, np.cross(b, c)).sum() < 0:
        tris = tris[:, ::-1].copy()
    mesh = Mesh(
        vertices=torch.from_numpy(verts.astype(np.float32)),
        faces=torch.from_numpy(tris),
    )
    if min_component_fraction > 0:
        mesh = remove_small_components(mesh, min_component_fraction)
    return mesh


def enclosed_cavities(inside: np.ndarray, closing: int = 0) -> np.ndarray:
    """inside (R, R, R) bool -> (R, R, R) bool: the empty cells the object encloses.

    An empty cell is enclosed when it cannot reach the grid's border through empty cells
    (6-connected; scipy.ndimage.binary_fill_holes). With closing > 0, openings up to about
    2 * closing cells wide are shut first (a morphological closing by a ball of that radius), so a
    pocket reached only through such gaps is enclosed too; the gaps themselves are not returned.
    """
    from scipy import ndimage

    closed = inside
    if closing > 0:
        r = int(closing)
        ball = np.linalg.norm(np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1], axis=0) <= r
        # padded so that the closing's erosion does not eat objects touching the box
        pad = r + 1
        closed = ndimage.binary_closing(np.pad(inside, pad), structure=ball)[pad:-pad, pad:-pad, pad:-pad]
    return ndimage.binary_fill_holes(closed) & ~closed


def remove_small_components(mesh: Mesh, min_fraction: float) -> Mesh:
    """Drop connected components with fewer than `min_fraction` of all faces (floaters).

    Components are face-connected (shared edges). Unused vertices are removed.
    """
    import trimesh

    tm = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=False)
    labels = trimesh.graph.connected_component_labels(tm.face_adjacency, node_count=len(tm.faces))
    counts = np.bincount(labels)
    keep_labels = counts >= min_fraction * len(tm.faces)
    if not keep_labels.any():  # never return an empty mesh: keep the largest piece
        keep_labels[np.argmax(counts)] = True
    keep = keep_labels[labels]
    faces = tm.faces[keep]
    used = np.unique(faces)
    remap = np.full(len(tm.vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return Mesh(
        vertices=torch.from_numpy(np.asarray(tm.vertices[used], dtype=np.float32)),
        faces=torch.from_numpy(remap[faces]),
    )


@torch.no_grad()
def extract_isosurface(
    density_fn: Callable[[Tensor], Tensor],  # (N, 3) -> (N, 1) or (N,)
    resolution: int,
    radius: float,
    threshold: float,
    inside: str = "above",
    chunk_size: int = 262144,
    device: torch.device | str | None = None,
    min_component_fraction: float = 0.0,
) -> Mesh:
    """Evaluate `density_fn` on the R^3 grid (in chunks, without gradients) and mesh it.

    device: where the points are sent before calling `density_fn` (default CPU).
    Returns a CPU Mesh in world coordinates.
    """
    points = grid_points(resolution, radius)
    values = []
    for start in range(0, points.shape[0], chunk_size):
        chunk = points[start : start + chunk_size]
        if device is not None:
            chunk = chunk.to(device)
        out = density_fn(chunk)
        values.append(out.reshape(chunk.shape[0], -1)[:, 0].float().cpu())
    field = torch.cat(values).reshape(resolution, resolution, resolution)
    return marching_cubes(field, radius, threshold, inside, min_component_fraction)
