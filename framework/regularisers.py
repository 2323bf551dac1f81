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


EMPTINESS_SCALE = 10.0  # threestudio's and SJC's emptiness_scale


def emptiness_loss(out: dict[str, Tensor], scale: float = EMPTINESS_SCALE) -> Tensor:
    """SJC's emptiness prior: mean log(1 + scale * w_i) over the packed sample weights (S, 1).

    Concave in w, so it charges faint density spread over many samples more than the same
    weight concentrated in few: empty space stays empty and surfaces stay sharp (Wang et al. 2023).
    """
    w = out["weights"]
    return torch.log1p(scale * w).sum() / max(w.numel(), 1)  # 0, not NaN, when every sample was pruned


REGULARISERS = {
    "orient": orientation_loss,
    "sparsity": sparsity_loss,
    "opaque": opacity_entropy_loss,
    "emptiness": emptiness_loss,  # at EMPTINESS_SCALE; systems/sjc.py reads its own scale
}
