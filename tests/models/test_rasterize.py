"""The PyTorch rasterizer against analytic renders, finite differences, and nvdiffrast."""
from __future__ import annotations

import math

import pytest
import torch

from framework.cameras import orbit_c2w, projection_matrix
from models.renderers import rasterize_torch as rt
from models.renderers.rasterizer import Rasterizer


def _pixel_centres(H: int, W: int, dtype=torch.float64):
    """NDC centres (H, W) of rast pixels: row i at y = 2 (i + 0.5) / H - 1 (nvdiffrast's layout)."""
    y = (torch.arange(H, dtype=dtype) + 0.5) / H * 2 - 1
    x = (torch.arange(W, dtype=dtype) + 0.5) / W * 2 - 1
    return torch.meshgrid(y, x, indexing="ij")


def _inside(tri2d: torch.Tensor, yy: torch.Tensor, xx: torch.Tensor):
    """Signed distance-ish margins (H, W) of pixel centres to a 2D triangle (3, 2): min of edge functions."""
    es = []
    area = (tri2d[1, 0] - tri2d[0, 0]) * (tri2d[2, 1] - tri2d[0, 1]) - (tri2d[2, 0] - tri2d[0, 0]) * (tri2d[1, 1] - tri2d[0, 1])
    for k in range(3):
        a, b = tri2d[k], tri2d[(k + 1) % 3]
        e = ((b[0] - a[0]) * (yy - a[1]) - (b[1] - a[1]) * (xx - a[0])) / (b - a).norm()
        es.append(e * torch.sign(area))
    return torch.stack(es).amin(0)


def _camera(distance: float = 2.0, fovy_deg: float = 40.0, azimuth: float = 20.0, elevation: float = 10.0):
    c2w = orbit_c2w(torch.tensor([elevation]), torch.tensor([azimuth]), torch.tensor([distance])).double()
    proj = projection_matrix(torch.tensor([math.radians(fovy_deg)]), 1.0).double()
    return c2w, proj @ torch.linalg.inv(c2w)


def _to_clip(v: torch.Tensor, mvp: torch.Tensor) -> torch.Tensor:  # (V, 3) -> (1, V, 4)
    return (torch.cat([v, torch.ones_like(v[:, :1])], -1) @ mvp[0].T)[None]


def test_coverage_and_depth_of_a_triangle_match_an_analytic_render():
    H, W = 40, 56
    tri = torch.tensor([[0.3, -0.4, 0.2], [-0.2, 0.5, -0.3], [-0.4, -0.3, 0.4]], dtype=torch.float64)
    c2w, mvp = _camera()
    pos = _to_clip(tri, mvp)
    rast = rt.rasterize(pos, torch.tensor([[0, 1, 2]]), (H, W))
    ndc = pos[0, :, :2] / pos[0, :, 3:]
    yy, xx = _pixel_centres(H, W)
    # margins in NDC; half a thousandth of a pixel keeps the comparison away from exact ties
    margin = _inside(ndc, yy, xx)
    sure = margin.abs() > 1e-3 * 2 / H
    covered = rast[0, ..., 3] > 0
    assert covered.sum() > 100
    assert torch.equal(covered[sure], (margin > 0)[sure])
    # depth and perspective-correct barycentrics: the world point under each pixel is the
    # intersection of the pixel's ray with the triangle's plane
    inv_vp = torch.linalg.inv(mvp[0])
    pts_ndc = torch.stack([xx, yy, torch.zeros_like(xx), torch.ones_like(xx)], -1)[covered]
    far = pts_ndc @ inv_vp.T
    far = far[:, :3] / far[:, 3:]
    eye = c2w[0, :3, 3]
    d = far - eye
    n = torch.cross(tri[1] - tri[0], tri[2] - tri[0], dim=0)
    t = ((tri[0] - eye) @ n) / (d @ n)
    hit = eye + t[:, None] * d
    clip = torch.cat([hit, torch.ones_like(hit[:, :1])], -1) @ mvp[0].T
    assert torch.allclose(rast[0, ..., 2][covered], clip[:, 2] / clip[:, 3], atol=1e-6)
    interp = rt.interpolate(tri[None], rast, torch.tensor([[0, 1, 2]]))
    assert torch.allclose(interp[0][covered], hit, atol=1e-6)
    assert (interp[0][~covered] == 0).all()


