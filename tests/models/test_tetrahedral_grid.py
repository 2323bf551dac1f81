"""The Kuhn tetrahedral grid: counts, orientation, volume, conformity, point location."""
from __future__ import annotations

import pytest
import torch

from models.geometry.tetrahedral_grid import cell_tets, locate, tet_volumes, tetrahedral_grid


@pytest.mark.parametrize("n", [1, 3, 7])
def test_counts_orientation_and_total_volume(n):
    radius = 0.7
    v, t = tetrahedral_grid(n, radius)
    assert v.shape == ((n + 1) ** 3, 3) and t.shape == (6 * n**3, 4) and t.dtype == torch.long
    assert v.min() == -radius and v.max() == radius
    vol = tet_volumes(v.double(), t)
    cell = (2 * radius / n) ** 3
    assert torch.allclose(vol, torch.full_like(vol, cell / 6), rtol=1e-5)  # all positive, equal
    assert torch.isclose(vol.sum(), torch.tensor((2 * radius) ** 3, dtype=torch.float64), rtol=1e-5)
    assert len(set(map(tuple, t.sort(-1).values.tolist()))) == t.shape[0]  # no duplicate tets


def test_conforming_every_interior_face_is_shared_by_exactly_two_tets():
    n = 4
    v, t = tetrahedral_grid(n)
    tri = torch.cat([t[:, [0, 1, 2]], t[:, [0, 1, 3]], t[:, [0, 2, 3]], t[:, [1, 2, 3]]]).sort(-1).values
    key = (tri[:, 0] * v.shape[0] + tri[:, 1]) * v.shape[0] + tri[:, 2]
    _, counts = torch.unique(key, return_counts=True)
    assert set(counts.tolist()) <= {1, 2}
    # faces seen once must lie on the cube's boundary (a T-junction would leave interior ones)
    uniq, counts = torch.unique(key, return_counts=True)
    once = uniq[counts == 1]
    a = once // v.shape[0] ** 2
    b = (once // v.shape[0]) % v.shape[0]
    c = once % v.shape[0]
    pts = v[torch.stack([a, b, c], -1)]  # (K, 3, 3)
    on_boundary = ((pts.abs() == 1.0).all(dim=1)).any(dim=-1)
    assert on_boundary.all()
    assert once.shape[0] == 6 * 2 * n * n  # two triangles per boundary square


def test_cell_tets_match_the_full_grid():
    n = 3
    _, t = tetrahedral_grid(n)
    cells = torch.tensor([[0, 0, 0], [2, 1, 0]])
    sub = cell_tets(cells, n)
    assert torch.equal(sub[:6], t[:6])
    idx = (2 * n * n + 1 * n + 0) * 6
    assert torch.equal(sub[6:], t[idx : idx + 6])


def test_locate_reproduces_linear_functions_and_points():
    g = torch.Generator().manual_seed(0)
    n, radius = 5, 0.8
    v, _ = tetrahedral_grid(n, radius)
    p = (torch.rand(500, 3, generator=g) * 2 - 1) * radius
    idx, w = locate(p, n, radius)
    assert (w >= -1e-6).all() and torch.allclose(w.sum(-1), torch.ones(500))
    assert torch.allclose((v[idx] * w[..., None]).sum(1), p, atol=1e-5)
    f = v @ torch.tensor([0.3, -1.2, 2.0]) + 0.5  # linear: interpolation on any tet is exact
    assert torch.allclose((f[idx] * w).sum(-1), p @ torch.tensor([0.3, -1.2, 2.0]) + 0.5, atol=1e-5)
