"""The errors a run ends with, and the exit code of each (documented in the README).

    0  done
    1  a crash: a bug or an environment failure, printed with its traceback
    2  the user's input: config, prompt, picture, weights, checkpoint (UserError; message only)
    3  training failed: the loss or its gradient stayed non-finite, or the scene came out empty
       (TrainingFailed; message only, the run directory and its last good checkpoint are kept)
    4  stopped by a signal (SIGTERM, SIGUSR1: a scheduler's preemption or SLURM's warning; SIGINT: Ctrl-C)
       after the current step, with ckpts/last.ckpt written at the step reached (RunStopped; the resume
       command is printed). One code for the three signals, rather than the shell's 128 + signum, so a
       scheduler can tell "stopped, checkpoint written: resume me" from "killed" (which the shell
       reports as 128 + signum: 137 for SIGKILL, 143 for a SIGTERM that came before training began).
"""
from __future__ import annotations

EXIT_DONE = 0
EXIT_CRASH = 1
EXIT_USER_INPUT = 2
EXIT_TRAINING_FAILED = 3
EXIT_STOPPED = 4


class UserError(Exception):
    """A problem with the user's input (config, prompt, files, weights); the message names the
    problem and the fix. launch.py prints it without a traceback."""

    exit_code = EXIT_USER_INPUT


class ConfigError(UserError, ValueError):
    """A configuration problem, with the key and the fix in its message."""


class TrainingFailed(Exception):
    """Training ran but cannot give a result (non-finite steps in a row, an empty scene); the message
    says what happened, at which step, and what to change."""

    exit_code = EXIT_TRAINING_FAILED


class RunStopped(Exception):
    """Training stopped on a signal after finishing its step, with the checkpoint written (framework/preemption.py).
    `status` is what status.json records: the step, the signal, the checkpoint and the resume command."""

    exit_code = EXIT_STOPPED

    def __init__(self, message: str, status: dict):
        super().__init__(message)
        self.status = status
