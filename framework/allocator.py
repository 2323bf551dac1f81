"""Keep freed memory in the process for reuse (`trainer.keep_freed_memory`, on by default).

Why: PyTorch's CPU tensors come from the C library's malloc. glibc serves a block of 128 KiB or more
(its M_MMAP_THRESHOLD, raised on the fly up to 32 MiB) with a fresh `mmap` and gives it back to the
system when it is freed, and it hands the top of the heap back too once more than M_TRIM_THRESHOLD
of it is free. A training step allocates and frees the same few hundred MB of activations every
step, so every step the kernel faults those pages in again and zero-fills them. With the thresholds
set high, a freed block stays in the heap and the next step reuses it. Measured on the toy demo's
trained cube (2-core CPU): render + backward page-faulted 3.7x less (480k -> 129k minor faults over
60 steps), the step's median time was 0.94 of the default's (five pairs, 0.77-1.08 on a noisy
machine), and the whole demo spent 9 s of system time instead of 20, its peak memory 1.45 GB instead
of 1.32 (docs/toy-world-results.md). The numbers computed are the same: only where the memory comes
from changes. The cost: the process keeps its peak footprint instead of shrinking between steps.

The settings are glibc's `mallopt`, called through ctypes (what the environment variables
MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ / MALLOC_TOP_PAD_ set at start-up). Written here
because no maintained Python package sets them; jemalloc or tcmalloc preloaded with LD_PRELOAD would
do the same job from outside. Elsewhere (macOS, musl, Windows) there is no mallopt and this does
nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc's mallopt parameter numbers (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB from the heap (glibc's own raising stops at 32 MiB, mallopt(3));
#                           larger ones are still mmap'd and returned when freed
TRIM_THRESHOLD = (1 << 31) - 1  # never trim the heap top below 2 GiB free (the int parameter's largest value)
TOP_PAD = 64 << 20  # grow the heap 64 MiB at a time: fewer brk calls while a step's activations build up


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed blocks for reuse. -> True when set; False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 on a refused value
    return all(mallopt(p, v) == 1 for p, v in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
