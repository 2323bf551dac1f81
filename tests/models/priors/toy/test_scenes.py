"""The toy world's grammar, placement and SDFs (TOYWORLD.md)."""
import math

import pytest
import torch

from models.priors.toy.scenes import (
    COLOURS,
    HELD_OUT_SINGLE_PROMPTS,
    SHAPES,
    ToyPromptError,
    is_held_out,
    parse_prompt,
    single_shape_prompts,
)


def test_all_single_prompts_parse():
    prompts = single_shape_prompts()
    assert len(prompts) == 30 and len(set(prompts)) == 30
    for p in prompts:
        scene = parse_prompt(p)
        assert scene.prompt == p
        (prim,) = scene.primitives
        assert prim.scale == 1.0 and prim.z == 0.0
        assert p.endswith(prim.shape) and prim.albedo == COLOURS[prim.colour]
    assert set(HELD_OUT_SINGLE_PROMPTS) <= set(prompts)


def test_spellings_forgiven():
    assert parse_prompt("an orange cube").prompt == "a orange cube"
    assert parse_prompt("a orange cube.").prompt == "a orange cube"
    assert parse_prompt("  A  Red sphere ").prompt == "a red sphere"
    assert is_held_out("an orange cube") and not is_held_out("a red cube")
    assert is_held_out("a red torus on top of a blue cube") and not is_held_out("a red cube on top of a green torus")


@pytest.mark.parametrize("bad", ["a red banana", "a hamburger", "red sphere", "a red sphere on a blue cube", "", "a red sphere on top of"])
def test_bad_prompts_name_the_grammar(bad):
    with pytest.raises(ToyPromptError) as info:
        parse_prompt(bad)
    msg = str(info.value)
    assert repr(bad) in msg and "{colour} {shape}" in msg and "on top of" in msg
    assert all(c in msg for c in COLOURS) and all(s in msg for s in SHAPES)
    assert isinstance(info.value, ValueError)


def test_composite_placement():
    scene = parse_prompt("a red cone on top of a blue cube")
    top, bottom = scene.primitives
    assert (top.shape, top.colour, bottom.shape, bottom.colour) == ("cone", "red", "cube", "blue")
    assert top.scale == bottom.scale == 0.5
    assert bottom.z_extent[0] == pytest.approx(-0.45)
    assert bottom.z == pytest.approx(-0.45 + 0.16)
    assert top.z_extent[0] == pytest.approx(bottom.z_extent[1])
    assert top.z == pytest.approx(-0.13 + 0.20)
    # torus (z half-extent 0.12) on a sphere (0.45): bottom centre -0.225, top 0 + 0.06
    t, s = parse_prompt("a green torus on top of a yellow sphere").primitives
    assert s.z == pytest.approx(-0.225) and t.z == pytest.approx(0.06)
    # the contact point is on both surfaces
    contact = torch.tensor([[0.0, 0.0, -0.13]])
    assert abs(top.sdf(contact).item()) < 1e-6 and abs(bottom.sdf(contact).item()) < 1e-6


def test_sdf_signs_at_known_points():
    cases = {
        "a red sphere": ([0, 0, 0.44], [0, 0, 0.46]),
        "a red cube": ([0.31, 0.31, 0.31], [0.33, 0, 0]),
        "a red cylinder": ([0.29, 0, 0.39], [0.22, 0.22, 0]),  # (0.22, 0.22) has r = 0.311
        "a red cone": ([0, 0, 0.39], [0.25, 0, 0.0]),  # side radius at z=0 is 0.2
        "a red torus": ([0.30, 0, 0.11], [0, 0, 0]),
    }
    for prompt, (inside, outside) in cases.items():
        d = parse_prompt(prompt).sdf(torch.tensor([inside, outside], dtype=torch.float32))
        assert d[0] < 0 < d[1], prompt
    # exact distances
    assert parse_prompt("a red cube").sdf(torch.tensor([[0.42, 0.0, 0.0]])).item() == pytest.approx(0.10, abs=1e-6)
    assert parse_prompt("a red cube").sdf(torch.tensor([[0.42, 0.42, 0.0]])).item() == pytest.approx(0.1 * math.sqrt(2), abs=1e-6)
    assert parse_prompt("a red torus").sdf(torch.tensor([[0.3, 0.0, 0.0]])).item() == pytest.approx(-0.12, abs=1e-6)
    cone = parse_prompt("a red cone")
    assert cone.sdf(torch.tensor([[0.0, 0.0, 0.5]])).item() == pytest.approx(0.1, abs=1e-6)  # above the apex
    assert cone.sdf(torch.tensor([[0.0, 0.0, -0.5]])).item() == pytest.approx(0.1, abs=1e-6)  # below the base
    # on the axis at z = 0 the slanted side is nearest: apex 0.4 above, half-angle atan(0.5)
    assert cone.sdf(torch.tensor([[0.0, 0.0, 0.0]])).item() == pytest.approx(-0.4 * math.sin(math.atan(0.5)), abs=1e-6)


@pytest.mark.parametrize(
    "prompt",
    single_shape_prompts()[:5] + ["a red cube on top of a blue cube", "a red torus on top of a blue cone", "a red sphere on top of a blue cylinder"],
)
def test_surface_samples_are_on_the_surface(prompt):
    scene = parse_prompt(prompt)
    pts = scene.sample_surface(5000, seed=1)
    assert pts.shape == (5000, 3)
    assert scene.sdf(pts).abs().max().item() < 1e-4
    assert torch.equal(pts, scene.sample_surface(5000, seed=1))


def test_stacked_cubes_drop_the_shared_face():
    # the top cube's bottom face lies on the bottom cube's top face: interior to the union
    scene = parse_prompt("a red cube on top of a blue cube")
    contact_z = scene.primitives[1].z_extent[1]
    pts = scene.sample_surface(20000, seed=0)
    on_plane = (pts[:, 2] - contact_z).abs() < 1e-5
    assert on_plane.sum() == 0


def test_albedo_of_nearest_primitive_and_normals():
    scene = parse_prompt("a red cone on top of a blue cube")
    top_pt = torch.tensor([[0.0, 0.0, scene.primitives[0].z_extent[1]]])
    bottom_pt = torch.tensor([[0.16, 0.0, scene.primitives[1].z]])
    alb = scene.albedo(torch.cat([top_pt, bottom_pt]))
    assert torch.allclose(alb[0], torch.tensor(COLOURS["red"])) and torch.allclose(alb[1], torch.tensor(COLOURS["blue"]))
    sphere = parse_prompt("a red sphere")
    p = sphere.sample_surface(100, 0)
    with torch.no_grad():
        n = sphere.normal(p)
    assert torch.allclose(n, p / p.norm(dim=-1, keepdim=True), atol=1e-5)
