"""dreamfusion-sd / dreamfusion-if through launch.py on tiny random pipelines (a model-path override).

The real weights can't exist here; the tiny folders hold the same classes, so these runs go through
the same loading, prompt processing, guidance, training, test video and export code as a GPU run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import launch

TINY_REAL_RUN = [
    "system.prompt=a red cube",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "data.eval_height=32",
    "data.eval_width=32",
    "data.n_test_views=4",
    "system.renderer.num_samples_per_ray=32",
    "system.renderer.grid_resolution=32",
    "system.geometry.isosurface_resolution=32",
    "system.geometry.isosurface_threshold=auto",  # 2 steps leave densities far below threestudio's 25
    "system.export.texture_size=64",
    "logger.tensorboard=false",
]
SMALL_HASH_GRID = ["system.geometry.pos_encoding.log2_hashmap_size=14"]
SMALL = {"dreamfusion-sd": SMALL_HASH_GRID, "dreamfusion-if": SMALL_HASH_GRID, "sjc": ["system.geometry.grid_size=[32,32,32]"]}


@pytest.mark.parametrize(
    "method, folder", [("dreamfusion-sd", "tiny_sd_dir"), ("dreamfusion-if", "tiny_if_dir"), ("sjc", "tiny_sd_dir")]
)
def test_two_step_run_on_a_tiny_pipeline(method, folder, request, tmp_path, toy_cache):
    model = request.getfixturevalue(folder)
    run_dir = tmp_path / method
    result = launch(
        ["--config-name", method, *TINY_REAL_RUN, *SMALL[method], f"system.guidance.prior.pretrained_model_name_or_path={model}",
         f"hydra.run.dir={run_dir}"],
        toy_cache,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for expected in ["ckpts/last.ckpt", "save/it2-val-0.png", "save/it2-test.mp4", "save/export/model.obj",
                     "save/export/texture_kd.png", "save/export/model.glb", "metrics.json", "configs/parsed.yaml"]:
        assert (run_dir / expected).is_file(), expected
    parsed = (run_dir / "configs/parsed.yaml").read_text()
    assert str(model) in parsed  # the prompt processor followed the prior's path
    ckpt = torch.load(run_dir / "ckpts/last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert not any(k.startswith(("guidance.", "prompt_processor.")) for k in ckpt["state_dict"])
    assert json.loads((run_dir / "metrics.json").read_text())["n_faces"] > 0
    # The embeddings went to the session's cache: a second run would not load the text encoder.
    assert any((Path(toy_cache) / "text_embeddings").glob("*.pt"))


@pytest.mark.parametrize("method", ["dreamfusion-sd", "dreamfusion-if", "sjc"])
def test_missing_weights_stop_the_run_quickly_with_the_fix(method, tmp_path, toy_cache):
    name = "nobody-here/not-a-real-model"
    start = time.perf_counter()
    result = launch(
        ["--config-name", method, "system.prompt=a hamburger", f"system.guidance.prior.pretrained_model_name_or_path={name}",
         f"hydra.run.dir={tmp_path / 'run'}"],
        toy_cache,
        timeout=120,  # a hang (a network retry loop) fails here instead of blocking the suite
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    err = result.stderr
    assert "Traceback" not in err
    assert name in err and "hf download" in err and "pretrained_model_name_or_path=" in err
    print(f"{method}: missing weights reported after {elapsed:.1f} s")
