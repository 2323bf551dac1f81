"""Bad input stops a run before training, with exit code 2, a message naming the key or file, no
traceback, and nothing already written changed (checksums); a run stopped so leaves no run directory.

The cases run launch.py's `cli` in this process (composing and checking take well under a second;
a subprocess would spend ~8 s importing), except where a real second process is the point.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

import launch
from framework.errors import EXIT_USER_INPUT
from tests.conftest import TINY_TOY_RUN

TINY = [o for o in TINY_TOY_RUN if not o.startswith("trainer.max_steps")]


def tree_checksum(path: Path) -> dict[str, str]:
    """{relative file: sha256} of every file under `path` (or of `path` itself)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def cli(tmp_path, toy_cache, monkeypatch, capsys):
    """Run launch.py's command line here: -> (exit code, stdout + stderr)."""
    monkeypatch.setenv("TOY3D_CACHE", str(toy_cache))

    def run(*args: str) -> tuple[int, str]:
        code = launch.cli(list(args))
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory, toy_cache):
    """A finished 2-step dreamfusion-toy run and an sjc-toy run (another method), in their run directories."""
    from tests.conftest import launch as subprocess_launch

    root = tmp_path_factory.mktemp("finished")
    runs = {}
    for method in ("dreamfusion-toy", "sjc-toy"):
        run_dir = root / method
        extra = TINY if method == "dreamfusion-toy" else ["trainer.enable_progress_bar=false", "data.n_test_views=2",
                                                          "system.geometry.isosurface_resolution=32",
                                                          "system.evaluator.grid_resolution=32", "logger.tensorboard=false"]
        result = subprocess_launch(["--config-name", method, *extra, "trainer.max_steps=2", "trainer.val_check_interval=2",
                                    f"hydra.run.dir={run_dir}"], toy_cache)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[method] = run_dir
    return runs


def assert_refused(code: int, output: str, *expected: str) -> None:
    assert code == EXIT_USER_INPUT, output[-3000:]
    for text in expected:
        assert text in output, f"{text!r} not in:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]


# ---- config values and keys --------------------------------------------------------------------

