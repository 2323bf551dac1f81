"""Hash-grid encoding: layout, dense-level trilinear interpolation, hashing, gradients, backends."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.encodings.hash_grid import PRIMES, HashGridConfig, HashGridEncoding, level_layout


def small_cfg(backend: str = "torch", **kw) -> HashGridConfig:
    base = dict(n_levels=4, n_features_per_level=2, log2_hashmap_size=12, base_resolution=4, per_level_scale=2.0, backend=backend)
    base.update(kw)
    return HashGridConfig(**base)


def randomised(enc: HashGridEncoding) -> HashGridEncoding:
    with torch.no_grad():
        enc.table.normal_()
    return enc


def test_output_shape_and_layout():
    enc = HashGridEncoding(HashGridConfig(backend="torch"))
    assert enc(torch.rand(100, 3)).shape == (100, 32)
    lv = level_layout(HashGridConfig())
    # tcnn: resolution = ceil(16 * 1.447^l - 1) + 1; dense while res^3 fits 2^19
    assert [v["resolution"] for v in lv[:3]] == [16, 24, 34]
    assert [v["dense"] for v in lv[:6]] == [True, True, True, True, True, False]
    assert lv[0]["params"] == 16**3 and lv[-1]["params"] == 2**19


def test_dense_level_equals_grid_sample():
    """Level 0 is dense: trilinear interpolation of its table viewed as a (res, res, res) volume."""
    enc = randomised(HashGridEncoding(small_cfg()))
    lv = enc.levels[0]
    assert lv["dense"]
    res, scale = lv["resolution"], lv["scale"]
    # stay where the upper corner is still inside the grid (beyond it tcnn wraps around the table)
    x = torch.rand(500, 3) * (res - 1.5) / scale * 0.999
    vol = enc.table[: res**3].detach().reshape(res, res, res, 2).permute(3, 0, 1, 2)[None]  # (1, F, z, y, x)
    pos = x * scale + 0.5  # tcnn: grid coordinate of x
    grid = (pos / (res - 1) * 2 - 1)[None, None, None]  # align_corners=True: index -> [-1, 1]
    ref = F.grid_sample(vol, grid, mode="bilinear", align_corners=True)[0, :, 0, 0].T
    assert torch.allclose(enc(x)[:, :2], ref, atol=1e-5)


def test_hashed_level_uses_tcnn_hash():
    enc = randomised(HashGridEncoding(small_cfg()))
    lv = enc.levels[-1]
    assert not lv["dense"]
    x = torch.rand(300, 3)
    pos = x * lv["scale"] + 0.5
    g = pos.floor().long()
    frac = pos - g
    ref = torch.zeros(300, 2)
    for c in range(8):
        b = torch.tensor([c & 1, (c >> 1) & 1, (c >> 2) & 1])
        gc = g + b
        h = ((gc[:, 0] * PRIMES[0]) ^ (gc[:, 1] * PRIMES[1]) ^ (gc[:, 2] * PRIMES[2])) & 0xFFFFFFFF
        w = torch.where(b.bool(), frac, 1 - frac).prod(-1)
        ref += w[:, None] * enc.table.detach()[lv["offset"] + h % lv["params"]]
    assert torch.allclose(enc(x)[:, -2:], ref, atol=1e-5)


def test_table_gradient_gradcheck():
    enc = HashGridEncoding(small_cfg(n_levels=2, log2_hashmap_size=8)).double()
    x = torch.rand(20, 3, dtype=torch.float64)
    table = enc.table.detach().clone().requires_grad_(True)

    def f(t):
        return torch.func.functional_call(enc, {"table": t}, (x,))

    assert torch.autograd.gradcheck(f, (table,), eps=1e-6, atol=1e-6)


def test_input_gradient_matches_finite_differences():
    enc = randomised(HashGridEncoding(small_cfg())).double()
    x = (torch.rand(50, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    (enc(x) ** 2).sum().backward()
    eps = 1e-6
    for d in range(3):
        dx = torch.zeros(3, dtype=torch.float64)
        dx[d] = eps
        with torch.no_grad():
            fd = ((enc(x + dx) ** 2).sum(1) - (enc(x - dx) ** 2).sum(1)) / (2 * eps)
        assert torch.allclose(x.grad[:, d], fd, atol=1e-4, rtol=1e-4)


def test_progressive_levels_zero_inactive():
    enc = randomised(HashGridEncoding(small_cfg()))
    enc.set_active_levels(2)
    x = torch.rand(64, 3)
    out = enc(x)
    assert out[:, 4:].abs().max() == 0 and out[:, :4].abs().max() > 0
    out.sum().backward()
    assert enc.table.grad[enc.levels[2]["offset"] :].abs().max() == 0


def test_cpp_backend_matches_torch():
    try:
        cpp = HashGridEncoding(small_cfg("cpp", log2_hashmap_size=10))
    except Exception as err:  # no compiler on this machine
        pytest.skip(f"C++ kernel does not build here: {err}")
    ref = randomised(HashGridEncoding(small_cfg("torch", log2_hashmap_size=10)))
    with torch.no_grad():
        cpp.table.copy_(ref.table)
    x = torch.rand(2000, 3)
    x[:5] = 1.0  # far edge: dense levels wrap like tcnn
    g = torch.randn(2000, 8)
    (ref(x) * g).sum().backward()
    (cpp(x) * g).sum().backward()
    assert torch.allclose(ref(x), cpp(x), atol=1e-6)
    assert torch.allclose(ref.table.grad, cpp.table.grad, atol=1e-5)


def test_cpp_backend_second_order_matches_torch():
    """Analytic normals: d(enc)/dx with create_graph, then a loss on it, differentiated again."""
    try:
        cpp = HashGridEncoding(small_cfg("cpp", log2_hashmap_size=10))
    except Exception as err:
        pytest.skip(f"C++ kernel does not build here: {err}")
    ref = randomised(HashGridEncoding(small_cfg("torch", log2_hashmap_size=10)))
    with torch.no_grad():
        cpp.table.copy_(ref.table)
    torch.manual_seed(1)
    mix = torch.randn(8, 1, requires_grad=True)  # stands in for the density MLP
    h = torch.randn(500, 3)
    x0 = torch.rand(500, 3) * 0.9 + 0.05
    results = []
    for enc in (ref, cpp):
        x = x0.clone().requires_grad_(True)
        y = torch.tanh(enc(x) @ mix)
        (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        loss = (gx * h).sum()
        results.append((gx.detach(), *torch.autograd.grad(loss, (enc.table, mix))))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_tcnn_backend_matches_torch():
    try:
        import tinycudann  # noqa: F401
    except ImportError:
        pytest.skip("tinycudann not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cfg = small_cfg("tcnn", log2_hashmap_size=10)
    tc = HashGridEncoding(cfg).cuda()
    ref = HashGridEncoding(small_cfg("torch", log2_hashmap_size=10)).cuda()
    with torch.no_grad():
        ref.table.copy_(torch.randn_like(ref.table))
        tc.tcnn_encoding.params.copy_(ref.table.reshape(-1))
    x = torch.rand(4096, 3, device="cuda")
    g = torch.randn(4096, 8, device="cuda")
    (ref(x) * g).sum().backward()
    (tc(x) * g).sum().backward()
    assert torch.allclose(ref(x), tc(x), atol=1e-4)
    assert torch.allclose(ref.table.grad.reshape(-1), tc.tcnn_encoding.params.grad, atol=1e-3)


def test_tcnn_missing_is_a_clear_error():
    try:
        import tinycudann  # noqa: F401

        pytest.skip("tinycudann is installed")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="tiny-cuda-nn"):
        HashGridEncoding(small_cfg("tcnn"))


def test_state_dict_loads_from_a_tcnn_checkpoint():
    src = randomised(HashGridEncoding(small_cfg()))
    dst = HashGridEncoding(small_cfg())
    dst.load_state_dict({"tcnn_encoding.params": src.table.detach().reshape(-1)})
    x = torch.rand(50, 3)
    assert torch.equal(dst(x), src(x))


def test_the_kernels_first_compile_says_so(tmp_path, monkeypatch, capsys):
    """A cold TORCH_EXTENSIONS_DIR: the compile is announced; a built kernel there: nothing (compiler faked)."""
    import torch.utils.cpp_extension

    from models.encodings import hash_grid

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(torch.utils.cpp_extension, "load", lambda name, **kwargs: f"module {name}")
    monkeypatch.setattr(hash_grid, "_cpp_module", None)
    assert hash_grid.kernel_build_directory(hash_grid.CPP_KERNEL_NAME) == tmp_path / hash_grid.CPP_KERNEL_NAME
    assert hash_grid.load_cpp_kernel() == f"module {hash_grid.CPP_KERNEL_NAME}"
    assert capsys.readouterr().err.startswith("compiling the C++ kernel hash_grid_cpu.cpp (first use only")
    (tmp_path / hash_grid.CPP_KERNEL_NAME / f"{hash_grid.CPP_KERNEL_NAME}.so").write_bytes(b"")
    monkeypatch.setattr(hash_grid, "_cpp_module", None)
    hash_grid.load_cpp_kernel()
    assert capsys.readouterr().err == ""
