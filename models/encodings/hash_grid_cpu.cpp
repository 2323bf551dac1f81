// CPU kernel of the hash-grid encoding (models/encodings/hash_grid.py, backend 'cpp').
// tiny-cuda-nn is CUDA-only and PyTorch's CPU gather/scatter is latency-bound, so the
// interpolation, its table gradient and its input gradient are fused loops here.
// Compiled on first use by torch.utils.cpp_extension.load; the pure-PyTorch backend is its twin,
// benchmarks/hash_grid.py times it against a plain hand-written loop (benchmarks/hash_grid_probe.cpp).
//
// Where the speed comes from (the first three measured by benchmarks/hash_grid.py's ratio):
// - each thread takes one contiguous share of the points and goes level by level, so a level's
//   table stays in cache (a 2^17-row level is 1 MB, a core's L2 here); the rows of the next K
//   points are prefetched while the current point is summed: hashed rows are random addresses,
//   and overlapping their misses is most of the speed at 2^19 rows (without it: 0.6x);
// - the forward writes each level's features contiguously into a per-thread level-major buffer,
//   then into the (N, L * F) output row by row (not one strided write per level and point);
// - backward: levels own disjoint table rows, so threads take whole levels, the hashed (costly)
//   ones first and the next free level when done (a fixed split of the levels left one thread
//   with all the hashed levels), and scatter without atomics or per-thread table copies;
// - compile-time variants per level (dense or hashed, F == 2): no branches in the corner loop.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <vector>

