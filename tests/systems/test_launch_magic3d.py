"""Magic3D through launch.py: coarse then refine (the refine names the coarse checkpoint), toy and SD/IF."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_TOY_RUN, launch
from tests.systems.test_launch_real_priors import SMALL_HASH_GRID, TINY_REAL_RUN

SMALL_REFINE = ["data.height=32", "data.width=32", "system.geometry.isosurface_resolution=24"]


def run_ok(args: list[str], cache: Path) -> str:
    result = launch(args, cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def check_run(run_dir: Path) -> None:
    for expected in ["ckpts/last.ckpt", "save/it2-test.mp4", "save/export/model.obj", "save/export/texture_kd.png",
                     "save/export/model.glb", "metrics.json", "configs/parsed.yaml"]:
        assert (run_dir / expected).is_file(), expected


def test_toy_coarse_then_refine(tmp_path, toy_cache):
    coarse = tmp_path / "coarse"
    run_ok(["--config-name", "magic3d-coarse-toy", *TINY_TOY_RUN, f"hydra.run.dir={coarse}"], toy_cache)
    check_run(coarse)
    refine = tmp_path / "refine"
    out = run_ok(
        ["--config-name", "magic3d-refine-toy", *TINY_TOY_RUN, *SMALL_REFINE,
         f"system.geometry_convert_from={coarse / 'ckpts/last.ckpt'}", f"hydra.run.dir={refine}"],
        toy_cache,
    )
    check_run(refine)
    assert "DMTet initialised from" in out
    metrics = json.loads((refine / "metrics.json").read_text())
    assert metrics["n_faces"] > 0 and 0 <= metrics["iou"] <= 1
    state = torch.load(refine / "ckpts/last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert "geometry.sdf" in state and "geometry.deformation" in state
    # The refine checkpoint alone exports again (the coarse run is not needed any more).
    again = tmp_path / "export"
    run_ok(["--config-name", "magic3d-refine-toy", *TINY_TOY_RUN, *SMALL_REFINE, "mode=export",
            f"system.geometry_convert_from={tmp_path / 'gone.ckpt'}", f"resume={refine / 'ckpts/last.ckpt'}",
            f"hydra.run.dir={again}"], toy_cache)
    assert (again / "save/export/model.obj").is_file()


def test_sd_coarse_then_refine_on_a_tiny_pipeline(tmp_path, toy_cache, tiny_sd_dir):
    model = f"system.guidance.prior.pretrained_model_name_or_path={tiny_sd_dir}"
    coarse = tmp_path / "coarse"
    run_ok(["--config-name", "magic3d-coarse-sd", *TINY_REAL_RUN, *SMALL_HASH_GRID, model, f"hydra.run.dir={coarse}"], toy_cache)
    check_run(coarse)
    refine = tmp_path / "refine"
    small = [o for o in TINY_REAL_RUN if not o.startswith(("system.renderer.", "system.geometry.isosurface_threshold"))]
    out = run_ok(["--config-name", "magic3d-refine-sd", *small, *SMALL_HASH_GRID, *SMALL_REFINE, model,
                  f"system.geometry_convert_from={coarse / 'ckpts/last.ckpt'}", f"hydra.run.dir={refine}"], toy_cache)
    check_run(refine)
    assert "DMTet initialised from" in out


def test_if_coarse_on_a_tiny_pipeline(tmp_path, toy_cache, tiny_if_dir):
    run_dir = tmp_path / "coarse-if"
    run_ok(["--config-name", "magic3d-coarse-if", *TINY_REAL_RUN, *SMALL_HASH_GRID,
            f"system.guidance.prior.pretrained_model_name_or_path={tiny_if_dir}", f"hydra.run.dir={run_dir}"], toy_cache)
    check_run(run_dir)


@pytest.mark.parametrize(
    "override, expected",
    [
        (None, "system.geometry_convert_from"),  # required: which coarse run to refine
        ("system.geometry_convert_from=/no/such/run/ckpts/last.ckpt", "no such checkpoint"),
    ],
)
def test_refine_without_a_coarse_run_is_a_clear_error(override, expected, tmp_path, toy_cache):
    args = ["--config-name", "magic3d-refine-toy", *TINY_TOY_RUN, *SMALL_REFINE, f"hydra.run.dir={tmp_path / 'r'}"]
    result = launch(args + ([override] if override else []), toy_cache)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert expected in result.stderr and "Traceback" not in result.stderr
