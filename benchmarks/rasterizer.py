"""Rasterizer frames/s on CPU (PyTorch backend): icospheres at 64, 256 and 512 px.

For each mesh size and resolution, four figures (frames/s, one image per frame, B = 1):
  r+i        rasterize + interpolate (positions and normals), forward only
  r+i+aa     the same plus antialias
  r+i bwd    rasterize + interpolate, forward + backward (to vertex positions and attributes)
  r+i+aa bwd the same with antialias
The icosphere (radius 0.5) fills about 40% of the image, seen from distance 2 with fovy 40 deg,
and turns between frames, so each frame rasterises a new view.

Usage: python benchmarks/rasterizer.py [--subdivisions 5 6] [--res 64 256 512] [--frames 5]
Icosphere subdivisions 4 / 5 / 6 give 5,120 / 20,480 / 81,920 faces. Timings on a machine shared
with other work are inflated; OMP_NUM_THREADS=1 gives the steadiest per-core figure.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from framework.cameras import orbit_c2w  # noqa: E402
from models.renderers.mesh_renderer import mvp_matrices, vertex_normals  # noqa: E402
from models.renderers.rasterizer import Rasterizer  # noqa: E402


def frame(r: Rasterizer, v: torch.Tensor, faces: torch.Tensor, mvp: torch.Tensor, res: int, aa: bool, backward: bool) -> None:
    v = v.clone().requires_grad_(backward)
    pos = torch.einsum("bij,vj->bvi", mvp, torch.cat([v, torch.ones_like(v[:, :1])], -1))
    rast = r.rasterize(pos, faces, (res, res))
    out = r.interpolate(torch.cat([v, vertex_normals(v, faces)], -1)[None], rast, faces)
    if aa:
        out = r.antialias(out, rast, pos, faces)
    if backward:
        out.square().sum().backward()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--subdivisions", type=int, nargs="+", default=[4, 5, 6])
    p.add_argument("--res", type=int, nargs="+", default=[64, 256, 512])
    p.add_argument("--frames", type=int, default=5)
    args = p.parse_args()
    r = Rasterizer("torch")
    modes = [("r+i", False, False), ("r+i+aa", True, False), ("r+i bwd", False, True), ("r+i+aa bwd", True, True)]
    print(f"torch rasterizer on CPU, threads={torch.get_num_threads()}, frames/s (median ms/frame of {args.frames} frames after 1 warm-up)")
    print(f"{'faces':>8} {'px':>5} " + " ".join(f"{m[0]:>18}" for m in modes))
    for sub in args.subdivisions:
        mesh = trimesh.creation.icosphere(subdivisions=sub, radius=0.5)
        v = torch.tensor(mesh.vertices, dtype=torch.float32)
        faces = torch.tensor(mesh.faces, dtype=torch.long)
        for res in args.res:
            cells = []
            for _, aa, bwd in modes:
                times = []
                for i in range(args.frames + 1):
                    c2w = orbit_c2w(torch.tensor([15.0]), torch.tensor([i * 17.0 - 90.0]), torch.tensor([2.0]))
                    mvp = mvp_matrices(c2w, torch.tensor([math.radians(40.0)]), res, res)
                    t0 = time.perf_counter()
                    frame(r, v, faces, mvp, res, aa, bwd)
                    if i > 0:
                        times.append(time.perf_counter() - t0)
                ms = 1e3 * sorted(times)[len(times) // 2]  # median: robust to a busy shared machine
                cells.append(f"{1e3 / ms:8.1f} ({ms:6.1f} ms)")
            print(f"{faces.shape[0]:>8} {res:>5} " + " ".join(f"{c:>18}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
