"""The validation-time warning for a scene that collapsed to nothing or whose density fills the view."""
from __future__ import annotations

import torch

from framework.base_system import scene_warning


def test_an_empty_scene_is_told_with_the_step():
    warning = scene_warning(torch.zeros(4 * 32 * 32), step=200)
    assert warning is not None and "step 200" in warning and "empty" in warning


def test_a_scene_filling_every_view_is_told():
    warning = scene_warning(torch.ones(4 * 32 * 32), step=40)
    assert warning is not None and "exploded" in warning and "system.optimizer.lr" in warning


def test_an_object_in_the_middle_of_the_view_is_fine():
    opacity = torch.zeros(32, 32)
    opacity[8:24, 8:24] = 1.0
    assert scene_warning(opacity.flatten(), step=10) is None
