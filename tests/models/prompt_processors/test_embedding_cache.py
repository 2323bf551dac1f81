"""EmbeddingCache: hits skip compute, keys separate models, files land in the directory atomically."""
import os

import torch

from models.prompt_processors.embedding_cache import EmbeddingCache


class _Encoder:
    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, prompts):
        self.calls.append(list(prompts))
        return torch.stack([torch.full((3, 4), float(len(p))) for p in prompts])


def test_get_or_compute_caches_and_hits(tmp_path):
    cache = EmbeddingCache(str(tmp_path))
    enc = _Encoder()
    prompts = ["a cat", "a dog, front view", "a cat"]
    out1 = cache.get_or_compute("sd-2.1", prompts, enc)
    assert out1.shape == (3, 3, 4)
    assert enc.calls == [["a cat", "a dog, front view"]]  # one call, distinct missing prompts only
    assert cache.misses == 2 and cache.hits == 0
    files = [f for f in os.listdir(tmp_path)]
    assert sorted(files) == sorted(cache.key("sd-2.1", p) + ".pt" for p in ["a cat", "a dog, front view"])

    out2 = cache.get_or_compute("sd-2.1", prompts, enc)
    assert len(enc.calls) == 1  # not called again
    assert cache.hits == 2
    assert torch.equal(out1, out2)
    assert out2[0, 0, 0].item() == len("a cat")

    # a new prompt among cached ones: compute only the new one
    cache.get_or_compute("sd-2.1", ["a cat", "a bird"], enc)
    assert enc.calls[-1] == ["a bird"]


def test_different_model_id_misses(tmp_path):
    cache = EmbeddingCache(str(tmp_path))
    enc = _Encoder()
    cache.get_or_compute("model-a", ["x"], enc)
    assert cache.get("model-b", "x") is None
    cache.get_or_compute("model-b", ["x"], enc)
    assert len(enc.calls) == 2
    assert cache.key("model-a", "x") != cache.key("model-b", "x")
    assert len(cache.key("model-a", "x")) == 64


def test_put_get_roundtrip_and_no_tmp_left(tmp_path):
    cache = EmbeddingCache(str(tmp_path / "sub"))
    t = torch.randn(77, 16)
    cache.put("m", "p", t)
    got = cache.get("m", "p")
    assert torch.equal(got, t)
    assert not any(f.endswith(".tmp") for f in os.listdir(tmp_path / "sub"))
    # a fresh instance (another process) sees the same file
    assert torch.equal(EmbeddingCache(str(tmp_path / "sub")).get("m", "p"), t)
