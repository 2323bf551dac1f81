"""Marching tetrahedra on analytic SDFs: watertight, accurate, outward, differentiable."""
from __future__ import annotations

import torch
import trimesh

from models.geometry.marching_tetrahedra import marching_tetrahedra
from models.geometry.tetrahedral_grid import tetrahedral_grid


def _trimesh(mesh) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.vertices.detach().numpy(), mesh.faces.numpy(), process=False)


def test_sphere_is_watertight_accurate_and_outward():
    n, radius, r = 24, 1.0, 0.55
    v, t = tetrahedral_grid(n, radius)
    centre = torch.tensor([0.05, -0.1, 0.07])
    sdf = (v - centre).norm(dim=-1) - r
    mesh = marching_tetrahedra(v, sdf, t)
    tm = _trimesh(mesh)
    assert tm.is_watertight and tm.is_winding_consistent
    assert tm.euler_number == 2  # a sphere
    cell = 2 * radius / n
    err = ((mesh.vertices - centre).norm(dim=-1) - r).abs()
    assert err.max() < 0.5 * cell
    # outward: positive enclosed volume, close to the sphere's; face normals point away from the centre
    assert abs(tm.volume - 4 / 3 * torch.pi * r**3) < 0.03 * 4 / 3 * torch.pi * r**3
    normals = torch.tensor(tm.face_normals, dtype=torch.float32)
    centres = torch.tensor(tm.triangles_center, dtype=torch.float32) - centre
    assert ((normals * centres).sum(-1) > 0).all()
    # no degenerate or duplicate faces
    f = mesh.faces
    assert ((f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])).all()
    assert torch.unique(f.sort(-1).values, dim=0).shape[0] == f.shape[0]
    assert (tm.area_faces > 0).all()


def test_gradients_flow_to_sdf_and_vertex_positions():
    v, t = tetrahedral_grid(8, 1.0)
    v = v.clone().requires_grad_(True)
    sdf = (v.detach().norm(dim=-1) - 0.5).requires_grad_(True)
    mesh = marching_tetrahedra(v, sdf, t)
    mesh.vertices.norm(dim=-1).sum().backward()
    assert sdf.grad.abs().sum() > 0 and v.grad.abs().sum() > 0
    # raising the sdf everywhere shrinks the surface: d(sum of radii)/d(sdf) < 0 on crossed vertices
    assert sdf.grad.sum() < 0


def test_exact_zeros_give_no_degenerate_faces_and_stay_closed():
    v, t = tetrahedral_grid(8, 1.0)
    sdf = v.abs().amax(-1) - 0.5  # a cube whose faces pass exactly through grid vertices
    assert (sdf == 0).any()
    mesh = marching_tetrahedra(v, sdf, t)
    tm = _trimesh(mesh)
    f = mesh.faces
    assert ((f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])).all()
    assert tm.is_watertight and tm.volume > 0
    assert (tm.area_faces > 1e-12).all()


def test_no_sign_change_gives_an_empty_mesh_and_torus_has_genus_one():
    v, t = tetrahedral_grid(4, 1.0)
    empty = marching_tetrahedra(v, torch.ones(v.shape[0]), t)
    assert empty.vertices.shape == (0, 3) and empty.faces.shape == (0, 3)
    v, t = tetrahedral_grid(32, 1.0)
    q = torch.stack([v[:, :2].norm(dim=-1) - 0.5, v[:, 2]], -1)
    torus = marching_tetrahedra(v, q.norm(dim=-1) - 0.2, t)
    tm = _trimesh(torus)
    assert tm.is_watertight and tm.euler_number == 0 and tm.volume > 0
