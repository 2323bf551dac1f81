"""framework/sweep_summary.py on folders of run directories written by hand (no training)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from framework import sweep_summary


def fake_run(folder: Path, name: str, status: str, code: int | None, job: int | None = None,
             metrics: dict | None = None, error: str = "", overrides: list[str] | None = None) -> None:
    run = folder / name
    (run / "configs").mkdir(parents=True)
    (run / "configs" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides or ["seed=0"]))
    record = {"status": status, **({"exit_code": code} if code is not None else {}), **({"job": job} if job is not None else {})}
    if error:
        record["error"] = error
    (run / "status.json").write_text(json.dumps(record))
    if metrics:
        (run / "metrics.json").write_text(json.dumps(metrics))


@pytest.mark.parametrize(
    "codes, expected",
    [([0, 0], 0), ([0, 2, 2], 2), ([2, 3], 3), ([2, 1], 2), ([1, 0], 1), ([3, 0], 3), ([None], 1)],
)
def test_exit_code_is_2_for_input_only_else_the_highest(tmp_path, codes, expected):
    for i, code in enumerate(codes):
        fake_run(tmp_path, f"r{i}", "done" if code == 0 else ("running" if code is None else "failed"), code, job=i)
    assert sweep_summary.exit_code(sweep_summary.collect(tmp_path)) == expected


def test_collect_reads_nested_runs_in_job_order_with_their_metrics(tmp_path):
    fake_run(tmp_path / "sweep", "b", "done", 0, job=1, metrics={"iou": 0.5, "total_seconds": 3.0, "n_faces": 10.0},
             overrides=["seed=0", "system.prompt=a red cube"])
    fake_run(tmp_path / "sweep", "a", "failed", 3, job=0, error="non-finite loss\nat step 4",
             overrides=["seed=0", "system.prompt=a blue cube"])
    fake_run(tmp_path, "single", "done", 0, metrics={"chamfer": 0.25})
    rows = sweep_summary.collect(tmp_path)
    assert [r["run_dir"] for r in rows] == ["sweep/a", "sweep/b", "single"]
    header, cells = sweep_summary.table(rows)
    assert header[5:7] == ["iou", "chamfer"] and "total_seconds" not in header
    assert cells[0][4] == "non-finite loss" and cells[1][header.index("seconds")] == "3"
    assert cells[1][header.index("n_faces")] == "10"
    text = sweep_summary.describe_failures(rows)
    assert text.startswith("1 of 3 runs failed: job 0 (") and "exit 3" in text


def test_the_command_refuses_a_folder_without_runs(tmp_path, capsys):
    assert sweep_summary.main([str(tmp_path)]) == 2
    assert "no run under" in capsys.readouterr().err
