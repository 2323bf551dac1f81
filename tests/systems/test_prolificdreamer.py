"""ProlificDreamer stage 1 through launch.py: VSD's LoRA copy trains with the 3D model in its own
optimiser group, is kept in checkpoints without the frozen base, and comes back with `resume=`."""
from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch

from framework.config import instantiate
from models.priors.hf_loading import PROJECT_ROOT
from tests.conftest import TINY_TOY_RUN, launch
from tests.test_configs import compose_method

SHIPPED = PROJECT_ROOT / "models/priors/toy/weights/toy-text-to-image"
TINY = [o for o in TINY_TOY_RUN if not o.startswith("system.guidance.prior.")] + ["system.geometry.isosurface_threshold=auto"]
# the published stage 1, shrunk to seconds on a tiny random SD pipeline
TINY_SD = [
    "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
    "data.height=32", "data.width=32", "data.resolution_milestones=[]", "data.eval_height=32", "data.eval_width=32",
    "data.n_test_views=4", "system.renderer.num_samples_per_ray=32", "system.geometry.pos_encoding.n_levels=4",
    "system.geometry.pos_encoding.log2_hashmap_size=12", "system.geometry.isosurface_resolution=32",
    "system.geometry.isosurface_threshold=auto", "system.export.texture_size=64", "logger.tensorboard=false",
]


def trainable_guidance_names(system) -> set[str]:
    ids = {id(p) for p in system.guidance.trainable_parameters()}
    return {f"guidance.{n}" for n, p in system.guidance.named_parameters() if id(p) in ids}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, toy_cache):
    if not SHIPPED.is_dir():
        pytest.skip(f"the shipped prior {SHIPPED} is not in this checkout")
    run = tmp_path_factory.mktemp("pd-toy") / "run"
    result = launch(["--config-name", "prolificdreamer-toy", "system.prompt=a green torus", f"hydra.run.dir={run}", *TINY], toy_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def test_two_steps_train_test_and_export_on_the_toy_prior(toy_run):
    metrics = json.loads((toy_run / "metrics.json").read_text())
    assert {"iou", "chamfer", "colour_error"} <= set(metrics)
    assert (toy_run / "save" / "export" / "model.obj").is_file() and list((toy_run / "save").glob("it*-test.mp4"))


def test_only_lora_and_camera_train_in_the_guidance_and_their_group_has_its_lr(toy_run):
    system = instantiate(compose_method("prolificdreamer-toy", ["system.prompt=a green torus"]).system)
    trainable = {f"guidance.{n}" for n, p in system.guidance.named_parameters() if p.requires_grad}
    assert trainable == trainable_guidance_names(system)
    assert all(".lora_" in n or n.startswith("guidance.camera_embedding.") for n in trainable)
    optimizer = system.configure_optimizers()
    (group,) = [g for g in optimizer.param_groups if g["name"] == "guidance"]
    assert group["lr"] == pytest.approx(1e-3)  # prolificdreamer-toy's (the published 1e-4 is prolificdreamer's)
    assert {id(p) for p in group["params"]} == {id(p) for p in system.guidance.trainable_parameters()}


def test_checkpoint_keeps_the_lora_copy_without_the_frozen_base_and_resume_restores_it(toy_run):
    checkpoint = torch.load(toy_run / "ckpts" / "last.ckpt", map_location="cpu", weights_only=False)
    state = checkpoint["state_dict"]
    system = instantiate(compose_method("prolificdreamer-toy", ["system.prompt=a green torus"]).system)
    lora_keys = trainable_guidance_names(system)
    assert lora_keys <= set(state)
    frozen = [k for k in state if k.startswith(("guidance.", "prompt_processor.")) and k not in lora_keys]
    assert frozen == []  # the base UNet and text encoder stay out of the file
    assert any((state[k] != system.state_dict()[k]).any() for k in lora_keys)  # the saved LoRA has trained

    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    datamodule = instantiate(compose_method("prolificdreamer-toy", ["system.prompt=a green torus"]).data)
    trainer.fit(system, datamodule=datamodule, ckpt_path=str(toy_run / "ckpts" / "last.ckpt"))
    restored = system.state_dict()
    for key in lora_keys:
        assert torch.equal(restored[key], state[key]), key
    saved_optimizer = checkpoint["optimizer_states"][0]
    now = trainer.optimizers[0].state_dict()
    assert [g["lr"] for g in now["param_groups"]] == [g["lr"] for g in saved_optimizer["param_groups"]]
    for index, saved in saved_optimizer["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(now["state"][index][name], saved[name])


@pytest.mark.parametrize("lora", ["one-model", "two-models"])
def test_published_stage_one_runs_two_steps_on_tiny_sd(lora, tiny_sd_dir, tmp_path, toy_cache):
    from models.priors.tiny_pipelines import save_tiny_stable_diffusion

    lora_path = "null" if lora == "one-model" else str(save_tiny_stable_diffusion(tmp_path / "v", prediction_type="v_prediction"))
    run = tmp_path / "run"
    args = [
        "--config-name", "prolificdreamer", "system.prompt=a red cube", f"hydra.run.dir={run}",
        f"system.guidance.prior.pretrained_model_name_or_path={tiny_sd_dir}",
        f"system.guidance.lora_model_name_or_path={lora_path}", *TINY_SD,
    ]
    result = launch(args, toy_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "save" / "export" / "model.obj").is_file() and (run / "metrics.json").is_file()
    state = torch.load(run / "ckpts" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    prefix = "guidance.prior.unet." if lora == "one-model" else "guidance.lora_unet."
    assert any(k.startswith(prefix) and ".lora_" in k for k in state)
    assert not any(k.startswith("guidance.") and ".lora_" not in k and "camera_embedding" not in k for k in state)
