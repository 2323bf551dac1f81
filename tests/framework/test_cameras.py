"""Camera convention (DESIGN.md): +z up, azimuth 0 on +x, OpenGL camera looking down -z."""
import math

import pytest
import torch

from framework import cameras
from framework.config import ConfigError
from framework.data.random_camera import RandomCameraDataConfig, RandomCameraIterableDataset


def test_azimuth_zero_is_on_plus_x_and_looks_at_origin():
    c2w = cameras.orbit_c2w(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.0]))
    torch.testing.assert_close(c2w[0, :3, 3], torch.tensor([2.0, 0.0, 0.0]))
    torch.testing.assert_close(-c2w[0, :3, 2], torch.tensor([-1.0, 0.0, 0.0]))  # looks down its -z
    torch.testing.assert_close(c2w[0, :3, 1], torch.tensor([0.0, 0.0, 1.0]))  # image up is world +z
    torch.testing.assert_close(c2w[0, :3, 0], torch.tensor([0.0, 1.0, 0.0]))  # image right is world +y


def test_azimuth_counter_clockwise_and_elevation_up():
    pos = cameras.spherical_to_cartesian(torch.tensor([0.0, 90.0]), torch.tensor([90.0, 0.0]), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(pos, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), atol=1e-6, rtol=0)


def test_rays_centre_and_corners():
    c2w = cameras.orbit_c2w(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.0]))
    fovy = torch.tensor([math.radians(60.0)])
    rays_o, rays_d = cameras.get_rays(c2w, fovy, 4, 4)
    assert rays_o.shape == rays_d.shape == (1, 4, 4, 3)
    torch.testing.assert_close(rays_d.norm(dim=-1), torch.ones(1, 4, 4))
    centre = rays_d[0, 1:3, 1:3].mean(dim=(0, 1))
    torch.testing.assert_close(centre / centre.norm(), torch.tensor([-1.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    assert rays_d[0, 0, 0, 2] > 0 and rays_d[0, -1, 0, 2] < 0  # row 0 is the top (+z)
    assert rays_d[0, 0, -1, 1] > 0 and rays_d[0, 0, 0, 1] < 0  # last column is the right (+y)
    # the top edge's ray is fovy/2 above the axis (pixel centres are half a pixel inside)
    top = rays_d[0, 0, :, 2].mean()
    expected = math.sin(math.atan(math.tan(math.radians(30.0)) * (1.5 / 2)))
    assert abs(top.item() - expected) < 0.05


def test_random_cameras_respect_ranges_and_stratify_azimuth():
    cfg = RandomCameraDataConfig(batch_size=4, elevation_range=[-10.0, 45.0], camera_distance_range=[1.5, 2.0],
                                 fovy_range=[40.0, 70.0], camera_perturb=0.0, center_perturb=0.0, up_perturb=0.0,
                                 height=8, width=8, seed=1)
    data = RandomCameraIterableDataset(cfg)
    for _ in range(20):
        b = data.sample()
        assert ((b["elevation"] >= -10 - 1e-4) & (b["elevation"] <= 45 + 1e-4)).all()
        assert ((b["distance"] >= 1.5) & (b["distance"] <= 2.0)).all()
        fov = torch.rad2deg(b["fovy"])
        assert ((fov >= 40) & (fov <= 70)).all()
        slots = ((b["azimuth"] + 180) / 90).floor()
        assert torch.equal(slots, torch.arange(4.0))  # one azimuth per quarter
        torch.testing.assert_close(b["camera_position"].norm(dim=-1), b["distance"])
        assert b["rays_d"].shape == (4, 8, 8, 3)


def test_resolution_milestones():
    cfg = RandomCameraDataConfig(height=[8, 16], width=[8, 16], resolution_milestones=[10], seed=0)
    data = RandomCameraIterableDataset(cfg)
    assert data.sample()["rays_o"].shape[1] == 8
    data.update_step(10)
    assert data.sample()["rays_o"].shape[1] == 16


def test_random_camera_batch_size_int_or_checked_list():
    cfg = RandomCameraDataConfig(height=4, width=4, batch_size=[2, 5], resolution_milestones=[3], seed=0)
    data = RandomCameraIterableDataset(cfg)
    assert data.sample()["c2w"].shape[0] == 2
    data.update_step(3)
    assert data.sample()["c2w"].shape[0] == 5
    assert RandomCameraIterableDataset(RandomCameraDataConfig(batch_size=3, seed=0)).sample()["c2w"].shape[0] == 3
    with pytest.raises(ConfigError, match="batch_size='two' is not allowed: must be an integer >= 1"):
        RandomCameraIterableDataset(RandomCameraDataConfig(batch_size="two"))
    with pytest.raises(ConfigError, match="batch_size lists need"):
        RandomCameraIterableDataset(RandomCameraDataConfig(batch_size=[2, 5]))


def test_turntable_is_evenly_spaced():
    views = cameras.turntable(120, 15.0, 1.5, 70.0)
    assert views["c2w"].shape == (120, 4, 4)
    diffs = torch.diff(views["azimuth"]) % 360
    torch.testing.assert_close(diffs, torch.full((119,), 3.0))
