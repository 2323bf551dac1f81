"""Validation images and the turntable video, sent to the run's loggers beside the files in save/.

- TensorBoard: each validation image (`add_image`); the turntable as one image of 8 evenly spaced
  frames (TensorBoard's `add_video` needs moviepy, which this project does not install).
- Weights & Biases: each validation image and the turntable mp4 itself (`wandb.Video` of the file).
- CSV: the losses only (a CSV row holds numbers); the files are in save/.

Only the global-zero rank calls these (BaseSystem writes media on rank 0 only).
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from pytorch_lightning.loggers import TensorBoardLogger

TURNTABLE_STRIP_FRAMES = 8
_writer_numbers = itertools.count()


class TensorBoardEventsLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger, each events file of its own name.

    Lightning closes the writer after `fit` and opens a new one for `test`. tensorboardX (Lightning's
    writer when the tensorboard package is absent) names the file by the second it opened and the
    host, so a fit shorter than a second made the test's writer reuse the fit's file name, and one of
    the two phases (the turntable) was lost."""

    @property
    def experiment(self) -> Any:
        if self._experiment is None:
            self._kwargs["filename_suffix"] = f".{os.getpid()}.{next(_writer_numbers)}"
        return super().experiment


def _is_wandb(logger: Any) -> bool:
    return type(logger).__name__ == "WandbLogger"  # imported only when W&B is installed and asked for


def log_image(loggers: Iterable[Any], tag: str, image: np.ndarray, step: int) -> None:
    """image: (H, W, 3) float in [0, 1]."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, global_step=step, dataformats="HWC")
        elif _is_wandb(logger):
            logger.log_image(key=tag, images=[image], step=step)


def log_turntable(loggers: Iterable[Any], tag: str, frames: list[np.ndarray], video: Path, step: int) -> None:
    """frames: the (H, W, 3) float images of the turntable; video: its mp4 file."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and frames:
            picks = np.linspace(0, len(frames) - 1, min(TURNTABLE_STRIP_FRAMES, len(frames))).round().astype(int)
            strip = np.concatenate([frames[i] for i in picks], axis=1)
            logger.experiment.add_image(tag, strip, global_step=step, dataformats="HWC")
        elif _is_wandb(logger) and video.is_file():
            logger.log_video(key=tag, videos=[str(video)], step=step, format=["mp4"])
