"""A conforming tetrahedral grid of the cube [-radius, radius]^3 at any resolution.

threestudio ships precomputed tet files (32/64/128, from DMTet's quartet tool); we build the
grid ourselves so any resolution N (cells per side) works. Each of the N^3 cubes is split into
six tetrahedra around its main diagonal (0,0,0)-(1,1,1) (Kuhn / Freudenthal triangulation):
for every permutation (a, b, c) of the axes, the tet walks from corner (0,0,0) along e_a, then
e_b, then e_c to (1,1,1). Every cube uses the same split, so the faces of neighbouring cubes
match (the triangulation is conforming, no T-junctions). All tets are re-ordered to positive
signed volume, so marching tetrahedra can rely on one orientation.

A point's tet and its barycentric weights follow from the sorted fractional coordinates
(`locate`): that is what lets DMTet evaluate its piecewise-linear SDF at arbitrary points.
"""
from __future__ import annotations

import itertools

import torch
from torch import Tensor

# The six axis permutations; the tet of permutation (a, b, c) is
# (0,0,0) -> +e_a -> +e_b -> +e_c, i.e. the points where x_a >= x_b >= x_c in the unit cube.
PERMUTATIONS = list(itertools.permutations(range(3)))


def _permutation_parity(p: tuple[int, ...]) -> int:
    inversions = sum(1 for i in range(len(p)) for j in range(i + 1, len(p)) if p[i] > p[j])
    return inversions % 2


def tetrahedral_grid(resolution: int, radius: float = 1.0, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Vertices (V, 3) float32 with V = (N+1)^3 and tets (T, 4) long with T = 6 N^3.

    Vertex (i, j, k) (x along i) has index i (N+1)^2 + j (N+1) + k and position
    -radius + 2 radius (i, j, k) / N. Every tet has positive signed volume
    (v1 - v0) . ((v2 - v0) x (v3 - v0)) > 0.
    """
    n = int(resolution)
    if n < 1:
        raise ValueError(f"tetrahedral grid resolution must be >= 1, got {resolution}")
    lin = torch.linspace(-radius, radius, n + 1, device=device, dtype=torch.float32)
    vertices = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), dim=-1).reshape(-1, 3)

    cells = torch.stack(
        torch.meshgrid(*(torch.arange(n, device=device),) * 3, indexing="ij"), dim=-1
    ).reshape(-1, 3)
    return vertices, cell_tets(cells, n)


def kuhn_offsets(resolution: int, device: torch.device | str | None = None) -> Tensor:
    """(6, 4) long: vertex-index offsets, from a cube's (0,0,0) corner, of its six tets
    (positively oriented)."""
    n = int(resolution)
    stride = [(n + 1) ** 2, n + 1, 1]
    local = []
    for perm in PERMUTATIONS:
        corner = [0, 0, 0]
        path = [0]
        for axis in perm:
            corner[axis] = 1
            path.append(sum(c * s for c, s in zip(corner, stride)))
        # The walk's volume sign is the permutation's sign; swap the last two for odd ones.
        if _permutation_parity(perm) == 1:
            path[2], path[3] = path[3], path[2]
        local.append(path)
    return torch.tensor(local, device=device, dtype=torch.long)


def cell_tets(cells: Tensor, resolution: int) -> Tensor:
    """cells (M, 3) long integer cube coordinates in [0, N) -> their tets (6 M, 4) long.

    Marching tetrahedra only needs the tets of cubes the surface crosses, and a tet lies inside
    one cube, so callers can build just those (DMTet does: a 128^3 grid has 12.6 M tets)."""
    n = int(resolution)
    stride = torch.tensor([(n + 1) ** 2, n + 1, 1], device=cells.device, dtype=torch.long)
    base = (cells.long() * stride).sum(-1)
    return (base[:, None, None] + kuhn_offsets(n, cells.device)[None]).reshape(-1, 4)


def tet_volumes(vertices: Tensor, tets: Tensor) -> Tensor:
    """Signed volumes (T,) of tets (T, 4) over vertices (V, 3)."""
    v = vertices[tets]
    return torch.linalg.det(torch.stack([v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], v[:, 3] - v[:, 0]], dim=1)) / 6.0


def locate(points: Tensor, resolution: int, radius: float = 1.0) -> tuple[Tensor, Tensor]:
    """Vertex indices (N, 4) long and barycentric weights (N, 4) of the undeformed grid's tet
    containing each point (N, 3); points outside the cube are clamped onto it.

    In a Kuhn cube with fractional coordinates f, the containing tet is the permutation that
    sorts f descending (f_a >= f_b >= f_c), and the weights of its walk (0, e_a, e_a+e_b, 1) are
    (1 - f_a, f_a - f_b, f_b - f_c, f_c): linear interpolation on that tet.
    """
    n = int(resolution)
    u = ((points + radius) / (2.0 * radius) * n).clamp(0.0, float(n))
    cell = u.floor().clamp(max=n - 1)
    frac = u - cell
    sorted_f, order = frac.sort(dim=-1, descending=True)
    stride = torch.tensor([(n + 1) ** 2, n + 1, 1], device=points.device, dtype=torch.long)
    base = (cell.long() * stride).sum(-1)
    steps = stride[order]  # (N, 3) index step along the sorted axes
    idx = torch.stack([base, base + steps[:, 0], base + steps[:, 0] + steps[:, 1], base + steps.sum(-1)], dim=-1)
    ones = torch.ones_like(sorted_f[:, :1])
    zeros = torch.zeros_like(sorted_f[:, :1])
    hi = torch.cat([ones, sorted_f], dim=-1)
    lo = torch.cat([sorted_f, zeros], dim=-1)
    return idx, hi - lo
