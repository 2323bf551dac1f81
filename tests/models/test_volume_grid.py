"""VolumeGrid (trilinear lookup, bias, normals, isosurface), TexturedBackground, and 4-channel
(latent) rendering through the volume renderer."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.backgrounds.textured import TexturedBackground, TexturedBackgroundConfig, direction_to_uv
from models.geometry.volume_grid import VolumeGrid, VolumeGridConfig
from models.materials.no_material import NoMaterial, NoMaterialConfig
from models.renderers.volume_renderer import VolumeRenderer, VolumeRendererConfig


def make(**kw) -> VolumeGrid:
    base = dict(radius=1.0, grid_size=[5, 6, 7], n_feature_dims=3, density_bias=0.0)
    base.update(kw)
    return VolumeGrid(VolumeGridConfig(**base))


def test_trilinear_lookup_hits_grid_nodes_and_is_linear_between():
    geo = make()
    with torch.no_grad():
        geo.grid.copy_(torch.randn_like(geo.grid))
    g = geo.grid[0]  # (C, nz, ny, nx)
    # node (i, j, k) = (x index, y index, z index) sits at -r + 2r * index / (n - 1)
    i, j, k = 3, 1, 5
    node = torch.tensor([[-1 + 2 * i / 4, -1 + 2 * j / 5, -1 + 2 * k / 6]])
    torch.testing.assert_close(geo.trilinear(node)[0], g[:, k, j, i], rtol=1e-5, atol=1e-5)
    # halfway between two x-neighbours: the mean of the two nodes (linear along each axis)
    mid = node + torch.tensor([[1.0 / 4, 0, 0]])
    torch.testing.assert_close(geo.trilinear(mid)[0], 0.5 * (g[:, k, j, i] + g[:, k, j, i + 1]), rtol=1e-5, atol=1e-5)


def test_density_is_activated_raw_plus_bias_and_features_are_raw():
    geo = make(density_bias=-1.0)
    with torch.no_grad():
        geo.grid.fill_(0.5)
    out = geo(torch.rand(10, 3) * 2 - 1)
    torch.testing.assert_close(out["density"], torch.full((10, 1), F.softplus(torch.tensor(-0.5)).item()))
    torch.testing.assert_close(out["features"], torch.full((10, 3), 0.5))
    assert torch.allclose(geo.forward_density(torch.zeros(4, 3)), out["density"][:4])


def test_blob_bias_reuses_implicit_volume_formula():
    geo = make(density_bias="blob_magic3d", density_blob_scale=10.0, density_blob_std=0.5)
    p = torch.tensor([[0.3, 0.4, 0.0]])  # |p| = 0.5 -> 10 (1 - 0.5 / 0.5) = 0
    assert geo.density_bias(p).item() == pytest.approx(0.0, abs=1e-6)
    geo = make(density_bias="blob_dreamfusion", density_blob_scale=10.0, density_blob_std=0.5)
    assert geo.density_bias(p).item() == pytest.approx(10 * math.exp(-0.5), abs=1e-5)


def test_finite_difference_normals_point_outward_and_none_means_no_normals():
    geo = make(grid_size=[32, 32, 32], density_bias="blob_magic3d", finite_difference_eps=0.05)
    pts = F.normalize(torch.randn(100, 3), dim=-1) * 0.4
    n = geo(pts, output_normal=True)["normal"]
    assert (n * F.normalize(pts, dim=-1)).sum(-1).min() > 0.95
    assert "normal" not in make(normal_type=None)(pts, output_normal=True)


def test_gradients_reach_the_grid_and_isosurface_is_a_closed_blob():
    geo = make(grid_size=[24, 24, 24], density_bias="blob_magic3d", isosurface_resolution=32, isosurface_threshold=2.0)
    out = geo(torch.rand(50, 3) - 0.5, output_normal=True)
    (out["density"].sum() + out["features"].sum() + out["normal"].sum()).backward()
    assert geo.grid.grad is not None and geo.grid.grad.abs().sum() > 0
    mesh = geo.isosurface()
    r = mesh.vertices.norm(dim=-1)
    # softplus(10 (1 - r / 0.5)) = 2  <=>  r = 0.5 (1 - softplus^-1(2) / 10)
    expected = 0.5 * (1 - math.log(math.expm1(2.0)) / 10.0)
    assert mesh.n_faces > 100 and abs(r.mean().item() - expected) < 0.01


def test_rejects_bad_config():
    with pytest.raises(ValueError, match="normal_type"):
        make(normal_type="analytic")
    with pytest.raises(ValueError, match="grid_size"):
        make(grid_size=[4, 4])


def test_textured_background_indexes_texture_by_direction():
    bg = TexturedBackground(TexturedBackgroundConfig(n_output_dims=4, height=4, width=4, color_activation="none"))
    dirs = F.normalize(torch.randn(2, 3, 5, 3), dim=-1)
    out = bg(dirs)
    assert out.shape == (2, 3, 5, 4)
    # straight up reads the top row, straight down the bottom row (with reflection padding: the edge texels' mean)
    up, down = bg(torch.tensor([[[[0.0, 0.0, 1.0]]]]))[0, 0, 0], bg(torch.tensor([[[[0.0, 0.0, -1.0]]]]))[0, 0, 0]
    tex = bg.texture[0]
    assert torch.allclose(up, tex[:, 0, 1:3].mean(-1), atol=1e-5) and torch.allclose(down, tex[:, -1, 1:3].mean(-1), atol=1e-5)
    uv = direction_to_uv(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    torch.testing.assert_close(uv, torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, -1.0]]))
    out.sum().backward()
    assert bg.texture.grad.abs().sum() > 0
    rgb = TexturedBackground(TexturedBackgroundConfig())(dirs)
    assert rgb.shape == (2, 3, 5, 3) and rgb.min() >= 0 and rgb.max() <= 1


def test_volume_renderer_renders_four_channel_latents():
    geo = make(grid_size=[16, 16, 16], n_feature_dims=4, density_bias="blob_magic3d", normal_type=None)
    material = NoMaterial(NoMaterialConfig(n_output_dims=4, color_activation="none"))
    bg = TexturedBackground(TexturedBackgroundConfig(n_output_dims=4, height=4, width=4, color_activation="none"))
    renderer = VolumeRenderer(VolumeRendererConfig(num_samples_per_ray=32, grid_prune=False), geo, material, bg)
    rays_o = torch.tensor([2.0, 0.0, 0.0]).expand(1, 6, 6, 3)
    rays_d = F.normalize(-rays_o + 0.1 * torch.randn(1, 6, 6, 3), dim=-1)
    light = torch.zeros(1, 3)
    out = renderer.train()(rays_o, rays_d, light)
    assert out["comp_rgb"].shape == (1, 6, 6, 4) and out["comp_normal"].shape == (1, 6, 6, 3)
    out["comp_rgb"].sum().backward()
    assert geo.grid.grad.abs().sum() > 0 and bg.texture.grad.abs().sum() > 0
    fixed = renderer.eval()(rays_o, rays_d, light, bg_color=torch.zeros(4))
    assert fixed["comp_rgb"].shape == (1, 6, 6, 4) and fixed["comp_rgb_bg"].abs().sum() == 0


def test_config_has_every_isosurface_field_that_the_shared_isosurface_reads():
    from dataclasses import fields

    from models.geometry.implicit_volume import ImplicitVolumeConfig

    needed = {f.name for f in fields(ImplicitVolumeConfig) if f.name.startswith("isosurface")}
    assert needed <= {f.name for f in fields(VolumeGridConfig)}
