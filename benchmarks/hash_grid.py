"""Hash-grid throughput: forward+backward and forward-only points/s per backend, peak memory.

Usage: python benchmarks/hash_grid.py [--n-points 262144] [--levels 16] [--log2-table 19] [--repeat 5]
Prints one line per backend: cpp and torch on CPU; torch and tcnn on CUDA when present.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.encodings.hash_grid import HashGridConfig, HashGridEncoding  # noqa: E402


def _time(fn, repeat: int, cuda: bool) -> tuple[float, float]:
    """-> (wall seconds, process CPU seconds) per call. CPU time is what a shared machine's
    load cannot inflate; on idle cores wall ~ CPU / threads when the kernel scales."""
    fn()
    if cuda:
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        fn()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat, (time.process_time() - c0) / repeat


def bench(backend: str, device: str, args) -> None:
    cfg = HashGridConfig(n_levels=args.levels, log2_hashmap_size=args.log2_table, backend=backend)
    if args.finest:
        cfg.per_level_scale = float((args.finest / cfg.base_resolution) ** (1.0 / max(1, cfg.n_levels - 1)))
    enc = HashGridEncoding(cfg, device=device).to(device)
    x = torch.rand(args.n_points, 3, device=device)
    cuda = device == "cuda"

    def fwd_bwd():
        enc.zero_grad(set_to_none=True)
        enc(x).square().sum().backward()

    def fwd():
        with torch.no_grad():
            enc(x)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_fb, c_fb = _time(fwd_bwd, args.repeat, cuda)
    t_f, c_f = _time(fwd, args.repeat, cuda)
    mem = (torch.cuda.max_memory_allocated() / 2**20) if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{backend:6s} {device:4s} levels={cfg.n_levels} table=2^{cfg.log2_hashmap_size} N={args.n_points} "
        f"threads={torch.get_num_threads()}: fwd+bwd {args.n_points / t_fb / 1e6:.2f} M pts/s ({t_fb * 1e3:.1f} ms), "
        f"fwd {args.n_points / t_f / 1e6:.2f} M pts/s ({t_f * 1e3:.1f} ms), peak mem {mem:.0f} MiB "
        f"({'CUDA allocated' if cuda else 'process max RSS'}); CPU time fwd+bwd {c_fb * 1e3:.0f} ms, fwd {c_f * 1e3:.0f} ms; "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-points", type=int, default=2**18)
    p.add_argument("--levels", type=int, default=16)
    p.add_argument("--log2-table", type=int, default=19)
    p.add_argument("--finest", type=float, default=0.0, help="finest resolution (0: default per-level scale)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--backends", default="cpp,torch", help="CPU backends to time, comma-separated")
    args = p.parse_args()
    for backend in args.backends.split(","):
        bench(backend, "cpu", args)
    if torch.cuda.is_available():
        bench("torch", "cuda", args)
        try:
            import tinycudann  # noqa: F401

            bench("tcnn", "cuda", args)
        except ImportError:
            print("tcnn   skipped: tinycudann not installed")
    else:
        print("tcnn   skipped: no CUDA device")


if __name__ == "__main__":
    main()
