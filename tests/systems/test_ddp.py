"""A 2-process CPU DDP run (gloo): each rank draws its own cameras, validation and test views are
split across ranks and gathered on rank 0, which alone writes images, video, export and metrics."""
from __future__ import annotations

import csv
import json

from tests.conftest import TINY_TOY_RUN, launch

TINY = [o for o in TINY_TOY_RUN if not o.startswith(("trainer.max_steps", "trainer.val_check_interval"))]


def test_two_process_ddp_run_of_dreamfusion_toy(tmp_path, toy_cache):
    run_dir = tmp_path / "ddp"
    result = launch(["--config-name", "dreamfusion-toy", *TINY, "trainer.max_steps=3", "trainer.val_check_interval=3",
                     "data.n_val_views=3", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
                     f"hydra.run.dir={run_dir}"], toy_cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Starting with 2 processes" in output  # really two ranks
    assert "first-batch camera azimuths by rank (all different)" in output, output[-3000:]
    with open(run_dir / "csv_logs" / "metrics.csv") as f:
        flags = [row["train/ranks_distinct_cameras"] for row in csv.DictReader(f) if row.get("train/ranks_distinct_cameras")]
    assert flags and float(flags[0]) == 1.0
    assert output.count("\nscores\n") == 1  # one closing block (framework/console.py): rank 0's
    save = run_dir / "save"
    assert sorted(p.name for p in save.glob("it3-val-*.png")) == ["it3-val-0.png", "it3-val-1.png", "it3-val-2.png"]
    assert len(list((save / "it3-test").glob("*.png"))) == 6  # every turntable frame, from both ranks' shares
    assert len(list(save.glob("*.mp4"))) == 1 and len(list(save.rglob("model.obj"))) == 1
    assert "iou" in json.loads((run_dir / "metrics.json").read_text())
    assert json.loads((run_dir / "status.json").read_text())["status"] == "done"
