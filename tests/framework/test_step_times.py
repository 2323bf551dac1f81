"""The per-step time breakdown: nesting by where a section runs, the step's parts and their shares."""
from __future__ import annotations

import json
import time

from framework import step_times
from framework.step_times import StepTimes, section


def fake_step(clock: StepTimes, render_s: float, backward_s: float) -> None:
    clock.on_train_batch_start(None, None, None, 0)
    with section("render"):
        with section("sampling"):
            time.sleep(render_s / 2)
        with section("field"):
            time.sleep(render_s / 2)
    clock.on_before_backward(None, None, None)
    time.sleep(backward_s)
    clock.on_after_backward(None, None)
    clock.on_before_optimizer_step(None, None, None)
    clock.on_train_batch_end(None, None, None, None, 0)


def test_sections_nest_under_the_step_and_phases(tmp_path):
    clock = StepTimes()
    clock.activate()
    try:
        for _ in range(3):
            fake_step(clock, render_s=0.02, backward_s=0.01)
        clock.on_validation_start(None, None)
        with section("render"):
            time.sleep(0.005)
        clock.on_validation_end(None, None)
        table = clock.table()
    finally:
        clock.deactivate()
    assert table["train step"]["calls"] == 3
    assert table["train step/render/sampling"]["calls"] == 3
    assert table["train step/backward"]["calls"] == 3 and table["train step/optimizer"]["calls"] == 3
    assert "validation/render" in table and "train step/render" in table
    # the parts of the step: render >= its children, the top-level parts sum to the step (with "other")
    assert table["train step/render"]["seconds"] >= table["train step/render/field"]["seconds"]
    top = [k for k in table if k.startswith("train step/") and k.count("/") == 1]
    assert abs(sum(table[k]["share_of_step"] for k in top) - 1.0) < 0.01
    assert 0.5 < table["train step/render"]["share_of_step"] < 0.8  # 20 of ~30 ms
    assert 15 < table["train step/render"]["ms_per_step"] < 40


def test_section_is_free_when_off_and_finish_writes_json(tmp_path, capsys):
    assert step_times._ACTIVE is None
    with section("render"):  # no clock: nothing recorded, nothing raised
        pass
    clock = StepTimes()
    clock.activate()
    fake_step(clock, render_s=0.002, backward_s=0.001)
    clock.finish(tmp_path)
    assert step_times._ACTIVE is None
    written = json.loads((tmp_path / "step_times.json").read_text())
    assert set(written) >= {"train step", "train step/render", "train step/backward", "train step/other"}
    printed = capsys.readouterr().out
    assert "time per part (1 training steps" in printed and "sampling" in printed
