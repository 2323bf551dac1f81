"""View-direction assignment, view prompts and Perp-Neg against hand-computed values."""
import math

import pytest
import torch

from models.prompt_processors.view_dependent import (
    BACK,
    BACK_SIDE,
    FRONT,
    FRONT_SIDE,
    OVERHEAD,
    SIDE,
    ViewDirections,
    assign_directions,
    perp_neg_weights,
    view_prompts,
)


def test_assign_directions_around_thresholds():
    az = torch.tensor([0.0, 44.9, 45.1, -44.9, -45.1, 90.0, 134.9, 135.1, -135.1, -180.0, 179.9, 135.1, 0.0])
    el = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 60.1, 60.0])
    expected = [FRONT, FRONT, SIDE, FRONT, SIDE, SIDE, SIDE, BACK, BACK, BACK, BACK, OVERHEAD, FRONT]
    d = assign_directions(el, az)
    assert d.dtype == torch.long
    assert d.tolist() == expected


def test_assign_directions_custom_thresholds_and_dataclass():
    az = torch.tensor([29.9, 30.1, 150.1, 149.9])
    el = torch.tensor([0.0, 0.0, 0.0, 80.0])
    assert assign_directions(el, az, 30, 30, 85).tolist() == [FRONT, SIDE, BACK, SIDE]
    assert ViewDirections(30, 30, 85).assign(el, az).tolist() == [FRONT, SIDE, BACK, SIDE]
    assert ViewDirections().assign(el, az).tolist() == [FRONT, FRONT, BACK, OVERHEAD]


def test_view_prompts_and_overrides():
    assert view_prompts("a cat") == ["a cat, side view", "a cat, front view", "a cat, backside view", "a cat, overhead view"]
    ps = view_prompts("a cat", {"back": "the back of a cat", "overhead": "a cat seen from above"})
    assert ps == ["a cat, side view", "a cat, front view", "the back of a cat", "a cat seen from above"]
    with pytest.raises(KeyError):
        view_prompts("a cat", {"top": "x"})


def test_diagonal_views_split_the_azimuth_into_45_degree_sectors():
    az = torch.tensor([0.0, 22.4, 22.6, -40.0, 67.4, 67.6, -90.0, 112.6, -157.4, 157.6, -180.0, 45.0])
    el = torch.tensor([0.0] * 11 + [60.1])
    expected = [
        FRONT, FRONT, FRONT_SIDE, FRONT_SIDE, FRONT_SIDE, SIDE, SIDE, BACK_SIDE, BACK_SIDE, BACK, BACK, OVERHEAD
    ]  # fmt: skip
    directions = ViewDirections(22.5, 22.5, 60.0, 22.5)
    assert directions.diagonal_views and directions.assign(el, az).tolist() == expected
    assert not ViewDirections().diagonal_views
    # each 45-degree sector of a uniform azimuth draw gets its share: front and back two half-sectors
    uniform = torch.arange(7200) * 0.05 - 180.0 + 0.025  # off the sector boundaries
    counts = torch.bincount(directions.assign(torch.zeros_like(uniform), uniform), minlength=6)
    assert counts[[SIDE, FRONT, BACK, FRONT_SIDE, BACK_SIDE]].tolist() == [1800, 900, 900, 1800, 1800]


def test_diagonal_view_prompts_and_overrides():
    ps = view_prompts("a cat", {"front_side": "a cat, turned"}, diagonal_views=True)
    assert ps == [
        "a cat, side view", "a cat, front view", "a cat, backside view", "a cat, overhead view",
        "a cat, turned", "a cat, backside side view",
    ]  # fmt: skip
    with pytest.raises(KeyError, match="front_side"):
        view_prompts("a cat", {"front_side": "x"})  # four views only, unless asked


def test_perp_neg_weights_hand_computed():
    az = torch.tensor([0.0, 45.0, 90.0, 135.0, -180.0, -45.0])
    el = torch.zeros(6)
    pos, idx, w = perp_neg_weights(az, el)
    e05, e025 = math.exp(-0.5), math.exp(-0.25)
    exp_pos = [[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1], [0.5, 0.5, 0]]
    exp_idx = [[FRONT, SIDE], [FRONT, SIDE], [SIDE, FRONT], [SIDE, FRONT], [SIDE, FRONT], [FRONT, SIDE]]
    exp_w = [
        [-(4 * e05 - 2.426), -(4 * 1 - 2.426)],  # r = 1: f_fs(1), f_sf(0)
        [-(4 * e025 - 2.426), -(4 * e025 - 2.426)],  # r = 0.5
        [-(e05 - 0.606), -(e05 + 0.967)],  # back half r = 1: f_sb(1), f_fsb(1)
        [-(e025 - 0.606), -(e025 + 0.967)],  # r = 0.5
        [-(1 - 0.606), -(1 + 0.967)],  # r = 0
        [-(4 * e025 - 2.426), -(4 * e025 - 2.426)],
    ]
    assert torch.allclose(pos, torch.tensor(exp_pos, dtype=torch.float32), atol=1e-6)
    assert idx.dtype == torch.long and idx.tolist() == exp_idx
    assert torch.allclose(w, torch.tensor(exp_w, dtype=torch.float32), atol=1e-6)
    # spot literals, independent of the formula re-typed above
    assert w[0, 1].item() == pytest.approx(-1.574, abs=1e-6)
    assert w[4].tolist() == pytest.approx([-0.394, -1.967], abs=1e-6)
    assert torch.allclose(pos.sum(-1), torch.ones(6))


def test_perp_neg_overhead_zeroes_negatives():
    pos, idx, w = perp_neg_weights(torch.tensor([0.0, 135.0, 135.0]), torch.tensor([60.1, 70.0, 60.0]))
    assert torch.all(w[:2] == 0)
    assert torch.all(w[2] != 0)
    assert pos[1].tolist() == pytest.approx([0, 0.5, 0.5])


def test_assign_directions_exact_thresholds_are_strict():
    # |az| < 45 is front and |az| > 135 is back (strict), elevation > 60 is overhead (strict)
    d = assign_directions(torch.tensor([0.0, 0.0, 0.0, 60.0]), torch.tensor([45.0, -135.0, 135.0, 180.0 - 1e-3]))
    assert d.tolist() == [SIDE, SIDE, SIDE, BACK]
