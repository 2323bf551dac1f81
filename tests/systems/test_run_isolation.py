"""Runs never share or lose data: simultaneous runs get their own directories, a kill while saving
leaves `last.ckpt` whole, a run that goes non-finite stops with exit code 3 and keeps its folder."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import launch
from framework.errors import EXIT_TRAINING_FAILED
from tests.conftest import REPO, TINY_TOY_RUN

TINY = [o for o in TINY_TOY_RUN if not o.startswith("trainer.max_steps")]

# Each process imports launch (the slow part), then waits for the barrier file, then starts the run:
# both are released within milliseconds, inside the same second of the run directory's timestamp.
BARRIER_SCRIPT = """
import os, sys, time
sys.path.insert(0, {repo!r})
import launch
while not os.path.exists({barrier!r}):
    time.sleep(0.001)
sys.exit(launch.cli(sys.argv[1:]))
"""


def test_two_runs_released_at_once_get_their_own_directories(tmp_path, toy_cache):
    barrier = tmp_path / "go"
    script = BARRIER_SCRIPT.format(repo=str(REPO), barrier=str(barrier))
    env = dict(os.environ, TOY3D_CACHE=str(toy_cache), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    processes = [
        subprocess.Popen([sys.executable, "-c", script, "--config-name", "dreamfusion-toy", *TINY, "trainer.max_steps=2",
                          f"seed={seed}", "name=same-second"], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for seed in (1, 2)
    ]
    (tmp_path / "configs").symlink_to(REPO / "configs")  # the default outputs/ is relative to the working folder
    time.sleep(12)  # both are past their imports and waiting
    barrier.touch()
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    run_dirs = sorted((tmp_path / "outputs" / "same-second").iterdir())
    assert len(run_dirs) == 2, run_dirs
    names = sorted(d.name for d in run_dirs)
    seeds = set()
    for run_dir in run_dirs:
        overrides = (run_dir / "configs" / "overrides.yaml").read_text()
        seed = 1 if "seed=1" in overrides else 2
        seeds.add(seed)
        assert f"seed: {seed}" in (run_dir / "configs" / "parsed.yaml").read_text()
        assert sorted(p.name for p in (run_dir / "ckpts").iterdir()) == ["last.ckpt"]  # no last-v1.ckpt
        with open(run_dir / "csv_logs" / "metrics.csv") as f:
            steps = [row["step"] for row in csv.DictReader(f) if row.get("train/loss")]
        assert steps == ["0", "1"], steps  # one run's rows, not two interleaved
        assert json.loads((run_dir / "status.json").read_text())["status"] == "done"
        assert "iou" in json.loads((run_dir / "metrics.json").read_text())
        assert len(list((run_dir / "save").glob("*.mp4"))) == 1
        ckpt = torch.load(run_dir / "ckpts" / "last.ckpt", map_location="cpu", weights_only=False)
        assert ckpt["toy3d_run"]["config"]["seed"] == seed  # the checkpoint is this run's
    assert seeds == {1, 2}
    stamps = {n.removesuffix("-1") for n in names}
    if len(stamps) == 1:  # the same second: one took the name, the other the next free one
        assert names[1] == names[0] + "-1"


# A child saving ever larger checkpoints to one path, atomically; the test kills it mid-save.
SAVER_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from pathlib import Path
import torch
from framework.checkpoints import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), Path({path!r})
io.save_checkpoint({{"state_dict": {{"w": torch.zeros(4)}}, "global_step": 0}}, path)
print("first saved", flush=True)
for step in range(1, 1000):
    io.save_checkpoint({{"state_dict": {{"w": torch.full((48_000_000,), float(step))}}, "global_step": step}}, path)
"""


def test_a_kill_while_saving_leaves_last_ckpt_whole(tmp_path):
    path = tmp_path / "ckpts" / "last.ckpt"
    child = subprocess.Popen([sys.executable, "-c", SAVER_SCRIPT.format(repo=str(REPO), path=str(path))],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "first saved"
    deadline = time.time() + 120
    while not list(path.parent.glob(".last.ckpt.*.tmp")) and time.time() < deadline:
        time.sleep(0.002)
    partial = list(path.parent.glob(".last.ckpt.*.tmp"))
    assert partial, "the child never started a save"
    child.send_signal(signal.SIGKILL)  # in the middle of writing the temporary file
    child.wait(timeout=30)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    step = checkpoint["global_step"]
    expected = torch.zeros(4) if step == 0 else torch.full((48_000_000,), float(step))
    assert torch.equal(checkpoint["state_dict"]["w"], expected)  # a whole checkpoint: the last one completed


def test_a_run_whose_loss_is_always_nan_stops_with_exit_code_3(tmp_path, toy_cache, monkeypatch, capsys):
    from systems.dreamfusion import DreamFusion

    real = DreamFusion.compute_losses

    def nan_losses(self, batch, out):
        losses = real(self, batch, out)
        return {k: v * float("nan") if k == "loss_sds" else v for k, v in losses.items()}

    monkeypatch.setattr(DreamFusion, "compute_losses", nan_losses)
    monkeypatch.setenv("TOY3D_CACHE", str(toy_cache))
    run_dir = tmp_path / "run"
    code = launch.cli(["--config-name", "dreamfusion-toy", *TINY, "trainer.max_steps=50", "trainer.max_nonfinite_steps=3",
                       "checkpoint.every_n_train_steps=1", f"hydra.run.dir={run_dir}"])
    output = capsys.readouterr()
    assert code == EXIT_TRAINING_FAILED, output.out[-2000:] + output.err[-2000:]
    assert "3 steps in a row" in output.err and "loss_sds is nan" in output.err
    assert "Traceback" not in output.err + output.out
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and status["exit_code"] == EXIT_TRAINING_FAILED
    checkpoint = torch.load(run_dir / "ckpts" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 3 and all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
    assert not (run_dir / "metrics.json").exists()  # no scores of an untrained model


def test_a_diverging_scene_is_told_at_the_first_validation(tmp_path, toy_cache, monkeypatch, capsys):
    monkeypatch.setenv("TOY3D_CACHE", str(toy_cache))
    run_dir = tmp_path / "run"
    code = launch.cli(["--config-name", "dreamfusion-toy", *TINY, "trainer.max_steps=20", "trainer.val_check_interval=10",
                       "system.optimizer.params={geometry.encoding:{lr:1e6},geometry.density_network:{lr:1e6}}",
                       f"hydra.run.dir={run_dir}"])
    output = capsys.readouterr()
    # at lr 1e6 the density leaves every sensible range at once: empty or filling every view
    told = ("warning: step 10: the scene is empty", "warning: step 10: the density fills the validation views")
    assert any(t in output.out for t in told), output.out[-3000:]
    # and the export that cannot find a surface ends the run as failed training, not as a crash
    assert code == EXIT_TRAINING_FAILED and "grid point is inside" in output.err, output.err[-3000:]
    assert json.loads((run_dir / "status.json").read_text())["exit_code"] == EXIT_TRAINING_FAILED
