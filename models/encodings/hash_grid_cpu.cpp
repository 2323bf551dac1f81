// CPU kernel of the hash-grid encoding (models/encodings/hash_grid.py, backend 'cpp').
// tiny-cuda-nn is CUDA-only and PyTorch's CPU gather/scatter is latency-bound, so the
// interpolation, its table gradient and its input gradient are fused loops here.
// Compiled on first use by torch.utils.cpp_extension.load; the pure-PyTorch backend is its twin.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstdint>

// One level's 8 corners exactly as tcnn's grid_index() (uint32 arithmetic, dense or hashed) and
// their weights: trilinear w_c, or, when v is given, the directional derivative dw_c/dx . v.
static inline void corners(const float* p, float scale, uint32_t res, uint32_t params, bool dense,
                           const float* v, uint32_t idx[8], float w[8]) {
    const bool pow2 = (params & (params - 1)) == 0;
    float fr[3]; uint32_t g[3];
    for (int d = 0; d < 3; ++d) {
        float pos = p[d] * scale + 0.5f;
        float fl = std::floor(pos);
        g[d] = (uint32_t)(int32_t)fl;
        fr[d] = pos - fl;
    }
    for (int c = 0; c < 8; ++c) {
        uint32_t x = g[0] + (c & 1), y = g[1] + ((c >> 1) & 1), z = g[2] + ((c >> 2) & 1);
        uint32_t i = dense ? x + y * res + z * res * res : x ^ (y * 2654435761u) ^ (z * 805459861u);
        // a hardware divide per corner dominated the loop: hashed tables are powers of two and
        // dense indices exceed the table by less than one table size (wrapped edge corners)
        idx[c] = pow2 ? (i & (params - 1)) : (i >= params ? i % params : i);
        float wx = (c & 1) ? fr[0] : 1.f - fr[0], wy = (c & 2) ? fr[1] : 1.f - fr[1], wz = (c & 4) ? fr[2] : 1.f - fr[2];
        if (v == nullptr) {
            w[c] = wx * wy * wz;
        } else {  // d(pos)/dx = scale; d(wx)/d(pos_x) = +1 for the upper corner, -1 for the lower
            float sx = (c & 1) ? 1.f : -1.f, sy = (c & 2) ? 1.f : -1.f, sz = (c & 4) ? 1.f : -1.f;
            w[c] = scale * (sx * wy * wz * v[0] + wx * sy * wz * v[1] + wx * wy * sz * v[2]);
        }
    }
}

struct Levels {
    const float* sc; const int64_t* rs; const int64_t* pa; const int64_t* of; const int64_t* de; int64_t L;
    Levels(torch::Tensor scale, torch::Tensor res, torch::Tensor params, torch::Tensor offset, torch::Tensor dense)
        : sc(scale.data_ptr<float>()), rs(res.data_ptr<int64_t>()), pa(params.data_ptr<int64_t>()),
          of(offset.data_ptr<int64_t>()), de(dense.data_ptr<int64_t>()), L(scale.size(0)) {}
    void at(int64_t l, const float* p, const float* v, uint32_t idx[8], float w[8]) const {
        corners(p, sc[l], (uint32_t)rs[l], (uint32_t)pa[l], de[l] != 0, v, idx, w);
    }
};

// Corners of the next K points are computed and their table rows prefetched ahead of use:
// hashed rows are random addresses, and overlapping those cache misses is most of the speed.
struct Pipe {
    static constexpr int K = 16;
    const Levels& lv; int64_t l; const float* xp; const float* vp; const float* tl; int64_t F; bool write;
    uint32_t idx[K][8]; float w[K][8];
    Pipe(const Levels& lv_, int64_t l_, const float* xp_, const float* vp_, const float* tl_, int64_t F_, bool write_)
        : lv(lv_), l(l_), xp(xp_), vp(vp_), tl(tl_), F(F_), write(write_) {}
    inline void prep(int64_t n, int s) {
        lv.at(l, xp + 3 * n, vp ? vp + 3 * n : nullptr, idx[s], w[s]);
        for (int c = 0; c < 8; ++c) {
            if (write) __builtin_prefetch(tl + (int64_t)idx[s][c] * F, 1);
            else __builtin_prefetch(tl + (int64_t)idx[s][c] * F, 0);
        }
    }
    inline int slot(int64_t n, int64_t b) const { return (int)((n - b) % K); }
    inline void start(int64_t b, int64_t e) { for (int64_t n = b; n < e && n < b + K; ++n) prep(n, slot(n, b)); }
    inline void refill(int64_t n, int64_t b, int64_t e) { if (n + K < e) prep(n + K, slot(n, b)); }
};

