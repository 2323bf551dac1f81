"""The view-pair data of the view-conditioned toy prior: same-scene pairs, no held-out prompt, T from the cameras."""
from __future__ import annotations

import math

import pytest
import torch

import models.priors.toy.training.view_pair_data as pairs_module
from framework.cameras import orbit_c2w
from models.priors.toy.training.view_pair_data import ToyViewPairs, ToyViewPairsDataConfig, ToyViewPairsDataModule
from models.priors.zero123 import relative_pose
from models.priors.toy.render import render_scene
from models.priors.toy.scenes import is_held_out, parse_prompt


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[ToyViewPairsDataConfig, dict]:
    cfg = ToyViewPairsDataConfig(cache_path=str(tmp_path_factory.mktemp("pairs") / "pairs.pt"), n_scenes=12,
                                 views_per_scene=4, resolution=16, supersample=1, batch_size=16)
    dm = ToyViewPairsDataModule(cfg)
    dm.setup("fit")
    return cfg, dm.data


def test_cache_layout_and_no_held_out_prompt(small):
    cfg, data = small
    assert data["images"].shape == (12, 4, 16, 16, 3) and data["images"].dtype == torch.uint8
    for key in ("elevation", "azimuth", "distance", "fovy"):
        assert data[key].shape == (12, 4)
    assert not any(is_held_out(p) for p in data["prompts"])
    assert any(" on top of " in p for p in data["prompts"]) and any(" on top of " not in p for p in data["prompts"])
    assert data["elevation"].min() >= -10.0 and data["elevation"].max() <= 60.0
    assert data["distance"].min() >= 1.4 and data["distance"].max() <= 1.8


def test_pairs_are_two_views_of_one_scene(small):
    cfg, data = small
    batch = ToyViewPairs(data, batch_size=16).sample(torch.Generator().manual_seed(1))
    assert batch["target"].shape == batch["cond"].shape == (16, 3, 16, 16)
    assert batch["target"].min() >= -1.0 and batch["target"].max() <= 1.0
    assert batch["T"].shape == (16, 4)
    images = data["images"].permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
    for i in range(16):
        s = int(batch["scene"][i])
        views = images[s]
        ci = (views - batch["cond"][i]).abs().flatten(1).amax(1).argmin()
        ti = (views - batch["target"][i]).abs().flatten(1).amax(1).argmin()
        assert torch.allclose(views[ci], batch["cond"][i]) and torch.allclose(views[ti], batch["target"][i])
        assert batch["cond_azimuth"][i] == data["azimuth"][s, ci] and batch["target_azimuth"][i] == data["azimuth"][s, ti]
        assert ci != ti  # two different cameras
    # the target really is the scene's prompt rendered from the target camera
    s = int(batch["scene"][0])
    c2w = orbit_c2w(batch["target_elevation"][:1], batch["target_azimuth"][:1], batch["target_distance"][:1])
    fovy = data["fovy"][s][(data["azimuth"][s] == batch["target_azimuth"][0])]
    rgb = render_scene(parse_prompt(data["prompts"][int(data["prompt_index"][s])]), c2w, fovy, 16, 16)["rgb"]
    assert (rgb[0].permute(2, 0, 1) * 2 - 1 - batch["target"][0]).abs().max() < 0.02


def test_relative_pose_is_zero123s_T(small):
    T = relative_pose(torch.tensor([20.0]), torch.tensor([0.0]), torch.tensor([1.6]),
                      torch.tensor([50.0]), torch.tensor([90.0]), torch.tensor([1.4]))
    # polar = 90 - elevation: going up 30 degrees is delta polar -30 degrees
    assert torch.allclose(T, torch.tensor([[-math.radians(30.0), 1.0, 0.0, -0.2]]), atol=1e-6)
    _, data = small
    batch = ToyViewPairs(data, batch_size=8).sample(torch.Generator().manual_seed(2))
    expected = relative_pose(batch["cond_elevation"], batch["cond_azimuth"], batch["cond_distance"],
                             batch["target_elevation"], batch["target_azimuth"], batch["target_distance"])
    assert torch.allclose(batch["T"], expected)
    d_az = torch.deg2rad(batch["target_azimuth"] - batch["cond_azimuth"])
    assert torch.allclose(batch["T"][:, 1], torch.sin(d_az), atol=1e-5)


def test_cache_is_reused_and_regenerated_when_settings_change(small, monkeypatch):
    cfg, data = small
    calls = []
    original = pairs_module.generate_views
    monkeypatch.setattr(pairs_module, "generate_views", lambda c: calls.append(c) or original(c))
    again = pairs_module.load_or_generate(cfg)
    assert not calls and torch.equal(again["images"], data["images"])
    other = ToyViewPairsDataConfig(**{**vars(cfg), "n_scenes": 3})
    assert pairs_module.load_or_generate(other)["images"].shape[0] == 3
    assert len(calls) == 1


def test_dataloaders(small):
    cfg, data = small
    dm = ToyViewPairsDataModule(cfg)
    batch = next(iter(dm.train_dataloader()))
    assert batch["target"].shape == (16, 3, 16, 16)
    assert len(dm.val_dataloader()) == 1 and len(dm.test_dataloader()) == 1
