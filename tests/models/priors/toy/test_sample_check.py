"""The automatic sample check tells true renders from wrong shapes, wrong colours and noise."""
from __future__ import annotations

import torch

from models.priors.toy.dataset import ToyDatasetConfig, render_views
from models.priors.toy.sample_check import SampleCheck

CHECK = SampleCheck(n_exemplars=32, resolution=32)


def renders(prompt: str, seed: int) -> torch.Tensor:
    return render_views(prompt, 6, ToyDatasetConfig(resolution=32), seed=seed)


def test_true_renders_pass_even_on_a_tinted_background():
    samples = renders("a purple cone", seed=5)
    figures = CHECK.check("a purple cone", samples)
    assert figures["silhouette_iou"] > 0.8 and figures["colour_correct"] == 1.0 and figures["colour_error"] < 0.05
    background = (samples - 1.0).abs().amax(-1, keepdim=True) < 0.02
    tinted = torch.where(background, torch.tensor([0.85, 0.8, 0.9]), samples)
    assert CHECK.check("a purple cone", tinted)["silhouette_iou"] > 0.8


def test_wrong_shape_colour_and_noise_score_lower():
    right = CHECK.check("a purple cone", renders("a purple cone", seed=5))
    wrong_shape = CHECK.check("a purple cone", renders("a purple torus", seed=5))
    wrong_colour = CHECK.check("a purple cone", renders("a green cone", seed=5))
    noise = CHECK.check("a purple cone", torch.rand(6, 32, 32, 3))
    assert wrong_shape["silhouette_iou"] < right["silhouette_iou"] - 0.2
    assert wrong_colour["colour_correct"] == 0.0 and wrong_colour["colour_error"] > 0.1
    assert noise["silhouette_iou"] < 0.6
