"""dreamfusion-toy-unet through launch.py: the shipped text-to-image toy prior guides a run, and a
prompt with a word outside the toy vocabulary stops it with a clear error."""
from __future__ import annotations

import json

import pytest

from models.priors.hf_loading import PROJECT_ROOT
from tests.conftest import launch

SHIPPED = PROJECT_ROOT / "models/priors/toy/weights/toy-text-to-image"
TINY = [
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "data.eval_height=32",
    "data.eval_width=32",
    "data.n_test_views=6",
    "system.export.texture_size=128",
    "system.geometry.isosurface_resolution=48",
    "system.geometry.isosurface_threshold=auto",
    "system.evaluator.grid_resolution=48",
    "system.evaluator.n_surface_samples=5000",
    "logger.tensorboard=false",
]


@pytest.fixture(autouse=True)
def needs_shipped_prior():
    if not SHIPPED.is_dir():
        pytest.skip(f"the shipped prior {SHIPPED} is not in this checkout")


def test_two_steps_with_the_shipped_prior(tmp_path, toy_cache):
    run = tmp_path / "run"
    result = launch(["--config-name", "dreamfusion-toy-unet", "system.prompt=a green torus", f"hydra.run.dir={run}", *TINY], toy_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"iou", "chamfer", "colour_error"} <= set(metrics)


def test_unknown_word_stops_the_run_with_the_vocabulary(tmp_path, toy_cache):
    # a valid toy prompt, but a negative prompt the toy tokenizer can't spell
    args = ["system.prompt=a red cube", "system.prompt_processor.negative_prompt=blurry", f"hydra.run.dir={tmp_path / 'r'}"]
    result = launch(["--config-name", "dreamfusion-toy-unet", *args, *TINY], toy_cache)
    assert result.returncode == 2
    assert "does not know ['blurry']" in result.stderr and "Traceback" not in result.stderr
