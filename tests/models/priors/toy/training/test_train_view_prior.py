"""train-toy-view-prior through launch.py: a 2-step run at tiny sizes trains, samples, checks and exports a loadable prior."""
from __future__ import annotations

import json

import torch

from tests.conftest import launch

TINY_VIEW_PRIOR_RUN = [
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "data.n_scenes=4",
    "data.views_per_scene=3",
    "data.batch_size=4",
    "data.supersample=1",
    "system.arch.block_out_channels=[16,32,32]",
    "system.arch.cross_attention_dim=32",
    "system.arch.encoder_hidden_size=32",
    "system.arch.encoder_projection_dim=32",
    "system.arch.encoder_heads=2",
    "system.sample_steps=2",
    "system.trained_check_prompts=[a red cube]",
    "system.held_out_check_prompts=[a green torus]",
    "system.check_cameras=[[20.0,90.0,1.6],[50.0,180.0,1.5]]",
]


def test_two_step_run_exports_a_loadable_view_prior(tmp_path, toy_cache):
    run_dir = tmp_path / "run"
    result = launch(
        ["--config-name", "train-toy-view-prior", *TINY_VIEW_PRIOR_RUN, f"data.cache_path={tmp_path / 'pairs.pt'}",
         f"hydra.run.dir={run_dir}"],
        toy_cache,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for expected in ["ckpts/last.ckpt", "save/it2-views.png", "save/it2-final-views.png", "save/sample_check.json",
                     "save/pretrained/model_index.json", "metrics.json", "configs/parsed.yaml"]:
        assert (run_dir / expected).is_file(), expected
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("trained", "held_out"):
        assert 0.0 <= metrics[f"{split}_mae"] <= 1.0 and 0.0 <= metrics[f"{split}_iou"] <= 1.0
    assert metrics["held_out_copy_cond_mae"] > 0.0  # the two check cameras differ from the cond camera
    ckpt = torch.load(run_dir / "ckpts/last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2 and "ema" in ckpt

    index = json.loads((run_dir / "save/pretrained/model_index.json").read_text())
    assert index["_class_name"] == "Zero1to3StableDiffusionPipeline"
    assert index["cc_projection"] == ["models.priors.zero123", "CCProjection"] and "vae" not in index
    from safetensors.torch import load_file

    weights = load_file(run_dir / "save/pretrained/unet/diffusion_pytorch_model.safetensors")
    assert all(w.dtype == torch.float16 for w in weights.values())  # save_dtype float16

    from models.priors.zero123 import Zero123Prior, Zero123PriorConfig

    prior = Zero123Prior(Zero123PriorConfig(pretrained_model_name_or_path=str(run_dir / "save/pretrained")))
    prior.set_condition_image(torch.rand(1, 32, 32, 3), 20.0, 0.0, 1.6)
    batch = {"elevation": torch.tensor([30.0]), "azimuth": torch.tensor([45.0]), "distance": torch.tensor([1.6])}
    eps_c, eps_u = prior.predict_noise(torch.randn(1, 3, 32, 32), torch.tensor([500]), None, batch, need_uncond=True)
    assert eps_c.shape == eps_u.shape == (1, 3, 32, 32) and torch.isfinite(eps_c).all()
