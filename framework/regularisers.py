"""Regularisers on volume renders that DreamFusion-style systems share.

Each takes the renderer's output dict (framework/interfaces.py Renderer) and returns a scalar.
"""
from __future__ import annotations

import torch
from torch import Tensor


def orientation_loss(out: dict[str, Tensor]) -> Tensor:
    """DreamFusion's orientation loss (Ref-NeRF): penalise normals facing away from the camera.

    sum_i stopgrad(w_i) max(0, n_i . d_i)^2 over samples, normalised by the number of rays that
    see anything (threestudio's normalisation). weights (S, 1), normal (S, 3), t_dirs (S, 3).
    """
    facing_away = (out["normal"] * out["t_dirs"]).sum(-1, keepdim=True).clamp_min(0.0)
    n_rays = (out["opacity"] > 0).sum().clamp_min(1)
    return (out["weights"].detach() * facing_away**2).sum() / n_rays


def sparsity_loss(out: dict[str, Tensor]) -> Tensor:
    """Mean sqrt(opacity^2 + 0.01): pushes empty rays to zero opacity. opacity (B, H, W, 1)."""
    return (out["opacity"] ** 2 + 0.01).sqrt().mean()


def opacity_entropy_loss(out: dict[str, Tensor]) -> Tensor:
    """Binary entropy of the opacity ('opaque'): pushes each ray to fully empty or fully opaque."""
    p = out["opacity"].clamp(1.0e-3, 1.0 - 1.0e-3)
    return -(p * torch.log(p) + (1 - p) * torch.log(1 - p)).mean()


REGULARISERS = {
    "orient": orientation_loss,
    "sparsity": sparsity_loss,
    "opaque": opacity_entropy_loss,
}
