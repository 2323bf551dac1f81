"""dreamfusion-toy-unet through launch.py: the shipped text-to-image toy prior guides a run, and a
prompt with a word outside the toy vocabulary stops it with a clear error."""
from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from models.priors.hf_loading import PROJECT_ROOT
from tests.conftest import TINY_TOY_RUN, launch
from tests.test_configs import compose_method

SHIPPED = PROJECT_ROOT / "models/priors/toy/weights/toy-text-to-image"
# the toy run's quick settings, minus the exact-score prior's (this prior has no exemplar bank)
TINY = [o for o in TINY_TOY_RUN if not o.startswith("system.guidance.prior.")] + ["system.geometry.isosurface_threshold=auto"]


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


def test_method_cameras_are_those_the_prior_was_trained_on():
    """TOYWORLD.md: cameras come from the ranges of the method that uses them. The text prior is not told
    the camera distance or field of view, so a method drawing others would ask it about views it never saw
    (and with a distance range it could not tell an object's size: SDS grows it to the largest plausible)."""
    method = compose_method("dreamfusion-toy-unet").data
    trained = OmegaConf.load(SHIPPED / "training-config.yaml").data.dataset
    for key in ("elevation_range", "camera_distance_range", "fovy_range"):
        assert list(method[key]) == list(trained[key]), key
    assert method.height == method.width == trained.resolution
