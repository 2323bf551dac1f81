"""ProlificDreamer stages 2 (geometry) and 3 (texture) through launch.py, each taking over the last
by checkpoint: stage 1 -> 2 -> 3 on the shipped toy prior and on a tiny random SD pipeline; stage 2
moves the surface, stage 3 holds it and trains the texture; a missing or wrong earlier run is a
clear error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from framework.config import instantiate
from tests.conftest import TINY_TOY_RUN, launch
from tests.systems.test_prolificdreamer import SHIPPED, TINY, TINY_SD
from tests.test_configs import compose_method

# the stage-1 quick settings for a DMTet stage: no density-field keys, a small grid and small renders
TINY_MESH = [o for o in TINY_TOY_RUN if not o.startswith("system.guidance.prior.")] + [
    "data.height=32", "data.width=32", "system.geometry.isosurface_resolution=32",
]
TINY_SD_MESH = [o for o in TINY_SD if not o.startswith(("system.renderer.", "system.geometry.isosurface_threshold"))]
PROMPT = "system.prompt=a green torus"


def run_ok(args: list[str], cache: Path) -> str:
    result = launch(args, cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def check_run(run: Path) -> dict:
    for expected in ["ckpts/last.ckpt", "save/export/model.obj", "save/export/texture_kd.png", "metrics.json", "configs/parsed.yaml"]:
        assert (run / expected).is_file(), expected
    assert list((run / "save").glob("it*-test.mp4"))
    return json.loads((run / "metrics.json").read_text())


def state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "ckpts" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def toy_chain(tmp_path_factory, toy_cache) -> dict[str, Path]:
    if not SHIPPED.is_dir():
        pytest.skip(f"the shipped prior {SHIPPED} is not in this checkout")
    root = tmp_path_factory.mktemp("pd-stages-toy")
    runs = {"stage1": root / "s1", "geometry": root / "s2", "texture": root / "s3"}
    run_ok(["--config-name", "prolificdreamer-toy", PROMPT, f"hydra.run.dir={runs['stage1']}", *TINY], toy_cache)
    out = run_ok(["--config-name", "prolificdreamer-geometry-toy", PROMPT, *TINY_MESH, f"hydra.run.dir={runs['geometry']}",
                  f"system.geometry_convert_from={runs['stage1'] / 'ckpts/last.ckpt'}"], toy_cache)
    assert "prolificdreamer geometry: DMTet initialised from" in out
    out = run_ok(["--config-name", "prolificdreamer-texture-toy", PROMPT, *TINY_MESH, f"hydra.run.dir={runs['texture']}",
                  f"system.geometry_convert_from={runs['geometry'] / 'ckpts/last.ckpt'}"], toy_cache)
    assert "prolificdreamer texture: DMTet taken over from" in out
    return runs


def test_toy_chain_trains_tests_exports_and_scores_every_stage(toy_chain):
    for stage in ("geometry", "texture"):
        metrics = check_run(toy_chain[stage])
        assert {"iou", "chamfer", "colour_error"} <= set(metrics) and metrics["n_faces"] > 0, stage


def test_geometry_stage_moves_the_surface_it_took_over(toy_chain, tmp_path):
    """Stage 2 starts from stage 1's density (built again here as the run built it) and changes it."""
    cfg = compose_method("prolificdreamer-geometry-toy", [PROMPT, *TINY_MESH,
                         f"system.geometry_convert_from={toy_chain['stage1'] / 'ckpts/last.ckpt'}"])
    system = instantiate(cfg.system, run_dir=str(tmp_path))
    system.initialise_for_training()
    trained = state(toy_chain["geometry"])
    assert not torch.equal(trained["geometry.sdf"], system.geometry.sdf.detach())
    assert trained["geometry.deformation"].abs().max() > 0  # offsets start at zero
    for name in ("encoding", "feature_network"):  # geometry only: the inherited texture is left as it came
        for key, value in getattr(system.geometry, name).state_dict().items():
            assert torch.equal(trained[f"geometry.{name}.{key}"], value), key


def test_texture_stage_holds_the_surface_and_trains_the_texture(toy_chain):
    before, after = state(toy_chain["geometry"]), state(toy_chain["texture"])
    for key in ("geometry.sdf", "geometry.deformation"):
        assert torch.equal(before[key], after[key]), key
    texture = [k for k in after if k.startswith(("geometry.encoding.", "geometry.feature_network."))]
    assert texture and any(not torch.equal(before[k], after[k]) for k in texture)