namespace {

constexpr uint32_t P1 = 2654435761u, P2 = 805459861u;  // tcnn's primes for y and z (x's is 1)
constexpr int K = 16;                                    // points looked ahead (power of two)

struct Level { float scale; uint32_t res, res2, size, offset; bool dense; };

std::vector<Level> read_levels(torch::Tensor scale, torch::Tensor res, torch::Tensor params, torch::Tensor offset,
                               torch::Tensor dense) {
    const int64_t L = scale.size(0);
    auto sc = scale.contiguous(); auto rs = res.contiguous(); auto pa = params.contiguous();
    auto of = offset.contiguous(); auto de = dense.contiguous();
    std::vector<Level> lv(L);
    for (int64_t l = 0; l < L; ++l) {
        const uint32_t r = (uint32_t)rs.data_ptr<int64_t>()[l], p = (uint32_t)pa.data_ptr<int64_t>()[l];
        lv[l] = {sc.data_ptr<float>()[l], r, r * r, p, (uint32_t)of.data_ptr<int64_t>()[l], de.data_ptr<int64_t>()[l] != 0};
        TORCH_CHECK(lv[l].dense || (p & (p - 1)) == 0, "hash grid: a hashed level's table size must be a power of two");
        TORCH_CHECK(l == 0 || lv[l].offset == lv[l - 1].offset + lv[l - 1].size, "hash grid: levels must be stored one after another");
    }
    return lv;
}

// One level's 8 corners (c = bx + 2 by + 4 bz) exactly as tcnn's grid_index() (uint32 arithmetic,
// rows local to the level) and their weights: trilinear w_c or, with DIR, dw_c/dx . v.
template <bool DENSE, bool DIR>
inline void corners(const Level& lv, const float* p, const float* v, uint32_t idx[8], float w[8]) {
    float fr[3]; uint32_t g[3];
    for (int d = 0; d < 3; ++d) {
        const float pos = p[d] * lv.scale + 0.5f, fl = std::floor(pos);
        g[d] = (uint32_t)(int32_t)fl;
        fr[d] = pos - fl;
    }
    if (DENSE) {  // x + y res + z res^2; corners past the far edge wrap like tcnn's index % size
        const uint32_t base = g[0] + g[1] * lv.res + g[2] * lv.res2;
        for (int c = 0; c < 8; ++c) {
            const uint32_t i = base + (c & 1) + ((c & 2) ? lv.res : 0u) + ((c & 4) ? lv.res2 : 0u);
            idx[c] = i < lv.size ? i : i % lv.size;  // rare (edge corners): a predictable branch
        }
    } else {  // spatial hash (paper eq. 4) modulo a power-of-two table
        const uint32_t m = lv.size - 1, hy[2] = {g[1] * P1, (g[1] + 1) * P1}, hz[2] = {g[2] * P2, (g[2] + 1) * P2};
        for (int c = 0; c < 8; ++c) idx[c] = ((g[0] + (c & 1)) ^ hy[(c >> 1) & 1] ^ hz[c >> 2]) & m;
    }
    const float wx[2] = {1.f - fr[0], fr[0]}, wy[2] = {1.f - fr[1], fr[1]}, wz[2] = {1.f - fr[2], fr[2]};
    for (int c = 0; c < 8; ++c) {
        const float ax = wx[c & 1], ay = wy[(c >> 1) & 1], az = wz[c >> 2];
        if (!DIR) {
            w[c] = ax * ay * az;
        } else {  // d(pos)/dx = scale; d(wx)/d(pos_x) = +1 for the upper corner, -1 for the lower
            const float sx = (c & 1) ? 1.f : -1.f, sy = (c & 2) ? 1.f : -1.f, sz = (c & 4) ? 1.f : -1.f;
            w[c] = lv.scale * (sx * ay * az * v[0] + ax * sy * az * v[1] + ax * ay * sz * v[2]);
        }
    }
}

// Corners of points n .. n+K-1 kept in a ring; each point's rows are prefetched K points ahead.
template <bool DENSE, bool DIR, bool WRITE>
struct Ring {
    uint32_t idx[K][8]; float w[K][8];
    const Level& lv; const float* x; const float* v; const float* rows; int64_t F;
    Ring(const Level& lv_, const float* x_, const float* v_, const float* rows_, int64_t F_) : lv(lv_), x(x_), v(v_), rows(rows_), F(F_) {}
    inline void prep(int64_t n) {
        const int s = (int)(n & (K - 1));
        corners<DENSE, DIR>(lv, x + 3 * n, DIR ? v + 3 * n : nullptr, idx[s], w[s]);
        for (int c = 0; c < 8; ++c) __builtin_prefetch(rows + (int64_t)idx[s][c] * F, WRITE ? 1 : 0);
    }
    inline void start(int64_t b, int64_t e) { for (int64_t n = b; n < e && n < b + K; ++n) prep(n); }
};

// o[(n - b) * F + f] = sum_c w_c(x_n) tl[idx_c * F + f] for n in [b, e)  (one level)
template <int FT, bool DENSE, bool DIR>
void interp_level(const Level& lv, int64_t Fr, const float* x, const float* v, const float* tl, int64_t b, int64_t e, float* o) {
    const int64_t F = FT > 0 ? FT : Fr;
    Ring<DENSE, DIR, false> r(lv, x, v, tl, F);
    r.start(b, e);
    for (int64_t n = b; n < e; ++n) {
        const int s = (int)(n & (K - 1));
        float* on = o + (n - b) * F;
        for (int64_t f = 0; f < F; ++f) {
            float acc = 0.f;
            for (int c = 0; c < 8; ++c) acc += r.w[s][c] * tl[(int64_t)r.idx[s][c] * F + f];
            on[f] = acc;
        }
        if (n + K < e) r.prep(n + K);
    }
}

// tl[idx_c * F + f] += w_c(x_n) gl[n * gs + f] for n in [0, N)  (one level, its rows only)
template <int FT, bool DENSE, bool DIR>
void scatter_level(const Level& lv, int64_t Fr, const float* x, const float* v, const float* gl, int64_t gs, float* tl, int64_t N) {
    const int64_t F = FT > 0 ? FT : Fr;
    Ring<DENSE, DIR, true> r(lv, x, v, tl, F);
    r.start(0, N);
    for (int64_t n = 0; n < N; ++n) {
        const int s = (int)(n & (K - 1));
        const float* gn = gl + n * gs;
        for (int c = 0; c < 8; ++c) {
            float* t = tl + (int64_t)r.idx[s][c] * F;
            const float wc = r.w[s][c];
            for (int64_t f = 0; f < F; ++f) t[f] += wc * gn[f];
        }
        if (n + K < N) r.prep(n + K);
    }
}

template <int FT, bool DIR>
void interp_f(const Level& lv, int64_t F, const float* x, const float* v, const float* tl, int64_t b, int64_t e, float* o) {
    (lv.dense ? interp_level<FT, true, DIR> : interp_level<FT, false, DIR>)(lv, F, x, v, tl, b, e, o);
}
template <bool DIR>
void interp_any(const Level& lv, int64_t F, const float* x, const float* v, const float* tl, int64_t b, int64_t e, float* o) {
    (F == 2 ? interp_f<2, DIR> : interp_f<0, DIR>)(lv, F, x, v, tl, b, e, o);
}

template <int FT, bool DIR>
void scatter_f(const Level& lv, int64_t F, const float* x, const float* v, const float* gl, int64_t gs, float* tl, int64_t N) {
    (lv.dense ? scatter_level<FT, true, DIR> : scatter_level<FT, false, DIR>)(lv, F, x, v, gl, gs, tl, N);
}
template <bool DIR>
void scatter_any(const Level& lv, int64_t F, const float* x, const float* v, const float* gl, int64_t gs, float* tl, int64_t N) {
    (F == 2 ? scatter_f<2, DIR> : scatter_f<0, DIR>)(lv, F, x, v, gl, gs, tl, N);
}

}  // namespace

