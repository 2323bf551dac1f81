"""MeshRenderer: analytic sphere render, same scene and orientation as the volume renderer, gradients."""
from __future__ import annotations

import math

import pytest
import torch

from framework.cameras import get_rays, orbit_c2w
from framework.mesh_regularisers import normal_consistency_loss
from models.backgrounds.solid_color import SolidColorBackground, SolidColorBackgroundConfig
from models.encodings.hash_grid import HashGridConfig
from models.geometry.dmtet import DMTet, DMTetConfig
from models.materials.no_material import NoMaterial, NoMaterialConfig
from models.renderers.mesh_renderer import MeshRenderer, MeshRendererConfig
from models.renderers.volume_renderer import VolumeRenderer, VolumeRendererConfig

ENC = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=8, per_level_scale=1.5, backend="torch")
CENTRE = torch.tensor([0.0, 0.25, 0.3])  # up (+z) and to +y: a flipped image would show it
R = 0.3


def _scene(n: int = 32):
    geo = DMTet(DMTetConfig(radius=1.0, isosurface_resolution=n, pos_encoding=ENC, shape_init=None))
    geo.initialize_from_shape(lambda p: (p - CENTRE).norm(dim=-1) - R)
    mat = NoMaterial(NoMaterialConfig())
    bg = SolidColorBackground(SolidColorBackgroundConfig(color=[0.2, 0.3, 0.4]))
    return geo, mat, bg


def _batch(H: int = 48, W: int = 40, azimuth: float = 20.0):
    c2w = orbit_c2w(torch.tensor([10.0]), torch.tensor([azimuth]), torch.tensor([2.0]))
    fovy = torch.tensor([math.radians(40.0)])
    rays_o, rays_d = get_rays(c2w, fovy, H, W)
    return {"c2w": c2w, "fovy": fovy, "rays_o": rays_o, "rays_d": rays_d, "light_position": c2w[:, :3, 3]}


def _ray_sphere(rays_o, rays_d):
    oc = rays_o - CENTRE
    b = (oc * rays_d).sum(-1)
    disc = b**2 - (oc * oc).sum(-1) + R**2
    t = -b - disc.clamp(min=0).sqrt()
    return disc, t


def test_matches_an_analytic_sphere_render_in_the_project_image_orientation():
    geo, mat, bg = _scene()
    ren = MeshRenderer(MeshRendererConfig(backend="torch"), geometry=geo, material=mat, background=bg)
    batch = _batch()
    out = ren.forward_batch(batch)
    for k in ("comp_rgb", "comp_rgb_fg", "comp_rgb_bg", "comp_normal"):
        assert out[k].shape == (1, 48, 40, 3)
    assert out["opacity"].shape == out["depth"].shape == (1, 48, 40, 1)
    disc, t = _ray_sphere(batch["rays_o"], batch["rays_d"])
    truth = disc > 0
    mesh_mask = out["opacity"][..., 0] > 0.5
    iou = (truth & mesh_mask).sum() / (truth | mesh_mask).sum()
    assert iou > 0.9
    rows = truth.nonzero()[:, 1].float().mean()
    assert rows < 24 and abs(mesh_mask.nonzero()[:, 1].float().mean() - rows) < 1.0  # sphere is up: top rows
    inner = truth & (disc > 0.02) & mesh_mask
    assert (out["depth"][..., 0][inner] - t[inner]).abs().max() < 2.0 / 32
    # compositing: comp_rgb = fg + (1 - opacity) bg; background where empty
    assert torch.allclose(out["comp_rgb"], out["comp_rgb_fg"] + (1 - out["opacity"]) * out["comp_rgb_bg"])
    empty = out["opacity"][..., 0] == 0
    assert torch.allclose(out["comp_rgb"][empty], torch.tensor([0.2, 0.3, 0.4]))
    # normals: facing the camera on the sphere, black where empty
    n = out["comp_normal"][inner] * 2 - 1
    view = torch.nn.functional.normalize(batch["rays_o"][inner] - (batch["rays_o"][inner] + t[inner, None] * batch["rays_d"][inner]), dim=-1)
    assert ((n * view).sum(-1) > 0).all()


