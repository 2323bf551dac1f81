"""Textured mesh export: UV-unwrap, bake albedo into a texture, write OBJ/MTL/PNG and GLB.

UV unwrapping is xatlas, run in a child process because it can segfault, with a hand-written
per-triangle atlas as the fallback that always works. Baking is hand-written (vectorised numpy)
because the usual rasterisers (nvdiffrast) are CUDA-only and the framework must export on CPU:
every triangle is rasterised in UV space at texel centres, the 3D position is interpolated
there and handed to `albedo_fn`. Uncovered texels are then filled with the nearest covered
colour so bilinear sampling and mipmaps at chart borders never pick up background.

Coordinate rules (DESIGN.md, docs/toy-world.md "Scoring a run"):

- the OBJ is written in WORLD coordinates, +z up, exactly the input vertices, by default; with
  `up_axis="+y"` it is rotated like the GLB, world (x, y, z) -> (x, z, -y) (`OBJ_AXES`), for
  tools that take +y as up. Its first line says which (`read_obj_up_axis` reads it back, so the
  toy evaluator scores either file in world coordinates);
- the GLB always follows glTF's +y-up rule: world (x, y, z) -> glTF (x, z, -y), a proper rotation
  (det +1) about +x by -90 degrees, so winding and normals stay outward (framework/glb.py);
- OBJ texture coordinates have their origin at the BOTTOM-left of the image while image rows
  start at the top, so the baked texel grid (row 0 = v near 0) is flipped vertically when
  written as PNG. trimesh applies glTF's top-left UV convention itself when writing the GLB.

Colour rule (framework/colour_space.py): `albedo_fn` returns LINEAR albedo; the texture (PNG and
the GLB's baseColorTexture) stores it sRGB-encoded, as glTF requires and OBJ readers assume.

Files written into `out_dir`: `<name>.obj`, `<name>.mtl`, the texture (`texture_kd.png` for the
default name, `<name>_texture_kd.png` otherwise, so two exports in one folder never share a
texture by accident) and `<name>.glb`.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from framework.colour_space import encode_srgb8
from framework.glb import WORLD_TO_GLTF, write_glb
from framework.interfaces import Mesh
from framework.step_times import section

__all__ = ["export_textured_mesh", "unwrap_uv", "unwrap_xatlas", "unwrap_triangles",
           "bake_texture", "ExportDirectoryError", "WORLD_TO_GLTF", "OBJ_AXES", "read_obj_up_axis"]

logger = logging.getLogger(__name__)

# export.up_axis -> the rotation from world to the OBJ's coordinates (rows are the file's axes)
OBJ_AXES = {"+z": np.eye(3), "+y": WORLD_TO_GLTF}
_OBJ_HEADER = "# toy3d export: up axis {up}, {rule}"
_OBJ_RULES = {"+z": "world coordinates", "+y": "world (x, y, z) written as (x, z, -y)"}

# Candidate (triangle, texel) pairs tested at once while baking; bounds memory (~0.5 GB peak).
_RASTER_CHUNK = 4_000_000


class ExportDirectoryError(OSError):
    """The export folder cannot be created or written."""


def _check_writable(out_dir: Path) -> None:
    """Create `out_dir` if needed and prove it is writable, before any expensive work."""
    hint = "choose another out_dir (for example under outputs/) or fix its permissions"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # os.access lies for root and some network filesystems; a real probe file does not.
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write_probe_"):
            pass
    except OSError as e:
        reason = e.strerror or str(e)
        raise ExportDirectoryError(
            f"cannot write the mesh export to '{out_dir}': {reason}. Nothing was written or "
            f"deleted; {hint}."
        ) from e


# xatlas runs in a child interpreter: it segfaults on some meshes (e.g. an 82k-face icosphere
# with xatlas-python 0.0.11; jpcy/xatlas#151) and is slow on marching-cubes meshes, and neither
# may take the training process down with it.
_XATLAS_CHILD = r"""
import sys, numpy as np, xatlas
d, res, pad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
atlas = xatlas.Atlas()
atlas.add_mesh(np.load(d + "/v.npy"), np.load(d + "/f.npy"))
pack = xatlas.PackOptions(); pack.resolution = res; pack.padding = pad; pack.bilinear = True
atlas.generate(xatlas.ChartOptions(), pack)
if atlas.atlas_count != 1:
    sys.exit(f"xatlas packed the charts into {atlas.atlas_count} atlases")
