"""framework/mesh_repair.py: the edges quadric decimation glues are cut out and closed, nothing else moves."""
from __future__ import annotations

import fast_simplification
import numpy as np
import torch
import trimesh
from scipy.ndimage import zoom

from framework.interfaces import Mesh
from framework.isosurface import marching_cubes
from framework.mesh_cleanup import clean_mesh
from framework.mesh_repair import bad_edge_vertices, close_non_manifold_edges


def faces_per_edge(faces: np.ndarray) -> np.ndarray:
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(edges, axis=0, return_counts=True)[1]


def without_doubled_faces(faces: np.ndarray) -> np.ndarray:
    """Faces no other face has the same corners as: what is left to cut once the doubled pairs are gone."""
    _, inverse, counts = np.unique(np.sort(faces, axis=1), axis=0, return_inverse=True, return_counts=True)
    return faces[counts[inverse.reshape(-1)] == 1]


def welded(vertices: np.ndarray, faces: np.ndarray) -> trimesh.Trimesh:
    """What a tool that welds the file by position sees."""
    tm = trimesh.Trimesh(vertices, faces, process=False)
    tm.merge_vertices()
    return tm


def closed_single_piece(tm: trimesh.Trimesh) -> bool:
    return tm.is_watertight and tm.is_winding_consistent and len(tm.split(only_watertight=False)) == 1


def two_boxes_sharing_an_edge() -> tuple[np.ndarray, np.ndarray]:
    """Two unit cubes of 768 faces each touching along one edge: welded, that edge has four faces."""
    a = trimesh.creation.box(extents=(1, 1, 1)).subdivide().subdivide().subdivide()
    b = a.copy()
    b.apply_translation((1, 1, 0))
    both = welded(np.concatenate([a.vertices, b.vertices]), np.concatenate([a.faces, b.faces + len(a.vertices)]))
    return np.asarray(both.vertices), np.asarray(both.faces)


def test_an_edge_with_four_faces_is_cut_out_and_closed():
    vertices, faces = two_boxes_sharing_an_edge()
    assert faces_per_edge(faces).max() == 4
    out_v, out_f = close_non_manifold_edges(vertices, faces)
    out = welded(out_v, out_f)
    assert set(faces_per_edge(np.asarray(out.faces))) == {2}
    assert out.is_watertight and out.is_winding_consistent
    assert out.volume > 0  # still outward
    assert not bad_edge_vertices(np.asarray(out.faces), len(out.vertices)).any()


def test_a_closed_mesh_is_returned_as_it_is():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    out_v, out_f = close_non_manifold_edges(np.asarray(sphere.vertices), np.asarray(sphere.faces))
    np.testing.assert_array_equal(out_f, sphere.faces)
    np.testing.assert_allclose(out_v, sphere.vertices)


def rough_box(seed: int, resolution: int = 64) -> Mesh:
    """The isosurface of a box with a bumpy surface: like a trained toy field's, decimation glues edges of it."""
    x = np.linspace(-1, 1, resolution)
    grid = np.stack(np.meshgrid(x, x, x, indexing="ij"))
    box = np.abs(grid).max(axis=0) - 0.5
    bumps = zoom(np.random.default_rng(seed).normal(size=(24, 24, 24)), resolution / 24, order=1)
    return marching_cubes(-(box + 0.05 * bumps[:resolution, :resolution, :resolution]), 1.0, 0.0)


def test_clean_mesh_closes_what_decimation_glues():
    glued = 0
    for seed in range(6):
        mesh = rough_box(seed)
        for target in (4000, 6000, 8000):
            v, f = fast_simplification.simplify(mesh.vertices.numpy(), mesh.faces.numpy(), target_count=target)
            raw = welded(v, f)
            glued += int(faces_per_edge(without_doubled_faces(np.asarray(raw.faces))).max() > 2)
            out = clean_mesh(mesh, min_component_fraction=0.05, max_faces=target)
            tm = welded(out.vertices.numpy(), out.faces.numpy())
            assert closed_single_piece(tm), (seed, target)
            assert len(tm.faces) <= target
            assert abs(tm.volume - raw.volume) < 0.01 * raw.volume  # the cuts are local
    # the case this guards against really happens here (14 of the 18 decimations on the machine it was written on)
    assert glued >= 4, glued
