"""Renders of many candidate toy scenes from one camera, traced once per geometry and coloured after.

The exact view-conditioned prior (exact_view_prior.py) compares a reference image with every
candidate scene seen from the reference camera: 930 scenes by default (30 single shapes and 900
composites). Sphere tracing 930 views costs minutes on two cores, but the scenes have only 30
geometries (5 shapes, 25 stacked pairs); a colour changes nothing but the albedo. The image
formation (render.py)

    sub-pixel = albedo(primitive hit) * (0.4 + 0.6 max(0, n . v))   where a ray hits, else 1

is linear in the albedo of the primitive hit, so one trace per geometry with a one-hot "albedo"
(channel p = 1 on primitive p) yields, per sub-pixel, shade_p = [hit primitive p] * shading
factor. The s x s box filter is linear too, so with mean(.) over a pixel's s x s sub-pixels,

    pixel = sum_p mean(shade_p) albedo_p + (1 - mean(hit))        (white where no ray hits)

and any colouring of the geometry is a few multiply-adds per pixel on its box-filtered trace. The
images equal render_scene's up to float rounding (tests/models/priors/toy/test_candidate_views.py),
except where render_scene's autograd normal is NaN (finite_normals).

The box-filtered traces are cached on disk, one file per camera and image size (under 1 MB at
64^2), next to the exemplar banks; a new candidate set only traces the geometries the file lacks.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.cameras import orbit_c2w
from framework.progress import progress

from .exemplars import default_cache_dir
from .render import RENDERER_VERSION, _autograd_normal, render_sdf
from .scenes import ToyScene, parse_prompt

_PLACEHOLDER = "red"  # colour of the geometry-only scene; the one-hot albedo replaces it


def geometry_key(scene: ToyScene) -> str:
    """The shapes of a scene, top first ('cone', 'cone/torus'): what its trace depends on."""
    return "/".join(prim.shape for prim in scene.primitives)


def _geometry_scene(key: str) -> ToyScene:
    shapes = key.split("/")
    return parse_prompt(" on top of ".join(f"a {_PLACEHOLDER} {s}" for s in shapes))


def finite_normals(sdf_fn: Callable[[Tensor], Tensor], points: Tensor, h: float = 1e-3) -> Tensor:
    """points (N, 3) -> unit normals (N, 3): render.py's autograd SDF gradient, and central differences
    where that is not finite. A ray that stops exactly on the cone's side (SDF == 0.0) meets the
    infinite derivative of sqrt at 0 and render_scene shades it NaN (about one ray in a few thousand);
    here such a sub-pixel gets its true shading instead of poisoning the whole likelihood."""
    n = _autograd_normal(sdf_fn, points)
    bad = ~torch.isfinite(n).all(dim=-1)
    if bad.any():
        p = points[bad]
        offsets = torch.eye(3, dtype=p.dtype) * h
        grad = torch.stack([sdf_fn(p + o) - sdf_fn(p - o) for o in offsets], dim=-1)
        n[bad] = F.normalize(grad, dim=-1)
    return n


def trace_geometry(scene: ToyScene, c2w: Tensor, fovy_rad: Tensor, resolution: int, supersample: int) -> Tensor:
    """Views of the scene's geometry, box-filtered to resolution^2 like render_sdf. c2w (V, 4, 4), fovy_rad (V,).

    -> (V, r, r, P + 1) float32: channel p < P is the pixel mean of [primitive p hit] * shading factor,
    the last one the pixel mean of the hit mask (the opacity). Primitive p is the one ToyScene.albedo
    picks (smallest signed distance).
    """
    n_prims = len(scene.primitives)

    def one_hot_albedo(points: Tensor) -> Tensor:  # (N, 3) -> (N, 3), channel p marks primitive p
        nearest = scene.primitive_sdfs(points).argmin(dim=-1) if n_prims > 1 else torch.zeros(points.shape[0], dtype=torch.long)
        return F.one_hot(nearest, 3).to(points.dtype)

    size = resolution * supersample
    # the bound render_scene uses (rays start on the scene's bounding sphere plus a margin)
    out = render_sdf(
        scene.sdf, one_hot_albedo, c2w, fovy_rad, size, size,
        supersample=1, bound_radius=scene.bounding_radius() + 0.02, normal_fn=lambda p: finite_normals(scene.sdf, p),
    )  # fmt: skip
    hit = out["opacity"]  # (V, s r, s r, 1) in {0, 1}
    shade = out["rgb"][..., :n_prims] * hit  # render_sdf leaves missed sub-pixels white (1): zero them
    trace = torch.cat([shade, hit], dim=-1).permute(0, 3, 1, 2)
    if supersample > 1:
        trace = F.avg_pool2d(trace, supersample)
    return trace.permute(0, 2, 3, 1).contiguous()


def colour_traces(trace: Tensor, albedos: Tensor) -> Tensor:
    """trace (V, r, r, P + 1) from trace_geometry, albedos (S, P, 3) -> images (V, S, r, r, 3) in [0, 1]."""
    shade, opacity = trace[..., :-1], trace[..., -1:]
    rgb = (shade[:, None, :, :, :, None] * albedos[None, :, None, None, :, :]).sum(dim=4)  # sum_p mean(shade_p) albedo_p
    return (rgb + (1.0 - opacity)[:, None]).clamp(0.0, 1.0)  # + white where the rays missed


def _colour_groups(scenes: Sequence[ToyScene], traces: dict[str, Tensor], out: Tensor) -> Tensor:
    """Fill out (V, S, r, r, 3) with each scene coloured from its geometry's trace (V, r, r, P + 1)."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(scenes):
        groups.setdefault(geometry_key(s), []).append(i)
    for key, idx in groups.items():
        albedos = torch.tensor([[prim.albedo for prim in scenes[i].primitives] for i in idx])  # (S_g, P, 3)
        out[:, idx] = colour_traces(traces[key], albedos)
    return out


