"""Marching tetrahedra in PyTorch (DMTet, Shen et al. 2021, Sec. 3.1.2), differentiable.

Convention: **sdf < 0 is inside**, sdf >= 0 outside (a value of exactly 0 counts as outside).

For every tet whose four vertices are not all on one side, the surface crosses the edges that
join an inside vertex to an outside one, at the zero of the linear interpolation (DMTet eq. 2):

    p = (p_a s_b - p_b s_a) / (s_b - s_a),

differentiable w.r.t. both vertex positions p and sdf values s. One inside (or one outside)
vertex gives a triangle on its three edges; two and two give a quad on four edges, split in two.
Surface vertices are keyed by their global grid edge, so neighbouring tets share them and the
mesh is watertight when the tet mesh is conforming.

Orientation does not come from a hand-written winding table (its correctness would depend on
the tet orientation): each triangle is flipped when its normal points from the outside vertices
of its tet towards the inside ones, so every face is oriented outward (towards sdf > 0).

Degenerate faces: a crossing exactly at a grid vertex (s_b = 0) is keyed by that vertex, so all
edges meeting there share one surface vertex; triangles that collapse to a segment are dropped,
and pairs of coincident opposite faces that the collapse can create are removed.
"""
from __future__ import annotations

import torch
from torch import Tensor

from framework.interfaces import Mesh

# The six edges of a tet, as local vertex pairs.
TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
_EDGE_ID = {frozenset(e): i for i, e in enumerate(TET_EDGES)}


def _build_table() -> tuple[Tensor, Tensor]:
    """(16, 2, 3) local edge ids of up to two triangles per inside-code, and (16,) counts.

    Code bit i is set when vertex i is inside. Winding here is arbitrary (fixed later)."""
    table = torch.full((16, 2, 3), -1, dtype=torch.long)
    counts = torch.zeros(16, dtype=torch.long)
    for code in range(16):
        inside = [i for i in range(4) if code >> i & 1]
        outside = [i for i in range(4) if not code >> i & 1]
        if len(inside) in (1, 3):
            lone, others = (inside[0], outside) if len(inside) == 1 else (outside[0], inside)
            table[code, 0] = torch.tensor([_EDGE_ID[frozenset((lone, o))] for o in others])
            counts[code] = 1
        elif len(inside) == 2:
            (a, b), (c, d) = inside, outside
            # quad ac -> ad -> bd -> bc is a cycle around the crossing (consecutive edges share a vertex)
            ac, ad, bd, bc = (_EDGE_ID[frozenset(e)] for e in ((a, c), (a, d), (b, d), (b, c)))
            table[code, 0] = torch.tensor([ac, ad, bd])
            table[code, 1] = torch.tensor([ac, bd, bc])
            counts[code] = 2
    return table, counts


TRIANGLE_TABLE, NUM_TRIANGLES = _build_table()


