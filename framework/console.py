"""What a run prints is for a person: library notices that say nothing about this run are left out.

Dropped: Lightning's advertising tips ("💡 Tip: ... litlogger"), and deprecation notices raised inside
the libraries themselves (Lightning's pytree `LeafSpec`, torch's `all_gather` inside Lightning's DDP
gather), which no change of this project's code or config could act on. Everything else, Lightning's
"GPU available" lines and every warning about this run's own settings included, is kept.
"""
from __future__ import annotations

import logging
import warnings

LIBRARY_DEPRECATIONS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_library_notices() -> None:
    for pattern in LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
