"""Tests for framework.export: OBJ/MTL/PNG and GLB round trips through trimesh (texture colours read back
through the sRGB decode, framework/colour_space.py), and the OBJ's up axis."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from scipy.spatial import cKDTree

import framework.export as export_mod
from framework.colour_space import decode_srgb8
from framework.export import OBJ_AXES, WORLD_TO_GLTF, ExportDirectoryError, export_textured_mesh, read_obj_up_axis
from framework.interfaces import Mesh

TEX = 256


def albedo_np(p: np.ndarray) -> np.ndarray:
    return np.clip(p + 0.5, 0.0, 1.0)


def albedo_fn(p: torch.Tensor) -> torch.Tensor:  # (N, 3) -> (N, 3)
    return (p + 0.5).clamp(0.0, 1.0)


def sample_bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """image (H, W, 3) uint8 sRGB rows from the top; uv (N, 2) with OBJ's bottom-left origin -> linear (N, 3)."""
    h, w = image.shape[:2]
    img = decode_srgb8(image)
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip((1.0 - uv[:, 1]) * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def centroid_error(tm: trimesh.Trimesh, image: np.ndarray, to_world=lambda v: v) -> float:
    uv_centroids = tm.visual.uv[tm.faces].mean(1)
    world_centroids = to_world(tm.vertices[tm.faces].mean(1))
    return float(np.abs(sample_bilinear(image, uv_centroids) - albedo_np(world_centroids)).mean())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    ico = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    mesh = Mesh(torch.tensor(ico.vertices, dtype=torch.float32), torch.tensor(ico.faces))
    out = tmp_path_factory.mktemp("export") / "nested" / "dir"  # created on demand
    paths = export_textured_mesh(mesh, albedo_fn, out, texture_size=TEX)
    return mesh, paths


def test_files_written(exported):
    _, paths = exported
    assert set(paths) == {"obj", "mtl", "texture", "glb"}
    assert all(p.is_file() for p in paths.values())
    assert paths["texture"].name == "texture_kd.png"
    mtl = paths["mtl"].read_text()
    assert "map_Kd texture_kd.png" in mtl and "Kd 1.000 1.000 1.000" in mtl
    img = Image.open(paths["texture"])
    assert img.mode == "RGB" and img.size == (TEX, TEX)


def test_obj_reload_positions_uvs_and_texture(exported):
    mesh, paths = exported
    tm = trimesh.load(paths["obj"], force="mesh")
    assert tm.visual.kind == "texture" and tm.visual.uv is not None
    assert tm.visual.uv.shape == (len(tm.vertices), 2)
    image = np.asarray(tm.visual.material.image.convert("RGB"))
    assert image.shape == (TEX, TEX, 3)
    # Same positions, in world coordinates, up to seam duplication.
    orig = mesh.vertices.numpy().astype(np.float64)
    assert cKDTree(orig).query(tm.vertices)[0].max() < 1e-5
    assert cKDTree(tm.vertices).query(orig)[0].max() < 1e-5
    assert len(tm.faces) == mesh.n_faces
    assert tm.volume > 0  # still outward after the round trip
    err = centroid_error(tm, image)
    assert err < 0.03, f"texture vs albedo_fn mean abs error {err}"
    # The test can tell the v-flip convention apart: the flipped reading is clearly wrong.
    flipped = centroid_error(tm, image[::-1])
    assert flipped > 0.1, f"flipped texture also matches ({flipped}); test is not discriminative"


def test_obj_file_keeps_input_vertices(exported):
    mesh, paths = exported
    lines = paths["obj"].read_text().splitlines()
    v = np.array([[float(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    np.testing.assert_allclose(v, mesh.vertices.numpy(), atol=1e-6)
    assert sum(ln.startswith("f ") for ln in lines) == mesh.n_faces


def test_texture_is_srgb_encoded_linear_albedo(tmp_path):
    red = torch.tensor([0.8, 0.1, 0.1])
    paths = export_textured_mesh(_small_mesh(), lambda p: red.expand(len(p), 3), tmp_path, texture_size=32)
    png = np.asarray(Image.open(paths["texture"]).convert("RGB"))
    assert (png == [231, 89, 89]).all()  # sRGB codes of linear 0.8 and 0.1, not round(255 * albedo) = 204, 26
    glb = trimesh.load(paths["glb"], force="mesh")
    assert (np.asarray(glb.visual.material.baseColorTexture.convert("RGB")) == png).all()  # the same sRGB texels


def per_corner(tm: trimesh.Trimesh, to_world=lambda v: v) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each face corner's world position, UV and world normal, in the file's face order: (F, 3, 3|2|3)."""
    return to_world(tm.vertices[tm.faces]), tm.visual.uv[tm.faces], to_world(tm.vertex_normals[tm.faces])


def load_as_written(path) -> trimesh.Trimesh:
    """The file's one mesh with its own normals (trimesh's force="mesh" recomputes them)."""
    loaded = trimesh.load(path, process=False)
    return next(iter(loaded.geometry.values())) if isinstance(loaded, trimesh.Scene) else loaded


def test_obj_and_glb_round_trip_to_the_same_corners(exported):
    """Both files, loaded back with trimesh, hold the same faces with the same positions, UVs and normals (in
    world axes), those normals are the input surface's outward normals, and both textures are the PNG."""
    mesh, paths = exported
    obj, glb = load_as_written(paths["obj"]), load_as_written(paths["glb"])
    p_obj, uv_obj, n_obj = per_corner(obj)
    p_glb, uv_glb, n_glb = per_corner(glb, to_world=lambda v: v @ WORLD_TO_GLTF)
    assert len(obj.faces) == len(glb.faces) == mesh.n_faces
    np.testing.assert_allclose(p_glb, p_obj, atol=1e-5)  # the OBJ keeps 6 decimals, the GLB float32
    np.testing.assert_allclose(uv_glb, uv_obj, atol=1e-5)
    np.testing.assert_allclose(n_glb, n_obj, atol=1e-4)
    assert uv_obj.min() >= 0.0 and uv_obj.max() <= 1.0
    # the written normals, not ones trimesh recomputed: smooth (welded) vertex normals of the input sphere
    expected = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=False).vertex_normals
    nearest = cKDTree(mesh.vertices.numpy()).query(p_obj.reshape(-1, 3))[1]
    np.testing.assert_allclose(n_obj.reshape(-1, 3), expected[nearest], atol=1e-4)
    png = np.asarray(Image.open(paths["texture"]).convert("RGB"))
    assert (np.asarray(obj.visual.material.image.convert("RGB")) == png).all()
    assert (np.asarray(glb.visual.material.baseColorTexture.convert("RGB")) == png).all()


def test_obj_up_axis_y_is_the_glb_rotation(tmp_path, exported):
    mesh, paths_z = exported
    paths = export_textured_mesh(mesh, albedo_fn, tmp_path, texture_size=TEX, glb=False, up_axis="+y")
    assert read_obj_up_axis(paths["obj"]) == "+y" and read_obj_up_axis(paths_z["obj"]) == "+z"
    lines = paths["obj"].read_text().splitlines()
    v = np.array([[float(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    np.testing.assert_allclose(v, mesh.vertices.numpy() @ WORLD_TO_GLTF.T, atol=1e-6)  # (x, y, z) -> (x, z, -y)
    tm = trimesh.load(paths["obj"], force="mesh")
    assert tm.volume > 0  # a rotation: still outward
    image = np.asarray(tm.visual.material.image.convert("RGB"))
    err = centroid_error(tm, image, to_world=lambda p: p @ OBJ_AXES["+y"])
    assert err < 0.03, f"+y OBJ texture vs albedo_fn mean abs error {err}"
    with pytest.raises(ValueError, match="up_axis"):
        export_textured_mesh(_small_mesh(), albedo_fn, tmp_path, texture_size=32, up_axis="-z")


def test_texture_fills_background(exported):
    _, paths = exported
    img = np.asarray(Image.open(paths["texture"]))
    # Dilation leaves no untouched (black) texels; albedo on a r=0.4 sphere is >= 0.1 per channel.
    assert img.max(-1).min() > 0


def test_glb_is_y_up_rotation_with_texture(exported):
    mesh, paths = exported
    tm = trimesh.load(paths["glb"], force="mesh")
    assert tm.visual.uv is not None and len(tm.visual.uv) == len(tm.vertices)
    image = np.asarray(tm.visual.material.baseColorTexture.convert("RGB"))
    assert image.shape == (TEX, TEX, 3)
    world = mesh.vertices.numpy().astype(np.float64)
    expected = np.stack([world[:, 0], world[:, 2], -world[:, 1]], -1)  # (x, y, z) -> (x, z, -y)
    np.testing.assert_allclose(expected, world @ WORLD_TO_GLTF.T)
    assert cKDTree(expected).query(tm.vertices)[0].max() < 1e-5
    assert cKDTree(tm.vertices).query(expected)[0].max() < 1e-5
    assert tm.volume > 0
    err = centroid_error(tm, image, to_world=lambda v: v @ WORLD_TO_GLTF)  # inverse rotation
    assert err < 0.03, f"GLB texture vs albedo_fn mean abs error {err}"


def test_no_glb_and_custom_name(tmp_path):
    ico = trimesh.creation.icosphere(subdivisions=1, radius=0.3)
    mesh = Mesh(torch.tensor(ico.vertices, dtype=torch.float32), torch.tensor(ico.faces))
    paths = export_textured_mesh(mesh, albedo_fn, tmp_path, texture_size=64, name="a", glb=False)
    assert set(paths) == {"obj", "mtl", "texture"}
    assert paths["texture"].name == "a_texture_kd.png"
    assert "map_Kd a_texture_kd.png" in paths["mtl"].read_text()
    assert trimesh.load(paths["obj"], force="mesh").visual.material.image is not None


def _small_mesh() -> Mesh:
    ico = trimesh.creation.icosphere(subdivisions=0)
    return Mesh(torch.tensor(ico.vertices, dtype=torch.float32), torch.tensor(ico.faces))


def test_out_dir_under_a_file_gives_clear_error(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    target = blocker / "export"
    msg = r"cannot write the mesh export to '.*blocker/export'.*out_dir"
    with pytest.raises(ExportDirectoryError, match=msg):
        export_textured_mesh(_small_mesh(), albedo_fn, target, texture_size=32)
    assert blocker.read_text() == "keep me"


def test_read_only_dir_gives_clear_error_and_deletes_nothing(tmp_path, monkeypatch):
    # Root ignores chmod, so simulate the filesystem refusing the write probe.
    existing = tmp_path / "model.obj"
    existing.write_text("old export")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(export_mod.tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(OSError, match=rf"'{tmp_path}'.*Permission denied.*permissions"):
        export_textured_mesh(_small_mesh(), albedo_fn, tmp_path, texture_size=32)
    assert existing.read_text() == "old export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.obj"]


def test_triangle_atlas_round_trip(tmp_path):
    ico = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    mesh = Mesh(torch.tensor(ico.vertices, dtype=torch.float32), torch.tensor(ico.faces))
    paths = export_textured_mesh(mesh, albedo_fn, tmp_path, texture_size=TEX, unwrap="triangles")
    tm = trimesh.load(paths["obj"], force="mesh")
    image = np.asarray(tm.visual.material.image.convert("RGB"))
    assert len(tm.faces) == mesh.n_faces and tm.volume > 0
    err = centroid_error(tm, image)
    assert err < 0.03, f"per-triangle atlas texture error {err}"
    # UV triangles do not overlap: their total area fits in the unit square.
    uv = tm.visual.uv[tm.faces]
    area = 0.5 * np.abs(np.cross(uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0])).sum()
    assert 0.2 < area <= 1.0


def test_triangle_atlas_too_small_texture():
    with pytest.raises(ValueError, match="texture_size >= "):
        export_mod.unwrap_triangles(np.random.rand(3000, 3), np.arange(3000).reshape(1000, 3), 32)


def test_xatlas_crash_is_caught_and_auto_falls_back(tmp_path, monkeypatch):
    # xatlas really segfaults on some meshes; simulate that in the child process.
    monkeypatch.setattr(export_mod, "_XATLAS_CHILD",
                        "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    mesh = _small_mesh()
    v, f = mesh.vertices.numpy(), mesh.faces.numpy()
    with pytest.raises(RuntimeError, match="segmentation fault"):
        export_mod.unwrap_xatlas(v, f, 64)
    with pytest.warns(UserWarning, match="falling back to the per-triangle UV atlas"):
        paths = export_textured_mesh(mesh, albedo_fn, tmp_path, texture_size=64, glb=False)
    assert trimesh.load(paths["obj"], force="mesh").visual.uv is not None


def test_unknown_unwrap_method(tmp_path):
    with pytest.raises(ValueError, match="unwrap method"):
        export_textured_mesh(_small_mesh(), albedo_fn, tmp_path, texture_size=32, unwrap="magic")


def test_auto_uses_triangle_atlas_above_face_limit(monkeypatch):
    def no_xatlas(*args, **kwargs):
        raise AssertionError("xatlas must not run above xatlas_max_faces")

    monkeypatch.setattr(export_mod, "unwrap_xatlas", no_xatlas)
    mesh = _small_mesh()
    v, f = mesh.vertices.numpy(), mesh.faces.numpy()
    vm, nf, uv = export_mod.unwrap_uv(v, f, 64, "auto", xatlas_max_faces=10)
    assert len(uv) == 3 * len(f) and (vm[nf] == f).all()
