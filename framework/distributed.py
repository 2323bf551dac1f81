"""Which process of a multi-process run (DDP) this is, known before the Trainer exists.

A run with `trainer.devices=N trainer.strategy=ddp` is N processes: Lightning starts N-1 more
copies of `launch.py` with LOCAL_RANK / NODE_RANK set (on SLURM, each task has SLURM_PROCID).
The runner seeds each process with `seed + rank` before it builds anything, so every rank draws
its own cameras and noise (threestudio's ranks drew the same ones); only rank 0 writes the run's
files (images, video, export, metrics, status).
"""
from __future__ import annotations

import os

MAX_DEVICES_PER_NODE = 1000  # only for the seed of NODE_RANK/LOCAL_RANK launches: any bound above the device count


def process_rank() -> int:
    """This process's global rank: 0 for a single-process run and for DDP's first process."""
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key) is not None and (key != "SLURM_PROCID" or int(os.environ.get("SLURM_NTASKS", "1")) > 1):
            return int(os.environ[key])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return int(os.environ.get("NODE_RANK", "0")) * MAX_DEVICES_PER_NODE + local


def is_main_process() -> bool:
    return process_rank() == 0