def test_nearest_triangle_wins():
    # two overlapping orthographic triangles; the one with the smaller z/w must be seen
    pos = torch.tensor([[[-0.8, -0.8, 0.5, 1], [0.8, -0.8, 0.5, 1], [0, 0.8, 0.5, 1],
                         [-0.8, 0.8, -0.2, 1], [0.8, 0.8, -0.2, 1], [0, -0.8, -0.2, 1]]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    rast = rt.rasterize(pos, faces, (32, 32))
    ids = rast[0, ..., 3]
    assert (ids == 2).sum() > 100 and (ids == 1).sum() > 50
    both = (rt.rasterize(pos, faces[:1], (32, 32))[0, ..., 3] > 0) & (rt.rasterize(pos, faces[1:], (32, 32))[0, ..., 3] > 0)
    assert (ids[both] == 2).all()
    assert torch.allclose(rast[0, ..., 2][ids == 2], torch.tensor(-0.2))


def test_small_chunks_give_the_same_raster_and_triangles_behind_the_camera_are_dropped():
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    v = torch.tensor(mesh.vertices, dtype=torch.float64)
    faces = torch.tensor(mesh.faces)
    _, mvp = _camera(distance=1.2, fovy_deg=70.0)
    pos = _to_clip(v, mvp).float()
    big = torch.tensor([[[-5.0, -5.0, 0.9, 1.0], [5.0, -5.0, 0.9, 1.0], [0.0, 5.0, 0.9, 1.0]]])  # covers the screen, far
    pos = torch.cat([pos, big], 1)
    faces = torch.cat([faces, torch.tensor([[v.shape[0], v.shape[0] + 1, v.shape[0] + 2]])])
    ref = rt.rasterize(pos, faces, (40, 48))
    small = rt.rasterize(pos, faces, (40, 48), chunk=7)  # splits buckets and bands huge triangles
    assert torch.equal(ref, small)
    assert (ref[..., 3] == faces.shape[0]).sum() > 0 and (ref[..., 3] > 0).all()
    behind = pos.clone()
    behind[0, -3:, 3] = -1.0  # the big triangle now lies behind the camera: not drawn
    assert not (rt.rasterize(behind, faces, (40, 48))[..., 3] == faces.shape[0]).any()


def test_a_fine_closed_mesh_has_no_holes():
    """Many sub-pixel triangles per pixel (a DMTet at 128 seen at 64²): every pixel inside the silhouette
    shows the front surface; none falls between two adjacent triangles onto the back of the sphere."""
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=6, radius=0.4)  # 81920 faces
    v = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces)
    c2w, mvp = _camera(distance=1.6, fovy_deg=40.0)
    rast = rt.rasterize(_to_clip(v.double(), mvp).float(), faces, (64, 64))
    tid = rast[0, ..., 3].long() - 1
    covered = tid >= 0
    tri = v[faces[tid[covered]]]
    normal = torch.nn.functional.normalize(torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1), dim=-1)
    to_camera = torch.nn.functional.normalize(c2w[0, :3, 3].float() - tri.mean(1), dim=-1)
    assert covered.sum() > 1000
    assert ((normal * to_camera).sum(-1) < -0.2).sum() == 0  # back faces seen through a hole


def test_row_zero_is_ndc_y_minus_one():
    pos = torch.tensor([[[-1.0, -1.0, 0, 1], [1.0, -1.0, 0, 1], [0.0, -0.5, 0, 1]]])  # bottom strip in NDC
    rast = rt.rasterize(pos, torch.tensor([[0, 1, 2]]), (16, 16))
    cov = rast[0, ..., 3] > 0
    assert cov[:4].any() and not cov[8:].any()


