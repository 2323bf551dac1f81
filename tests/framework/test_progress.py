"""Progress a person reads (framework/progress.py, framework/callbacks.py): one line per update in a log,
tqdm on a terminal; the training's line printer driven by a real Lightning trainer."""
from __future__ import annotations

import io
import re

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from framework.callbacks import LossLinePrinter, LossProgressBar, progress_bar
from framework.progress import LineProgress, announce, duration, line_due, progress, progress_line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_durations_read_as_a_person_says_them():
    assert [duration(s) for s in (0.4, 42, 185, 3720)] == ["0s", "42s", "3m05s", "1h02m"]
    assert duration(float("nan")) == "?"


def test_a_progress_line():
    line = progress_line("step", 120, 1000, fields={"loss_sds": "0.123"}, rate=2.0)
    assert line == "step 120/1000  loss_sds 0.123  2 it/s  eta 7m20s"
    assert progress_line("step", 3, 1000, rate=0.25) == "step 3/1000  4 s/it  eta 1h06m"
    assert progress_line("test", 6, 24, unit="views", rate=0.25, rate_unit="views") == "test 6/24 views  4 s/view  eta 1m12s"
    done = progress_line("rendering", 64, 64, unit="views", rate=32.0, rate_unit="views", elapsed=2.0)
    assert done == "rendering 64/64 views  32 views/s  in 2s"


def test_lines_come_about_every_tenth_and_at_the_end():
    printed, due = 0, []
    for done in range(1, 101):
        if line_due(done, 100, printed, lines=10):
            printed = done
            due.append(done)
    assert due == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert line_due(7, 7, 6, lines=10) and not line_due(7, 7, 7, lines=10)


def test_a_log_gets_a_handful_of_plain_lines():
    log = io.StringIO()
    bar = LineProgress("rendering the exemplar bank of 'a red cube'", 4096, "views", stream=log)
    for _ in range(16):
        bar.update(256)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0] == "rendering the exemplar bank of 'a red cube' (4096 views) ..."
    assert 5 <= len(lines) <= 12, lines
    assert lines[-1].startswith("rendering the exemplar bank of 'a red cube' 4096/4096 views") and " in " in lines[-1]
    assert len(set(lines)) == len(lines)  # no update printed twice


def test_delayed_progress_says_nothing_for_quick_work():
    log = io.StringIO()
    with progress("loading cached banks", 30, "scenes", delay=60.0, stream=log) as bar:
        for _ in range(30):
            bar.update()
    assert log.getvalue() == ""


def test_a_terminal_gets_tqdm_and_nothing_shown_is_silent():
    terminal = Terminal()
    with progress("work", 3, "items", stream=terminal) as bar:
        bar.update(3)
    assert "\r" in terminal.getvalue() and "3/3" in terminal.getvalue()  # tqdm redraws in place
    quiet = io.StringIO()
    with progress("work", 3, stream=quiet, show=False) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""


def test_announce_says_what_a_wait_is_for():
    log = io.StringIO()
    with announce("compiling the kernel", stream=log, report_after=0.0):
        pass
    assert log.getvalue().splitlines() == ["compiling the kernel ...", "compiling the kernel: done in 0s"]


def test_the_bar_is_chosen_by_the_stream():
    assert isinstance(progress_bar(stream=io.StringIO()), LossLinePrinter)
    assert isinstance(progress_bar(stream=Terminal()), LossProgressBar)


class TinyModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).square().mean()
        self.log("train/loss_sds", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        pass

    def test_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader(n: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 2)), batch_size=1)


def test_the_line_printer_in_a_real_training(tmp_path):
    log = io.StringIO()
    printer = LossLinePrinter(refresh_rate=10, stream=log)
    trainer = pl.Trainer(max_steps=25, val_check_interval=20, check_val_every_n_epoch=None, num_sanity_val_steps=0,
                         logger=False, enable_checkpointing=False, enable_model_summary=False, callbacks=[printer],
                         default_root_dir=str(tmp_path), accelerator="cpu")
    module = TinyModule()
    trainer.fit(module, train_dataloaders=loader(100), val_dataloaders=loader(3))
    trainer.test(module, dataloaders=loader(8), verbose=False)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    steps = [int(m.group(1)) for line in lines if (m := re.match(r"step (\d+)/25  loss_sds [0-9.e+-]+(  |$)", line))]
    assert steps == [1, 10, 20, 25], lines  # one line per refresh, the first and the last step, nothing twice
    step_lines = [line for line in lines if line.startswith("step ")]
    assert "eta" not in step_lines[0] and "it/s" not in step_lines[0]  # the first step holds the set-up: no rate from it
    assert all("eta" in line for line in step_lines[1:-1])
    assert re.search(r"  in \d+s$", step_lines[-1])  # the last step: the training's time, no eta
    assert "validation at step 20: 3 views in 0s" in lines
    tests = [line for line in lines if line.startswith("test ")]
    assert tests[-1].startswith("test 8/8 views") and len(tests) == 4, tests


def test_a_long_run_gets_about_a_hundred_lines():
    printer = LossLinePrinter(refresh_rate=10, max_lines=100)

    class Trainer:
        global_step, max_steps = 0, 10000

    printer.on_train_start(Trainer(), None)
    assert sum(printer.step_due(step, 10000) for step in range(1, 10001)) == 101  # step 1, then every 100th
