"""The exported mesh: one piece, welded, optionally smoothed, decimated to export.max_faces, normals in the GLB."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
import trimesh

from framework.base_system import ExportConfig
from framework.export import export_textured_mesh
from framework.interfaces import Mesh
from framework.mesh_cleanup import clean_mesh
from framework.value_checks import FieldValueError


def sphere_with_a_floater() -> Mesh:
    sphere = trimesh.creation.icosphere(subdivisions=6, radius=0.5)  # 81,920 faces
    floater = trimesh.creation.icosphere(subdivisions=0, radius=0.02)  # 20 faces
    floater.apply_translation([0.8, 0.0, 0.0])
    both = trimesh.util.concatenate([sphere, floater])
    # split every triangle's corners apart, as a per-triangle export would: welding must join them again
    vertices = both.vertices[both.faces].reshape(-1, 3)
    faces = np.arange(len(vertices)).reshape(-1, 3)
    return Mesh(torch.from_numpy(vertices.astype(np.float32)), torch.from_numpy(faces))


def test_one_welded_piece_within_the_face_budget():
    cleaned = clean_mesh(sphere_with_a_floater(), min_component_fraction=0.05, max_faces=30_000)
    tm = trimesh.Trimesh(cleaned.vertices.numpy(), cleaned.faces.numpy(), process=False)
    assert 29_000 <= len(tm.faces) <= 30_000
    assert len(tm.split(only_watertight=False)) == 1  # the floater is gone
    assert len(tm.vertices) < 0.6 * len(tm.faces)  # welded: a closed mesh has ~F/2 vertices
    extent = tm.bounds[1] - tm.bounds[0]
    assert np.allclose(extent, 1.0, atol=0.02)  # the floater no longer stretches the bounding box
    assert tm.is_watertight


def test_null_max_faces_keeps_every_face():
    cleaned = clean_mesh(sphere_with_a_floater(), min_component_fraction=0.0, max_faces=None)
    assert cleaned.n_faces == 81_920 + 20


def glb_attributes(path) -> set[str]:
    data = open(path, "rb").read()
    length = struct.unpack("<I", data[12:16])[0]
    document = json.loads(data[20:20 + length])
    return {name for mesh in document["meshes"] for primitive in mesh["primitives"] for name in primitive["attributes"]}


def test_the_glb_has_vertex_normals(tmp_path):
    cleaned = clean_mesh(sphere_with_a_floater(), max_faces=2_000)
    paths = export_textured_mesh(cleaned, lambda p: torch.full_like(p, 0.5), tmp_path, texture_size=64)
    assert {"POSITION", "NORMAL", "TEXCOORD_0"} <= glb_attributes(paths["glb"])
    loaded = next(iter(trimesh.load(paths["glb"], process=False).geometry.values()))  # the file's own normals
    # outward normals on a sphere centred at 0: each normal points along its position (glTF axes); the
    # 2,000-face decimated sphere's normals stay within ~27 degrees of the true ones
    cosines = np.sum(loaded.vertex_normals * loaded.vertices / np.linalg.norm(loaded.vertices, axis=1, keepdims=True), 1)
    assert cosines.min() > 0.85


def marching_cubes_sphere(n: int = 40, radius: float = 0.45) -> Mesh:
    import mcubes

    c = np.linspace(-0.6, 0.6, n)
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    # a binary occupancy, as a thresholded density gives: the staircase bumps Taubin smoothing is for
    inside = (np.sqrt(x**2 + y**2 + z**2) < radius).astype(np.float64)
    vertices, faces = mcubes.marching_cubes(inside, 0.5)
    return Mesh(torch.from_numpy(vertices * (1.2 / (n - 1)) - 0.6).float(), torch.from_numpy(faces.astype(np.int64)))


def test_taubin_smoothing_flattens_staircase_bumps_and_keeps_the_size():
    mesh = marching_cubes_sphere()
    rough = clean_mesh(mesh, max_faces=None)
    smooth = clean_mesh(mesh, max_faces=None, smooth_iterations=10)
    assert np.array_equal(rough.faces.numpy(), smooth.faces.numpy())  # smoothing moves vertices only
    r_rough, r_smooth = (np.linalg.norm(m.vertices.numpy(), axis=1) for m in (rough, smooth))
    assert r_smooth.std() < 0.5 * r_rough.std(), (r_smooth.std(), r_rough.std())
    assert abs(r_smooth.mean() - r_rough.mean()) < 0.01  # Taubin does not shrink the surface like plain Laplacian
    assert np.array_equal(clean_mesh(mesh, max_faces=None, smooth_iterations=0).vertices.numpy(), rough.vertices.numpy())


def test_export_config_rules_name_the_allowed_values():
    assert ExportConfig(up_axis="+y", smooth_iterations=5).up_axis == "+y"
    with pytest.raises(FieldValueError, match=r"up_axis.*'\+z', '\+y'"):
        ExportConfig(up_axis="y")
    with pytest.raises(FieldValueError, match="smooth_iterations"):
        ExportConfig(smooth_iterations=-1)
