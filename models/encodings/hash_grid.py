"""Multiresolution hash-grid encoding (Instant-NGP, Müller et al. 2022, Sec. 3).

Three backends share one config and one parameter layout (`backend: auto | torch | cpp | tcnn`):

* ``torch``: pure PyTorch, runs anywhere (tiny-cuda-nn is CUDA-only). It reproduces
  tiny-cuda-nn's ``HashGrid`` exactly, so a table trained with one backend loads into another
  (``HashGridEncoding.table`` flattened == tcnn's ``params``):
    - level l: ``scale = base_resolution * per_level_scale**l - 1``, ``resolution = ceil(scale) + 1``;
    - params in level = ``min(next_multiple(resolution**3, 8), 2**log2_hashmap_size)``,
      levels stored one after another (offsets are the running sum);
    - a point maps to ``pos = x * scale + 0.5``; the 8 corners of ``floor(pos)`` are
      interpolated trilinearly;
    - index: dense ``x + y*res + z*res**2`` when ``resolution**3`` fits the level's table, else
      the spatial hash ``(x*1) ^ (y*2654435761) ^ (z*805459861)`` (uint32, paper eq. 4), both
      modulo the level's size (which also wraps the one-past-the-end corners of dense levels,
      exactly as tcnn does).
  Not reproduced: tcnn's fused multiply-add and optional half precision (rounding only).
  Inputs are clamped to [0, 1] (tcnn lets outside points wrap around the table).
* ``cpp``: the same maths as fused C++ loops (hash_grid_cpu.cpp, compiled on first use with
  torch.utils.cpp_extension, cached; CPU, float32). Hand-written because PyTorch's CPU
  gather/scatter ops cost several ns per element each and need (N, L, 8)-sized temporaries.
  benchmarks/hash_grid.py times it side by side with a plain hand-written loop (the probe,
  benchmarks/hash_grid_probe.cpp): forward+backward, 2 threads, it ran at 2.1x the probe at
  16 x 2^19 and 1.2x at the demo's 12 x 2^17 (torch: 0.17x and 0.08x). It is differentiable
  in the table, in x, and in the second-order combination analytic normals need (input_grad,
  and its backward as one fused pass, second_order; the benchmark's `normals` line times that
  path against another kernel source).
* ``tcnn``: tiny-cuda-nn's CUDA kernel, imported only when chosen.

``auto``: tcnn on CUDA when importable (else torch); on CPU cpp when it builds, else torch.

Speed limit on CPU: every point reads 8 corners x n_levels entries at hashed, i.e. random,
addresses in a table of up to 16 x 2^19 x 8 bytes = 64 MB, and backward scatters as many;
this is memory-latency bound (about 0.5 M points/s forward+backward on 2 busy cores for both the
default 16-level grid and the demo's 12 x 2^17), far from the 5 M points/s a GPU gives.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from framework.progress import announce
from framework.value_checks import at_least, check_fields, greater_than, one_of

PRIMES = (1, 2654435761, 805459861)  # tcnn's coherent prime hash, one per dimension
BACKENDS = ("auto", "torch", "cpp", "tcnn")
TCNN_INSTALL = "pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch"


@dataclass
class HashGridConfig:
    _target_: str = "models.encodings.hash_grid.HashGridEncoding"
    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.4472692374403782
    backend: str = "auto"  # auto | torch | cpp | tcnn (see the module docstring)

    def __post_init__(self) -> None:
        check_fields(
            self,
            n_levels=at_least(1),
            n_features_per_level=at_least(1),
            log2_hashmap_size=at_least(1),
            base_resolution=at_least(1),
            per_level_scale=greater_than(0),
            backend=one_of(*BACKENDS),
        )


def level_layout(cfg: HashGridConfig, in_dims: int = 3) -> list[dict]:
    """Per-level scale, resolution, table size, offset and dense flag, following tcnn's rules."""
    levels, offset = [], 0
    hashmap_size = 1 << cfg.log2_hashmap_size
    for lvl in range(cfg.n_levels):
        scale = math.pow(2.0, lvl * math.log2(cfg.per_level_scale)) * cfg.base_resolution - 1.0
        res = int(math.ceil(scale)) + 1
        n_dense = res**in_dims
        params = min(((n_dense + 7) // 8) * 8, hashmap_size)
        levels.append(dict(scale=scale, resolution=res, params=params, offset=offset, dense=n_dense <= params))
        offset += params
    return levels


def _corner_indices(grid: Tensor, res: Tensor, params: Tensor, offset: Tensor, n_dense: int) -> Tensor:
    """Global table rows of the 8 corners of every point at every level.

    grid (N, L, 3) int32 = floor(pos); per-level (L,) tensors; the first `n_dense` levels are
    dense (resolution grows with the level) -> (N, L, 8) int32, corner c = bx + 2 by + 4 bz.
    int32 throughout: half the memory traffic of int64, and for hashed levels only the low
    log2_hashmap_size bits of tcnn's uint32 hash matter, which two's-complement wrap keeps.
    """
    n = grid.shape[0]
    parts = []
    if n_dense > 0:
        gd, r = grid[:, :n_dense], res[:n_dense]
        base = gd[..., 0] + gd[..., 1] * r + gd[..., 2] * (r * r)  # (N, Ld)
        one = torch.ones_like(r)
        delta = torch.stack([torch.zeros_like(r), one, r, r + 1], -1)  # (Ld, 4): (bx, by) in xy order
        delta = torch.cat([delta, delta + (r * r)[:, None]], -1)  # (Ld, 8)
        idx = base[..., None] + delta
        # one-past-the-end corners wrap like tcnn's `index % hashmap_size` (idx < 2 * params here)
        p = params[:n_dense][:, None]
        idx = torch.where(idx >= p, idx - p, idx)
        parts.append(idx + offset[:n_dense][:, None])
    if n_dense < grid.shape[1]:
        gh = grid[:, n_dense:]
        mask = (params[n_dense:] - 1)[:, None]  # hashed levels have a power-of-two table
        p1, p2 = PRIMES[1] - 2**32, PRIMES[2]  # as int32 (two's complement)
        hx0 = gh[..., 0]
        hy0 = gh[..., 1] * p1
        hz0 = gh[..., 2] * p2
        hx = torch.stack([hx0, hx0 + 1], -1)
        xy = torch.cat([hx ^ hy0[..., None], hx ^ (hy0 + p1)[..., None]], -1)  # (N, Lh, 4)
        idx = torch.cat([xy ^ hz0[..., None], xy ^ (hz0 + p2)[..., None]], -1)  # (N, Lh, 8)
        parts.append((idx & mask) + offset[n_dense:][:, None])
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1).reshape(n, -1, 8)


def _corner_weights(frac: Tensor) -> Tensor:
    """frac (N, L, 3) -> trilinear weights (N, L, 8) for corners c = bx + 2 by + 4 bz."""
    w = [torch.stack([1.0 - frac[..., d], frac[..., d]], -1) for d in range(3)]
    wxy = (w[1][..., :, None] * w[0][..., None, :]).flatten(-2)
    return (w[2][..., :, None] * wxy[..., None, :]).flatten(-2)


def _gather(table: Tensor, idx: Tensor) -> Tensor:
    """table (T, F), idx (...) -> (..., F); F == 2 gathers one 8-byte complex per row (faster)."""
    if table.shape[1] == 2 and table.dtype == torch.float32:
        rows = torch.view_as_complex(table).index_select(0, idx.reshape(-1))
        return torch.view_as_real(rows).reshape(*idx.shape, 2)
    return table.index_select(0, idx.reshape(-1)).reshape(*idx.shape, table.shape[1])


class _HashGridInterp(torch.autograd.Function):
    """out[n, l] = sum_c w[n, l, c] * table[idx[n, l, c]]; backward scatters into the table only."""

    @staticmethod
    def forward(ctx, table: Tensor, idx: Tensor, w: Tensor) -> Tensor:  # -> (N, L, F)
        out = torch.einsum("nlcf,nlc->nlf", _gather(table, idx), w)
        ctx.save_for_backward(idx, w)
        ctx.table_shape = table.shape
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        idx, w = ctx.saved_tensors
        n_rows, n_feat = ctx.table_shape
        contrib = w[..., None] * grad_out[:, :, None, :]  # (N, L, 8, F)
        # one interleaved 1-D index_add is faster on CPU than a 2-D one or one per feature
        flat_idx = (idx.reshape(-1, 1) * n_feat + torch.arange(n_feat, device=idx.device)).reshape(-1)
        grad = torch.zeros(n_rows * n_feat, dtype=grad_out.dtype, device=grad_out.device)
        grad.index_add_(0, flat_idx, contrib.reshape(-1))
        return grad.view(n_rows, n_feat), None, None


CPP_SOURCE = Path(__file__).with_name("hash_grid_cpu.cpp")
CPP_KERNEL_NAME = "hash_grid_cpu_v14"  # bump with every change of the source, so that no stale cached build is loaded

_cpp_module = None


def build_cpu_extension(name: str, source: Path):
    """Compile (first use, about a minute; cached in ~/.cache/torch_extensions, or
    $TORCH_EXTENSIONS_DIR) and import one C++ source with the kernel's flags; the benchmark's
    probe (benchmarks/hash_grid_probe.cpp) is built by this too."""
    from torch.utils.cpp_extension import load

    # the `ninja` wheel puts its binary beside this interpreter, which may not be on PATH
    bin_dir = os.path.dirname(sys.executable)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    build = kernel_build_directory(name)
    built = build is not None and any(build.glob(f"{name}*.so"))
    compiling = contextlib.nullcontext() if built else announce(
        f"compiling the C++ kernel {source.name} (first use only, about a minute on 2 cores; cached in {build or 'torch_extensions'})"
    )
    with compiling:
        return load(name=name, sources=[str(source)], extra_cflags=["-O3", "-fopenmp", "-funroll-loops"], extra_ldflags=["-fopenmp"])


def load_cpp_kernel():
    """The CPU kernel (models/encodings/hash_grid_cpu.cpp), compiled on first use."""
    global _cpp_module
    if _cpp_module is None:
        _cpp_module = build_cpu_extension(CPP_KERNEL_NAME, CPP_SOURCE)
    return _cpp_module


def kernel_build_directory(name: str) -> Path | None:
    """Where torch.utils.cpp_extension builds (and caches) the extension `name` ($TORCH_EXTENSIONS_DIR or
    ~/.cache/torch_extensions/<python>_<accelerator>/<name>); None if torch no longer says (a private helper)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(name, verbose=False))
    except (ImportError, TypeError, OSError):
        return None


class _HashGridCpp(torch.autograd.Function):
    """The torch backend's interpolation as fused C++ loops (CPU, float32); d/dtable only."""

    @staticmethod
    def forward(ctx, table: Tensor, x: Tensor, levels: tuple, precomputed: Tensor | None = None) -> Tensor:  # -> (N, L * F)
        ctx.save_for_backward(x)
        ctx.levels, ctx.n_rows = levels, table.shape[0]
        if precomputed is not None:  # this interpolation, done earlier without gradients (see HashGridEncoding)
            return precomputed.clone()
        return load_cpp_kernel().interp(x, table, None, *levels)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        return load_cpp_kernel().scatter(x, grad_out.contiguous(), ctx.n_rows, None, *ctx.levels), None, None, None


class _InputPath(torch.autograd.Function):
    """Adds zero to the encoding but carries its x-dependence: backward gives d(enc)/dx only.

    Kept apart from _HashGridCpp so that autograd.grad(density, x) (analytic normals) runs only
    the input-gradient kernel, and loss.backward() only the table scatter where x is not needed.
    """

    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, levels: tuple, normals_only: bool) -> Tensor:
        ctx.save_for_backward(x, table)
        ctx.levels, ctx.normals_only = levels, normals_only
        return x.new_zeros(x.shape[0], levels[0].shape[0] * table.shape[1])

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        if ctx.normals_only and not torch.is_grad_enabled():
            # the caller only wants d/dx inside a create_graph autograd.grad (analytic normals);
            # a later plain backward reaching x again (second-order terms) would be wasted work
            return None, None, None, None
        x, table = ctx.saved_tensors
        return _InputGrad.apply(table, x, grad_out.contiguous(), ctx.levels), None, None, None