vm, f, uv = atlas[0]
np.save(d + "/vm.npy", vm); np.save(d + "/nf.npy", f); np.save(d + "/uv.npy", uv)
"""


def unwrap_xatlas(
    vertices: np.ndarray,  # (V, 3) float
    faces: np.ndarray,  # (F, 3) int
    texture_size: int,
    padding: int = 2,
    timeout_s: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas charts packed for a `texture_size` texture with `padding` texels between charts.

    Runs in a subprocess; raises RuntimeError if it crashes, fails or exceeds `timeout_s`.
    Returns vmapping (V',) int64 (new vertex -> input vertex; seams duplicate vertices),
    faces (F, 3) int64 into the new vertices, uv (V', 2) float32 in [0, 1], origin bottom-left.
    """
    with tempfile.TemporaryDirectory(prefix="xatlas_") as d:
        np.save(f"{d}/v.npy", np.ascontiguousarray(vertices, dtype=np.float32))
        np.save(f"{d}/f.npy", np.ascontiguousarray(faces, dtype=np.uint32))
        cmd = [sys.executable, "-c", _XATLAS_CHILD, d, str(int(texture_size)), str(int(padding))]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(
                f"xatlas took longer than {timeout_s} s on {len(faces)} faces"
            ) from e
        if proc.returncode != 0:
            raise RuntimeError(
                f"xatlas failed on {len(faces)} faces (exit code {proc.returncode}"
                f"{', segmentation fault' if proc.returncode == -11 else ''}): "
                f"{proc.stderr.strip()[-500:]}"
            )
        vmapping, new_faces, uv = (np.load(f"{d}/{n}.npy") for n in ("vm", "nf", "uv"))
    return vmapping.astype(np.int64), new_faces.astype(np.int64), uv.astype(np.float32)


