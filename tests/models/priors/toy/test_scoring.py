"""Scoring exported meshes against the true toy scene."""
import numpy as np
import pytest
import trimesh
from PIL import Image

from framework.colour_space import encode_srgb8
from models.priors.toy.scoring import ToySceneEvaluator, ToySceneEvaluatorConfig, grid_centres, inside_mesh, score_mesh

RED, BLUE = (0.80, 0.10, 0.10), (0.10, 0.25, 0.80)


def test_true_sphere_scores_well():
    m = trimesh.creation.icosphere(subdivisions=5, radius=0.45)
    uvs = np.random.default_rng(0).random((len(m.vertices), 2))
    texture = np.ones((16, 16, 3)) * np.array(RED)
    s = score_mesh(m.vertices, m.faces, "a red sphere", uvs, texture, n_surface_samples=50_000)
    assert s["iou"] > 0.97 and s["chamfer"] < 0.01 and s["colour_error"] < 0.01
    assert s["n_faces"] == len(m.faces)
    wrong = score_mesh(m.vertices, m.faces, "a blue sphere", uvs, texture, n_surface_samples=2_000)
    assert wrong["colour_error"] > 0.3


def test_shrunk_sphere_matches_volume_ratio():
    m = trimesh.creation.icosphere(subdivisions=5, radius=0.35)
    s = score_mesh(m.vertices, m.faces, "a red sphere", n_surface_samples=50_000)
    assert s["iou"] == pytest.approx((0.35 / 0.45) ** 3, abs=0.02)
    assert s["chamfer"] == pytest.approx(0.10, abs=0.01)  # every point is 0.1 from the other surface
    assert np.isnan(s["colour_error"])


def test_inside_agrees_with_analytic_sphere():
    g = 48
    m = trimesh.creation.icosphere(subdivisions=4, radius=0.45)
    inside = inside_mesh(m.vertices, m.faces, g)
    c = grid_centres(g)
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    truth = r < 0.45
    disagree = inside != truth
    assert disagree.sum() <= 0.002 * g**3
    assert np.all(np.abs(r[disagree] - 0.45) < 0.005)  # only where the polygon and sphere differ


def test_cube_mesh_is_exact_despite_grid_aligned_diagonals():
    # the box's faces are split along diagonals that pass exactly through grid columns (x == y):
    # without a consistent tie rule those columns would be counted twice
    box = trimesh.creation.box(extents=(0.64, 0.64, 0.64))
    s = score_mesh(box.vertices, box.faces, "a red cube", grid_resolution=64, n_surface_samples=5_000)
    assert s["iou"] == 1.0
    tilted = box.copy()
    tilted.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 4, [0, 0, 1]))
    assert score_mesh(tilted.vertices, tilted.faces, "a red cube", grid_resolution=64, n_surface_samples=5_000)["iou"] < 0.9


def test_open_mesh_is_repaired_by_voting():
    m = trimesh.creation.icosphere(subdivisions=3, radius=0.45)
    holes = m.faces[10:]  # 10 faces missing
    s = score_mesh(m.vertices, holes, "a red sphere", grid_resolution=64, n_surface_samples=5_000)
    assert s["iou"] > 0.97
    assert score_mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=int), "a red sphere", grid_resolution=16)["iou"] == 0.0


def write_export(path, vertices, faces, uvs, texture, encode=encode_srgb8):
    """An export folder as framework/export.py writes it; texture (H, W, 3) linear albedo, stored sRGB-encoded."""
    lines = ["mtllib model.mtl", "usemtl material0"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in uvs]
    lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in faces]
    (path / "model.obj").write_text("\n".join(lines) + "\n")
    (path / "model.mtl").write_text("newmtl material0\nKd 1 1 1\nmap_Kd texture_kd.png\n")
    Image.fromarray(encode(texture)).save(path / "texture_kd.png")


