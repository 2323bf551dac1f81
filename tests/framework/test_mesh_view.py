"""`python -m framework view` (framework/mesh_view.py): a run's exported mesh, a sweep's meshes in a row,
the clear errors, and the page in headless Chromium (tests/browser_support.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from framework.export import export_textured_mesh
from framework.interfaces import Mesh
from framework.mesh_view import load_mesh, serve
from framework.viser_server import stop_server
from tests.browser_support import browser_page, image_spread, pixel_difference
from tests.conftest import REPO


def fake_run(run_dir: Path, shape: str, colour: tuple[float, float, float], glb: bool = True, iou: float = 0.9) -> Path:
    """A run folder holding what a training run exports: save/export/model.{obj,mtl,glb}, texture_kd.png."""
    import trimesh

    solid = trimesh.creation.icosphere(subdivisions=3, radius=0.5) if shape == "sphere" else trimesh.creation.box((0.8, 0.8, 0.8))
    mesh = Mesh(torch.tensor(solid.vertices, dtype=torch.float32), torch.tensor(solid.faces, dtype=torch.long))
    albedo = lambda points: torch.tensor(colour).expand(points.shape[0], 3)  # noqa: E731
    export_textured_mesh(mesh, albedo, run_dir / "save" / "export", texture_size=64, glb=glb, unwrap="triangles")
    (run_dir / "metrics.json").write_text(json.dumps({"iou": iou}))
    return run_dir


def view_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framework", "view", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_the_glb_comes_back_in_world_coordinates(tmp_path):
    run = fake_run(tmp_path / "run", "box", (1.0, 0.0, 0.0))
    from_glb, source = load_mesh(run / "save" / "export")
    assert source.name == "model.glb"
    (run / "save" / "export" / "model.glb").unlink()
    from_obj, source = load_mesh(run / "save" / "export")
    assert source.name == "model.obj"
    np.testing.assert_allclose(from_glb.bounds, from_obj.bounds, atol=1e-5)  # +z up in both (glTF is +y up)


def test_a_sweep_folder_shows_each_run_in_a_row_with_labels(tmp_path):
    sweep = tmp_path / "sweep@20261201-180000"
    fake_run(sweep / "a_red_cube@20261201-180000-0", "box", (1.0, 0.0, 0.0), iou=0.94)
    fake_run(sweep / "a_blue_sphere@20261201-180000-1", "sphere", (0.0, 0.0, 1.0), glb=False)
    server, runs = serve(sweep, port=0)
    try:
        names = set(server.scene._handle_from_node_name)
        assert {"/runs/0", "/runs/1", "/labels/0", "/labels/1"} <= names
        assert [r.source.name for r in runs] == ["model.obj", "model.glb"]  # folder order; the OBJ where no GLB
        labels = [server.scene._handle_from_node_name[f"/labels/{i}"].text for i in range(2)]
        assert labels == ["a_blue_sphere@20261201-180000-1  IoU 0.900", "a_red_cube@20261201-180000-0  IoU 0.940"]
        positions = [server.scene._handle_from_node_name[f"/runs/{i}"].position for i in range(2)]
        assert positions[0][1] < 0 < positions[1][1] and positions[0][0] == positions[1][0] == 0  # side by side
    finally:
        stop_server(server)


def test_clear_errors(tmp_path):
    missing = view_cli(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no such folder" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "empty-run" / "ckpts").mkdir(parents=True)
    empty = view_cli(str(tmp_path / "empty-run"))
    assert empty.returncode == 2 and "no exported mesh" in empty.stderr and "mode=export" in empty.stderr
    assert view_cli().returncode == 2  # argparse: the folder is required
    unknown = subprocess.run([sys.executable, "-m", "framework", "show"], cwd=REPO, capture_output=True, text=True)
    assert unknown.returncode == 2 and "usage: python -m framework" in unknown.stderr


def test_view_page_in_a_browser(tmp_path):
    run = fake_run(tmp_path / "a_red_cube@20261201-180000", "box", (0.9, 0.1, 0.1))
    shots = tmp_path / "screenshots"
    shots.mkdir()
    server, _ = serve(run, port=0)
    try:
        with browser_page() as page:
            page.goto(f"http://127.0.0.1:{server.get_port()}")
            page.wait_for_selector("canvas", timeout=60_000)
            page.wait_for_timeout(4000)
            assert len(server.get_clients()) == 1
            page.screenshot(path=shots / "view.png")
            server.scene._handle_from_node_name["/runs/0"].visible = False
            page.wait_for_timeout(1500)
            page.screenshot(path=shots / "view-empty.png")
            errors = list(page.console_errors)
    finally:
        stop_server(server)
    assert image_spread(shots / "view.png") > 5, "the screenshot is blank"
    assert pixel_difference(shots / "view.png", shots / "view-empty.png") > 0.5, "the mesh is not drawn"
    from PIL import Image

    pixels = np.asarray(Image.open(shots / "view.png").convert("RGB"), dtype=np.int16)
    red = (pixels[..., 0] > 120) & (pixels[..., 0] > pixels[..., 1] + 50) & (pixels[..., 0] > pixels[..., 2] + 50)
    assert red.mean() > 0.005, f"no red cube on screen ({red.mean():.4f} of the pixels are red); console: {errors}"
