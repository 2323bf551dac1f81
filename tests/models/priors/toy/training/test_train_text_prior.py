"""Training the text-to-image toy prior through launch.py: checkpoints, resume, sample grids, the
automatic check, and a folder that the IF prior class loads."""
from __future__ import annotations

import json

from models.priors.deepfloyd_if import DeepFloydIFPrior, DeepFloydIFPriorConfig
from tests.conftest import launch

TINY = [
    "trainer.enable_progress_bar=false",
    "trainer.val_check_interval=2",
    "checkpoint.every_n_train_steps=2",
    "logger.tensorboard=false",
    "data.batch_size=4",
    "data.dataset.n_images=32",
    "data.dataset.resolution=16",
    "data.dataset.supersample=1",
    "system.architecture.sample_size=16",
    "system.architecture.block_out_channels=[32,32,32]",
    "system.architecture.attention_head_dim=16",
    "system.architecture.text_width=32",
    "system.samples_per_prompt=2",
    "system.sample_steps=2",
    "system.n_check_exemplars=4",
    "system.trained_prompts=[a red cube]",
    "system.held_out_prompts=[a yellow sphere]",
]


def test_train_then_resume(tmp_path, toy_cache):
    run = tmp_path / "run"
    common = ["--config-name", "train-toy-text-prior", *TINY, f"data.cache_path={tmp_path / 'images.pt'}"]
    result = launch([*common, "trainer.max_steps=2", f"hydra.run.dir={run}"], toy_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    save = run / "save"
    for name in ["it2-samples-trained.png", "it2-final-samples-held_out.png", "sample_check.json"]:
        assert (save / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ["trained/silhouette_iou", "held_out/colour_error", "held_out/a yellow sphere/colour_correct"]:
        assert key in metrics
    prior = DeepFloydIFPrior(DeepFloydIFPriorConfig(pretrained_model_name_or_path=str(save / "pretrained")))
    assert prior.image_size == 16
    assert next(prior.unet.parameters()).dtype.is_floating_point

    resumed = tmp_path / "resumed"
    result = launch(
        [*common, "trainer.max_steps=3", f"resume={run / 'ckpts' / 'last.ckpt'}", f"hydra.run.dir={resumed}"], toy_cache
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (resumed / "save" / "it3-final-samples-trained.png").is_file()  # continued from step 2, not from 0
