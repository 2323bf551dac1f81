"""Preemption and exact resume (framework/preemption.py, framework/random_state.py): a signal sent to a
real launch.py run mid-training leaves last.ckpt at the step reached and exit code 4; resuming from it in
the same run directory reproduces the uninterrupted run's loss column step by step."""
from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import launch as launch_module
from framework.data.random_camera import RandomCameraDataConfig, RandomCameraIterableDataset
from framework.errors import EXIT_STOPPED, UserError
from framework.random_state import global_states, set_global_states
from tests.conftest import REPO, TINY_TOY_RUN, launch

# 8 steps, validating every 3: the signal is sent once step 3's validation image exists
STEPS = 8
RUN = [o for o in TINY_TOY_RUN if not o.startswith(("trainer.max_steps", "trainer.val_check_interval"))] + [
    f"trainer.max_steps={STEPS}", "trainer.val_check_interval=3"]
ARGS = ["--config-name", "dreamfusion-toy", *RUN]


def loss_column(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv_logs/metrics.csv") as f:
        return {int(row["step"]): float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")}


def stop_with(signum: int, run_dir: Path, cache: Path) -> tuple[int, str]:
    """Start a run, send `signum` once step 3 has been validated, and return its exit code and stderr."""
    env = dict(os.environ, TOY3D_CACHE=str(cache), PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="0")
    process = subprocess.Popen([sys.executable, str(REPO / "launch.py"), *ARGS, f"hydra.run.dir={run_dir}"], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (run_dir / "save/it3-val-0.png").is_file():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never reached step 3"
        time.sleep(0.1)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, toy_cache) -> Path:
    run_dir = tmp_path_factory.mktemp("preempt") / "uninterrupted"
    result = launch([*ARGS, f"hydra.run.dir={run_dir}"], toy_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def check_stopped(run_dir: Path, code: int, stderr: str, signal_name: str) -> dict:
    assert code == EXIT_STOPPED, stderr[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "stopped" and status["signal"] == signal_name, status
    checkpoint = torch.load(run_dir / "ckpts/last.ckpt", map_location="cpu", weights_only=True)  # intact, loadable
    assert checkpoint["global_step"] == status["step"] and 3 <= status["step"] < STEPS, status
    assert f"at step {status['step']}" in stderr
    assert status["resume"] in stderr and f"resume={run_dir / 'ckpts/last.ckpt'}" in status["resume"]
    assert "hydra.run.dir" not in status["resume"]
    page = (run_dir / "report.html").read_text()  # what the stopped run left, with its status (framework/report.py)
    assert f"Run stopped (exit code {EXIT_STOPPED}, at step {status['step']})" in page and f"report: {run_dir / 'report.html'}" in stderr
    return status


def test_sigterm_saves_and_the_resumed_run_repeats_the_uninterrupted_one(uninterrupted, tmp_path, toy_cache):
    run_dir = tmp_path / "run"
    code, stderr = stop_with(signal.SIGTERM, run_dir, toy_cache)
    status = check_stopped(run_dir, code, stderr, "SIGTERM")
    first_configs = (run_dir / "configs/overrides.yaml").read_text()

    # the printed command, as a user would paste it (it names no run directory: it continues in this one)
    words = shlex.split(status["resume"])
    assert words[:2] == ["python", "launch.py"]
    result = launch(words[2:], toy_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"run directory: {run_dir}" in result.stdout
    assert json.loads((run_dir / "status.json").read_text())["status"] == "done"
    assert (run_dir / "configs/overrides.yaml").read_text() == first_configs  # the first run's configs kept
    assert "resume=" in (run_dir / "configs/resume-1/overrides.yaml").read_text()
    assert (run_dir / f"save/it{STEPS}-test.mp4").is_file()
    assert "Run stopped" not in (run_dir / "report.html").read_text()  # the finished run's report replaced it

    expected, resumed = loss_column(uninterrupted), loss_column(run_dir)
    assert sorted(resumed) == sorted(expected) == list(range(STEPS))  # one row per step, in one CSV
    difference = max(abs(resumed[k] - expected[k]) / abs(expected[k]) for k in range(status["step"], STEPS))
    print(f"max relative difference of train/loss from step {status['step']}: {difference:.3g}")
    assert difference <= 1e-5, (expected, resumed)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGUSR1], ids=["SIGINT", "SIGUSR1"])
def test_sigint_and_sigusr1_save_likewise(signum, tmp_path, toy_cache):
    run_dir = tmp_path / "run"
    code, stderr = stop_with(signum, run_dir, toy_cache)
    check_stopped(run_dir, code, stderr, signal.Signals(signum).name)
    assert "Traceback" not in stderr, stderr[-3000:]


def test_the_camera_sampler_resumes_at_the_batch_not_yet_trained():
    """Lightning fetches a batch ahead: the state saved after step k is the one before step k's batch."""
    cfg = RandomCameraDataConfig(seed=3, height=4, width=4, batch_size=2)
    first = RandomCameraIterableDataset(cfg)
    batches = [first.sample()["c2w"] for _ in range(6)]  # steps 0..4 trained, step 5's batch fetched ahead
    state = first.state_dict(5)
    second = RandomCameraIterableDataset(RandomCameraDataConfig(seed=99, height=4, width=4, batch_size=2))
    second.load_state_dict(state)
    assert torch.equal(second.sample()["c2w"], batches[5])


def test_global_random_states_round_trip():
    states = global_states()
    expected = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    set_global_states(states)
    assert torch.equal(torch.rand(3), expected[0])
    assert __import__("numpy").random.rand() == expected[1] and __import__("random").random() == expected[2]


def test_resume_may_name_its_own_run_directory_but_a_fresh_run_may_not(tmp_path):
    run = tmp_path / "run"
    (run / "configs").mkdir(parents=True)
    (run / "ckpts").mkdir()
    (run / "ckpts/last.ckpt").write_bytes(b"x")
    launch_module.check_output_root([f"hydra.run.dir={run}", f"resume={run / 'ckpts/last.ckpt'}"])
    for argv in ([f"hydra.run.dir={run}"], [f"hydra.run.dir={run}", f"resume={run / 'ckpts/last.ckpt'}", "mode=export"]):
        with pytest.raises(UserError, match="already holds a run"):
            launch_module.check_output_root(argv)


def test_a_requeued_slurm_job_resumes_the_run_it_stopped(tmp_path, monkeypatch):
    run = tmp_path / "outputs/dreamfusion-toy/a_red_cube@20261201-120000"
    (run / "ckpts").mkdir(parents=True)
    (run / "ckpts/last.ckpt").write_bytes(b"x")
    (run / "status.json").write_text(json.dumps({"status": "stopped", "slurm_job_id": "123",
                                                 "checkpoint": str(run / "ckpts/last.ckpt")}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    argv = ["--config-name", "dreamfusion-toy"]
    assert launch_module.requeued_job_resume(argv) == [*argv, f"resume={run / 'ckpts/last.ckpt'}"]
    assert launch_module.requeued_job_resume([*argv, "resume=other.ckpt"]) == [*argv, "resume=other.ckpt"]
    monkeypatch.setenv("SLURM_JOB_ID", "456")  # another job's run is not taken
    assert launch_module.requeued_job_resume(argv) == argv
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # the job's first start
    assert launch_module.requeued_job_resume(argv) == argv


def test_slurm_batch_jobs_get_lightnings_requeueing_environment(monkeypatch):
    from framework.runner import slurm_environment

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert slurm_environment() == []
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "toy3d")
    (environment,) = slurm_environment()
    assert environment.auto_requeue and environment.requeue_signal == signal.SIGUSR1
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive allocation: no requeueing
    assert slurm_environment() == []
