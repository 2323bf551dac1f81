"""Zero-1-to-3 through launch.py: zero123 and stable-zero123 on tiny random Zero-1-to-3 folders (the
real loading code and classes), zero123-toy on the shipped toy view prior, each two steps through
train, test video, export and (toy) scoring."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import launch

SHORT_RUN = [
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "data.random_camera.eval_height=32",
    "data.random_camera.eval_width=32",
    "data.random_camera.n_test_views=4",
    "system.renderer.num_samples_per_ray=32",
    "system.renderer.grid_resolution=32",
    "system.geometry.isosurface_resolution=32",
    "system.export.texture_size=64",
    "logger.tensorboard=false",
]
# threestudio's sizes are for a GPU: two steps at 128-512² with batches of 12 would take minutes here
SMALL_REAL = [
    "data.height=32", "data.width=32", "data.resolution_milestones=[]",
    "data.random_camera.height=32", "data.random_camera.width=32", "data.random_camera.batch_size=2",
    "data.random_camera.resolution_milestones=[]",
    "system.geometry.pos_encoding.log2_hashmap_size=14",
    "system.geometry.isosurface_threshold=auto",  # 2 steps leave densities far below the configured level
]


def check_run(run_dir: Path) -> dict:
    for expected in ["ckpts/last.ckpt", "save/it2-val-0.png", "save/it2-test.mp4", "save/export/model.obj",
                     "save/export/texture_kd.png", "save/export/model.glb", "metrics.json"]:
        assert (run_dir / expected).is_file(), expected
    ckpt = torch.load(run_dir / "ckpts/last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert not any(k.startswith("guidance.") for k in ckpt["state_dict"])  # the frozen prior stays out
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("method, fixture", [("zero123", "tiny_zero123_dir"), ("stable-zero123", "tiny_stable_zero123_dir")])
def test_two_steps_on_a_tiny_zero123_folder(method, fixture, request, toy_picture, tmp_path, toy_cache):
    model = request.getfixturevalue(fixture)
    run_dir = tmp_path / method
    result = launch(["--config-name", method, f"data.image_path={toy_picture}", *SHORT_RUN, *SMALL_REAL,
                     f"system.guidance.prior.pretrained_model_name_or_path={model}", f"hydra.run.dir={run_dir}"], toy_cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = check_run(run_dir)
    assert metrics["n_faces"] > 0 and "iou" not in metrics  # no toy scene named: not scored
    assert str(model) in (run_dir / "configs/parsed.yaml").read_text()


def test_two_steps_of_zero123_toy_are_scored(toy_picture, tmp_path, toy_cache):
    run_dir = tmp_path / "zero123-toy"
    result = launch(["--config-name", "zero123-toy", f"data.image_path={toy_picture}", *SHORT_RUN,
                     "system.geometry.isosurface_threshold=auto", "system.evaluator.scene=a red cube",
                     "system.evaluator.grid_resolution=48", "system.evaluator.n_surface_samples=5000",
                     f"hydra.run.dir={run_dir}"], toy_cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = check_run(run_dir)
    assert 0.0 <= metrics["iou"] <= 1.0 and metrics["chamfer"] > 0


def test_the_run_directory_is_named_after_the_picture(toy_picture, tmp_path, toy_cache):
    result = launch(["--config-name", "zero123-toy", f"data.image_path={toy_picture}", "mode=bogus",
                     f"hydra.run.dir={tmp_path}/${{tag}}"], toy_cache, timeout=300)
    # stopped by the bad mode before training, so the folder is removed again; its name is in the message
    assert f"run directory {tmp_path / 'red_cube_rgba'} was removed" in result.stderr, result.stderr[-2000:]


def test_a_bad_picture_stops_before_training(tmp_path, toy_cache):
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    result = launch(["--config-name", "zero123-toy", f"data.image_path={bad}", f"hydra.run.dir={tmp_path / 'run'}"],
                    toy_cache, timeout=300)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr and str(bad) in result.stderr
    assert not (tmp_path / "run" / "ckpts").exists()


@pytest.mark.parametrize("method", ["zero123", "stable-zero123"])
def test_missing_weights_stop_the_run_quickly_with_the_fix(method, toy_picture, tmp_path, toy_cache):
    name = "nobody-here/not-a-zero123"
    result = launch(["--config-name", method, f"data.image_path={toy_picture}",
                     f"system.guidance.prior.pretrained_model_name_or_path={name}", f"hydra.run.dir={tmp_path / 'run'}"],
                    toy_cache, timeout=120)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert name in result.stderr and "hf download" in result.stderr and "pretrained_model_name_or_path=" in result.stderr
