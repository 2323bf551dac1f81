"""Close the few non-manifold spots quadric decimation leaves, so the exported mesh is one closed surface.

Fast-Quadric-Mesh-Simplification (fast-simplification) collapses edges without checking the link
condition, so now and then a collapse glues two parts of the surface along an edge: the result has
an edge shared by three or four faces, or two faces on the same three corners (a "pillow"), and tools
that weld the file by position call it not watertight. On trained toy isosurfaces this happens on some
machines and not others (float rounding decides the collapse order); on rough, high-genus isosurfaces
most decimations have a few (tests/framework/test_mesh_repair.py).

The repair is local: cut out the faces around each bad edge (one ring of faces around its corners,
a ring more on each round it is still open), drop slivers the cut leaves hanging, and close each hole
with a fan around its centroid, wound against the faces beside it. Each hole is a few faces wide, so
the shape moves by about one decimated edge length there and nowhere else.

Written here because the libraries that do this are GPL (MeshFix / pymeshfix, MeshLab / pymeshlab)
and this project is Apache-2.0; the decimators that keep the topology by construction (MeshLib, CGAL)
come under a non-commercial or a GPL licence, and manifold3d's `simplify` (tried) still leaves glued
edges once its output is welded by position.
"""
from __future__ import annotations

import numpy as np

__all__ = ["bad_edge_vertices", "close_non_manifold_edges"]


def _directed_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every face's three directed edges (3F, 2) and how many faces share each one's undirected edge (3F,)."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    _, inverse, counts = np.unique(np.sort(directed, axis=1), axis=0, return_inverse=True, return_counts=True)
    return directed, counts[inverse.reshape(-1)]


def _without_pillows(faces: np.ndarray) -> np.ndarray:
    """Drop every face whose three corners another face also has (both faces of the pair, not one)."""
    _, inverse, counts = np.unique(np.sort(faces, axis=1), axis=0, return_inverse=True, return_counts=True)
    return faces[counts[inverse.reshape(-1)] == 1]


def bad_edge_vertices(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """(V,) bool: corners of an edge with other than two faces (an open edge or a non-manifold one)."""
    directed, shared_by = _directed_edges(faces)
    bad = np.zeros(n_vertices, dtype=bool)
    bad[directed[shared_by != 2].reshape(-1)] = True
    return bad


def _pinched_corners(faces: np.ndarray) -> np.ndarray:
    """Corners that start more than one open edge: two holes (or two parts of one) touch there."""
    directed, shared_by = _directed_edges(faces)
    starts, counts = np.unique(directed[shared_by == 1][:, 0], return_counts=True)
    return starts[counts > 1]


def _boundary_loops(faces: np.ndarray) -> list[list[int]] | None:
    """The open edges chained into loops, each edge in its face's direction; None when a corner starts
    two open edges (the loops touch there and a fan would glue them: cut more first)."""
    directed, shared_by = _directed_edges(faces)
    open_edges = directed[shared_by == 1]
    following = dict(zip(open_edges[:, 0].tolist(), open_edges[:, 1].tolist()))
    if len(following) < len(open_edges):  # a corner starts two of them (what _pinched_corners finds)
        return None
    loops, seen = [], set()
    for start in following:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            if v not in following:
                return None  # an open chain, not a loop
            seen.add(v)
            loop.append(v)
            v = following[v]
        if v != start:
            return None
        loops.append(loop)
    return loops


def _drop_slivers(faces: np.ndarray, min_faces: int) -> np.ndarray:
    """Drop the edge-connected pieces with fewer than `min_faces` faces (what a cut leaves hanging)."""
    import trimesh  # imported where used, as in framework/mesh_cleanup.py: not at start-up

    adjacency = trimesh.graph.face_adjacency(faces)
    labels = trimesh.graph.connected_component_labels(adjacency, node_count=len(faces))
    sizes = np.bincount(labels)
    return faces[sizes[labels] >= min(min_faces, sizes.max())]


def close_non_manifold_edges(
    vertices: np.ndarray,  # (V, 3), already welded by position
    faces: np.ndarray,  # (F, 3) int, outward winding
    max_rounds: int = 6,
    sliver_faces: int = 64,
    max_cut_fraction: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V', 3) and faces (F', 3) where every edge has exactly two faces, unchanged away from the
    bad edges. Gives up, returning the mesh as it stands, after `max_rounds` cuts or before a cut
    that would take more than `max_cut_fraction` of the faces (a surface that rough is not a few
    glued edges); the caller's watertight check and the exported metrics then say so."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = _without_pillows(np.asarray(faces, dtype=np.int64))
    n_faces = len(faces)

    def too_large(cut: np.ndarray) -> bool:
        return bool(cut.sum() > max_cut_fraction * n_faces or cut.all())

    for ring in range(1, max_rounds + 1):
        region = bad_edge_vertices(faces, len(vertices))
        if not region.any():
            break
        for _ in range(ring - 1):  # grow the cut by a ring of faces per round it stayed open
            region[faces[region[faces].any(axis=1)].reshape(-1)] = True
        cut = region[faces].any(axis=1)
        # widen the cut at corners where two holes touch, so each hole has a simple rim
        while not too_large(cut) and len(pinched := _pinched_corners(faces[~cut])):
            region[pinched] = True
            cut = region[faces].any(axis=1)
        if too_large(cut):
            break
        faces = _drop_slivers(faces[~cut], sliver_faces)
        loops = _boundary_loops(faces)
        if loops is None:
            continue  # the next round cuts around the open edges too
        fans, centroids = [], []
        for loop in loops:
            centre = len(vertices) + len(centroids)
            centroids.append(vertices[loop].mean(axis=0))
            # the face beside open edge a -> b runs a -> b; the fan's face runs b -> a to close it
            fans += [[b, a, centre] for a, b in zip(loop, loop[1:] + loop[:1])]
        if fans:
            vertices = np.concatenate([vertices, np.asarray(centroids)])
            faces = np.concatenate([faces, np.asarray(fans, dtype=np.int64)])
    import trimesh

    closed = trimesh.Trimesh(vertices, faces, process=False)
    closed.remove_unreferenced_vertices()  # the corners the cuts took
    return np.asarray(closed.vertices), np.asarray(closed.faces)
