"""The reference-view losses of systems/zero123.py on hand-made renders."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from framework.config import ConfigError
from systems.zero123 import aligned_depth_loss, normal_loss, normal_smoothness, normal_smoothness_3d


def test_depth_known_up_to_scale_and_shift_costs_nothing():
    torch.manual_seed(0)
    depth = torch.rand(1, 8, 8, 1) + 1.0
    mask = torch.zeros(1, 8, 8, 1)
    mask[:, 2:6, 2:6] = 1.0
    target = (depth - 0.3) / 2.5  # an affine map of the render's depth, as a monocular estimate is
    target = torch.where(mask > 0, target, torch.randn_like(target))  # outside the mask: ignored
    assert aligned_depth_loss(depth, target, mask).item() < 1e-10
    wrong = torch.rand_like(target)
    assert aligned_depth_loss(depth, wrong, mask).item() > 1e-3
    depth.requires_grad_(True)
    aligned_depth_loss(depth, wrong, mask).backward()
    assert depth.grad[mask == 0].abs().max() == 0 and depth.grad[mask > 0].abs().max() > 0


def test_normal_loss_is_one_minus_the_cosine_inside_the_mask():
    n = F.normalize(torch.randn(1, 4, 4, 3), dim=-1)
    comp_normal = (n + 1) / 2  # opacity 1
    mask = torch.ones(1, 4, 4, 1)
    assert normal_loss(comp_normal, n, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert normal_loss(comp_normal, -n, mask).item() == pytest.approx(2.0, abs=1e-6)


def test_normal_smoothness_is_zero_for_a_flat_image_only():
    flat = {"comp_normal": torch.full((1, 5, 5, 3), 0.5)}
    assert normal_smoothness(flat).item() == 0.0
    ramp = torch.linspace(0, 1, 5).view(1, 5, 1, 1).expand(1, 5, 5, 3)
    assert normal_smoothness({"comp_normal": ramp}).item() == pytest.approx(0.25**2)


def test_3d_normal_smoothness_needs_the_perturbed_normals():
    n = F.normalize(torch.randn(10, 3), dim=-1)
    assert normal_smoothness_3d({"normal": n, "normal_perturb": n}).item() == 0.0
    with pytest.raises(ConfigError, match="return_normal_perturb"):
        normal_smoothness_3d({"normal": n})