CONFIG_CASES = [
    ("system.foo=1", "system.foo"),
    ("+system.promt=a red cube", "system.promt"),  # Hydra's own advice ('+') must not lead to an ignored key
    ("system.geometry.radius=abc", "system.geometry.radius"),
    ("trainer.max_steps=many", "trainer.max_steps"),
    ("system/geometry=implicit-volum", "implicit-volume"),
    ("system.prompt=a pink elephant", "toy world"),
    ("system.prompt=???", "system.prompt"),
    ("mode=fly", "mode"),
    ("mode=export", "resume="),
    ("resume=/nonexistent/last.ckpt", "/nonexistent/last.ckpt"),
    ("weights=/nonexistent/last.ckpt", "/nonexistent/last.ckpt"),
    ("system.guidance.guidance_scale=nan", "system.guidance.guidance_scale"),
    ("system.optimizer.lr=inf", "system.optimizer.lr"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("trainer.max_steps=-5", "trainer.max_steps"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps"),
    ("trainer.devices=0", "trainer.devices"),
    ("trainer.accelerator=tpu-ish", "trainer.accelerator"),
    ("trainer.max_nonfinite_steps=0", "trainer.max_nonfinite_steps"),
    ("checkpoint.every_n_train_steps=0", "checkpoint.every_n_train_steps"),
    ("data.height=0", "data.height"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.n_test_views=0", "data.n_test_views"),
    ("data.eval_height=-3", "data.eval_height"),
    ("system.geometry.isosurface_resolution=1", "system.geometry.isosurface_resolution"),
    ("system.geometry.isosurface_threshold=abc", "system.geometry.isosurface_threshold"),
    ("system.export.texture_size=0", "system.export.texture_size"),
    ("system.loss.lambda_sds=nan", "system.loss.lambda_sds"),
    ("system.loss.lambda_sdss=1", "lambda_sdss"),
]


@pytest.mark.parametrize("override, expected", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_stops_before_training(override, expected, cli, tmp_path):
    run_dir = tmp_path / "run"
    # the override last (Hydra's last word wins); one step at most if it were not refused
    code, output = cli("--config-name", "dreamfusion-toy", *TINY, "trainer.max_steps=1", override, f"hydra.run.dir={run_dir}")
    assert_refused(code, output, expected)
    assert "Epoch" not in output and "train/" not in output  # no step ran
    assert not run_dir.exists(), sorted(run_dir.rglob("*"))  # a run stopped by bad input leaves no folder


def test_accelerator_gpu_without_a_gpu(cli, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: trainer.accelerator=gpu is valid here")
    code, output = cli("--config-name", "dreamfusion-toy", "trainer.accelerator=gpu", *TINY, f"hydra.run.dir={tmp_path / 'r'}")
    assert_refused(code, output, "trainer.accelerator=gpu", "no CUDA GPU")


def test_an_empty_weights_folder_names_what_is_missing(cli, tmp_path):
    empty = tmp_path / "sd-folder"
    empty.mkdir()
    code, output = cli("--config-name", "dreamfusion-sd", "system.prompt=a hamburger", "trainer.accelerator=cpu",
                       f"system.guidance.prior.pretrained_model_name_or_path={empty}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_refused(code, output, str(empty), "the folder has no text_encoder/, tokenizer/")


def test_default_run_directories_are_not_left_behind_by_bad_input(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outputs/ is relative to the working directory
    shutil.copytree(Path(launch.__file__).parent / "configs", tmp_path / "configs")
    code, output = cli("--config-name", "dreamfusion-toy", "system.prompt=a pink elephant")
    assert_refused(code, output, "toy world", "was removed")
    assert not any(p.is_file() for p in (tmp_path / "outputs").rglob("*"))


# ---- run directories ------------------------------------------------------------------------------


def test_a_named_run_directory_that_holds_a_run_is_refused(toy_runs, cli):
    run_dir = toy_runs["dreamfusion-toy"]
    before = tree_checksum(run_dir)
    code, output = cli("--config-name", "dreamfusion-toy", *TINY, f"hydra.run.dir={run_dir}")
    assert_refused(code, output, str(run_dir), "already holds a run")
    assert tree_checksum(run_dir) == before


# ---- checkpoints ----------------------------------------------------------------------------------


def bad_file(kind: str, folder: Path, good: Path) -> Path:
    path = folder / f"{kind}.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    elif kind == "text":
        path.write_text("step: 3\nthis is a note, not a checkpoint\n")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "not-lightning":
        torch.save({"weights": torch.zeros(3)}, path)
    return path


@pytest.mark.parametrize("key", ["resume", "weights"])
@pytest.mark.parametrize(
    "kind, expected",
    [("empty", "is empty"), ("png", "PNG image"), ("text", "text file"), ("truncated", "truncated or corrupted"),
     ("not-lightning", "no 'state_dict'")],
)
def test_a_file_that_is_not_a_checkpoint(kind, expected, key, toy_runs, cli, tmp_path):
    good = toy_runs["dreamfusion-toy"] / "ckpts" / "last.ckpt"
    folder = tmp_path / "ckpts"
    folder.mkdir()
    shutil.copy(good, folder / "step000002.ckpt")  # an intact one beside it: the message points to it
    path = bad_file(kind, folder, good)
    before = tree_checksum(folder)
    code, output = cli("--config-name", "dreamfusion-toy", *TINY, f"{key}={path}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_refused(code, output, f"{key}={path}", expected, "newest intact checkpoint beside it is")
    assert str(folder / "step000002.ckpt") in output
    assert tree_checksum(folder) == before


@pytest.mark.parametrize("key", ["resume", "weights"])
def test_a_checkpoint_of_another_method(key, toy_runs, cli, tmp_path):
    other = toy_runs["sjc-toy"] / "ckpts" / "last.ckpt"
    before = tree_checksum(toy_runs["sjc-toy"])
    code, output = cli("--config-name", "dreamfusion-toy", *TINY, f"{key}={other}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_refused(code, output, str(other), "'sjc-toy' run", "systems.sjc.SJC")
    if key == "weights":
        assert "partial_weights=true" in output
    assert tree_checksum(toy_runs["sjc-toy"]) == before


def test_partial_weights_loads_what_fits_and_says_how_much(toy_runs, cli, tmp_path):
    other = toy_runs["sjc-toy"] / "ckpts" / "last.ckpt"
    code, output = cli("--config-name", "dreamfusion-toy", *TINY, "trainer.max_steps=1", f"weights={other}",
                       "partial_weights=true", f"hydra.run.dir={tmp_path / 'r'}")
    # SJC's geometry is a voxel grid, DreamFusion's a hash-grid NeRF: only the parts they share fit
    assert code == 0, output[-3000:]
    assert "initialised weights from" in output and "it fills 5 of the model's 15 tensors" in output
    assert "missing geometry.encoding.table" in output


def test_a_checkpoint_of_another_shape_names_the_config_difference(toy_runs, cli, tmp_path):
    ckpt = toy_runs["dreamfusion-toy"] / "ckpts" / "last.ckpt"
    before = tree_checksum(toy_runs["dreamfusion-toy"])
    code, output = cli("--config-name", "dreamfusion-toy", *TINY, "trainer.max_steps=4", f"resume={ckpt}",
                       "system.geometry.pos_encoding.log2_hashmap_size=15", f"hydra.run.dir={tmp_path / 'r'}")
    assert_refused(code, output, f"resume={ckpt}", "does not fit this model", "shape differs",
                   "system.geometry.pos_encoding.log2_hashmap_size=")
    assert tree_checksum(toy_runs["dreamfusion-toy"]) == before


def test_resume_and_weights_together_are_refused(toy_runs, cli, tmp_path):
    ckpt = toy_runs["dreamfusion-toy"] / "ckpts" / "last.ckpt"
    code, output = cli("--config-name", "dreamfusion-toy", *TINY, f"resume={ckpt}", f"weights={ckpt}",
                       f"hydra.run.dir={tmp_path / 'r'}")
    assert_refused(code, output, "resume=", "weights=")


def test_checkpoints_name_the_run_that_wrote_them(toy_runs):
    ckpt = torch.load(toy_runs["sjc-toy"] / "ckpts" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["toy3d_run"]["system"] == "systems.sjc.SJC" and ckpt["toy3d_run"]["name"] == "sjc-toy"