def test_evaluator_reads_the_export_with_obj_uv_convention(tmp_path):
    # a red sphere on top of a blue sphere; texture rows 0..7 (image top, v > 0.5) red, rest blue
    top = trimesh.creation.icosphere(subdivisions=4, radius=0.225)
    bottom = top.copy()
    top.apply_translation([0, 0, 0.225])
    bottom.apply_translation([0, 0, -0.225])
    vertices = np.concatenate([top.vertices, bottom.vertices])
    faces = np.concatenate([top.faces, bottom.faces + len(top.vertices)])
    uvs = np.concatenate([np.tile([0.5, 0.75], (len(top.vertices), 1)), np.tile([0.5, 0.25], (len(bottom.vertices), 1))])
    texture = np.zeros((16, 16, 3))
    texture[:8] = RED
    texture[8:] = BLUE
    write_export(tmp_path, vertices, faces, uvs, texture)
    ev = ToySceneEvaluator(ToySceneEvaluatorConfig(scene="a red sphere on top of a blue sphere", grid_resolution=64, n_surface_samples=20_000))
    s = ev.evaluate(str(tmp_path))
    assert s["iou"] > 0.95 and s["chamfer"] < 0.01
    assert s["colour_error"] < 0.01  # a flipped v would give ~0.4
    with pytest.raises(FileNotFoundError):
        ev.evaluate(str(tmp_path / "nothing"))
    # the texture is read as sRGB: the same albedo stored without the encoding is wrong by ~0.2
    write_export(tmp_path, vertices, faces, uvs, texture, encode=lambda t: (t * 255).round().astype(np.uint8))
    assert ev.evaluate(str(tmp_path))["colour_error"] > 0.1


def cone_mesh(n: int = 64):
    import mcubes
    import torch

    from framework.interfaces import Mesh
    from models.priors.toy.scenes import parse_prompt

    c = np.linspace(-0.6, 0.6, n)
    grid = torch.from_numpy(np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)).float()
    sdf = parse_prompt("a red cone").sdf(grid).numpy().reshape(n, n, n)
    vertices, faces = mcubes.marching_cubes(-sdf, 0.0)
    vertices = vertices * (1.2 / (n - 1)) - 0.6
    return Mesh(torch.from_numpy(vertices).float(), torch.from_numpy(faces.astype(np.int64)))


def test_both_obj_up_axes_score_the_same(tmp_path):
    """The evaluator scores the exported file itself, in world axes, whichever up axis the OBJ was written with."""
    import torch

    from framework.export import export_textured_mesh

    mesh, red = cone_mesh(), torch.tensor([0.8, 0.1, 0.1])
    ev = ToySceneEvaluator(ToySceneEvaluatorConfig(scene="a red cone", grid_resolution=48, n_surface_samples=5_000))
    scores = {}
    for axis in ("+z", "+y"):
        export_textured_mesh(mesh, lambda p: red.expand(len(p), 3), tmp_path / axis, texture_size=64, glb=False,
                             up_axis=axis)
        scores[axis] = ev.evaluate(str(tmp_path / axis))
    assert scores["+z"]["iou"] > 0.9 and scores["+z"]["chamfer"] < 0.02 and scores["+z"]["colour_error"] < 0.01
    assert scores["+y"] == pytest.approx(scores["+z"], rel=1e-9, abs=1e-9)
    # the +y file read as if it were in world axes lies on its side: the rotation back is what makes it score
    obj = tmp_path / "+y" / "model.obj"
    obj.write_text("# an OBJ naming no up axis\n" + obj.read_text().split("\n", 1)[1])
    assert ev.evaluate(str(tmp_path / "+y"))["iou"] < 0.6


def test_marching_cubes_mesh_of_a_composite():
    import mcubes
    import torch

    from models.priors.toy.scenes import parse_prompt

    scene = parse_prompt("a red cone on top of a blue cube")
    n = 96
    c = np.linspace(-0.6, 0.6, n)
    grid = torch.from_numpy(np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)).float()
    sdf = scene.sdf(grid).numpy().reshape(n, n, n)
    vertices, faces = mcubes.marching_cubes(-sdf, 0.0)  # mcubes: inside is where the field is high
    vertices = vertices * (1.2 / (n - 1)) - 0.6
    s = score_mesh(vertices, faces, scene, grid_resolution=96, n_surface_samples=20_000)
    assert s["iou"] > 0.95 and s["chamfer"] < 0.01
    assert s["volume_true"] == pytest.approx(0.16**3 * 8 + np.pi * 0.2**2 * 0.4 / 3, rel=0.03)


def test_triangle_soup_with_split_vertices_is_still_exact():
    box = trimesh.creation.box(extents=(0.64, 0.64, 0.64))
    soup_vertices = box.vertices[box.faces].reshape(-1, 3)  # every face has its own 3 vertices
    soup_faces = np.arange(len(soup_vertices)).reshape(-1, 3)
    s = score_mesh(soup_vertices, soup_faces, "a red cube", grid_resolution=64, n_surface_samples=5_000)
    assert s["iou"] == 1.0
