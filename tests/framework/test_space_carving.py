"""Tests for framework.space_carving: projection against get_rays, and which cells count unseen."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from framework.cameras import get_rays, orbit_c2w
from framework.isosurface import marching_cubes
from framework.space_carving import CarvingViewsConfig, carving_cameras, first_hit_distance, project, unseen_cells

RADIUS = 0.625
N = 48
AXIS = torch.linspace(-RADIUS, RADIUS, N)
X, Y, Z = torch.meshgrid(AXIS, AXIS, AXIS, indexing="ij")
CUBE = (X.abs() <= 0.32) & (Y.abs() <= 0.32) & (Z.abs() <= 0.32)
# The training cameras of dreamfusion-toy-unet: elevation -10 to 60, never below the cube's bottom face.
VIEWS = CarvingViewsConfig(
    elevation_range=[-10.0, 60.0], camera_distance=1.6, fovy_deg=40.0, n_elevations=4, n_azimuths=8, resolution=64
)


def _to_trimesh(mesh) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=False)


def test_project_inverts_get_rays():
    c2w = orbit_c2w(torch.tensor([25.0]), torch.tensor([40.0]), torch.tensor([1.6]))
    fovy = torch.tensor([math.radians(40.0)])
    rays_o, rays_d = get_rays(c2w, fovy, 32, 32)
    rows, cols = torch.tensor([5, 0, 31, 16]), torch.tensor([27, 0, 31, 3])
    t = torch.tensor([1.3, 0.9, 2.0, 1.6])
    points = rays_o[0, rows, cols] + t[:, None] * rays_d[0, rows, cols]
    row, col, distance = project(points, c2w[0], fovy[0], 32)
    assert row.tolist() == rows.tolist() and col.tolist() == cols.tolist()
    assert torch.allclose(distance, t, atol=1e-5)
    behind = c2w[0, :3, 3] * 2.0  # on the far side of the camera from the origin
    assert project(behind[None], c2w[0], fovy[0], 32)[1].item() < 0


def test_first_hit_distance_of_a_cube_seen_head_on():
    c2w = orbit_c2w(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([1.6]))[0]
    hit = first_hit_distance(CUBE, RADIUS, c2w, torch.tensor(math.radians(40.0)), 33)
    cell = 2 * RADIUS / (N - 1)
    assert hit[16, 16].item() == pytest.approx(1.6 - 0.32, abs=cell)  # the centre pixel meets the front face
    assert math.isinf(hit[0, 0].item())  # a corner pixel passes beside the cube


def test_a_hollow_opening_downwards_is_unseen_and_the_space_around_it_is_not():
    inner = (X.abs() < 0.25) & (Y.abs() < 0.25) & (Z < 0.25)  # reaches through the bottom face
    shell = CUBE & ~inner
    c2w, fovy = carving_cameras(VIEWS)
    unseen = unseen_cells(shell, RADIUS, c2w, fovy, VIEWS.resolution)
    hollow = inner & CUBE
    assert not (unseen & shell).any()
    assert (unseen & hollow).sum() > 0.9 * hollow.sum()  # all but the rim of the opening
    assert (unseen & ~CUBE).sum() < 0.05 * hollow.sum()  # the space outside stays empty
    # so the mesh comes out solid, with the cube's volume, where cavity filling keeps the hollow
    density = shell.float() * 10.0
    kept = _to_trimesh(marching_cubes(density, RADIUS, 5.0, fill_cavities=True))
    solid = _to_trimesh(marching_cubes(density, RADIUS, 5.0, fill_cavities=True, solid=unseen))
    assert kept.volume < 0.6 * 0.64**3
    assert solid.volume == pytest.approx(0.64**3, rel=0.1) and solid.is_watertight


def test_a_hollow_the_cameras_look_into_stays_open():
    cup = CUBE & ~((X.abs() < 0.25) & (Y.abs() < 0.25) & (Z > -0.25))  # open at the top
    c2w, fovy = carving_cameras(VIEWS)
    assert not unseen_cells(cup, RADIUS, c2w, fovy, VIEWS.resolution).any()


def test_carving_cameras_span_the_elevations_and_the_full_circle():
    c2w, fovy = carving_cameras(VIEWS)
    assert c2w.shape == (32, 4, 4) and torch.allclose(fovy, torch.full((32,), math.radians(40.0)))
    eye = c2w[:, :3, 3]
    elevation = torch.rad2deg(torch.asin(eye[:, 2] / eye.norm(dim=-1)))
    assert np.allclose(sorted(set(np.round(elevation.numpy(), 3))), [-10.0, 13.333, 36.667, 60.0], atol=1e-3)
    assert torch.allclose(eye.norm(dim=-1), torch.full((32,), 1.6))


def test_a_solid_mask_of_another_shape_is_refused():
    with pytest.raises(ValueError, match="solid must have the field's shape"):
        marching_cubes(CUBE.float() * 10.0, RADIUS, 5.0, solid=torch.zeros(8, 8, 8, dtype=torch.bool))
