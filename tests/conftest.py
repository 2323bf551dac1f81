"""Shared test fixtures: a tiny, fast toy DreamFusion run configuration."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Under pytest-xdist each worker gets one core: two torch threads per worker on a 2-core machine
# contend badly (tiny ops become 100x slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]

# Overrides that make a toy run take seconds: tiny exemplar bank, small eval renders, few test views.
TINY_TOY_RUN = [
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "data.eval_height=32",
    "data.eval_width=32",
    "data.n_test_views=6",
    "system.guidance.prior.n_exemplars=64",
    "system.guidance.prior.k_nearest=8",
    "system.guidance.prior.supersample=1",
    "system.guidance.prior.n_uncond_exemplars=8",
    "system.export.texture_size=128",
    "system.geometry.isosurface_resolution=48",
    "system.evaluator.grid_resolution=48",
    "system.evaluator.n_surface_samples=5000",
    "logger.tensorboard=false",
]


@pytest.fixture(scope="session")
def toy_cache(tmp_path_factory) -> Path:
    """One exemplar cache for the whole test session."""
    return tmp_path_factory.mktemp("toy-cache")


def launch(args: list[str], cache: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, TOY3D_CACHE=str(cache), PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="0")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, str(REPO / "launch.py"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, toy_cache) -> tuple[Path, subprocess.CompletedProcess]:
    """One finished two-step toy DreamFusion run (train, test, export; with the step-time breakdown and its progress
    lines: stdout is captured, not a terminal) and launch.py's result, for the session (tests/systems/test_launch.py, test_report_page.py)."""
    run_dir = tmp_path_factory.mktemp("runs") / "first"
    overrides = [o for o in TINY_TOY_RUN if not o.startswith("trainer.enable_progress_bar")]  # its progress, as in a log
    result = launch(["--config-name", "dreamfusion-toy", *overrides, "trainer.step_times=true", f"hydra.run.dir={run_dir}"],
                    toy_cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir, result


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    """A tiny random Stable Diffusion folder (real classes, diffusers layout), built once per session."""
    from models.priors.tiny_pipelines import save_tiny_stable_diffusion

    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def tiny_if_dir(tmp_path_factory) -> Path:
    """A tiny random DeepFloyd IF stage-I folder (real classes, diffusers layout), built once per session."""
    from models.priors.tiny_pipelines import save_tiny_deepfloyd_if

    return save_tiny_deepfloyd_if(tmp_path_factory.mktemp("tiny-if"))


@pytest.fixture(scope="session")
def tiny_zero123_dir(tmp_path_factory) -> Path:
    """A tiny random Zero-1-to-3 folder (real classes, latent space, diffusers layout), built once per session."""
    from models.priors.tiny_pipelines import save_tiny_zero123

    return save_tiny_zero123(tmp_path_factory.mktemp("tiny-zero123"))


@pytest.fixture(scope="session")
def tiny_stable_zero123_dir(tmp_path_factory) -> Path:
    """The same with Stable Zero123's pose convention, in DreamGaussian's clip_camera_projection/ layout."""
    from models.priors.tiny_pipelines import save_tiny_zero123

    return save_tiny_zero123(tmp_path_factory.mktemp("tiny-stable-zero123"), pose_convention="stable-zero123", seed=1,
                             projection="clip_camera_projection")


@pytest.fixture(scope="session")
def toy_picture(tmp_path_factory) -> Path:
    """A 64² RGBA picture of the red cube from elevation 15° at the toy camera (image-to-3D's input)."""
    from models.priors.toy.picture import save_picture

    return save_picture(tmp_path_factory.mktemp("toy-picture") / "red_cube_rgba.png", "a red cube", 15.0, size=64)
