"""The colour a viewer sees at a surface point of a density field, for texture baking.

A NeRF's isosurface at density level tau usually lies in the thin haze in front of the
visible shell, where features never received gradients, so reading the albedo exactly on
the mesh gives colours nobody ever rendered. Instead we look at each surface point head-on:
volume-render the albedo along a short ray through the point against its normal, with the
same alpha compositing as the renderer (NeRF eq. 3).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.interfaces import Geometry, Material, Mesh


@torch.no_grad()
def rendered_surface_albedo(
    geometry: Geometry,
    material: Material,
    points: Tensor,  # (N, 3) on the exported surface
    half_length: float = 0.05,
    n_samples: int = 16,
    chunk: int = 32768,
) -> Tensor:  # (N, 3) albedo in [0, 1]
    out = []
    for p in points.split(chunk):
        with torch.enable_grad():
            normal = geometry(p, output_normal=True)["normal"].detach()
        normal = F.normalize(normal, dim=-1)
        # samples from outside (+half_length along the normal) to inside (-half_length)
        offsets = torch.linspace(half_length, -half_length, n_samples, device=p.device)
        samples = p[:, None, :] + offsets[None, :, None] * normal[:, None, :]  # (n, S, 3)
        flat = samples.reshape(-1, 3).clamp(-geometry.radius, geometry.radius)
        geo = geometry(flat, output_normal=False)
        delta = 2.0 * half_length / (n_samples - 1)
        tau = geo["density"].reshape(-1, n_samples) * delta
        transmittance = torch.exp(-(torch.cumsum(tau, dim=1) - tau))
        weights = transmittance * (1.0 - torch.exp(-tau))  # (n, S)
        albedo = material.albedo(geo["features"]).reshape(-1, n_samples, 3)
        total = weights.sum(dim=1, keepdim=True)
        # rays that never become opaque fall back to the albedo at the point itself
        at_point = material.albedo(geometry.export_features(p))
        composite = (weights[..., None] * albedo).sum(dim=1) / total.clamp_min(1e-6)
        out.append(torch.where(total > 0.05, composite, at_point))
    return torch.cat(out)


def textured_isosurface(geometry: Geometry, material: Material) -> tuple[Mesh, Callable[[Tensor], Tensor]]:
    """A density field's exported mesh and its albedo function (points (N, 3) -> (N, 3)): what a NeRF
    system's `export_mesh` returns."""
    return geometry.isosurface(), lambda points: rendered_surface_albedo(geometry, material, points)