def test_texture_stage_gives_the_surface_no_gradient_and_no_optimiser_group(tmp_path):
    system = instantiate(compose_method("prolificdreamer-texture-toy", [PROMPT]).system, run_dir=str(tmp_path))
    geometry = system.geometry
    assert not geometry.sdf.requires_grad and not geometry.deformation.requires_grad
    optimised = {id(p) for group in system.configure_optimizers().param_groups for p in group["params"]}
    assert id(geometry.sdf) not in optimised and id(geometry.deformation) not in optimised
    assert {id(p) for p in geometry.encoding.parameters()} <= optimised
    batch = instantiate(compose_method("prolificdreamer-texture-toy", [PROMPT, "data.height=16", "data.width=16"]).data).train_dataset.sample()
    system.render(batch)["comp_rgb"].mean().backward()
    assert geometry.sdf.grad is None and geometry.deformation.grad is None
    assert any(p.grad is not None for p in geometry.feature_network.parameters())


def test_a_stage_run_exports_from_its_own_checkpoint(toy_chain, tmp_path, toy_cache):
    again = tmp_path / "export"
    run_ok(["--config-name", "prolificdreamer-texture-toy", PROMPT, *TINY_MESH, "mode=export",
            f"resume={toy_chain['texture'] / 'ckpts/last.ckpt'}", f"hydra.run.dir={again}"], toy_cache)
    assert (again / "save/export/model.obj").is_file()


@pytest.mark.parametrize("stage, earlier", [("geometry", "prolificdreamer-toy"), ("texture", "prolificdreamer-geometry-toy")])
@pytest.mark.parametrize("value", [None, "null"])
def test_a_stage_without_its_earlier_run_names_the_key_and_the_run_to_make(stage, earlier, value, tmp_path, toy_cache):
    args = ["--config-name", f"prolificdreamer-{stage}-toy", PROMPT, *TINY_MESH, f"hydra.run.dir={tmp_path / 'r'}"]
    result = launch(args + ([f"system.geometry_convert_from={value}"] if value else []), toy_cache)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "system.geometry_convert_from" in result.stderr and earlier in result.stderr
    assert "Traceback" not in result.stderr


def test_texture_stage_from_a_stage_one_checkpoint_is_a_clear_error(toy_chain, tmp_path, toy_cache):
    args = ["--config-name", "prolificdreamer-texture-toy", PROMPT, *TINY_MESH, f"hydra.run.dir={tmp_path / 'r'}",
            f"system.geometry_convert_from={toy_chain['stage1'] / 'ckpts/last.ckpt'}"]
    result = launch(args, toy_cache)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "DMTet" in result.stderr and "ImplicitVolume" in result.stderr and "prolificdreamer-geometry" in result.stderr
    assert "Traceback" not in result.stderr


def test_published_stages_chain_on_tiny_sd(tiny_sd_dir, tmp_path, toy_cache):
    """prolificdreamer -> prolificdreamer-geometry (SDS on normals) -> prolificdreamer-texture (VSD), two steps each."""
    model = f"system.guidance.prior.pretrained_model_name_or_path={tiny_sd_dir}"
    one_model = "system.guidance.lora_model_name_or_path=null"
    s1, s2, s3 = tmp_path / "s1", tmp_path / "s2", tmp_path / "s3"
    run_ok(["--config-name", "prolificdreamer", "system.prompt=a red cube", model, one_model, *TINY_SD, f"hydra.run.dir={s1}"], toy_cache)
    run_ok(["--config-name", "prolificdreamer-geometry", "system.prompt=a red cube", model, *TINY_SD_MESH,
            f"system.geometry_convert_from={s1 / 'ckpts/last.ckpt'}", f"hydra.run.dir={s2}"], toy_cache)
    check_run(s2)
    assert state(s2)["geometry.deformation"].abs().max() > 0  # the normals' SDS moved the surface
    run_ok(["--config-name", "prolificdreamer-texture", "system.prompt=a red cube", model, one_model, *TINY_SD_MESH,
            f"system.geometry_convert_from={s2 / 'ckpts/last.ckpt'}", f"hydra.run.dir={s3}"], toy_cache)
    check_run(s3)
    before, after = state(s2), state(s3)
    assert torch.equal(before["geometry.sdf"], after["geometry.sdf"])
    assert torch.equal(before["geometry.deformation"], after["geometry.deformation"])
    assert any(".lora_" in k for k in after)  # VSD's LoRA copy trained and was kept
