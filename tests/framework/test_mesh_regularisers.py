"""Normal consistency and Laplacian smoothness on meshes with known answers."""
from __future__ import annotations

import math

import torch
import trimesh

from framework.interfaces import Mesh
from framework.mesh_regularisers import interior_edge_faces, laplacian_smoothness_loss, normal_consistency_loss


def _mesh(m: trimesh.Trimesh) -> Mesh:
    return Mesh(vertices=torch.tensor(m.vertices, dtype=torch.float32), faces=torch.tensor(m.faces, dtype=torch.long))


def test_normal_consistency_of_a_flat_fold_and_a_cube():
    v = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=torch.float32)
    flat = Mesh(v, torch.tensor([[0, 1, 2], [1, 3, 2]]))
    assert interior_edge_faces(flat.faces).shape == (1, 2)
    assert normal_consistency_loss(flat).abs() < 1e-6
    folded = Mesh(v.clone(), torch.tensor([[0, 1, 2], [1, 3, 2]]))
    folded.vertices[3, 2] = 1.0  # lift a corner: the second face tilts about the shared edge
    n2 = torch.nn.functional.normalize(torch.cross(folded.vertices[3] - folded.vertices[1], folded.vertices[2] - folded.vertices[1], dim=0), dim=0)
    expected = 1 - n2[2]
    assert torch.allclose(normal_consistency_loss(folded), expected, atol=1e-6)
    # a cube: 12 faces, 18 edges; 6 diagonals are flat (0), 12 cube edges are at 90 degrees (1)
    cube = _mesh(trimesh.creation.box())
    assert torch.allclose(normal_consistency_loss(cube), torch.tensor(12 / 18), atol=1e-6)


def test_laplacian_of_a_sphere_shrinks_with_subdivision_and_has_gradients():
    coarse = _mesh(trimesh.creation.icosphere(subdivisions=2))
    fine = _mesh(trimesh.creation.icosphere(subdivisions=4))
    assert laplacian_smoothness_loss(fine) < laplacian_smoothness_loss(coarse) / 10
    m = _mesh(trimesh.creation.box(extents=(1, 1, 1)))
    m.vertices.requires_grad_(True)
    loss = laplacian_smoothness_loss(m) + normal_consistency_loss(m)
    loss.backward()
    assert torch.isfinite(m.vertices.grad).all() and m.vertices.grad.abs().sum() > 0


def test_laplacian_value_on_a_regular_tetrahedron():
    v = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float32)
    faces = torch.tensor([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])
    # every vertex's neighbour mean is -v/3, so |v - (-v/3)|^2 = (4/3)^2 * 3
    assert math.isclose(float(laplacian_smoothness_loss(Mesh(v, faces))), (4 / 3) ** 2 * 3, rel_tol=1e-6)
