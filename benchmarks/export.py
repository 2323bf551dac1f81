"""Mesh export speed for a ~100k-face marching-cubes sphere at texture 1024 (prints figures).

    .venv/bin/python benchmarks/export.py [--resolution 116] [--texture 1024]

Compares the two UV layouts of framework/export.py (xatlas charts, per-triangle atlas) and
checks the baked colours at face centroids against the albedo function.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from framework.export import export_textured_mesh  # noqa: E402
from framework.isosurface import extract_isosurface  # noqa: E402


def albedo(points):
    return (points + 0.5).clamp(0, 1)


def centroid_colour_error(obj_path: Path, texture_size: int) -> float:
    mesh = trimesh.load(obj_path, force="mesh")
    image = np.asarray(mesh.visual.material.image.convert("RGB")).astype(float) / 255
    uv = mesh.visual.uv[mesh.faces].mean(1)
    centroids = mesh.vertices[mesh.faces].mean(1)
    x = np.clip((uv[:, 0] * texture_size).astype(int), 0, texture_size - 1)
    y = np.clip(((1 - uv[:, 1]) * texture_size).astype(int), 0, texture_size - 1)
    return float(np.abs(image[y, x] - np.clip(centroids + 0.5, 0, 1)).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolution", type=int, default=116)
    parser.add_argument("--texture", type=int, default=1024)
    args = parser.parse_args()

    start = time.perf_counter()
    mesh = extract_isosurface(lambda p: 0.45 - p.norm(dim=-1), args.resolution, 0.5, 0.0, "above")
    print(f"isosurface R={args.resolution}: {mesh.n_faces} faces in {time.perf_counter() - start:.2f} s")
    for method in ("triangles", "xatlas"):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            paths = export_textured_mesh(
                mesh, albedo, out, texture_size=args.texture, unwrap=method, xatlas_timeout_s=None
            )
            total = time.perf_counter() - start
            sizes = {k: f"{os.path.getsize(p) / 1e6:.1f} MB" for k, p in paths.items()}
            error = centroid_colour_error(paths["obj"], args.texture)
            print(f"[{method}] export (OBJ+MTL+PNG+GLB) {total:.2f} s, centroid colour error {error:.4f}, {sizes}")


if __name__ == "__main__":
    main()
