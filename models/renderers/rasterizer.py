"""Rasterizer backend switch: `auto | torch | nvdiffrast` (DESIGN.md, "Backends").

`torch` is models/renderers/rasterize_torch.py (runs anywhere). `nvdiffrast` is NVIDIA's
CUDA rasterizer, imported only when chosen, or by `auto` on a CUDA device when it imports.
Both take and return the same tensors (nvdiffrast's conventions: row 0 of `rast` is NDC y = -1),
so callers never branch on the backend.
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor

from models.renderers import rasterize_torch

log = logging.getLogger(__name__)

NVDIFFRAST_INSTALL = "pip install git+https://github.com/NVlabs/nvdiffrast/ (needs a CUDA toolkit)"
BACKENDS = ("auto", "torch", "nvdiffrast")


def _import_nvdiffrast():
    import nvdiffrast.torch as dr  # noqa: PLC0415 - optional CUDA accelerator, imported lazily

    return dr


class Rasterizer:
    """rasterize / interpolate / antialias on the chosen backend.

    backend: 'torch', 'nvdiffrast' (error if it does not import), or 'auto' (nvdiffrast when the
    device is CUDA and it imports, else torch). `chunk` bounds the torch backend's memory.
    """

    def __init__(self, backend: str = "auto", device: torch.device | str = "cpu", chunk: int = 2**22):
        if backend not in BACKENDS:
            raise ValueError(f"rasterizer backend must be one of {BACKENDS}, got {backend!r}")
        device = torch.device(device)
        self.chunk = chunk
        self._dr = None
        self._ctx = None
        if backend == "nvdiffrast" or (backend == "auto" and device.type == "cuda"):
            try:
                self._dr = _import_nvdiffrast()
            except ImportError as err:
                if backend == "nvdiffrast":
                    raise ImportError(f"rasterizer backend 'nvdiffrast' was chosen but nvdiffrast does not import ({err}); "
                                      f"install it with `{NVDIFFRAST_INSTALL}` or use backend: torch") from err
                log.info("nvdiffrast not importable (%s); using the PyTorch rasterizer", err)
            if self._dr is not None:
                if device.type != "cuda":
                    raise RuntimeError("rasterizer backend 'nvdiffrast' needs a CUDA device; use backend: torch on CPU")
                self._ctx = self._dr.RasterizeCudaContext(device=device)
        self.backend = "nvdiffrast" if self._dr is not None else "torch"
        self._topology_key: tuple | None = None
        self._topology: Tensor | None = None

    def rasterize(self, pos_clip: Tensor, faces: Tensor, resolution: tuple[int, int]) -> Tensor:
        """pos_clip (B, V, 4), faces (F, 3) -> rast (B, H, W, 4) = (u, v, z/w, triangle_id + 1)."""
        if self._dr is not None:
            rast, _ = self._dr.rasterize(self._ctx, pos_clip.float().contiguous(), faces.int().contiguous(), tuple(resolution), grad_db=False)
            return rast
        return rasterize_torch.rasterize(pos_clip, faces, resolution, chunk=self.chunk)

    def interpolate(self, attr: Tensor, rast: Tensor, faces: Tensor) -> Tensor:
        """attr (B|1, V, C) -> (B, H, W, C); gradients to attr and (via rast) positions."""
        if self._dr is not None:
            out, _ = self._dr.interpolate(attr.float().contiguous(), rast, faces.int().contiguous())
            return out
        return rasterize_torch.interpolate(attr, rast, faces)

    def antialias(self, color: Tensor, rast: Tensor, pos_clip: Tensor, faces: Tensor) -> Tensor:
        """color (B, H, W, C) -> (B, H, W, C) with silhouette-edge gradients to pos_clip."""
        if self._dr is not None:
            return self._dr.antialias(color.float().contiguous(), rast, pos_clip.float().contiguous(), faces.int().contiguous())
        # the same faces tensor is often rendered many times in a row (validation, turntables);
        # holding it keeps its identity meaningful (a freed address could be reused by another mesh)
        key = (faces, faces._version)
        if self._topology_key is None or key[0] is not self._topology_key[0] or key[1] != self._topology_key[1]:
            self._topology, self._topology_key = rasterize_torch.build_topology(faces), key
        return rasterize_torch.antialias(color, rast, pos_clip, faces, topology=self._topology)