def marching_tetrahedra(vertices: Tensor, sdf: Tensor, tets: Tensor) -> Mesh:
    """vertices (V, 3), sdf (V,) (inside < 0), tets (T, 4) long -> Mesh of the zero level set.

    Mesh.vertices (M, 3) are differentiable w.r.t. `vertices` and `sdf`; faces (F, 3) long are
    oriented outward. An empty mesh (0 vertices, 0 faces) when the sdf does not change sign.
    """
    device = vertices.device
    sdf = sdf.reshape(-1)
    V = vertices.shape[0]
    with torch.no_grad():
        inside = sdf < 0
        inside_t = inside[tets]  # (T, 4)
        n_in = inside_t.sum(-1)
        crossing = (n_in > 0) & (n_in < 4)
        tets_c = tets[crossing]
        inside_c = inside_t[crossing]
        if tets_c.shape[0] == 0:
            return Mesh(vertices=vertices.new_zeros(0, 3), faces=torch.zeros(0, 3, dtype=torch.long, device=device))
        code = (inside_c.long() * (2 ** torch.arange(4, device=device))).sum(-1)
        # global endpoints of the six edges of every crossing tet: (Tc, 6, 2)
        edge_local = torch.tensor(TET_EDGES, device=device)
        edges = tets_c[:, edge_local]
        a, b = edges[..., 0], edges[..., 1]
        a, b = torch.minimum(a, b), torch.maximum(a, b)
        s_a, s_b = sdf[a], sdf[b]
        is_cross = (s_a < 0) != (s_b < 0)
        # key: the grid edge; a crossing exactly on a vertex (value 0) is keyed by that vertex
        key_a = torch.where(s_b == 0, b, a)
        key_b = torch.where(s_a == 0, a, b)
        flat_ok = is_cross.reshape(-1).nonzero()[:, 0]
        key = (key_a * V + key_b).reshape(-1)[flat_ok]
        uniq, inv_ok = torch.unique(key, return_inverse=True)  # one surface vertex per crossed edge
        inverse = torch.full((is_cross.numel(),), -1, dtype=torch.long, device=device)
        inverse[flat_ok] = inv_ok
        inverse = inverse.reshape(is_cross.shape)  # (Tc, 6): surface vertex of each crossed edge
        # endpoints of each unique crossing (any occurrence)
        occ = torch.zeros(uniq.shape[0], dtype=torch.long, device=device)
        occ.scatter_(0, inv_ok, flat_ok)
        end_a, end_b = a.reshape(-1)[occ], b.reshape(-1)[occ]

        tri_edges = TRIANGLE_TABLE.to(device)[code]  # (Tc, 2, 3)
        n_tri = NUM_TRIANGLES.to(device)[code]
        tri_valid = torch.arange(2, device=device)[None] < n_tri[:, None]  # (Tc, 2)
        tri_tet = torch.arange(tets_c.shape[0], device=device)[:, None].expand(-1, 2)[tri_valid]
        tri_local = tri_edges[tri_valid]  # (F, 3) local edge ids
        faces = torch.gather(inverse[tri_tet], 1, tri_local)  # (F, 3) surface vertex ids

    # differentiable interpolation (DMTet eq. 2)
    sa = sdf[end_a][:, None]
    sb = sdf[end_b][:, None]
    verts = (vertices[end_a] * sb - vertices[end_b] * sa) / (sb - sa)

    with torch.no_grad():
        # orient outward: normal must agree with (centroid outside - centroid inside) of its tet
        tv = vertices[tets_c[tri_tet]].detach()  # (F, 4, 3)
        w_in = inside_c[tri_tet].float()[..., None]
        c_in = (tv * w_in).sum(1) / w_in.sum(1)
        c_out = (tv * (1 - w_in)).sum(1) / (1 - w_in).sum(1)
        p = verts.detach()[faces]
        normal = torch.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], dim=-1)
        flip = (normal * (c_out - c_in)).sum(-1) < 0
        faces = torch.where(flip[:, None], faces[:, [0, 2, 1]], faces)
        # drop collapsed triangles and coincident pairs (only possible with exact zeros)
        keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
        faces = faces[keep]
        if bool((sdf == 0).any()):
            m = int(faces.max()) + 1 if faces.numel() else 1
            sorted_f = faces.sort(dim=-1).values
            key = (sorted_f[:, 0] * m + sorted_f[:, 1]) * m + sorted_f[:, 2]  # fits int64 for m < 2e6
            _, inv, counts = torch.unique(key, return_inverse=True, return_counts=True)
            faces = faces[counts[inv] == 1]
        # drop surface vertices no face uses any more, renumber
        used = torch.zeros(verts.shape[0], dtype=torch.bool, device=device)
        used[faces.reshape(-1)] = True
        remap = torch.cumsum(used.long(), 0) - 1
        faces = remap[faces]
    return Mesh(vertices=verts[used], faces=faces)
