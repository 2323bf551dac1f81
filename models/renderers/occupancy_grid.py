"""Occupancy grid for skipping empty space (nerfacc's OccGridEstimator, Instant-NGP Sec. 4).

A binary grid over the box [-radius, radius]^3 marks cells where the field may be visible.
Every `update_every` training steps it re-estimates each cell's "occupancy" as
occ = density(random point in the cell) * step_size (an alpha estimate), keeps an EMA-style
running value occs = max(occs * decay, occ), and marks a cell occupied when
occs > min(occ_threshold, mean(occs)). During warm-up every cell is evaluated; afterwards a
random quarter of all cells plus as many cells drawn among the occupied ones (nerfacc's rule).

Backends: 'torch' (written here, runs everywhere) and 'nerfacc' (nerfacc's OccGridEstimator
does the update on CUDA; the lookup below reads its binaries). The renderer marches rays
itself in both cases. 'auto' = nerfacc when importable and on CUDA.
Grid cell (i, j, k) covers x, y, z in [-r + 2r * (i, j, k) / R, -r + 2r * (i+1, j+1, k+1) / R].
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

BACKENDS = ("auto", "torch", "nerfacc")


def choose_backend(backend: str, device: torch.device | str | None = None) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"occupancy grid backend must be auto | torch | nerfacc, got {backend!r}")
    if backend == "torch":
        return "torch"
    try:
        import nerfacc  # noqa: F401

        has = True
    except ImportError:
        has = False
    cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    if backend == "nerfacc":
        if not has or not torch.cuda.is_available():
            raise ImportError("occupancy grid backend 'nerfacc' needs nerfacc and a CUDA device (pip install nerfacc)")
        return "nerfacc"
    return "nerfacc" if (has and cuda) else "torch"


class OccupancyGrid(nn.Module):
    """binary (R, R, R) bool buffer, indexed [x, y, z]; `occupied(points)` looks points up."""

    def __init__(
        self,
        radius: float,
        resolution: int = 128,
        occ_threshold: float = 0.01,
        ema_decay: float = 0.95,
        warmup_steps: int = 256,
        update_every: int = 16,
        backend: str = "auto",
    ):
        super().__init__()
        self.radius, self.resolution = float(radius), int(resolution)
        self.occ_threshold, self.ema_decay = occ_threshold, ema_decay
        self.warmup_steps, self.update_every = warmup_steps, update_every
        self.backend = choose_backend(backend)
        n = self.resolution**3
        # all occupied until the first update, so an untrained field renders everywhere
        self.register_buffer("occs", torch.zeros(n))
        self.register_buffer("binary", torch.ones(self.resolution, self.resolution, self.resolution, dtype=torch.bool))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))
        if self.backend == "nerfacc":
            import nerfacc

            r = self.radius
            self.estimator = nerfacc.OccGridEstimator(roi_aabb=[-r, -r, -r, r, r, r], resolution=self.resolution, levels=1)

    def cell_indices(self, points: Tensor) -> Tensor:  # (N, 3) world -> (N,) flat cell index
        ijk = ((points + self.radius) * (self.resolution / (2.0 * self.radius))).long().clamp(0, self.resolution - 1)
        return (ijk[:, 0] * self.resolution + ijk[:, 1]) * self.resolution + ijk[:, 2]

    def occupied(self, points: Tensor) -> Tensor:  # (N, 3) -> (N,) bool
        return self.binary.reshape(-1)[self.cell_indices(points)]

    @torch.no_grad()
    def update_every_n_steps(self, step: int, density_fn: Callable[[Tensor], Tensor], step_size: float) -> bool:
        """Re-estimate occupancy from `density_fn` (N, 3) -> (N, 1) every `update_every` steps."""
        if step % self.update_every != 0:
            return False
        if self.backend == "nerfacc":
            self.estimator.update_every_n_steps(
                step=step,
                occ_eval_fn=lambda x: density_fn(x) * step_size,
                occ_thre=self.occ_threshold,
                ema_decay=self.ema_decay,
                warmup_steps=self.warmup_steps,
                n=self.update_every,
            )
            self.binary.copy_(self.estimator.binaries[0])
        else:
            self._update(step, density_fn, step_size)
        self.n_updates += 1
        return True

    def _update(self, step: int, density_fn: Callable[[Tensor], Tensor], step_size: float, chunk: int = 2**18) -> None:
        n = self.resolution**3
        device = self.occs.device
        if step < self.warmup_steps:
            idx = torch.arange(n, device=device)
        else:
            uniform = torch.randint(0, n, (n // 4,), device=device)
            occupied = self.binary.reshape(-1).nonzero().squeeze(1)
            if occupied.numel() > 0:
                occupied = occupied[torch.randint(0, occupied.numel(), (n // 4,), device=device)]
            idx = torch.cat([uniform, occupied])
        r = self.resolution
        ijk = torch.stack([idx // (r * r), (idx // r) % r, idx % r], -1).float()
        # jitter inside the cell so thin structures are found over repeated updates
        pts = (ijk + torch.rand_like(ijk)) * (2.0 * self.radius / r) - self.radius
        occ = torch.cat([density_fn(c).reshape(-1) for c in pts.split(chunk)]) * step_size
        self.occs[idx] = torch.maximum(self.occs[idx] * self.ema_decay, occ)
        threshold = min(self.occ_threshold, float(self.occs.mean()))
        self.binary.copy_((self.occs > threshold).reshape(r, r, r))