// out[n, l*F + f] = sum_c w_c(x_n) table[off_l + idx_c, f]; with v: weights dw_c/dx . v_n.
torch::Tensor interp(torch::Tensor x, torch::Tensor table, c10::optional<torch::Tensor> v, torch::Tensor scale,
                     torch::Tensor res, torch::Tensor params, torch::Tensor offset, torch::Tensor dense) {
    const auto lv = read_levels(scale, res, params, offset, dense);
    const int64_t N = x.size(0), L = lv.size(), F = table.size(1);
    auto out = torch::empty({N, L * F}, x.options());
    const float* xp = x.data_ptr<float>(); const float* tp = table.data_ptr<float>();
    const float* vp = v.has_value() ? v->data_ptr<float>() : nullptr;
    float* op = out.data_ptr<float>();
    at::parallel_for(0, N, 1024, [&](int64_t b, int64_t e) {  // each thread: one contiguous share of the points
        const int64_t m = e - b;
        std::unique_ptr<float[]> buf(new float[L * m * F]);  // (L, m, F): the share's features, level-major
        for (int64_t l = 0; l < L; ++l) {
            const float* tl = tp + (int64_t)lv[l].offset * F;
            if (vp) interp_any<true>(lv[l], F, xp, vp, tl, b, e, buf.get() + l * m * F);
            else interp_any<false>(lv[l], F, xp, vp, tl, b, e, buf.get() + l * m * F);
        }
        for (int64_t n = 0; n < m; ++n) {
            float* on = op + (b + n) * L * F;
            for (int64_t l = 0; l < L; ++l)
                for (int64_t f = 0; f < F; ++f) on[l * F + f] = buf[(l * m + n) * F + f];
        }
    });
    return out;
}

// The transpose: grad_table[off_l + idx_c, f] += w_c * g[n, l*F + f]. Levels own disjoint table
// ranges, so each thread zeroes and fills whole levels and never races (no atomics, no copies).
torch::Tensor scatter(torch::Tensor x, torch::Tensor g, int64_t n_rows, c10::optional<torch::Tensor> v, torch::Tensor scale,
                      torch::Tensor res, torch::Tensor params, torch::Tensor offset, torch::Tensor dense) {
    const auto lv = read_levels(scale, res, params, offset, dense);
    const int64_t N = x.size(0), L = lv.size(), F = g.size(1) / L;
    const float* xp = x.data_ptr<float>(); const float* gp = g.data_ptr<float>();
    const float* vp = v.has_value() ? v->data_ptr<float>() : nullptr;
    auto grad = torch::empty({n_rows, F}, x.options());
    float* tp = grad.data_ptr<float>();
    const int64_t used = L > 0 ? (int64_t)lv[L - 1].offset + lv[L - 1].size : 0;
    if (used < n_rows) std::memset(tp + used * F, 0, (n_rows - used) * F * sizeof(float));  // inactive levels
    std::vector<int64_t> order(L);  // hashed (big, cache-missing) levels first, then by size
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return lv[a].dense != lv[b].dense ? !lv[a].dense : lv[a].size > lv[b].size;
    });
    auto run_level = [&](int64_t l) {
        const Level& lk = lv[l];
        float* tl = tp + (int64_t)lk.offset * F;
        std::memset(tl, 0, (size_t)lk.size * F * sizeof(float));
        if (vp) scatter_any<true>(lk, F, xp, vp, gp + l * F, L * F, tl, N);
        else scatter_any<false>(lk, F, xp, vp, gp + l * F, L * F, tl, N);
    };
    std::atomic<int64_t> next{0};
    at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
        for (int64_t k; (k = next.fetch_add(1)) < L;) run_level(order[k]);
    });
    return grad;
}

