"""The exemplar renderer: camera convention, shading formula, supersampling."""
import math

import torch

from framework.cameras import orbit_c2w
from models.priors.toy.render import render_scene, render_sdf
from models.priors.toy.scenes import parse_prompt

FACE_COLOURS = {  # outward axis -> colour
    (0, 1): (1.0, 0.0, 0.0),  # +x red
    (0, -1): (0.0, 1.0, 1.0),  # -x cyan
    (1, 1): (0.0, 1.0, 0.0),  # +y green
    (1, -1): (1.0, 0.0, 1.0),  # -y magenta
    (2, 1): (0.0, 0.0, 1.0),  # +z blue
    (2, -1): (1.0, 1.0, 0.0),  # -z yellow
}
HALF = 0.3


def cube_sdf(p):
    q = p.abs() - HALF
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


def cube_face_albedo(p):
    axis = p.abs().argmax(dim=-1)
    sign = torch.sign(p.gather(-1, axis[:, None]))[:, 0]
    out = torch.zeros_like(p)
    for (a, s), colour in FACE_COLOURS.items():
        out[(axis == a) & (sign == s)] = torch.tensor(colour)
    return out


def view(sdf, albedo, elevation, azimuth, distance=2.0, fovy_deg=40.0, size=32, supersample=1):
    c2w = orbit_c2w(torch.tensor([float(elevation)]), torch.tensor([float(azimuth)]), torch.tensor([distance]))
    return render_sdf(sdf, albedo, c2w, torch.tensor([math.radians(fovy_deg)]), size, size, supersample=supersample)


def dominant(rgb, colour):
    """Fraction of foreground pixels whose hue matches `colour` (shading only scales it)."""
    pix = rgb[0].reshape(-1, 3)
    fg = (pix - 1.0).abs().sum(-1) > 1e-3
    c = torch.tensor(colour)
    unit = torch.nn.functional.normalize(pix[fg], dim=-1)
    return ((unit * torch.nn.functional.normalize(c, dim=0)).sum(-1) > 0.99).float().mean().item()


def test_cube_faces_seen_from_the_convention_cameras():
    out = view(cube_sdf, cube_face_albedo, 0, 0)
    assert dominant(out["rgb"], FACE_COLOURS[(0, 1)]) > 0.95  # azimuth 0 sits on +x
    out = view(cube_sdf, cube_face_albedo, 0, 90)
    assert dominant(out["rgb"], FACE_COLOURS[(1, 1)]) > 0.95  # azimuth 90 on +y
    out = view(cube_sdf, cube_face_albedo, 89, 0)
    assert dominant(out["rgb"], FACE_COLOURS[(2, 1)]) > 0.95  # overhead sees +z
    out = view(cube_sdf, cube_face_albedo, 0, 180)
    assert dominant(out["rgb"], FACE_COLOURS[(0, -1)]) > 0.95


def small_sphere_at(centre):
    c = torch.tensor(centre)
    return lambda p: (p - c).norm(dim=-1) - 0.1


def white(p):
    return torch.full_like(p, 0.5)


def test_image_orientation():
    # from azimuth 0 (on +x, looking at -x) with +z up, +y is to the right of the image
    alpha = view(small_sphere_at((0.0, 0.4, 0.0)), white, 0, 0)["opacity"][0, ..., 0]
    w = alpha.shape[1]
    assert alpha[:, w // 2 :].sum() > 10 and alpha[:, : w // 2].sum() == 0
    alpha = view(small_sphere_at((0.0, 0.0, 0.4)), white, 0, 0)["opacity"][0, ..., 0]
    h = alpha.shape[0]
    assert alpha[: h // 2].sum() > 10 and alpha[h // 2 :].sum() == 0


def test_shading_formula_head_on():
    scene = parse_prompt("a blue sphere")
    c2w = orbit_c2w(torch.tensor([20.0]), torch.tensor([-35.0]), torch.tensor([1.5]))
    out = render_scene(scene, c2w, torch.tensor([math.radians(50.0)]), 33, 33)
    centre = out["rgb"][0, 16, 16]
    assert torch.allclose(centre, torch.tensor([0.10, 0.25, 0.80]), atol=2e-3)  # n.v = 1
    # background is white, opacity binary without supersampling
    assert torch.equal(out["rgb"][0, 0, 0], torch.ones(3)) and out["opacity"][0, 0, 0, 0] == 0
    assert set(out["opacity"].unique().tolist()) <= {0.0, 1.0}
    # off-centre pixel: albedo * (0.4 + 0.6 n.v) with n the sphere normal at the hit point
    from framework.cameras import get_rays

    o, d = get_rays(c2w, torch.tensor([math.radians(50.0)]), 33, 33)
    o, d = o[0, 16, 22], d[0, 16, 22]
    b = (o * d).sum()
    t = -b - torch.sqrt(b * b - (o * o).sum() + 0.45**2)
    n = torch.nn.functional.normalize(o + t * d, dim=0)
    expected = torch.tensor([0.10, 0.25, 0.80]) * (0.4 + 0.6 * (-(n * d).sum()))
    assert torch.allclose(out["rgb"][0, 16, 22], expected, atol=2e-3)


def test_supersampling_antialiases_edges_and_agrees_inside():
    scene = parse_prompt("a red cube")
    c2w = orbit_c2w(torch.tensor([30.0, 10.0]), torch.tensor([20.0, 100.0]), torch.tensor([1.3, 1.1]))
    fovy = torch.tensor([0.8, 1.1])
    one = render_scene(scene, c2w, fovy, 24, 20)
    two = render_scene(scene, c2w, fovy, 24, 20, supersample=3)
    assert one["rgb"].shape == two["rgb"].shape == (2, 24, 20, 3) and two["opacity"].shape == (2, 24, 20, 1)
    partial = (two["opacity"] > 0) & (two["opacity"] < 1)
    assert partial.sum() > 10  # soft silhouettes
    assert (one["opacity"] - two["opacity"]).abs().mean() < 0.05
