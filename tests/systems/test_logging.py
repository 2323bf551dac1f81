"""The loggers receive the losses, the validation images and the turntable (W&B offline, TensorBoard, CSV)."""
from __future__ import annotations

import csv

import pytest

from tests.conftest import TINY_TOY_RUN, launch


def test_wandb_offline_tensorboard_and_csv_receive_losses_images_and_the_turntable(tmp_path, toy_cache, monkeypatch):
    pytest.importorskip("wandb", reason="W&B is the optional [wandb] extra (installed with [dev])")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    run_dir = tmp_path / "run"
    overrides = [o for o in TINY_TOY_RUN if not o.startswith("logger.tensorboard")]
    result = launch(["--config-name", "dreamfusion-toy", *overrides, "logger.wandb=true", "logger.tensorboard=true",
                     f"hydra.run.dir={run_dir}"], toy_cache)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(run_dir / "csv_logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(row.get("train/loss_sds") for row in rows)
    events = b"".join(p.read_bytes() for p in (run_dir / "tb_logs").rglob("events.out.tfevents*"))
    for tag in (b"train/loss_sds", b"val/view0", b"test/turntable"):
        assert tag in events, tag
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir())
    media = {p.suffix for p in (offline[0] / "files" / "media").rglob("*") if p.is_file()}
    assert {".png", ".mp4"} <= media, media
