"""Candidate renders traced once per geometry and coloured after equal render_scene's images."""
import math

import torch

from framework.cameras import orbit_c2w
from models.priors.toy.candidate_views import _cache_path, render_candidates
from models.priors.toy.render import render_scene
from models.priors.toy.scenes import parse_prompt

PROMPTS = ["a red cube", "a blue cone on top of a yellow torus", "a green torus on top of a purple sphere",
           "a orange cylinder on top of a orange cube", "a yellow cone on top of a yellow torus"]  # fmt: skip


def test_candidates_equal_render_scene_and_are_cached(tmp_path):
    elev, az, dist, fovy, res, ss = 25.0, -40.0, 1.5, 40.0, 12, 2
    images = render_candidates(PROMPTS, elev, az, dist, fovy, res, ss, tmp_path)
    assert images.shape == (len(PROMPTS), res, res, 3)
    c2w = orbit_c2w(torch.tensor([elev]), torch.tensor([az]), torch.tensor([dist]))
    for i, p in enumerate(PROMPTS):
        ref = render_scene(parse_prompt(p), c2w, torch.tensor([math.radians(fovy)]), res, res, ss)["rgb"][0].clamp(0, 1)
        assert torch.allclose(images[i], ref, atol=1e-6), p
    # two colourings of one geometry differ; the cache holds one trace per geometry (4 here)
    assert not torch.allclose(images[1], images[4])
    traces = torch.load(_cache_path(tmp_path, (elev, az, dist, fovy), res, ss), weights_only=True)
    assert sorted(traces) == ["cone/torus", "cube", "cylinder/cube", "torus/sphere"]
    again = render_candidates(PROMPTS[::-1], elev, az, dist, fovy, res, ss, tmp_path)
    assert torch.equal(again, images.flip(0))


def test_finite_normals_repair_an_infinite_sdf_derivative():
    """|x| + z written with sqrt(x^2): at x = 0 autograd gives a NaN normal (like a ray stopping exactly
    on the cone's side); central differences give the true one, (0, 0, 1)."""
    from models.priors.toy.candidate_views import finite_normals
    from models.priors.toy.render import _autograd_normal

    sdf = lambda p: p[:, 0].square().sqrt() + p[:, 2]  # noqa: E731
    p = torch.tensor([[0.0, 0.3, 0.0], [0.5, 0.0, -0.5]])
    assert torch.isnan(_autograd_normal(sdf, p)[0]).any()
    n = finite_normals(sdf, p)
    assert torch.allclose(n[0], torch.tensor([0.0, 0.0, 1.0]), atol=1e-5)
    assert torch.allclose(n[1], _autograd_normal(sdf, p)[1])


def test_render_views_at_several_cameras():
    from models.priors.toy.candidate_views import render_views

    c2w = orbit_c2w(torch.tensor([10.0, 45.0]), torch.tensor([0.0, 130.0]), torch.tensor([1.6, 1.4]))
    fovy = torch.deg2rad(torch.tensor([40.0, 36.0]))
    views = render_views(PROMPTS[:3], c2w, fovy, 10, 2)
    assert views.shape == (2, 3, 10, 10, 3)
    for i, p in enumerate(PROMPTS[:3]):
        ref = render_scene(parse_prompt(p), c2w, fovy, 10, 10, 2)["rgb"].clamp(0, 1)
        assert torch.allclose(views[:, i], ref, atol=1e-6), p
