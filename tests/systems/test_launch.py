"""launch.py end to end: train + test + export, resume, weights init, multirun, bad input."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_TOY_RUN, launch


def run_dir_files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


def test_two_step_train_test_export(trained_run):  # the session's short run (tests/conftest.py)
    run_dir, result = trained_run
    files = run_dir_files(run_dir)
    for expected in [
        "configs/config.yaml",
        "configs/overrides.yaml",
        "configs/parsed.yaml",
        "ckpts/last.ckpt",
        "save/it2-val-0.png",
        "save/it2-test.mp4",
        "save/export/model.obj",
        "save/export/model.mtl",
        "save/export/texture_kd.png",
        "save/export/model.glb",
        "metrics.json",
        "csv_logs/metrics.csv",
        "report.html",
    ]:
        assert expected in files, f"{expected} missing from {sorted(files)}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("iou", "chamfer", "colour_error"):
        assert key in metrics and 0 <= metrics[key] < 10
    assert f"run directory: {run_dir}" in result.stdout
    assert str(run_dir / "report.html") in result.stdout  # the closing block names its page (framework/report.py)
    # no library notices a user could not act on (framework/console.py)
    assert "Tip:" not in result.stdout + result.stderr and "LeafSpec" not in result.stdout + result.stderr
    ckpt = torch.load(run_dir / "ckpts/last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert not any(k.startswith("guidance.") for k in ckpt["state_dict"])  # frozen prior not saved


def test_the_console_reads_as_a_log(trained_run):
    """One line per refresh (no redrawn bar, no line twice) and a closing block whose paths exist."""
    run_dir, result = trained_run
    lines = result.stdout.splitlines()  # text=True: a redraw's carriage return reads as a line break here
    assert not [line for line in lines if line.startswith("Epoch ") or "it/s]" in line], result.stdout[-3000:]  # no tqdm
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["1/2", "2/2"], result.stdout[-3000:]
    assert "loss_sds" in steps[-1]
    assert sum(line.startswith("validation at step 2") for line in lines) == 1
    assert [line for line in lines if line.startswith("test ")][-1].startswith("test 6/6 views")
    block = lines[lines.index("scores"):]
    assert block[1].split()[0] == "IoU" and block[-1].split() == ["status", "done"], block
    files = {line.split()[0]: Path(line.split()[-1]) for line in block if line.startswith("  ") and "/" in line}
    assert {"video", "mesh", "run"} <= set(files), block
    assert all(path.exists() for path in files.values()), files
    assert files["run"] == run_dir and files["video"] == run_dir / "save/it2-test.mp4"


def test_step_times_break_the_step_down(trained_run):
    """trainer.step_times=true: the parts of a step and the phases, printed and written to the run dir."""
    run_dir, result = trained_run
    table = json.loads((run_dir / "step_times.json").read_text())
    for part in ("train step", "train step/render/sampling", "train step/render/field", "train step/losses/guidance",
                 "train step/backward", "train step/optimizer", "validation", "test video", "export"):
        assert part in table, f"{part} missing from {sorted(table)}"
    assert table["train step"]["calls"] == 2
    assert "time per part (2 training steps" in result.stdout


def test_resume_continues_at_the_right_step(trained_run, tmp_path, toy_cache):
    first, _ = trained_run
    run_dir = tmp_path / "resumed"
    overrides = [o for o in TINY_TOY_RUN if not o.startswith("trainer.max_steps")]
    result = launch(
        ["--config-name", "dreamfusion-toy", *overrides, "trainer.max_steps=4",
         f"resume={first / 'ckpts/last.ckpt'}", f"hydra.run.dir={run_dir}"],
        toy_cache,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(run_dir / "ckpts/last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4
    # A fresh run logs its two steps at 0, 1; the resumed one must log two more steps, none of
    # them before step 2 (Lightning numbers the first step after a restore 3, one past the
    # checkpoint's global step; a run that restarted from scratch would log 0 again).
    assert logged_steps(first) == [0, 1]
    resumed = logged_steps(run_dir)
    assert len(resumed) == 2 and min(resumed) >= 2, resumed


def logged_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "csv_logs/metrics.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss_sds")]


def test_weights_only_init_starts_at_step_zero(trained_run, tmp_path, toy_cache):
    first, _ = trained_run
    run_dir = tmp_path / "init"
    result = launch(
        ["--config-name", "dreamfusion-toy", *TINY_TOY_RUN, "trainer.max_steps=1",
         f"weights={first / 'ckpts/last.ckpt'}", f"hydra.run.dir={run_dir}"],
        toy_cache,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "initialised weights from" in result.stdout
    assert torch.load(run_dir / "ckpts/last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 1


def test_export_mode_from_checkpoint(trained_run, tmp_path, toy_cache):
    first, _ = trained_run
    run_dir = tmp_path / "export"
    result = launch(
        ["--config-name", "dreamfusion-toy", *TINY_TOY_RUN, "mode=export",
         f"resume={first / 'ckpts/last.ckpt'}", f"hydra.run.dir={run_dir}"],
        toy_cache,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "save/export/model.obj").is_file()
    assert "iou" in json.loads((run_dir / "metrics.json").read_text())


def test_multirun_runs_each_prompt(tmp_path, toy_cache):
    result = launch(
        ["--config-name", "dreamfusion-toy", "-m", *[o for o in TINY_TOY_RUN if "max_steps" not in o],
         "trainer.max_steps=1", "system.prompt=a red cube,a blue sphere", f"hydra.sweep.dir={tmp_path}"],
        toy_cache,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = sorted(tmp_path.rglob("metrics.json"))
    assert len(metrics) == 2, metrics
    assert any("a_blue_sphere" in str(m) for m in metrics) and any("a_red_cube" in str(m) for m in metrics)
    summary = (tmp_path / "summary.csv").read_text().splitlines()  # the sweep's table (tests/systems/test_sweeps.py)
    assert len(summary) == 3 and all(",done,0," in row for row in summary[1:]), summary


# The whole table of bad input is tests/systems/test_bad_inputs.py (in-process); these few check the
# real process: its exit code and that nothing is printed as a traceback.
@pytest.mark.parametrize(
    "override, expected",
    [
        ("system.foo=1", "foo"),
        ("+system.promt=a red cube", "system.promt"),
        ("system.prompt=a pink elephant", "toy world"),
        ("resume=/nonexistent/last.ckpt", "/nonexistent/last.ckpt"),
    ],
)
def test_bad_input_gives_a_clear_error(override, expected, tmp_path, toy_cache):
    result = launch(["--config-name", "dreamfusion-toy", override, f"hydra.run.dir={tmp_path / 'run'}"], toy_cache, timeout=120)
    assert result.returncode == 2
    message = result.stderr + result.stdout
    assert expected in message, message[-2000:]
    assert "Traceback" not in message, message[-3000:]


def test_unwritable_run_directory_is_a_clear_error(tmp_path, toy_cache):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root); permissions cannot be tested")
        result = launch(["--config-name", "dreamfusion-toy", f"hydra.run.dir={locked / 'run'}"], toy_cache, timeout=120)
    finally:
        locked.chmod(0o700)
    assert result.returncode != 0
    assert "not a writable directory" in result.stderr and "Traceback" not in result.stderr


def test_run_directory_that_cannot_exist_is_a_clear_error(tmp_path, toy_cache):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = launch(["--config-name", "dreamfusion-toy", f"hydra.run.dir={blocker / 'run'}"], toy_cache, timeout=120)
    assert result.returncode != 0
    assert "not a writable directory" in result.stderr and "Traceback" not in result.stderr