def unwrap_triangles(
    vertices: np.ndarray,  # (V, 3) float
    faces: np.ndarray,  # (F, 3) int
    texture_size: int,
    padding: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Built-in fallback atlas: every face gets its own right triangle, two per square cell.

    Never fails and is instant, at the price of low texel density per face and colour bleeding
    between the two faces of a cell (faces are ordered along a Morton curve of their centroids
    so cell neighbours are mostly surface neighbours). Same returns as `unwrap_xatlas`.
    Faces get roughly (cell - 1.5)^2 / 2 texels, cell = texture_size / ceil(sqrt(F / 2)); below
    ~4 texels per cell colours turn blocky. Raises ValueError under 2 texels per cell.
    """
    n_faces = len(faces)
    grid = int(np.ceil(np.sqrt((n_faces + 1) // 2)))
    cell = texture_size / grid  # texels per cell side
    if cell < 2.0:
        need = int(np.ceil(2.0 * grid))
        raise ValueError(
            f"texture_size {texture_size} is too small for a per-triangle atlas of {n_faces} "
            f"faces; use texture_size >= {need} or a simpler mesh"
        )
    # Morton order of face centroids keeps neighbouring cells spatially close.
    cen = vertices[faces].mean(1)
    q = ((cen - cen.min(0)) / max(np.ptp(cen, 0).max(), 1e-12) * 1023).astype(np.uint64)
    code = np.zeros(n_faces, dtype=np.uint64)
    for bit in range(10):
        for axis in range(3):
            code |= ((q[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    order = np.argsort(code, kind="stable")
    slot = np.empty(n_faces, dtype=np.int64)
    slot[order] = np.arange(n_faces)
    cx, cy, upper = (slot // 2) % grid, (slot // 2) // grid, slot % 2 == 1
    p = padding
    # Lower-left triangle (0,0),(1,0),(0,1) and upper-right (1,1),(0,1),(1,0) of the cell, inset
    # by `padding` texels; both keep the counter-clockwise order of the 3D face.
    lower = np.array([[p, p], [cell - 2 * p, p], [p, cell - 2 * p]])
    upper_t = np.array([[cell - p, cell - p], [2 * p, cell - p], [cell - p, 2 * p]])
    local = np.where(upper[:, None, None], upper_t[None], lower[None])  # (F, 3, 2)
    origin = np.stack([cx, cy], -1)[:, None, :] * cell
    uv = ((origin + local) / texture_size).reshape(-1, 2).astype(np.float32)
    vmapping = faces.reshape(-1).astype(np.int64)
    new_faces = np.arange(3 * n_faces, dtype=np.int64).reshape(n_faces, 3)
    return vmapping, new_faces, uv


def unwrap_uv(
    vertices: np.ndarray,  # (V, 3) float
    faces: np.ndarray,  # (F, 3) int
    texture_size: int,
    method: str = "auto",
    xatlas_timeout_s: float | None = 300.0,
    xatlas_max_faces: int = 60_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UV atlas by `method`: "xatlas", "triangles" (built-in) or "auto".

    "auto" takes xatlas up to `xatlas_max_faces` faces and the per-triangle atlas above (xatlas
    time grows faster than linearly on marching-cubes meshes: about 2 s at 12k faces, 15 s at
    50k, 60-100 s at 100k on 2 CPU cores), and falls back to the per-triangle atlas with a
    warning if xatlas crashes or exceeds `xatlas_timeout_s`.
    """
    if method == "auto" and len(faces) > xatlas_max_faces:
        logger.info("%d faces > xatlas_max_faces=%d: per-triangle UV atlas", len(faces),
                    xatlas_max_faces)
        method = "triangles"
    if method == "triangles":
        return unwrap_triangles(vertices, faces, texture_size)
    if method == "xatlas":
        return unwrap_xatlas(vertices, faces, texture_size, timeout_s=xatlas_timeout_s)
    if method != "auto":
        raise ValueError(f"unwrap method must be 'auto', 'xatlas' or 'triangles', got {method!r}")
    try:
        return unwrap_xatlas(vertices, faces, texture_size, timeout_s=xatlas_timeout_s)
    except RuntimeError as e:
        warnings.warn(f"{e}; falling back to the per-triangle UV atlas", stacklevel=2)
        return unwrap_triangles(vertices, faces, texture_size)


def _rasterize_uv(
    uv: np.ndarray,  # (V', 2) in [0, 1]
    faces: np.ndarray,  # (F, 3)
    positions: np.ndarray,  # (V', 3) per-UV-vertex 3D positions
    size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise triangles in UV space at texel centres.

    Returns position (size, size, 3) float32 and mask (size, size) bool, indexed [row, col]
    with row 0 at v ~ 0 (bottom of the texture) and col 0 at u ~ 0.
    """
    # Texel (r, c) has its centre at uv ((c + 0.5) / size, (r + 0.5) / size).
    tri = uv[faces].astype(np.float64) * size - 0.5  # (F, 3, 2), texel-centre units
    lo = np.clip(np.floor(tri.min(1)).astype(np.int64), 0, size - 1)  # (F, 2)
    hi = np.clip(np.ceil(tri.max(1)).astype(np.int64), 0, size - 1)
    w = hi[:, 0] - lo[:, 0] + 1
    h = hi[:, 1] - lo[:, 1] + 1
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    denom = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    valid = np.abs(denom) > 1e-12  # zero-area UV triangles cover nothing
    n_cand = np.where(valid, w * h, 0)

    pos_img = np.zeros((size, size, 3), dtype=np.float32)
    mask = np.zeros((size, size), dtype=bool)
    cum = np.cumsum(n_cand)
    start = 0
    while start < len(faces):
        # Take triangles until the chunk holds about _RASTER_CHUNK candidate texels.
        base = cum[start - 1] if start > 0 else 0
        stop = max(int(np.searchsorted(cum, base + _RASTER_CHUNK, side="right")), start + 1)
        ids = np.arange(start, stop)
        counts = n_cand[ids]
        t = np.repeat(ids, counts)
        local = np.arange(t.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts)
        px = lo[t, 0] + local % w[t]
        py = lo[t, 1] + local // w[t]
        # Barycentrics by signed areas (edge functions).
        ax, ay, bx, by, cx, cy = a[t, 0], a[t, 1], b[t, 0], b[t, 1], c[t, 0], c[t, 1]
        l1 = ((px - ax) * (cy - ay) - (py - ay) * (cx - ax)) / denom[t]
        l2 = ((bx - ax) * (py - ay) - (by - ay) * (px - ax)) / denom[t]
        l0 = 1.0 - l1 - l2
        eps = -1e-6  # texel centres exactly on a shared edge belong to either triangle
        inside = (l0 >= eps) & (l1 >= eps) & (l2 >= eps)
        t, px, py = t[inside], px[inside], py[inside]
        bary = np.stack([l0[inside], l1[inside], l2[inside]], -1)  # (K, 3)
        p3 = np.einsum("kj,kjd->kd", bary, positions[faces[t]])
        pos_img[py, px] = p3
        mask[py, px] = True
        start = stop
    return pos_img, mask


def _fill_uncovered(colors: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give every uncovered texel the colour of its nearest covered texel (edge dilation)."""
    from scipy import ndimage

    if mask.all() or not mask.any():
        return colors
    _, (iy, ix) = ndimage.distance_transform_edt(~mask, return_indices=True)
    return colors[iy, ix]


@torch.no_grad()
def bake_texture(
    uv: np.ndarray,  # (V', 2) in [0, 1], origin bottom-left
    faces: np.ndarray,  # (F, 3) into uv / positions
    positions: np.ndarray,  # (V', 3) world positions of the UV vertices
    albedo_fn: Callable[[Tensor], Tensor],  # (N, 3) -> (N, 3) in [0, 1]
    texture_size: int,
    chunk_size: int = 65536,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, float]:
    """Bake `albedo_fn` (linear albedo) into an image (texture_size, texture_size, 3) uint8, sRGB-encoded,
    rows from the TOP (ready to save; OBJ/trimesh UV convention). Also returns the covered-texel fraction."""
    pos_img, mask = _rasterize_uv(uv, faces, positions, texture_size)
    pts = torch.from_numpy(pos_img[mask])
    colors = np.zeros((texture_size, texture_size, 3), dtype=np.float32)
    out = []
    for s in range(0, pts.shape[0], chunk_size):
        chunk = pts[s : s + chunk_size]
        if device is not None:
            chunk = chunk.to(device)
        out.append(albedo_fn(chunk).reshape(-1, 3).float().clamp(0, 1).cpu())
    if out:
        colors[mask] = torch.cat(out).numpy()
    colors = _fill_uncovered(colors, mask)
    image = encode_srgb8(np.flipud(colors))  # row 0 = top = v near 1
    return np.ascontiguousarray(image), float(mask.mean())


def _write_obj(
    path: Path, mtl_name: str, vertices: np.ndarray, normals: np.ndarray, uv: np.ndarray,
    v_idx: np.ndarray, vt_idx: np.ndarray, up_axis: str = "+z",
) -> None:
    """OBJ with shared positions (`v`, = input vertices) and per-seam texture coords (`vt`); world vertices
    and normals are rotated to `up_axis` (OBJ_AXES) and the first line names it."""
    f = np.concatenate([v_idx[:, :, None], vt_idx[:, :, None], v_idx[:, :, None]], -1) + 1
    rotation = OBJ_AXES[up_axis]
    with open(path, "w") as fh:
        fh.write(_OBJ_HEADER.format(up=up_axis, rule=_OBJ_RULES[up_axis]) + f"\nmtllib {mtl_name}\n")
        np.savetxt(fh, vertices @ rotation.T, fmt="v %.6f %.6f %.6f")
        np.savetxt(fh, uv, fmt="vt %.6f %.6f")
        np.savetxt(fh, normals @ rotation.T, fmt="vn %.5f %.5f %.5f")
        fh.write("usemtl material_0\n")
        np.savetxt(fh, f.reshape(-1, 9), fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")


def read_obj_up_axis(path: str | Path) -> str:
    """The up axis ("+z" or "+y") an exported OBJ names on its first line; "+z" (world coordinates) when it
    names none, as OBJs written before `export.up_axis` existed. World = file vertices @ OBJ_AXES[axis]."""
    with open(path) as fh:
        first = fh.readline()
    for axis in OBJ_AXES:
        if first.startswith(_OBJ_HEADER.format(up=axis, rule="")):
            return axis
    return "+z"


def _write_mtl(path: Path, texture_name: str) -> None:
    path.write_text(
        "newmtl material_0\n"
        "Ka 1.000 1.000 1.000\nKd 1.000 1.000 1.000\nKs 0.000 0.000 0.000\n"
        "Ns 10.0\nd 1.0\nillum 1\n"
        f"map_Kd {texture_name}\n"
    )


def export_textured_mesh(
    mesh: Mesh,
    albedo_fn: Callable[[Tensor], Tensor],  # positions (N, 3) world -> albedo (N, 3) in [0, 1]
    out_dir: str | Path,
    texture_size: int = 1024,
    name: str = "model",
    glb: bool = True,
    device: torch.device | str | None = None,
    unwrap: str = "auto",
    xatlas_timeout_s: float | None = 300.0,
    xatlas_max_faces: int = 60_000,
    up_axis: str = "+z",
) -> dict[str, Path]:
    """UV-unwrap `mesh`, bake `albedo_fn` into a texture, and write OBJ/MTL/PNG (+ GLB).

    mesh: world coordinates, +z up, outward faces. albedo_fn (linear albedo) is called without
    gradients on chunks of texel positions (sent to `device` if given). unwrap: "auto" | "xatlas" |
    "triangles", see `unwrap_uv`. up_axis: the OBJ's, "+z" (world) or "+y" (module docstring).
    Returns {"obj", "mtl", "texture"[, "glb"]} -> paths.
    Raises ExportDirectoryError (an OSError) naming `out_dir` if it cannot be written.
    """
    if up_axis not in OBJ_AXES:
        raise ValueError(f"up_axis must be one of {', '.join(OBJ_AXES)}, got {up_axis!r}")
    out_dir = Path(out_dir)
    _check_writable(out_dir)
    vertices = mesh.vertices.detach().cpu().numpy().astype(np.float64)
    faces = mesh.faces.detach().cpu().numpy().astype(np.int64)
    if faces.size == 0:
        raise ValueError("cannot export an empty mesh (0 faces)")

    with section("uv atlas"):
        vmapping, uv_faces, uv = unwrap_uv(vertices, faces, texture_size, unwrap, xatlas_timeout_s,
                                           xatlas_max_faces)
    with section("texture bake"):
        image, _ = bake_texture(uv, uv_faces, vertices[vmapping], albedo_fn, texture_size,
                                device=device)

    import trimesh
    from PIL import Image

    normals = trimesh.Trimesh(vertices, faces, process=False).vertex_normals
    texture_name = "texture_kd.png" if name == "model" else f"{name}_texture_kd.png"
    paths = {
        "obj": out_dir / f"{name}.obj",
        "mtl": out_dir / f"{name}.mtl",
        "texture": out_dir / texture_name,
    }
    with section("files"):
        Image.fromarray(image).save(paths["texture"])
        _write_mtl(paths["mtl"], texture_name)
        _write_obj(paths["obj"], paths["mtl"].name, vertices, normals, uv, vmapping[uv_faces],
                   uv_faces, up_axis)
        if glb:
            paths["glb"] = out_dir / f"{name}.glb"
            write_glb(paths["glb"], vertices[vmapping], uv_faces, uv, image, normals[vmapping])
    return paths
