"""keep_freed_memory: a freed block is reused instead of being faulted in again (framework/allocator.py).

Page faults are counted by the kernel (getrusage), not timed, so the test is the same on a busy machine.
Each case runs in its own interpreter: the malloc settings are per process and stay set.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# rounds of two 64 MiB tensors (16384 pages each) allocated, written and freed, as a training step does
# with its activations; prints the minor page faults of 10 rounds after 16 warm-up rounds. The warm-up is
# needed: with the settings kept, glibc's heap still grows for the first few rounds (measured here: 2-4 rounds
# before every block is reused, 8 or more on the CI machine) before it settles, as a training run's does
# in its first steps
LOOP = """
import resource, sys, torch
sys.path.insert(0, {root!r})
from framework.allocator import keep_freed_memory
if {keep}:
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def one_round():
    x = torch.ones(16 << 20); y = x * 2.0; del x, y
for _ in range(16):
    one_round()
before = faults()
for _ in range(10):
    one_round()
print(faults() - before)
"""


def minor_faults(keep: bool) -> int:
    out = subprocess.run([sys.executable, "-c", LOOP.format(root=str(ROOT), keep=keep)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's: elsewhere keep_freed_memory does nothing")
def test_a_freed_block_is_reused_instead_of_faulted_in_again():
    returned, kept = minor_faults(keep=False), minor_faults(keep=True)
    assert returned > 10 * 2 * 16384 * 0.9, returned  # glibc's default: each round maps and faults in its pages anew
    assert kept < returned / 3, (kept, returned)  # measured after the warm-up: 0 against 328k


def test_the_run_config_turns_it_on_by_default_and_off_by_key():
    from framework.run_config import TrainerConfig

    assert TrainerConfig().keep_freed_memory is True
    assert TrainerConfig(keep_freed_memory=False).keep_freed_memory is False
