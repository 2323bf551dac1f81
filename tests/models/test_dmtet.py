"""DMTet: analytic and implicit-volume initialisation, watertight isosurface, gradients."""
from __future__ import annotations

import pytest
import torch
import trimesh

from models.encodings.hash_grid import HashGridConfig
from models.geometry.dmtet import DMTet, DMTetConfig
from models.geometry.implicit_volume import ImplicitVolume, ImplicitVolumeConfig

ENC = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=8, per_level_scale=1.5, backend="torch")


def make(n: int = 24, **kw) -> DMTet:
    return DMTet(DMTetConfig(radius=1.0, isosurface_resolution=n, pos_encoding=ENC, **kw))


def _trimesh(mesh) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.vertices.detach().numpy(), mesh.faces.numpy(), process=False)


def test_sphere_init_gives_a_watertight_sphere():
    geo = make(shape_init="sphere", shape_init_radius=0.45)
    mesh = geo.isosurface()
    tm = _trimesh(mesh)
    assert tm.is_watertight and tm.volume > 0
    assert ((mesh.vertices.norm(dim=-1) - 0.45).abs().max()) < 0.5 * geo.cell
    # callable SDFs work too, and reset the offsets
    geo.deformation.data.fill_(0.3)
    geo.initialize_from_shape(lambda p: (p - torch.tensor([0.0, 0.0, 0.2])).norm(dim=-1) - 0.3)
    assert (geo.deformation == 0).all()
    assert abs(geo.isosurface().vertices[:, 2].mean() - 0.2) < 0.02


def test_gradients_reach_sdf_deformation_and_features():
    geo = make()
    mesh = geo.isosurface()
    feats = geo.export_features(mesh.vertices)
    (mesh.vertices.square().sum() + feats.sum()).backward()
    assert geo.sdf.grad.abs().sum() > 0
    assert geo.deformation.grad.abs().sum() > 0
    assert geo.feature_network[0].weight.grad.abs().sum() > 0
    assert geo.encoding.table.grad.abs().sum() > 0


def test_deformation_is_bounded_and_fix_geometry_freezes():
    geo = make(deformation_scale=0.5)
    geo.deformation.data.fill_(100.0)
    offset = (geo.vertices() - geo.grid_vertices).abs()
    assert offset.max() <= 0.5 * geo.cell + 1e-6
    frozen = make(fix_geometry=True)
    assert not frozen.sdf.requires_grad and not frozen.deformation.requires_grad


def test_forward_gives_features_sdf_density_and_outward_normals():
    geo = make(shape_init="sphere", shape_init_radius=0.5)
    p = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.1, -0.1], [0.8, 0.0, 0.0], [0.0, -0.62, 0.1]])
    out = geo(p, output_normal=True)
    assert out["features"].shape == (4, 3) and out["sdf"].shape == (4, 1) and out["density"].shape == (4, 1)
    assert torch.allclose(out["sdf"][:, 0], p.norm(dim=-1) - 0.5, atol=geo.cell)
    assert out["density"][0] > 0 and out["density"][2] == 0
    cos = (out["normal"][1:] * torch.nn.functional.normalize(p[1:], dim=-1)).sum(-1)
    assert (cos > 0.9).all()  # piecewise-linear gradient of |p| - 0.5 points outward


def test_init_from_a_small_implicit_volume_inherits_shape_and_texture():
    torch.manual_seed(0)
    coarse = ImplicitVolume(ImplicitVolumeConfig(radius=1.0, pos_encoding=ENC, density_bias="blob_magic3d", density_blob_std=0.5))
    geo = make(n=32, shape_init=None)
    assert geo.isosurface().n_faces == 0  # no shape before initialisation
    threshold = geo.initialize_from_geometry(coarse, threshold=5.0)
    assert threshold == 5.0
    mesh = geo.isosurface()
    tm = _trimesh(mesh)
    assert tm.is_watertight and tm.volume > 0
    # the DMTet surface lies on the coarse field's threshold level
    d = coarse.forward_density(mesh.vertices.detach())
    assert ((d - 5.0).abs() / 5.0).median() < 0.1
    # texture inherited: same features at the same points
    pts = mesh.vertices.detach()[:50]
    assert torch.allclose(geo.export_features(pts), coarse(pts)["features"], atol=1e-5)
    auto = geo.initialize_from_geometry(coarse, threshold="auto", copy_network=False)
    assert auto > 0 and geo.isosurface().n_faces > 0


