"""Tests for framework.isosurface: geometry accuracy, closure, orientation, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from framework.interfaces import Mesh
from framework.isosurface import (
    extract_isosurface,
    grid_points,
    marching_cubes,
    remove_small_components,
)

R = 128
BOX = 0.5
SPHERE_R = 0.45
VOXEL = 2 * BOX / (R - 1)


def _sphere_sdf(points: torch.Tensor, center=(0.0, 0.0, 0.0), r: float = SPHERE_R) -> torch.Tensor:
    return (points - torch.tensor(center)).norm(dim=-1) - r


def _to_trimesh(mesh: Mesh) -> trimesh.Trimesh:
    return trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=False)


def _check_sphere(mesh: Mesh, center=(0.0, 0.0, 0.0), r: float = SPHERE_R) -> None:
    v = mesh.vertices.double() - torch.tensor(center, dtype=torch.float64)
    err = (v.norm(dim=-1) - r).abs().mean().item()
    assert err < 0.5 * VOXEL, f"mean radial error {err} >= half a voxel {0.5 * VOXEL}"
    tm = _to_trimesh(mesh)
    assert tm.is_watertight
    assert tm.volume > 0, "normals point inward"
    assert abs(tm.volume - 4 / 3 * np.pi * r**3) < 0.02 * 4 / 3 * np.pi * r**3
    # Every face normal points away from the centre, not just on average.
    tri = mesh.vertices[mesh.faces].double() - torch.tensor(center, dtype=torch.float64)
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    assert ((n * tri.mean(1)).sum(-1) > 0).float().mean() > 0.99


def test_grid_points_layout_matches_field_indexing():
    pts = grid_points(5, 1.0)
    assert pts.shape == (125, 3)
    grid = pts.reshape(5, 5, 5, 3)
    x = torch.linspace(-1, 1, 5)
    assert torch.allclose(grid[2, 0, 4], torch.stack([x[2], x[0], x[4]]))


def test_sphere_sdf_below():
    field = _sphere_sdf(grid_points(R, BOX)).reshape(R, R, R)
    _check_sphere(marching_cubes(field, BOX, 0.0, inside="below"))


def test_density_above_off_centre():
    # An off-centre ball proves the axes are not permuted or mirrored.
    c = (0.1, -0.05, 0.02)
    r = 0.3
    density = torch.relu(1.0 - _sphere_sdf(grid_points(R, BOX), c, r) / 0.05) * 10
    mesh = marching_cubes(density.reshape(R, R, R), BOX, 10.0, inside="above")
    _check_sphere(mesh, c, r)


def test_object_touching_box_is_closed():
    # Sphere bigger than the box: the padding must cap the cut faces.
    field = _sphere_sdf(grid_points(64, BOX), r=0.6).reshape(64, 64, 64)
    tm = _to_trimesh(marching_cubes(field, BOX, 0.0, inside="below"))
    assert tm.is_watertight
    assert tm.volume > 0
    assert tm.vertices.max() <= BOX + 1e-5


@pytest.mark.parametrize("inside", ["above", "below"])
def test_no_crossing_error_names_range_and_suggests(inside):
    field = torch.linspace(3.0, 4.0, 16**3).reshape(16, 16, 16)
    with pytest.raises(ValueError, match=r"no crossing at threshold 10.*min 3, max 4\).*e\.g\. 3\.5"):
        marching_cubes(field, 1.0, 10.0, inside=inside)


def test_bad_inside_rejected():
    with pytest.raises(ValueError, match="inside"):
        marching_cubes(torch.zeros(4, 4, 4), 1.0, 0.0, inside="outside")


def test_extract_isosurface_chunks_and_shapes():
    calls = []

    def density_fn(p: torch.Tensor) -> torch.Tensor:
        calls.append(p.shape[0])
        assert not torch.is_grad_enabled()
        return (-_sphere_sdf(p)).unsqueeze(-1)  # (N, 1)

    mesh = extract_isosurface(density_fn, 48, BOX, 0.0, inside="above", chunk_size=10000)
    assert len(calls) == -(-(48**3) // 10000) and max(calls) == 10000
    assert mesh.vertices.dtype == torch.float32 and mesh.faces.dtype == torch.long
    assert _to_trimesh(mesh).is_watertight


def test_remove_small_components():
    pts = grid_points(64, BOX)
    sdf = torch.minimum(_sphere_sdf(pts, r=0.3), _sphere_sdf(pts, (0.4, 0.4, 0.4), 0.05))
    mesh = marching_cubes(sdf.reshape(64, 64, 64), BOX, 0.0, inside="below")
    assert len(_to_trimesh(mesh).split(only_watertight=False)) == 2
    cleaned = remove_small_components(mesh, 0.1)
    parts = _to_trimesh(cleaned).split(only_watertight=False)
    assert len(parts) == 1
    assert cleaned.vertices.norm(dim=-1).max() < 0.32
    kept = marching_cubes(sdf.reshape(64, 64, 64), BOX, 0.0, "below", min_component_fraction=0.1)
    assert kept.n_faces == cleaned.n_faces


def test_fill_cavities_makes_a_hollow_shell_solid_and_keeps_a_through_hole():
    pts = grid_points(64, BOX)
    radius = pts.norm(dim=-1)
    # a shell of density 10 between radii 0.25 and 0.4, empty (0) inside and out
    shell = ((radius > 0.25) & (radius < 0.4)).float().mul(10.0).reshape(64, 64, 64)
    hollow = _to_trimesh(marching_cubes(shell, BOX, 5.0, "above"))
    solid = _to_trimesh(marching_cubes(shell, BOX, 5.0, "above", fill_cavities=True))
    ball = 4.0 / 3.0 * np.pi * 0.4**3
    assert hollow.volume == pytest.approx(ball - 4.0 / 3.0 * np.pi * 0.25**3, rel=0.1)
    assert solid.volume == pytest.approx(ball, rel=0.05)
    assert solid.is_watertight and solid.volume > 0
    assert len(solid.split(only_watertight=False)) == 1  # no inner shell left

    # a torus: its hole reaches the box's boundary, so it is not a cavity and stays open
    x, y, z = pts.unbind(-1)
    torus = ((torch.sqrt(x**2 + y**2) - 0.3) ** 2 + z**2 < 0.12**2).float().mul(10.0).reshape(64, 64, 64)
    plain = _to_trimesh(marching_cubes(torus, BOX, 5.0, "above"))
    filled = _to_trimesh(marching_cubes(torus, BOX, 5.0, "above", fill_cavities=True))
    assert filled.volume == pytest.approx(plain.volume, rel=1e-6)


def test_cavity_closing_fills_a_pocket_with_a_narrow_opening_only():
    pts = grid_points(64, BOX)
    radius = pts.norm(dim=-1)
    # the shell above, pierced by a hole about 3 cells wide along +x
    hole = (pts[:, 0] > 0) & (pts[:, 1].abs() < 0.02) & (pts[:, 2].abs() < 0.02)
    shell = ((radius > 0.25) & (radius < 0.4) & ~hole).float().mul(10.0).reshape(64, 64, 64)
    open_pocket = _to_trimesh(marching_cubes(shell, BOX, 5.0, "above", fill_cavities=True))
    closed_pocket = _to_trimesh(marching_cubes(shell, BOX, 5.0, "above", fill_cavities=True, cavity_closing=3))
    assert open_pocket.volume == pytest.approx(4.0 / 3.0 * np.pi * (0.4**3 - 0.25**3), rel=0.1)
    assert closed_pocket.volume == pytest.approx(4.0 / 3.0 * np.pi * 0.4**3, rel=0.05)
