"""Export time for a ~100k-face marching-cubes sphere at texture 1024 (prints figures)."""
import os, time, numpy as np, torch, trimesh
import framework.export as ex
from framework.isosurface import extract_isosurface
R = 116
t = time.perf_counter()
mesh = extract_isosurface(lambda p: 0.45 - p.norm(dim=-1), R, 0.5, 0.0, "above")
print(f"isosurface R={R}: {mesh.n_faces} faces, {time.perf_counter()-t:.2f}s", flush=True)
albedo = lambda p: (p + 0.5).clamp(0, 1)
v = mesh.vertices.numpy().astype(np.float64); f = mesh.faces.numpy()
for method in ("triangles", "xatlas"):
    t = time.perf_counter(); vm, uf, uv = ex.unwrap_uv(v, f, 1024, method, None); tu = time.perf_counter() - t
    t = time.perf_counter(); img, cov = ex.bake_texture(uv, uf, v[vm], albedo, 1024); tb = time.perf_counter() - t
    print(f"[{method}] unwrap {tu:.2f}s  bake (raster+albedo+fill) {tb:.2f}s  coverage {cov:.3f}  uv verts {len(uv)}", flush=True)
    t = time.perf_counter()
    paths = ex.export_textured_mesh(mesh, albedo, f"/tmp/bench_export_{method}", texture_size=1024, unwrap=method, xatlas_timeout_s=None)
    total = time.perf_counter() - t
    tm = trimesh.load(paths["obj"], force="mesh")
    im = np.asarray(tm.visual.material.image.convert("RGB")).astype(float) / 255
    uvc = tm.visual.uv[tm.faces].mean(1); cen = tm.vertices[tm.faces].mean(1)
    x = np.clip((uvc[:, 0] * 1024).astype(int), 0, 1023); y = np.clip(((1 - uvc[:, 1]) * 1024).astype(int), 0, 1023)
    err = np.abs(im[y, x] - np.clip(cen + 0.5, 0, 1)).mean()
    print(f"[{method}] export_textured_mesh total {total:.2f}s  centroid colour err {err:.4f}  sizes "
          + str({k: f'{os.path.getsize(p)/1e6:.1f}MB' for k, p in paths.items()}), flush=True)