class _InputGrad(torch.autograd.Function):
    """(table, x, g) -> grad_x (N, 3), differentiable in table and g (what trains analytic normals);
    the x-Hessian of the piecewise-trilinear interpolation is not propagated (points are not trained)."""

    @staticmethod
    def forward(ctx, table: Tensor, x: Tensor, g: Tensor, levels: tuple) -> Tensor:
        ctx.save_for_backward(table, x, g)
        ctx.levels = levels
        return load_cpp_kernel().input_grad(x, table, g, *levels)

    @staticmethod
    def backward(ctx, h_x: Tensor):
        table, x, g = ctx.saved_tensors
        # grad_x is bilinear in (table, g) via dw_c/dx . h_x: d_g = interp(x, table, h_x) and
        # d_table = scatter(x, g, h_x), fused (they share corners and weights)
        k, lv, h_x = load_cpp_kernel(), ctx.levels, h_x.contiguous()
        if hasattr(k, "second_order"):
            d_g, d_table = k.second_order(x, table, g, h_x, *lv)
        else:  # an older kernel source timed by benchmarks/hash_grid.py --kernel
            d_g, d_table = k.interp(x, table, h_x, *lv), k.scatter(x, g, table.shape[0], h_x, *lv)
        return d_table, None, d_g, None