def test_same_scene_as_the_volume_renderer():
    geo, mat, bg = _scene()
    batch = _batch(azimuth=-60.0)
    mesh_out = MeshRenderer(MeshRendererConfig(backend="torch"), geometry=geo, material=mat, background=bg).forward_batch(batch)
    vol = VolumeRenderer(VolumeRendererConfig(num_samples_per_ray=256, grid_prune=False), geometry=geo, material=mat, background=bg)
    vol.eval()
    with torch.no_grad():
        vol_out = vol(batch["rays_o"], batch["rays_d"], batch["light_position"])
    a, b = mesh_out["opacity"][..., 0] > 0.5, vol_out["opacity"][..., 0] > 0.5
    assert (a & b).sum() / (a | b).sum() > 0.85
    for dim in (1, 2):  # same place in the image, row and column
        assert abs(a.nonzero()[:, dim].float().mean() - b.nonzero()[:, dim].float().mean()) < 1.0


def test_gradients_reach_geometry_and_texture_and_mesh_is_returned():
    geo, mat, bg = _scene(n=16)
    ren = MeshRenderer(MeshRendererConfig(backend="torch"), geometry=geo, material=mat, background=bg)
    out = ren.forward_batch(_batch(24, 24))
    loss = (out["comp_rgb"] - 0.5).square().mean() + 0.1 * normal_consistency_loss(out["mesh"])
    loss.backward()
    assert geo.sdf.grad.abs().sum() > 0 and geo.deformation.grad.abs().sum() > 0
    assert geo.feature_network[0].weight.grad.abs().sum() > 0


def test_camera_is_required_and_empty_mesh_renders_background():
    geo, mat, bg = _scene(n=8)
    ren = MeshRenderer(MeshRendererConfig(backend="torch"), geometry=geo, material=mat, background=bg)
    batch = _batch(8, 8)
    with pytest.raises(ValueError, match="c2w"):
        ren(batch["rays_o"], batch["rays_d"], batch["light_position"])
    geo.sdf.data.fill_(1.0)
    out = ren.forward_batch(batch)
    assert (out["opacity"] == 0).all() and torch.allclose(out["comp_rgb"], out["comp_rgb_bg"])


def test_fitting_silhouettes_grows_a_small_sphere_towards_the_target():
    """End to end: antialiased silhouettes -> mesh vertices -> sdf and offsets move the right way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread avoids contention on a shared machine
    try:
        torch.manual_seed(0)
        mat = NoMaterial(NoMaterialConfig())
        bg = SolidColorBackground(SolidColorBackgroundConfig())

        def sphere(r: float) -> DMTet:
            return DMTet(DMTetConfig(radius=1.0, isosurface_resolution=16, pos_encoding=ENC, shape_init="sphere", shape_init_radius=r))

        target = MeshRenderer(MeshRendererConfig(backend="torch"), geometry=sphere(0.45), material=mat, background=bg)
        geo = sphere(0.3)
        ren = MeshRenderer(MeshRendererConfig(backend="torch"), geometry=geo, material=mat, background=bg)
        opt = torch.optim.Adam([geo.sdf, geo.deformation], lr=0.02)
        start = geo.isosurface().vertices.norm(dim=-1).mean()
        for _ in range(40):
            c2w = orbit_c2w(torch.rand(1) * 60 - 30, torch.rand(1) * 360 - 180, torch.tensor([2.0]))
            fovy = torch.tensor([math.radians(40.0)])
            rays_o, rays_d = get_rays(c2w, fovy, 32, 32)
            batch = {"c2w": c2w, "fovy": fovy, "rays_o": rays_o, "rays_d": rays_d, "light_position": c2w[:, :3, 3]}
            with torch.no_grad():
                goal = target.forward_batch(batch)["opacity"]
            loss = (ren.forward_batch(batch)["opacity"] - goal).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        end = geo.isosurface().vertices.norm(dim=-1).mean()
        assert end > start + 0.05, (float(start), float(end))
    finally:
        torch.set_num_threads(threads)