// out[n, l*F + f] = sum_c w_c(x_n) table[off_l + idx_c, f]; with v: weights dw_c/dx . v_n.
// Points in blocks, levels outside points inside: a level's table stays in cache for a block.
torch::Tensor interp(torch::Tensor x, torch::Tensor table, c10::optional<torch::Tensor> v, torch::Tensor scale,
                     torch::Tensor res, torch::Tensor params, torch::Tensor offset, torch::Tensor dense) {
    Levels lv(scale, res, params, offset, dense);
    const int64_t N = x.size(0), L = lv.L, F = table.size(1);
    auto out = torch::empty({N, L * F}, x.options());
    const float* xp = x.data_ptr<float>(); const float* tp = table.data_ptr<float>();
    const float* vp = v.has_value() ? v->data_ptr<float>() : nullptr;
    float* op = out.data_ptr<float>();
    at::parallel_for(0, N, 1024, [&](int64_t b, int64_t e) {
        for (int64_t l = 0; l < L; ++l) {
            const float* tl = tp + lv.of[l] * F;
            Pipe pipe(lv, l, xp, vp, tl, F, false);
            pipe.start(b, e);
            for (int64_t n = b; n < e; ++n) {
                int s = pipe.slot(n, b);
                const uint32_t* idx = pipe.idx[s]; const float* w = pipe.w[s];
                float* o = op + n * L * F + l * F;
                for (int64_t f = 0; f < F; ++f) {
                    float acc = 0.f;
                    for (int c = 0; c < 8; ++c) acc += w[c] * tl[(int64_t)idx[c] * F + f];
                    o[f] = acc;
                }
                pipe.refill(n, b, e);
            }
        }
    });
    return out;
}

// The transpose: grad_table[off_l + idx_c, f] += w_c * g[n, l*F + f]. Levels own disjoint table
// ranges, so threads split the work by level and never race (no atomics, no table copies).
torch::Tensor scatter(torch::Tensor x, torch::Tensor g, int64_t n_rows, c10::optional<torch::Tensor> v, torch::Tensor scale,
                      torch::Tensor res, torch::Tensor params, torch::Tensor offset, torch::Tensor dense) {
    Levels lv(scale, res, params, offset, dense);
    const int64_t N = x.size(0), L = lv.L, F = g.size(1) / L;
    auto grad = torch::zeros({n_rows, F}, x.options());
    const float* xp = x.data_ptr<float>(); const float* gp = g.data_ptr<float>();
    const float* vp = v.has_value() ? v->data_ptr<float>() : nullptr;
    float* tp = grad.data_ptr<float>();
    at::parallel_for(0, L, 1, [&](int64_t b, int64_t e) {
        for (int64_t l = b; l < e; ++l) {
            float* tl = tp + lv.of[l] * F;
            Pipe pipe(lv, l, xp, vp, tl, F, true);
            pipe.start(0, N);
            for (int64_t n = 0; n < N; ++n) {
                int s = pipe.slot(n, 0);
                const uint32_t* idx = pipe.idx[s]; const float* w = pipe.w[s];
                const float* gn = gp + n * L * F + l * F;
                for (int c = 0; c < 8; ++c)
                    for (int64_t f = 0; f < F; ++f) tl[(int64_t)idx[c] * F + f] += w[c] * gn[f];
                pipe.refill(n, 0, N);
            }
        }
    });
    return grad;
}

// grad_x[n, d] = sum_{l, c, f} g[n, l*F + f] table[off_l + idx_c, f] dw_c/dx_d
torch::Tensor input_grad(torch::Tensor x, torch::Tensor table, torch::Tensor g, torch::Tensor scale,
                         torch::Tensor res, torch::Tensor params, torch::Tensor offset, torch::Tensor dense) {
    Levels lv(scale, res, params, offset, dense);
    const int64_t N = x.size(0), L = lv.L, F = table.size(1);
    auto gx = torch::zeros({N, 3}, x.options());
    const float* xp = x.data_ptr<float>(); const float* tp = table.data_ptr<float>();
    const float* gp = g.data_ptr<float>(); float* gxp = gx.data_ptr<float>();
    at::parallel_for(0, N, 1024, [&](int64_t b, int64_t e) {
        for (int64_t l = 0; l < L; ++l) {
            const float* tl = tp + lv.of[l] * F;
            const float s = lv.sc[l];
            Pipe pipe(lv, l, xp, nullptr, tl, F, false);
            pipe.start(b, e);
            for (int64_t n = b; n < e; ++n) {
                const float* gn = gp + n * L * F + l * F;
                const uint32_t* idx = pipe.idx[pipe.slot(n, b)];  // weights' derivatives rebuilt below
                float fr[3];
                for (int d = 0; d < 3; ++d) { float pos = xp[3 * n + d] * s + 0.5f; fr[d] = pos - std::floor(pos); }
                float acc[3] = {0.f, 0.f, 0.f};
                for (int c = 0; c < 8; ++c) {
                    float t = 0.f;
                    for (int64_t f = 0; f < F; ++f) t += tl[(int64_t)idx[c] * F + f] * gn[f];
                    float wx = (c & 1) ? fr[0] : 1.f - fr[0], wy = (c & 2) ? fr[1] : 1.f - fr[1], wz = (c & 4) ? fr[2] : 1.f - fr[2];
                    acc[0] += ((c & 1) ? t : -t) * wy * wz;
                    acc[1] += ((c & 2) ? t : -t) * wx * wz;
                    acc[2] += ((c & 4) ? t : -t) * wx * wy;
                }
                for (int d = 0; d < 3; ++d) gxp[3 * n + d] += s * acc[d];
                pipe.refill(n, b, e);
            }
        }
    });
    return gx;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("interp", &interp, "hash-grid trilinear interpolation (forward)");
    m.def("scatter", &scatter, "gradient of the interpolation w.r.t. the table");
    m.def("input_grad", &input_grad, "gradient of the interpolation w.r.t. the input points");
}
