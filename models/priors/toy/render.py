"""Sphere-tracing renderer for toy-world exemplar images (TOYWORLD.md, 'Images of the toy world').

Hand-written because no library ray-marches an arbitrary torch SDF on a CPU. The toy scenes
have exact SDFs, so sphere tracing converges in a few dozen steps; to make ~1000 views take
seconds on two cores the tracer only marches rays that enter the scene's bounding sphere,
compacts the active set once enough rays have hit or escaped (finished rays wait frozen until
then), and works in chunks of rays to bound memory.

Image formation (the exemplar images the toy priors are built from):
    rgb = albedo * (0.4 + 0.6 * max(0, n . v))   on the surface (v: unit vector to the camera)
    rgb = 1                                      on the white background
with optional s x s supersampling per pixel (box-filtered) for anti-aliased silhouettes.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.cameras import get_rays

from .scenes import ToyScene

# Bump when the image formation changes: it is part of the exemplar cache key.
RENDERER_VERSION = "toy-sphere-trace-v1"

SdfFn = Callable[[Tensor], Tensor]  # (N, 3) -> (N,)
AlbedoFn = Callable[[Tensor], Tensor]  # (N, 3) -> (N, 3)

AMBIENT, DIFFUSE = 0.4, 0.6


def _autograd_normal(sdf_fn: SdfFn, points: Tensor) -> Tensor:
    with torch.enable_grad():
        p = points.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(sdf_fn(p).sum(), p)
    return F.normalize(grad, dim=-1)


def sphere_trace(
    sdf_fn: SdfFn,
    rays_o: Tensor,  # (N, 3)
    rays_d: Tensor,  # (N, 3) unit
    bound_radius: float = 0.65,
    max_steps: int = 128,
    hit_eps: float = 1e-4,
    final_eps: float = 2e-3,
) -> tuple[Tensor, Tensor]:
    """-> hit (N,) bool, t (N,) ray distance of the hit point (meaningless where no hit).

    Rays are marched from where they enter the bounding sphere (|o + t d| = bound_radius);
    a ray hits when sdf < hit_eps, escapes when it leaves the sphere. Rays still marching after
    max_steps (grazing a silhouette) count as hits when within final_eps of the surface.
    """
    n = rays_o.shape[0]
    b = (rays_o * rays_d).sum(-1)
    c = (rays_o * rays_o).sum(-1) - bound_radius**2
    disc = b * b - c
    t_near = (-b - disc.clamp(min=0.0).sqrt()).clamp(min=0.0)
    t_far = -b + disc.clamp(min=0.0).sqrt()
    hit = torch.zeros(n, dtype=torch.bool, device=rays_o.device)
    t_out = torch.zeros(n, dtype=rays_o.dtype, device=rays_o.device)
    idx = torch.nonzero((disc > 0.0) & (t_far > 0.0)).squeeze(-1)
    # One (M, 8) state [o, d, t, t_far] so compaction is a single gather per step.
    state = torch.cat([rays_o[idx], rays_d[idx], t_near[idx, None], t_far[idx, None]], dim=-1)
    hit_idx, hit_t = [], []
    for step in range(max_steps):
        if idx.numel() == 0:
            break
        t = state[:, 6]
        dist = sdf_fn(torch.addcmul(state[:, 0:3], state[:, 3:6], t[:, None]))
        alive = (dist >= hit_eps) & (t <= state[:, 7])
        # finished rays stay frozen in place (zero step) until the next compaction
        t.addcmul_(dist.clamp(min=0.0), alive.to(t.dtype))  # the min-union is a lower bound: never overshoots
        n_alive = int(alive.sum())
        # compacting costs about one SDF evaluation: do it only when it pays for itself
        if n_alive > 0.8 * idx.numel() and step != max_steps - 1:
            continue
        done_hit = dist < hit_eps
        hit_idx.append(idx[done_hit])
        hit_t.append(t[done_hit])
        idx, state = idx[alive], state[alive]
    else:
        if idx.numel():
            close = sdf_fn(torch.addcmul(state[:, 0:3], state[:, 3:6], state[:, 6:7])) < final_eps
            hit_idx.append(idx[close])
            hit_t.append(state[close, 6])
    if hit_idx:
        all_idx = torch.cat(hit_idx)
        hit[all_idx] = True
        t_out[all_idx] = torch.cat(hit_t)
    return hit, t_out


def render_sdf(
    sdf_fn: SdfFn,
    albedo_fn: AlbedoFn,
    c2w: Tensor,  # (B, 4, 4)
    fovy_rad: Tensor,  # (B,)
    height: int,
    width: int,
    supersample: int = 1,
    bound_radius: float = 0.65,
    chunk_rays: int = 1 << 20,  # 256 views of 64^2 at once: fewer passes of the tracing loop, 7-20 % faster than 2^19
    normal_fn: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """Render an SDF scene. -> {"rgb": (B, H, W, 3), "opacity": (B, H, W, 1)}, float32 in [0, 1].

    With supersample s the image is traced at (s H, s W) and each pixel averages its s x s
    sub-pixels (rays from framework.cameras.get_rays at the higher resolution, so sub-pixels
    sit at the centres of a regular s x s grid inside each pixel). normal_fn defaults to the
    autograd gradient of sdf_fn.
    """
    s = int(supersample)
    hs, ws = height * s, width * s
    bsz = c2w.shape[0]
    c2w = c2w.to(torch.float32)
    fovy_rad = fovy_rad.to(device=c2w.device, dtype=torch.float32)
    rgb = torch.ones(bsz * hs * ws, 3, device=c2w.device)
    alpha = torch.zeros(bsz * hs * ws, device=c2w.device)
    views_per_chunk = max(1, chunk_rays // (hs * ws))
    for v0 in range(0, bsz, views_per_chunk):
        v1 = min(bsz, v0 + views_per_chunk)
        rays_o, rays_d = get_rays(c2w[v0:v1], fovy_rad[v0:v1], hs, ws)
        rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        with torch.no_grad():
            hit, t = sphere_trace(sdf_fn, rays_o, rays_d, bound_radius=bound_radius)
        sel = torch.nonzero(hit).squeeze(-1)
        if sel.numel() == 0:
            continue
        points = torch.addcmul(rays_o[sel], rays_d[sel], t[sel, None])
        normals = (normal_fn or (lambda p: _autograd_normal(sdf_fn, p)))(points)
        with torch.no_grad():
            # v = unit vector from the point to the camera centre = -ray direction
            n_dot_v = -(normals * rays_d[sel]).sum(-1, keepdim=True)
            shade = albedo_fn(points) * (AMBIENT + DIFFUSE * n_dot_v.clamp(min=0.0))
            offset = v0 * hs * ws
            rgb[offset + sel] = shade.to(rgb.dtype)
            alpha[offset + sel] = 1.0
    rgb = rgb.view(bsz, hs, ws, 3)
    alpha = alpha.view(bsz, hs, ws, 1)
    if s > 1:  # box filter: mean of each pixel's s x s sub-pixels
        rgb = F.avg_pool2d(rgb.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1).contiguous()
        alpha = F.avg_pool2d(alpha.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1).contiguous()
    return {"rgb": rgb, "opacity": alpha}


def render_scene(
    scene: ToyScene,
    c2w: Tensor,  # (B, 4, 4)
    fovy_rad: Tensor,  # (B,)
    height: int,
    width: int,
    supersample: int = 1,
) -> dict[str, Tensor]:
    """render_sdf for a toy scene. -> {"rgb": (B, H, W, 3), "opacity": (B, H, W, 1)}

    Rays start on the scene's own bounding sphere (plus a margin), which skips most empty space.
    """
    bound = scene.bounding_radius() + 0.02
    return render_sdf(
        scene.sdf, scene.albedo, c2w, fovy_rad, height, width, supersample=supersample, bound_radius=bound
    )
