"""Hash-grid speed as a ratio to a plain hand-written loop (the probe), timed side by side.

Usage: python benchmarks/hash_grid.py [--sizes 16:19,12:17:256] [--backends cpp,torch]
           [--n-points 262144] [--repeat 7] [--kernel NAME=path/to/kernel.cpp]

The probe (benchmarks/hash_grid_probe.cpp, compiled with the kernel's flags, same threads) does
the same lookups as the plain loop one writes by hand: each thread a contiguous share of the
points, level by level, point by point: the dense index or tcnn's hash, trilinear weights,
gather; backward the same loop scatter-adding into one gradient buffer per thread, then summed.
No autograd, no framework, no prefetching. Its forward and table gradient are checked against
each backend on a small case first (the `check` lines: "same" or the run stops).

Sizes are LEVELS:LOG2_TABLE[:FINEST_RESOLUTION]: 16:19 is the default grid (finest 4096),
12:17:256 the demo's (configs/dreamfusion-toy.yaml). Points are uniform in the unit cube; the
backend's forward+backward is `enc(x).backward(g)` (autograd included), the probe's is its
forward then backward with the same g. Each repeat times the probe and the backend back to back,
so load on a shared machine hits both; figures are medians over repeats. One line per backend
and size, for scripts:

    hash_grid <backend> L<levels> T<log2 table> fwd+bwd <M pts/s> probe <M pts/s> ratio <r>

then an indented line with the forward-only figures. --kernel NAME=PATH also times another
build of the C++ kernel (a source with the same functions, e.g. an older version from git) as
backend NAME, beside the current one. On CUDA the torch and tcnn backends' speeds follow (no probe).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models.encodings.hash_grid as hg  # noqa: E402
from models.encodings.hash_grid import HashGridConfig, HashGridEncoding  # noqa: E402

PROBE_SOURCE = Path(__file__).with_name("hash_grid_probe.cpp")


def encoding(levels: int, log2_table: int, finest: float | None, backend: str, device: str = "cpu") -> HashGridEncoding:
    cfg = HashGridConfig(n_levels=levels, log2_hashmap_size=log2_table, backend=backend)
    if finest:
        cfg.per_level_scale = float((finest / cfg.base_resolution) ** (1.0 / max(1, levels - 1)))
    return HashGridEncoding(cfg, device=device).to(device)


def level_tensors(enc: HashGridEncoding) -> tuple:
    return (enc._scale, enc._resolution, enc._params, enc._offset, enc._dense)


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def check(probe, enc: HashGridEncoding, backend: str) -> None:
    """The probe computes what the backend computes: forward and table gradient on a small case."""
    x = torch.rand(4096, 3)
    x[:5] = 1.0  # the far edge, where dense levels wrap
    g = torch.randn(4096, enc.n_output_dims)
    enc.zero_grad(set_to_none=True)
    out = enc(x)
    out.backward(g)
    table, lv = enc.table.detach(), level_tensors(enc)
    p_out, p_grad = probe.forward(x, table, *lv), probe.backward(x, g, table.shape[0], *lv)
    d_out, d_grad = (out.detach() - p_out).abs().max().item(), (enc.table.grad - p_grad).abs().max().item()
    ok = d_out <= 1e-5 and d_grad <= 1e-4 * max(1.0, p_grad.abs().max().item())
    print(f"check {backend} L{enc.cfg.n_levels} T{enc.cfg.log2_hashmap_size}: probe forward max|diff| {d_out:.1e}, "
          f"table gradient max|diff| {d_grad:.1e}: {'same' if ok else 'DIFFERENT'}")
    if not ok:
        raise SystemExit(f"the probe and the {backend} backend disagree; the ratio would be meaningless")


def bench(probe, backend: str, levels: int, log2_table: int, finest: float | None, args) -> None:
    enc = encoding(levels, log2_table, finest, "cpp" if backend not in ("torch",) else "torch")
    with torch.no_grad():
        enc.table.normal_()
    check(probe, enc, backend)
    n, table, lv = args.n_points, enc.table.detach(), level_tensors(enc)
    x, g = torch.rand(n, 3), torch.randn(n, enc.n_output_dims)

    def back_fb():
        enc.zero_grad(set_to_none=True)
        enc(x).backward(g)

    def back_f():
        with torch.no_grad():
            enc(x)

    def probe_fb():
        probe.forward(x, table, *lv)
        probe.backward(x, g, table.shape[0], *lv)

    def probe_f():
        probe.forward(x, table, *lv)

    times = {k: [] for k in ("back_fb", "probe_fb", "back_f", "probe_f")}
    for fn in (back_fb, probe_fb):  # warm-up: first-touch page faults, lazy builds
        fn()
    for _ in range(args.repeat):
        for name, fn in (("probe_fb", probe_fb), ("back_fb", back_fb), ("probe_f", probe_f), ("back_f", back_f)):
            times[name].append(seconds(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio_fb = statistics.median(p / b for p, b in zip(times["probe_fb"], times["back_fb"]))
    ratio_f = statistics.median(p / b for p, b in zip(times["probe_f"], times["back_f"]))
    mp = lambda t: n / t / 1e6  # noqa: E731
    print(f"hash_grid {backend} L{levels} T{log2_table} fwd+bwd {mp(med['back_fb']):.3f} probe {mp(med['probe_fb']):.3f} ratio {ratio_fb:.2f}")
    print(f"    fwd {mp(med['back_f']):.3f} probe {mp(med['probe_f']):.3f} ratio {ratio_f:.2f}; finest {enc.levels[-1]['resolution']}, "
          f"N={n}, threads={torch.get_num_threads()}, {args.repeat} repeats, load average {os.getloadavg()[0]:.1f}", flush=True)


def bench_cuda(backend: str, levels: int, log2_table: int, finest: float | None, args) -> None:
    enc = encoding(levels, log2_table, finest, backend, "cuda")
    x, g = torch.rand(args.n_points, 3, device="cuda"), torch.randn(args.n_points, enc.n_output_dims, device="cuda")
    enc(x).backward(g)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.repeat):
        enc.zero_grad(set_to_none=True)
        enc(x).backward(g)
    torch.cuda.synchronize()
    print(f"hash_grid {backend}-cuda L{levels} T{log2_table} fwd+bwd {args.n_points * args.repeat / (time.perf_counter() - t0) / 1e6:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="16:19,12:17:256", help="LEVELS:LOG2_TABLE[:FINEST], comma-separated")
    p.add_argument("--backends", default="cpp,torch", help="CPU backends to time, comma-separated")
    p.add_argument("--n-points", type=int, default=2**18)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--kernel", action="append", default=[], metavar="NAME=PATH", help="also time this C++ kernel source as backend NAME")
    args = p.parse_args()
    probe = hg.build_cpu_extension("hash_grid_probe", PROBE_SOURCE)
    kernels = {"cpp": hg.load_cpp_kernel()} if "cpp" in args.backends.split(",") else {}
    for spec in args.kernel:
        name, path = spec.split("=", 1)
        kernels[name] = hg.build_cpu_extension(f"hash_grid_bench_{name}", Path(path))
    backends = [b for b in args.backends.split(",") if b != "cpp"]
    for spec in args.sizes.split(","):
        levels, log2_table, *finest = spec.split(":")
        size = (int(levels), int(log2_table), float(finest[0]) if finest else None)
        for name, module in kernels.items():
            hg._cpp_module = module  # the cpp backend calls whichever build is loaded
            bench(probe, name, *size, args)
        hg._cpp_module = kernels.get("cpp")
        for backend in backends:
            bench(probe, backend, *size, args)
        if torch.cuda.is_available():
            for backend in ("torch", "tcnn"):
                try:
                    bench_cuda(backend, *size, args)
                except ImportError:
                    print("tcnn-cuda skipped: tinycudann not installed")


if __name__ == "__main__":
    main()
