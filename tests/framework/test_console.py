"""The closing block a run ends with (framework/console.py): scores, times, files that exist, status."""
from __future__ import annotations

from pathlib import Path

from framework.console import closing_block


def test_the_closing_block_lists_scores_times_and_the_files_that_exist(tmp_path):
    run = tmp_path / "a_red_cube@20261201-180000"
    (run / "save/export").mkdir(parents=True)
    for name in ("save/it500-test.mp4", "save/export/model.obj", "save/export/model.glb", "report.html"):
        (run / name).write_text("x")
    metrics = {"train_seconds": 238.2, "iou": 0.9437, "chamfer": 0.01234, "colour_error": 0.031, "n_faces": 12034.0,
               "watertight": 1.0, "total_seconds": 252.0, "volume_mesh": 0.41}
    lines = closing_block(metrics, run).splitlines()
    text = "\n".join(lines)
    assert lines[0] == ""  # a blank line after the progress
    assert lines[1] == "scores" and "IoU" in lines[2] and lines[2].endswith("0.9437")
    assert [line.split()[0] for line in lines[2:5]] == ["IoU", "Chamfer", "colour"]  # the toy scores first
    assert "faces" in text and "12034" in text and "yes" in text and "volume (mesh)" in text
    assert "training" in text and "4m" in text and "total" in text  # times read as durations
    rows = {line.split()[0]: line.split()[-1] for line in lines if line.startswith("  ")}
    assert rows["video"] == str(run / "save/it500-test.mp4") and rows["report"] == str(run / "report.html")
    assert [Path(line.split()[-1]).name for line in lines if line.strip().startswith("mesh")] == ["model.obj", "model.glb"]
    assert rows["run"] == str(run) and lines[-1].split() == ["status", "done"]
    rows_and_status = [line for line in lines if line.startswith("  ") or line.startswith("status")]
    assert len({line.rindex(line.split()[-1]) for line in rows_and_status}) == 1  # the values in one column


def test_what_does_not_exist_is_not_listed(tmp_path):
    text = closing_block({"total_seconds": 3.0}, tmp_path)
    assert "video" not in text and "mesh" not in text and "report" not in text and "scores" not in text
    assert str(tmp_path) in text and text.splitlines()[-1].split() == ["status", "done"]