def _silhouette_loss(pos: torch.Tensor, faces: torch.Tensor, weights: torch.Tensor, H: int, W: int) -> torch.Tensor:
    rast = rt.rasterize(pos, faces, (H, W))
    colour = (rast[..., 3:] > 0).to(pos.dtype).expand(-1, -1, -1, 3) * pos.new_tensor([1.0, 0.5, 0.25])
    return (rt.antialias(colour, rast, pos, faces) * weights).sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_antialias_gives_vertex_gradients_that_match_finite_differences(seed):
    """A flat-coloured triangle on black: its image changes only through antialiasing, so the
    whole gradient w.r.t. the vertices comes from the silhouette (nvdiffrast's purpose)."""
    g = torch.Generator().manual_seed(seed)
    H, W = 24, 20
    pos = torch.tensor([[[-0.6, -0.5, 0.1, 1.0], [0.7, -0.3, 0.2, 1.2], [0.0, 0.6, 0.3, 0.9]]], dtype=torch.float64)
    pos[..., :2] += 0.05 * torch.randn(1, 3, 2, generator=g, dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    weights = torch.rand(1, H, W, 3, generator=g, dtype=torch.float64)
    p = pos.clone().requires_grad_(True)
    _silhouette_loss(p, faces, weights, H, W).backward()
    analytic = p.grad
    assert analytic[..., :2].abs().sum() > 1e-2
    eps = 1e-5
    numeric = torch.zeros_like(pos)
    for v in range(3):
        for c in (0, 1, 3):
            hi, lo = pos.clone(), pos.clone()
            hi[0, v, c] += eps
            lo[0, v, c] -= eps
            numeric[0, v, c] = (_silhouette_loss(hi, faces, weights, H, W) - _silhouette_loss(lo, faces, weights, H, W)) / (2 * eps)
    assert torch.allclose(analytic, numeric, atol=1e-4, rtol=1e-3), (analytic, numeric)


def test_antialias_leaves_edges_inside_a_surface_alone():
    # two front-facing triangles sharing an edge: only the outer boundary is a silhouette
    pos = torch.tensor([[[-0.7, -0.7, 0, 1], [0.7, -0.7, 0, 1], [0.7, 0.7, 0, 1], [-0.7, 0.7, 0, 1]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    rast = rt.rasterize(pos, faces, (16, 16))
    colour = torch.where(rast[..., 3:] == 1, 1.0, 0.0).to(pos.dtype)  # different colours per triangle
    out = rt.antialias(colour, rast, pos, faces)
    changed = (out - colour).abs()[..., 0] > 0
    covered = rast[..., 3] > 0
    k = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    near_bg = torch.nn.functional.conv2d((~covered).double()[:, None], k, padding=1)[:, 0] > 0
    # the diagonal between the two triangles is not blended: nothing changes away from the outline
    assert not changed[covered & ~near_bg].any()
    assert changed[near_bg].any()  # while the outline is antialiased


def test_antialias_moves_edge_pixels_towards_true_coverage():
    """Its purpose beyond gradients: edge pixels get closer to the box-filtered coverage
    (measured by 16x16 supersampling) than the aliased mask is."""
    g = torch.Generator().manual_seed(3)
    H = W = 32
    S = 16
    faces = torch.tensor([[0, 1, 2]])
    for _ in range(3):
        pos = torch.cat([torch.rand(1, 3, 2, generator=g) * 1.6 - 0.8, torch.zeros(1, 3, 1), torch.ones(1, 3, 1)], -1)
        rast = rt.rasterize(pos, faces, (H, W))
        mask = (rast[..., 3:] > 0).float()
        smooth = rt.antialias(mask, rast, pos, faces)
        truth = (rt.rasterize(pos, faces, (H * S, W * S))[..., 3] > 0).float().reshape(1, H, S, W, S).mean((2, 4))[..., None]
        edge = (truth > 0) & (truth < 1)
        assert (smooth - truth).abs()[edge].mean() < 0.8 * (mask - truth).abs()[edge].mean()


def test_interpolate_gradients_match_autograd_gradcheck():
    H, W = 12, 12
    tri = torch.tensor([[0.3, -0.4, 0.2], [-0.2, 0.5, -0.3], [-0.4, -0.3, 0.4]], dtype=torch.float64)
    _, mvp = _camera()
    faces = torch.tensor([[0, 1, 2]])
    pos = _to_clip(tri, mvp).requires_grad_(True)
    attr = torch.randn(1, 3, 2, dtype=torch.float64, requires_grad=True)

    def f(p, a):
        return rt.interpolate(a, rt.rasterize(p, faces, (H, W)), faces)

    assert torch.autograd.gradcheck(f, (pos, attr), eps=1e-7, atol=1e-5)


def test_rasterizer_backend_choice():
    r = Rasterizer("auto", device="cpu")
    assert r.backend == "torch"
    with pytest.raises(ValueError, match="backend"):
        Rasterizer("opengl")
    try:
        import nvdiffrast  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="nvdiffrast"):
            Rasterizer("nvdiffrast")


@pytest.mark.gpu
def test_nvdiffrast_agrees_with_torch():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (nvdiffrast is CUDA-only)")
    try:
        import nvdiffrast.torch  # noqa: F401
    except ImportError:
        pytest.skip("nvdiffrast is not installed")
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    v = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces, dtype=torch.long)
    _, mvp = _camera()
    pos = _to_clip(v.double(), mvp).float()
    H = W = 128
    outs = {}
    for backend, device in (("torch", "cpu"), ("nvdiffrast", "cuda")):
        r = Rasterizer(backend, device=device)
        p = pos.to(device).requires_grad_(True)
        f = faces.to(device)
        rast = r.rasterize(p, f, (H, W))
        col = r.interpolate(v.to(device)[None], rast, f)
        aa = r.antialias(col, rast, p, f)
        aa.square().sum().backward()
        outs[backend] = (rast.detach().cpu(), col.detach().cpu(), aa.detach().cpu(), p.grad.cpu())
    t, n = outs["torch"], outs["nvdiffrast"]
    same = t[0][..., 3] == n[0][..., 3]
    assert same.float().mean() > 0.99
    assert torch.allclose(t[1][same], n[1][same], atol=1e-4)
    assert (t[2] - n[2]).abs().mean() < 1e-3
    cos = torch.nn.functional.cosine_similarity(t[3].flatten(), n[3].flatten(), dim=0)
    assert cos > 0.9
