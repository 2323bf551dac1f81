// The yardstick of benchmarks/hash_grid.py: the hash-grid lookups as the plain loop one would
// write by hand, with no framework around it (raw pointers, no autograd, no tricks). Each thread
// takes a contiguous share of the points and goes level by level (a level's table stays warm
// in cache), point by point: corner indices (tcnn's dense index or spatial hash, as in
// models/encodings/hash_grid_cpu.cpp), trilinear weights, gather. Backward: the same loop
// scatter-adding into one gradient buffer per thread (thread 0's is the result), then the
// buffers are summed. Built by the benchmark with the kernel's compiler flags; same threads.
// (Points outer, levels inner was measured too: about 2x slower here, all levels' tables at once.)
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

namespace {

struct Level { float scale; uint32_t res, res2, size, offset; bool dense; };

std::vector<Level> levels_of(torch::Tensor scale, torch::Tensor res, torch::Tensor params, torch::Tensor offset,
                             torch::Tensor dense) {  // contiguous CPU tensors: float32 scale, int64 the rest
    std::vector<Level> lv(scale.size(0));
    for (size_t l = 0; l < lv.size(); ++l) {
        const uint32_t r = (uint32_t)res.data_ptr<int64_t>()[l];
        lv[l] = {scale.data_ptr<float>()[l], r, r * r, (uint32_t)params.data_ptr<int64_t>()[l],
                 (uint32_t)offset.data_ptr<int64_t>()[l], dense.data_ptr<int64_t>()[l] != 0};
    }
    return lv;
}

// global table rows and trilinear weights of the 8 corners (c = bx + 2 by + 4 bz) of p at one level
inline void lookup(const float* p, const Level& lv, uint32_t row[8], float w[8]) {
    uint32_t g[3]; float fr[3];
    for (int d = 0; d < 3; ++d) {
        float pos = p[d] * lv.scale + 0.5f, fl = std::floor(pos);
        g[d] = (uint32_t)(int32_t)fl;
        fr[d] = pos - fl;
    }
    for (int c = 0; c < 8; ++c) {
        uint32_t x = g[0] + (c & 1), y = g[1] + ((c >> 1) & 1), z = g[2] + ((c >> 2) & 1);
        uint32_t i = lv.dense ? x + y * lv.res + z * lv.res2 : x ^ (y * 2654435761u) ^ (z * 805459861u);
        i = lv.dense ? (i >= lv.size ? i % lv.size : i) : (i & (lv.size - 1));  // hashed sizes are 2^k
        row[c] = lv.offset + i;
        w[c] = ((c & 1) ? fr[0] : 1.f - fr[0]) * ((c & 2) ? fr[1] : 1.f - fr[1]) * ((c & 4) ? fr[2] : 1.f - fr[2]);
    }
}

template <int F>
torch::Tensor forward_f(torch::Tensor x, torch::Tensor table, const std::vector<Level>& lv) {
    const int64_t N = x.size(0), L = lv.size();
    auto out = torch::empty({N, L * F}, x.options());
    const float* xp = x.data_ptr<float>(); const float* tp = table.data_ptr<float>(); float* op = out.data_ptr<float>();
    at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
        uint32_t row[8]; float w[8];
        for (int64_t l = 0; l < L; ++l)
            for (int64_t n = b; n < e; ++n) {
                lookup(xp + 3 * n, lv[l], row, w);
                float acc[F] = {};
                for (int c = 0; c < 8; ++c)
                    for (int f = 0; f < F; ++f) acc[f] += w[c] * tp[(int64_t)row[c] * F + f];
                for (int f = 0; f < F; ++f) op[(n * L + l) * F + f] = acc[f];
            }
    });
    return out;
}

template <int F>
torch::Tensor backward_f(torch::Tensor x, torch::Tensor g, int64_t n_rows, const std::vector<Level>& lv) {
    const int64_t N = x.size(0), L = lv.size(), T = at::get_num_threads(), M = n_rows * F;
    auto grad = torch::empty({n_rows, F}, x.options());
    std::unique_ptr<float[]> extra(new float[(size_t)(T - 1) * M]);  // threads 1 .. T-1's buffers, zeroed by each
    const float* xp = x.data_ptr<float>(); const float* gp = g.data_ptr<float>(); float* out = grad.data_ptr<float>();
    at::parallel_for(0, T, 1, [&](int64_t tb, int64_t te) {
        for (int64_t t = tb; t < te; ++t) {
            float* buf = t == 0 ? out : extra.get() + (t - 1) * M;
            std::memset(buf, 0, M * sizeof(float));
            uint32_t row[8]; float w[8];
            for (int64_t l = 0; l < L; ++l)
                for (int64_t n = N * t / T; n < N * (t + 1) / T; ++n) {
                    lookup(xp + 3 * n, lv[l], row, w);
                    const float* gn = gp + (n * L + l) * F;
                    for (int c = 0; c < 8; ++c)
                        for (int f = 0; f < F; ++f) buf[(int64_t)row[c] * F + f] += w[c] * gn[f];
                }
        }
    });
    if (T > 1)
        at::parallel_for(0, M, 4096, [&](int64_t b, int64_t e) {
            for (int64_t t = 1; t < T; ++t) {
                const float* buf = extra.get() + (t - 1) * M;
                for (int64_t i = b; i < e; ++i) out[i] += buf[i];
            }
        });
    return grad;
}

}  // namespace

// x (N, 3) float32 in [0, 1], table (rows, F) -> (N, L * F)
torch::Tensor forward(torch::Tensor x, torch::Tensor table, torch::Tensor scale, torch::Tensor res, torch::Tensor params,
                      torch::Tensor offset, torch::Tensor dense) {
    auto lv = levels_of(scale, res, params, offset, dense);
    switch (table.size(1)) {
        case 1: return forward_f<1>(x, table, lv);
        case 2: return forward_f<2>(x, table, lv);
        case 4: return forward_f<4>(x, table, lv);
        case 8: return forward_f<8>(x, table, lv);
    }
    TORCH_CHECK(false, "probe: features per level must be 1, 2, 4 or 8");
}

// x (N, 3), g (N, L * F) = d(loss)/d(forward) -> d(loss)/d(table) (n_rows, F)
torch::Tensor backward(torch::Tensor x, torch::Tensor g, int64_t n_rows, torch::Tensor scale, torch::Tensor res,
                       torch::Tensor params, torch::Tensor offset, torch::Tensor dense) {
    auto lv = levels_of(scale, res, params, offset, dense);
    switch (g.size(1) / scale.size(0)) {
        case 1: return backward_f<1>(x, g, n_rows, lv);
        case 2: return backward_f<2>(x, g, n_rows, lv);
        case 4: return backward_f<4>(x, g, n_rows, lv);
        case 8: return backward_f<8>(x, g, n_rows, lv);
    }
    TORCH_CHECK(false, "probe: features per level must be 1, 2, 4 or 8");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &forward, "hash-grid lookups, the plain loop");
    m.def("backward", &backward, "their table gradient, per-thread buffers then summed");
}