// gx[n, d] += sum_{c, f} gl[n * LF + f] tl[idx_c * F + f] dw_c/dx_d for n in [b, e)  (one level)
template <bool DENSE>
static void input_grad_level(const Level& lv, int64_t F, int64_t LF, const float* x, const float* tl, const float* gl,
                             float* gx, int64_t b, int64_t e) {
    Ring<DENSE, false, false> r(lv, x, nullptr, tl, F);
    r.start(b, e);
    for (int64_t n = b; n < e; ++n) {
        const uint32_t* idx = r.idx[n & (K - 1)];
        const float* gn = gl + n * LF;
        float fr[3];  // the weights' derivatives are rebuilt from the fractions
        for (int d = 0; d < 3; ++d) { const float pos = x[3 * n + d] * lv.scale + 0.5f; fr[d] = pos - std::floor(pos); }
        float acc[3] = {0.f, 0.f, 0.f};
        for (int c = 0; c < 8; ++c) {
            float t = 0.f;
            for (int64_t f = 0; f < F; ++f) t += tl[(int64_t)idx[c] * F + f] * gn[f];
            const float wx = (c & 1) ? fr[0] : 1.f - fr[0], wy = (c & 2) ? fr[1] : 1.f - fr[1], wz = (c & 4) ? fr[2] : 1.f - fr[2];
            acc[0] += ((c & 1) ? t : -t) * wy * wz;
            acc[1] += ((c & 2) ? t : -t) * wx * wz;
            acc[2] += ((c & 4) ? t : -t) * wx * wy;
        }
        for (int d = 0; d < 3; ++d) gx[3 * n + d] += lv.scale * acc[d];
        if (n + K < e) r.prep(n + K);
    }
}

// grad_x[n, d] = sum_{l, c, f} g[n, l*F + f] table[off_l + idx_c, f] dw_c/dx_d
torch::Tensor input_grad(torch::Tensor x, torch::Tensor table, torch::Tensor g, torch::Tensor scale,
                         torch::Tensor res, torch::Tensor params, torch::Tensor offset, torch::Tensor dense) {
    const auto lv = read_levels(scale, res, params, offset, dense);
    const int64_t N = x.size(0), L = lv.size(), F = table.size(1);
    auto gx = torch::zeros({N, 3}, x.options());
    const float* xp = x.data_ptr<float>(); const float* tp = table.data_ptr<float>();
    const float* gp = g.data_ptr<float>(); float* gxp = gx.data_ptr<float>();
    at::parallel_for(0, N, 1024, [&](int64_t b, int64_t e) {
        for (int64_t l = 0; l < L; ++l)
            (lv[l].dense ? input_grad_level<true> : input_grad_level<false>)(lv[l], F, L * F, xp, tp + (int64_t)lv[l].offset * F,
                                                                          gp + l * F, gxp, b, e);
    });
    return gx;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("interp", &interp, "hash-grid trilinear interpolation (forward)");
    m.def("scatter", &scatter, "gradient of the interpolation w.r.t. the table");
    m.def("input_grad", &input_grad, "gradient of the interpolation w.r.t. the input points");
}
