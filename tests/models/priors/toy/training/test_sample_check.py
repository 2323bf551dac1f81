"""The automatic sample check tells true renders from wrong shapes, wrong colours and noise."""
from __future__ import annotations

import torch

from models.priors.toy.dataset import ToyDatasetConfig, render_views
from models.priors.toy.training.sample_check import SampleCheck

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


def test_exemplars_are_seen_from_the_given_cameras():
    # a sphere looks the same from every direction: from one distance and field of view every exemplar
    # is the same silhouette, over the toy ranges of distance and fov they differ in size
    one_camera = ToyDatasetConfig(camera_distance_range=[1.6, 1.6], fovy_range=[40.0, 40.0])
    fixed = SampleCheck(n_exemplars=8, resolution=32, cameras=one_camera).exemplars("a red sphere")
    ranged = SampleCheck(n_exemplars=8, resolution=32).exemplars("a red sphere")
    area = lambda rgb: (rgb < 0.95).any(-1).float().sum((1, 2))  # noqa: E731
    assert area(fixed).std() < 1.0 < area(ranged).std()