def test_init_from_geometry_with_a_different_radius_cannot_copy_the_network():
    coarse = ImplicitVolume(ImplicitVolumeConfig(radius=0.8, pos_encoding=ENC))
    geo = make(n=8)
    with pytest.raises(ValueError, match="radius"):
        geo.initialize_from_geometry(coarse, threshold=5.0, copy_network=True)


def test_init_from_geometry_reproduces_the_coarse_marching_cubes_surface():
    torch.manual_seed(1)
    coarse = ImplicitVolume(ImplicitVolumeConfig(radius=1.0, pos_encoding=ENC, isosurface_resolution=33, isosurface_threshold=5.0))
    with torch.no_grad():
        coarse.encoding.table.normal_(0, 0.5)  # a lumpy field, not just the blob
    geo = make(n=32, shape_init=None)
    geo.initialize_from_geometry(coarse, threshold=5.0, copy_network=False)
    ours, theirs = _trimesh(geo.isosurface()), _trimesh(coarse.isosurface())
    assert ours.is_watertight
    assert abs(ours.volume - theirs.volume) < 0.05 * theirs.volume
    d, _ = torch.cdist(torch.tensor(ours.vertices), torch.tensor(theirs.vertices)).min(dim=1)
    assert d.mean() < 0.25 * geo.cell


def test_clean_level_set_fills_cavities_and_drops_floaters():
    from models.geometry.dmtet import DMTetConfig, clean_level_set

    lin = torch.linspace(-1, 1, 33)
    x, y, z = torch.meshgrid(lin, lin, lin, indexing="ij")
    r = (x**2 + y**2 + z**2).sqrt()
    sdf = r - 0.6  # a ball
    sdf[(r < 0.2)] = 0.5  # an enclosed bubble
    floater = ((x - 0.85) ** 2 + (y - 0.85) ** 2 + z**2).sqrt() < 0.08
    sdf[floater] = -0.5  # a speck outside the ball
    cleaned = clean_level_set(sdf, DMTetConfig())
    assert (cleaned[r < 0.2] < 0).all()  # bubble filled
    assert (cleaned[floater] > 0).all()  # speck removed
    assert torch.equal(cleaned[(r > 0.25) & (r < 0.75) & ~floater], sdf[(r > 0.25) & (r < 0.75) & ~floater])
    kept = clean_level_set(sdf, DMTetConfig(fill_cavities=False, min_component_fraction=0.0))
    assert torch.equal(kept, sdf)


def test_init_from_another_dmtet_copies_its_surface_exactly():
    torch.manual_seed(2)
    source = make(n=16, shape_init_radius=0.4)
    with torch.no_grad():
        source.deformation.normal_(0, 0.5)
        source.encoding.table.normal_(0, 0.1)
    geo = make(n=16, fix_geometry=True)
    geo.initialize_from_dmtet(source, copy_network=False)
    assert torch.equal(geo.sdf, source.sdf) and torch.equal(geo.deformation, source.deformation)
    assert torch.equal(geo.isosurface().vertices, source.isosurface().vertices.detach())
    assert not torch.equal(geo.encoding.table, source.encoding.table)
    geo.initialize_from_dmtet(source, copy_network=True)
    assert torch.equal(geo.encoding.table, source.encoding.table)
    assert not geo.sdf.requires_grad  # still frozen


def test_init_from_a_dmtet_on_another_grid_names_the_difference():
    with pytest.raises(ValueError, match="isosurface_resolution 16 vs 8"):
        make(n=8).initialize_from_dmtet(make(n=16))
