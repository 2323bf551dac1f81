"""Multiruns (-m) end to end: a failing job fails alone, with each launcher; the sweep's summary files and
exit status; `python -m framework.sweep_summary` rebuilds the same table."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_TOY_RUN, launch

BAD = "a pink elephant"  # a prompt the toy world does not know: a UserError (exit 2) before training


def sweep(prompts: list[str], sweep_dir: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    return launch(
        ["--config-name", "dreamfusion-toy", "-m", *TINY_TOY_RUN, "system.prompt=" + ",".join(prompts),
         f"hydra.sweep.dir={sweep_dir}", *extra],
        cache,
    )


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def prompt_of(row: dict[str, str]) -> str:
    return row["overrides"].removeprefix("system.prompt=").replace("\\ ", " ")


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory, toy_cache):
    sweep_dir = tmp_path_factory.mktemp("joblib-sweep")
    result = sweep(["a red cube", BAD, "a blue sphere"], sweep_dir, toy_cache, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    return sweep_dir, result


def test_joblib_sweep_keeps_the_good_jobs_and_names_the_bad_one(joblib_sweep):
    sweep_dir, result = joblib_sweep
    message = result.stdout + result.stderr
    assert result.returncode == 2, message[-4000:]  # every failure was the user's input
    failed_line = [line for line in result.stderr.splitlines() if line.startswith("sweep: 1 of 3 runs failed")]
    assert failed_line and "job 1" in failed_line[0] and "pink" in failed_line[0], message[-3000:]
    metrics = sorted(sweep_dir.rglob("metrics.json"))
    assert len(metrics) == 2 and not any("pink" in str(m) for m in metrics), metrics

    rows = summary_rows(sweep_dir)
    assert [(r["job"], prompt_of(r), r["status"], r["exit_code"]) for r in rows] == [
        ("0", "a red cube", "done", "0"), ("1", BAD, "failed", "2"), ("2", "a blue sphere", "done", "0"),
    ]
    for row in rows:
        assert (sweep_dir / row["run_dir"] / "status.json").is_file()  # the bad job's folder is kept, with its status
        assert float(row["seconds"]) > 0
        if row["status"] == "done":
            assert 0 <= float(row["iou"]) <= 1 and float(row["chamfer"]) >= 0 and row["colour_error"] != ""
            assert row["error"] == ""
        else:
            assert row["iou"] == "" and "does not understand the prompt 'a pink elephant'" in row["error"]
    markdown = (sweep_dir / "summary.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3 and "| iou |" in table[0] and "| failed | 2 |" in table[3], markdown


def test_sweep_summary_command_rebuilds_the_same_table(joblib_sweep, tmp_path):
    sweep_dir, _ = joblib_sweep
    written = {name: (sweep_dir / name).read_text() for name in ("summary.csv", "summary.md")}
    for name in written:
        (sweep_dir / name).unlink()
    result = subprocess.run([sys.executable, "-m", "framework.sweep_summary", str(sweep_dir)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == written["summary.md"]
    assert {name: (sweep_dir / name).read_text() for name in written} == written


def test_basic_launcher_runs_the_rest_after_a_bad_first_job(tmp_path, toy_cache):
    overrides = [o for o in TINY_TOY_RUN if not o.startswith("trainer.")]
    result = launch(
        ["--config-name", "dreamfusion-toy", "-m", *overrides, "trainer.max_steps=1", "trainer.val_check_interval=1",
         "trainer.enable_progress_bar=false", f"system.prompt={BAD},a red cube", f"hydra.sweep.dir={tmp_path}"],
        toy_cache,
    )
    assert result.returncode == 2, (result.stdout + result.stderr)[-4000:]
    assert "job 0" in result.stderr and "pink" in result.stderr
    assert [m.parent.name.split("@")[0] for m in tmp_path.rglob("metrics.json")] == ["a_red_cube"]
    assert [(r["job"], r["status"]) for r in summary_rows(tmp_path)] == [("0", "failed"), ("1", "done")]


def test_submitit_local_sweep(tmp_path, toy_cache):
    overrides = [o for o in TINY_TOY_RUN if not o.startswith("trainer.")]
    result = launch(
        ["--config-name", "dreamfusion-toy", "-m", *overrides, "trainer.max_steps=1", "trainer.val_check_interval=1",
         "trainer.enable_progress_bar=false", "system.prompt=a red cube,a green cone", f"hydra.sweep.dir={tmp_path}",
         "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"],
        toy_cache,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    rows = summary_rows(tmp_path)
    assert [(r["job"], r["status"]) for r in rows] == [("0", "done"), ("1", "done")]
    assert all(r["iou"] != "" for r in rows)
    logs = list((tmp_path / ".submitit").rglob("*_log.out"))  # submitit's own logs stay in the sweep dir
    assert len(logs) == 2, logs
    assert "sweep: 2 of 2 jobs done" in result.stdout


def test_a_crash_and_a_failed_training_fail_alone(tmp_path, monkeypatch, capsys):
    """In-process (launch.cli, basic launcher), with `run` replaced: a crash (exit 1) and a TrainingFailed
    (exit 3) each fail their own job; the third job runs; the sweep exits with the highest code, 3."""
    import launch
    from framework.errors import TrainingFailed

    def fake_run(cfg, run_dir):
        if cfg.system.prompt == "a red cube":
            raise RuntimeError("a bug")
        if cfg.system.prompt == "a blue cube":
            (Path(run_dir) / "ckpts").mkdir()
            (Path(run_dir) / "ckpts" / "last.ckpt").write_text("kept")
            raise TrainingFailed("the loss stayed non-finite for 20 steps\nfrom step 3")
        (Path(run_dir) / "metrics.json").write_text(json.dumps({"iou": 0.9, "total_seconds": 1.5}))
        return {"iou": 0.9}

    monkeypatch.setattr(launch, "run", fake_run)
    code = launch.cli(["--config-name", "dreamfusion-toy", "-m", "system.prompt=a red cube,a blue cube,a green cone",
                       f"hydra.sweep.dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 3, err[-3000:]
    assert "RuntimeError: a bug" in err  # the crash's traceback is printed
    assert "sweep: 2 of 3 runs failed: job 0" in err and "job 1" in err
    rows = summary_rows(tmp_path)
    assert [(r["status"], r["exit_code"], r["error"]) for r in rows] == [
        ("failed", "1", "RuntimeError('a bug')"),
        ("failed", "3", "the loss stayed non-finite for 20 steps"),
        ("done", "0", ""),
    ]
    assert rows[2]["iou"] == "0.9000"