def render_views(prompts: Sequence[str], c2w: Tensor, fovy_rad: Tensor, resolution: int, supersample: int = 2) -> Tensor:
    """Every prompt's scene from each of V cameras, c2w (V, 4, 4), fovy_rad (V,): one trace per geometry
    for all V views, no cache (for arbitrary cameras). -> (V, S, r, r, 3) in [0, 1]"""
    scenes = [parse_prompt(p) for p in prompts]
    c2w, fovy_rad = c2w.detach().float().cpu(), fovy_rad.detach().float().cpu().reshape(-1)
    traces = {key: trace_geometry(_geometry_scene(key), c2w, fovy_rad, int(resolution), int(supersample))
              for key in sorted({geometry_key(s) for s in scenes})}  # fmt: skip
    return _colour_groups(scenes, traces, torch.empty(c2w.shape[0], len(scenes), int(resolution), int(resolution), 3))


def _cache_path(cache_dir: Path, camera: tuple[float, float, float, float], resolution: int, supersample: int) -> Path:
    spec = {"camera": list(camera), "resolution": resolution, "supersample": supersample,
            "renderer": RENDERER_VERSION, "kind": "geometry-traces-v3"}  # fmt: skip
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir / f"candidate-traces-{key}.pt"


def render_candidates(
    prompts: Sequence[str],
    elevation_deg: float,
    azimuth_deg: float,
    distance: float,
    fovy_deg: float,
    resolution: int,
    supersample: int = 2,
    cache_dir: str | os.PathLike | None = None,
) -> Tensor:
    """Every prompt's scene seen from one orbit camera (looking at the origin). -> (S, r, r, 3) in [0, 1]

    Equal (to float rounding) to render_scene(scene, orbit_c2w(...), fovy, r, r, supersample) for each prompt.
    """
    scenes = [parse_prompt(p) for p in prompts]
    camera = (float(elevation_deg), float(azimuth_deg), float(distance), float(fovy_deg))
    resolution, supersample = int(resolution), int(supersample)
    path = _cache_path(Path(cache_dir) if cache_dir else default_cache_dir(), camera, resolution, supersample)
    traces: dict[str, Tensor] = {}
    if path.exists():
        try:
            traces = dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception:  # a truncated or foreign file: trace again and overwrite
            traces = {}
    missing = sorted({geometry_key(s) for s in scenes} - set(traces))
    if missing:
        c2w = orbit_c2w(*(torch.tensor([v]) for v in camera[:3]))
        fovy = torch.tensor([math.radians(camera[3])])
        with progress("tracing the candidate scenes from the reference camera", len(missing), "geometries", delay=1.0) as bar:
            for key in missing:
                traces[key] = trace_geometry(_geometry_scene(key), c2w, fovy, resolution, supersample)[0]
                bar.update()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")  # write then rename: parallel runs never read half a file
        torch.save(traces, tmp)
        os.replace(tmp, path)
    one_view = {key: trace[None] for key, trace in traces.items()}
    return _colour_groups(scenes, one_view, torch.empty(1, len(scenes), resolution, resolution, 3))[0]
