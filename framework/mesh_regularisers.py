"""Regularisers on explicit meshes (Magic3D's refine stage, threestudio's mesh losses).

Each takes a `Mesh` (framework/interfaces.py) whose vertices carry gradients and returns a
scalar. Both are written for the meshes marching tetrahedra produces (closed, consistently
oriented); on open meshes boundary edges are simply left out of the normal term.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.interfaces import Mesh


def face_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """vertices (V, 3), faces (F, 3) -> unit face normals (F, 3) (right-hand winding)."""
    v = vertices[faces.long()]
    return F.normalize(torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1), dim=-1)


def interior_edge_faces(faces: Tensor) -> Tensor:
    """faces (F, 3) -> (E, 2) long: the two faces of every edge shared by exactly two faces."""
    faces = faces.long()
    n = int(faces.max()) + 1 if faces.numel() else 1
    a, b = faces, faces[:, [1, 2, 0]]
    key = (torch.minimum(a, b) * n + torch.maximum(a, b)).reshape(-1)
    face_of = torch.arange(faces.shape[0], device=faces.device).repeat_interleave(3)
    _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)
    paired = (counts == 2)[inverse[order]]
    return face_of[order][paired].reshape(-1, 2)


def normal_consistency_loss(mesh: Mesh) -> Tensor:
    """Mean over interior edges of 1 - cos(angle between the normals of the two adjacent faces)."""
    pairs = interior_edge_faces(mesh.faces)
    if pairs.shape[0] == 0:
        return mesh.vertices.sum() * 0.0
    n = face_normals(mesh.vertices, mesh.faces)
    return (1.0 - (n[pairs[:, 0]] * n[pairs[:, 1]]).sum(-1)).mean()


def laplacian_smoothness_loss(mesh: Mesh) -> Tensor:
    """Mean over vertices of |v_i - mean of its edge neighbours|^2 (uniform Laplacian)."""
    v, faces = mesh.vertices, mesh.faces.long()
    if faces.shape[0] == 0:
        return v.sum() * 0.0
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    n = v.shape[0]
    key = torch.unique(torch.minimum(edges[:, 0], edges[:, 1]) * n + torch.maximum(edges[:, 0], edges[:, 1]))
    edges = torch.stack([key // n, key % n], dim=1)  # each undirected edge once (a 1-D unique: far faster than dim=0)
    src = torch.cat([edges[:, 0], edges[:, 1]])
    dst = torch.cat([edges[:, 1], edges[:, 0]])
    total = torch.zeros_like(v).index_add(0, src, v[dst])
    degree = torch.zeros(v.shape[0], device=v.device, dtype=v.dtype).index_add(0, src, torch.ones_like(src, dtype=v.dtype))
    used = degree > 0
    lap = v[used] - total[used] / degree[used, None]
    return lap.square().sum(-1).mean()


MESH_REGULARISERS = {
    "normal_consistency": normal_consistency_loss,
    "laplacian_smoothness": laplacian_smoothness_loss,
}
