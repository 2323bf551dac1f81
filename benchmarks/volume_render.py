"""Volume-render training-step time: render + backward at 64x64 rays with 64 samples per ray.

A blob-initialised ImplicitVolume (hash grid as a toy config would use it), a
DiffuseWithPointLight material, a solid background; the occupancy grid is warmed up first so
the figure is the pruned steady state.

Usage: python benchmarks/volume_render.py [--levels 12] [--log2-table 17] [--finest 256]
       [--normal analytic|finite_difference] [--backend auto|cpp|torch] [--res 64] [--samples 64]
       [--radius 1.0] [--distance 2.0] [--fovy 40] [--grid-res 64]
The toy demo's setting: --radius 0.625 --samples 96 --distance 1.6 --fovy 40.
Timings on a machine shared with other work are inflated; OMP_NUM_THREADS=1 avoids OpenMP
spin-waiting against other processes and gives the steadiest per-core figure.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from framework.cameras import get_rays, orbit_c2w  # noqa: E402
from models.backgrounds.solid_color import SolidColorBackground, SolidColorBackgroundConfig  # noqa: E402
from models.encodings.hash_grid import HashGridConfig  # noqa: E402
from models.geometry.implicit_volume import ImplicitVolume, ImplicitVolumeConfig  # noqa: E402
from models.materials.diffuse_with_point_light import DiffuseWithPointLight, DiffuseWithPointLightConfig  # noqa: E402
from models.renderers.volume_renderer import VolumeRenderer, VolumeRendererConfig  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--levels", type=int, default=12)
    p.add_argument("--log2-table", type=int, default=17)
    p.add_argument("--finest", type=float, default=256.0)
    p.add_argument("--normal", default="analytic")
    p.add_argument("--backend", default="auto")
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--grid-res", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--radius", type=float, default=1.0)
    p.add_argument("--distance", type=float, default=2.0)
    p.add_argument("--fovy", type=float, default=40.0, help="degrees")
    args = p.parse_args()
    scale = (args.finest / 16.0) ** (1.0 / max(1, args.levels - 1))
    enc = HashGridConfig(n_levels=args.levels, log2_hashmap_size=args.log2_table, per_level_scale=scale, backend=args.backend)
    geo = ImplicitVolume(ImplicitVolumeConfig(radius=args.radius, pos_encoding=enc, normal_type=args.normal))
    mat = DiffuseWithPointLight(DiffuseWithPointLightConfig(ambient_only_steps=0, diffuse_prob=1.0, textureless_prob=0.0))
    bg = SolidColorBackground(SolidColorBackgroundConfig())
    ren = VolumeRenderer(VolumeRendererConfig(num_samples_per_ray=args.samples, grid_resolution=args.grid_res), geometry=geo, material=mat, background=bg)
    ren.train()
    t0 = time.perf_counter()
    ren.update_step(0)  # warm-up update: every cell
    t_grid = time.perf_counter() - t0
    opt = torch.optim.Adam(ren.parameters(), lr=1e-3)
    times, cpu_times, n_samples = [], [], []
    for step in range(args.steps + 2):
        c2w = orbit_c2w(torch.tensor([15.0]), torch.tensor([step * 30.0 - 180.0]), torch.tensor([args.distance]))
        rays_o, rays_d = get_rays(c2w, torch.deg2rad(torch.tensor([args.fovy])), args.res, args.res)
        t0, c0 = time.perf_counter(), time.process_time()
        out = ren(rays_o, rays_d, c2w[:, :3, 3])
        loss = (out["comp_rgb"] - 0.5).square().mean() + (out["weights"].detach() * (out["normal"] * out["t_dirs"]).sum(-1, keepdim=True).clamp(min=0) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 2:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
            n_samples.append(out["weights"].shape[0])
    ms = 1e3 * sum(times) / len(times)
    occ = float(ren.grid.binary.float().mean())
    print(
        f"render+backward {args.res}x{args.res} rays, {args.samples} samples/ray, hash grid backend={geo.encoding.backend} "
        f"levels={args.levels} table=2^{args.log2_table} finest={args.finest:.0f}, normals={args.normal}, "
        f"threads={torch.get_num_threads()}: {ms:.1f} ms/step wall (min {1e3 * min(times):.1f}), "
        f"{1e3 * sum(cpu_times) / len(cpu_times):.1f} ms/step CPU time (all threads), "
        f"{sum(n_samples) / len(n_samples):.0f} samples evaluated/step, occupied cells {occ:.1%}, "
        f"grid warm-up update {t_grid * 1e3:.0f} ms ({args.grid_res}^3 cells); load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
