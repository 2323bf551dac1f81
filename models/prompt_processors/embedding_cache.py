"""On-disk cache of text embeddings, keyed by (model id, prompt).

Text encoders (CLIP / T5) are slow to load and run on CPU; runs and sweeps reuse the same prompts,
so embeddings are computed once and stored one file per prompt. Hand-written (a few lines) so the
key is stable across processes and writes are atomic: a crashed or parallel writer never leaves a
half-written file that a later reader would load.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Callable

import torch
from torch import Tensor


class EmbeddingCache:
    def __init__(self, cache_dir: str) -> None:
        self.cache_dir = str(cache_dir)
        os.makedirs(self.cache_dir, exist_ok=True)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model_id: str, prompt: str) -> str:
        """sha256 hex of model id and prompt (NUL-separated so ("a", "bc") != ("ab", "c"))."""
        return hashlib.sha256(f"{model_id}\0{prompt}".encode("utf-8")).hexdigest()

    def path(self, model_id: str, prompt: str) -> str:
        return os.path.join(self.cache_dir, self.key(model_id, prompt) + ".pt")

    def get(self, model_id: str, prompt: str) -> Tensor | None:
        """Cached embedding (L, D) or None; counts a hit or a miss."""
        p = self.path(model_id, prompt)
        if not os.path.exists(p):
            self.misses += 1
            return None
        self.hits += 1
        return torch.load(p, map_location="cpu", weights_only=True)

    def put(self, model_id: str, prompt: str, tensor: Tensor) -> None:
        """Store tensor (L, D) atomically: write a temp file in the same dir, then os.replace."""
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(tensor.detach().cpu().clone(), f)
            os.replace(tmp, self.path(model_id, prompt))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def get_or_compute(
        self, model_id: str, prompts: list[str], compute: Callable[[list[str]], Tensor]
    ) -> Tensor:
        """prompts (N,) -> embeddings (N, L, D); `compute` (list of M prompts -> (M, L, D)) is called
        at most once, on the distinct prompts not yet cached."""
        found: dict[str, Tensor] = {}
        missing: list[str] = []
        for p in prompts:
            if p in found or p in missing:
                continue
            t = self.get(model_id, p)
            if t is None:
                missing.append(p)
            else:
                found[p] = t
        if missing:
            new = compute(missing)
            if new.shape[0] != len(missing):
                raise ValueError(f"compute returned {new.shape[0]} embeddings for {len(missing)} prompts")
            for p, t in zip(missing, new):
                self.put(model_id, p, t)
                found[p] = t.detach().cpu()
        return torch.stack([found[p] for p in prompts], dim=0)