class HashGridEncoding(nn.Module):
    """x (N, in_dims) in [0, 1] -> features (N, n_levels * n_features_per_level), level-major.

    `table` (n_params, F) holds every level's entries in tcnn's order (torch and cpp backends);
    the tcnn backend keeps them in `tcnn_encoding.params` (flat, same order).
    """

    def __init__(self, cfg: HashGridConfig, in_dims: int = 3, device: torch.device | str | None = None):
        super().__init__()
        self.cfg = cfg
        self.in_dims = in_dims
        self.n_output_dims = cfg.n_levels * cfg.n_features_per_level
        self.levels = level_layout(cfg, in_dims)
        self.n_params = self.levels[-1]["offset"] + self.levels[-1]["params"]
        self.n_dense_levels = sum(lv["dense"] for lv in self.levels)
        self.n_active_levels = cfg.n_levels
        self.backend = choose_backend(cfg.backend, device)
        if self.backend == "tcnn":
            import tinycudann as tcnn

            self.tcnn_encoding = tcnn.Encoding(
                in_dims,
                {
                    "otype": "HashGrid",
                    "n_levels": cfg.n_levels,
                    "n_features_per_level": cfg.n_features_per_level,
                    "log2_hashmap_size": cfg.log2_hashmap_size,
                    "base_resolution": cfg.base_resolution,
                    "per_level_scale": cfg.per_level_scale,
                },
                dtype=torch.float32,
            )
            return
        if in_dims != 3:
            raise ValueError("the torch and cpp hash-grid backends implement 3-D inputs only")
        # tcnn initialises its grid uniformly in [-1e-4, 1e-4]; so do we (same feature scale)
        self.table = nn.Parameter(torch.empty(self.n_params, cfg.n_features_per_level).uniform_(-1e-4, 1e-4))
        self.register_buffer("_scale", torch.tensor([lv["scale"] for lv in self.levels], dtype=torch.float32), persistent=False)
        for name in ("resolution", "params", "offset", "dense"):
            values = torch.tensor([int(lv[name]) for lv in self.levels], dtype=torch.int64)
            self.register_buffer(f"_{name}", values, persistent=False)  # int64 for the C++ kernel
            if name != "dense":  # int32 for the torch backend's index maths
                self.register_buffer(f"_{name}32", values.to(torch.int32), persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints move between backends: `table` (torch, cpp) == `tcnn_encoding.params` flattened
        ours, theirs = (prefix + "tcnn_encoding.params", prefix + "table") if self.backend == "tcnn" else (prefix + "table", prefix + "tcnn_encoding.params")
        if ours not in state_dict and theirs in state_dict:
            value = state_dict.pop(theirs)
            state_dict[ours] = value.reshape(-1) if self.backend == "tcnn" else value.reshape(-1, self.cfg.n_features_per_level)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def reusable_output(self) -> bool:
        """Whether `forward(x, precomputed=...)` can take this encoding's own output for x, computed
        earlier without gradients, instead of interpolating again (the cpp backend, whose backward
        needs only x; the torch backend's needs its corner indices and weights, tcnn's its own state)."""
        return self.backend == "cpp"

    def set_active_levels(self, n: int) -> None:
        """Progressive training: levels >= n output zeros (and so get no gradient)."""
        self.n_active_levels = max(1, min(int(n), self.cfg.n_levels))

    def forward(self, x: Tensor, normals_only: bool = False, precomputed: Tensor | None = None) -> Tensor:  # (N, 3) -> (N, L * F)
        """normals_only: x's gradient is wanted only inside a create_graph autograd.grad (analytic
        normals); the cpp backend then skips it in later plain backward passes.
        precomputed: (N, L * F) this encoding's output for the same x and table, computed earlier
        without gradients (the renderer's early-stop pass); used as the forward value where
        `reusable_output`, ignored elsewhere. Gradients are the same either way."""
        n_feat, n_act = self.cfg.n_features_per_level, self.n_active_levels
        if self.backend == "tcnn":
            out = self.tcnn_encoding(x).float()
            if n_act < self.cfg.n_levels:
                out = out * (torch.arange(self.n_output_dims, device=out.device) < n_act * n_feat).to(out.dtype)
            return out
        x = x.clamp(0.0, 1.0).to(self.table.dtype)
        x_grad = x.requires_grad and torch.is_grad_enabled()
        if self.backend == "cpp" and x.device.type == "cpu" and x.dtype == torch.float32:
            levels = (self._scale[:n_act],) + tuple(getattr(self, f"_{k}")[:n_act] for k in ("resolution", "params", "offset", "dense"))
            active = None if precomputed is None else precomputed[:, : n_act * n_feat]
            out = _HashGridCpp.apply(self.table, x.detach().contiguous(), levels, active)
            if x_grad:
                out = out + _InputPath.apply(x.contiguous(), self.table, levels, normals_only)
        else:
            pos = x[:, None, :] * self._scale[None, :n_act, None] + 0.5  # (N, L, 3)
            with torch.no_grad():
                grid = torch.floor(pos)
                idx = _corner_indices(grid.to(torch.int32), self._resolution32[:n_act], self._params32[:n_act],
                                      self._offset32[:n_act], min(self.n_dense_levels, n_act))
            if x_grad:
                # differentiable in x, twice (analytic normals need d/dx then d/dtable): plain autograd
                out = (_gather(self.table, idx) * _corner_weights(pos - grid)[..., None]).sum(2)
            else:
                out = _HashGridInterp.apply(self.table, idx, _corner_weights(pos - grid))
            out = out.reshape(x.shape[0], n_act * n_feat)
        if n_act < self.cfg.n_levels:
            out = torch.cat([out, out.new_zeros(x.shape[0], (self.cfg.n_levels - n_act) * n_feat)], dim=1)
        return out


def choose_backend(backend: str, device: torch.device | str | None = None) -> str:
    """auto: tcnn on CUDA when importable; else the compiled C++ kernel on CPU when it builds; else torch."""
    if backend not in BACKENDS:
        raise ValueError(f"hash grid backend must be auto | torch | cpp | tcnn, got {backend!r}")
    if backend == "torch":
        return "torch"
    if backend == "cpp":
        load_cpp_kernel()  # a build error surfaces here, with the compiler's message
        return "cpp"
    try:
        import tinycudann  # noqa: F401

        has_tcnn = True
    except ImportError:
        has_tcnn = False
    if backend == "tcnn":
        if not has_tcnn:
            raise ImportError(f"hash grid backend 'tcnn' needs tinycudann (CUDA only); install it with: {TCNN_INSTALL}")
        if not torch.cuda.is_available():
            raise RuntimeError("hash grid backend 'tcnn' needs a CUDA device; use backend 'torch' or 'cpp' on CPU")
        return "tcnn"
    on_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    if on_cuda:
        return "tcnn" if has_tcnn else "torch"
    try:
        load_cpp_kernel()
        return "cpp"
    except Exception as err:  # no compiler, no ninja...: the pure-PyTorch path always works
        warnings.warn(f"hash grid: C++ kernel unavailable ({err}); using the slower torch backend")
        return "torch"
