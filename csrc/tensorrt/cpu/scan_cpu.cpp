// CPU build of the gated-scan kernels: the same per-step functions (scan_step.h) in the same
// order as the CUDA kernels (one state column per (b, h, j), time in sequence), exported with
// C linkage so the test suite can call them through ctypes and compare with naive.py.
#include <vector>

#include "edgegate/scan_step.h"

namespace {

using edgegate::bhkv;
using edgegate::bthd;
using edgegate::kMaxKeyDim;
using edgegate::kMaxValueDim;

// Stage one time step's key-dim vectors as fp32, as the kernel does in shared memory.
template <typename T>
void stage(const T* src, int b, int t, int h, int T_, int H, int K, float* dst) {
    for (int i = 0; i < K; ++i) dst[i] = edgegate::load(src, bthd(b, t, h, i, T_, H, K));
}

template <typename T>
int gla(const T* q, const T* k, const T* v, const T* g, int per_key, const float* h0, T* out,
        float* state, int B, int T_, int H, int K, int V, float scale) {
    if (K < 1 || K > kMaxKeyDim || V < 1 || V > kMaxValueDim) return 1;
    std::vector<float> qs(K), ks(K), gs(K);
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
            for (int j = 0; j < V; ++j) {
                float s[kMaxKeyDim] = {};
                for (int i = 0; i < K; ++i) s[i] = h0 ? h0[bhkv(b, h, i, j, H, K, V)] : 0.f;
                for (int t = 0; t < T_; ++t) {
                    stage(q, b, t, h, T_, H, K, qs.data());
                    stage(k, b, t, h, T_, H, K, ks.data());
                    float g_scalar = 0.f;
                    if (per_key) {
                        stage(g, b, t, h, T_, H, K, gs.data());
                    } else {
                        g_scalar = edgegate::load(g, (int64_t(b) * T_ + t) * H + h);
                    }
                    float v_j = edgegate::load(v, bthd(b, t, h, j, T_, H, V));
                    float o = edgegate::gla_column_step<kMaxKeyDim>(
                        s, qs.data(), ks.data(), per_key ? gs.data() : nullptr, g_scalar, v_j,
                        scale, K);
                    edgegate::store(out, bthd(b, t, h, j, T_, H, V), o);
                }
                for (int i = 0; i < K; ++i) state[bhkv(b, h, i, j, H, K, V)] = s[i];
            }
    return 0;
}

template <typename T>
int delta(const T* q, const T* k, const T* v, const T* g, const T* beta, const float* h0, T* out,
          float* state, int B, int T_, int H, int K, int V, float scale) {
    if (K < 1 || K > kMaxKeyDim || V < 1 || V > kMaxValueDim) return 1;
    std::vector<float> qs(K), ks(K);
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
            for (int j = 0; j < V; ++j) {
                float s[kMaxKeyDim] = {};
                for (int i = 0; i < K; ++i) s[i] = h0 ? h0[bhkv(b, h, i, j, H, K, V)] : 0.f;
                for (int t = 0; t < T_; ++t) {
                    stage(q, b, t, h, T_, H, K, qs.data());
                    stage(k, b, t, h, T_, H, K, ks.data());
                    int64_t head = (int64_t(b) * T_ + t) * H + h;
                    float o = edgegate::delta_column_step<kMaxKeyDim>(
                        s, qs.data(), ks.data(), edgegate::load(g, head),
                        edgegate::load(beta, head), edgegate::load(v, bthd(b, t, h, j, T_, H, V)),
                        scale, K);
                    edgegate::store(out, bthd(b, t, h, j, T_, H, V), o);
                }
                for (int i = 0; i < K; ++i) state[bhkv(b, h, i, j, H, K, V)] = s[i];
            }
    return 0;
}

template <typename T>
int scan(const T* x, const T* g, const float* h0, T* out, float* state, int B, int T_, int H,
         int D) {
    if (D < 1) return 1;
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
            for (int d = 0; d < D; ++d) {
                int64_t channel = (int64_t(b) * H + h) * D + d;
                float value = h0 ? h0[channel] : 0.f;
                for (int t = 0; t < T_; ++t) {
                    int64_t i = bthd(b, t, h, d, T_, H, D);
                    value = edgegate::scan_step(value, edgegate::load(g, i), edgegate::load(x, i));
                    edgegate::store(out, i, value);
                }
                state[channel] = value;
            }
    return 0;
}

}  // namespace

extern "C" {

int eg_cpu_gla_f32(const float* q, const float* k, const float* v, const float* g, int per_key,
                   const float* h0, float* out, float* state, int B, int T, int H, int K, int V,
                   float scale) {
    return gla(q, k, v, g, per_key, h0, out, state, B, T, H, K, V, scale);
}

int eg_cpu_gla_f16(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* g,
                   int per_key, const float* h0, uint16_t* out, float* state, int B, int T, int H,
                   int K, int V, float scale) {
    return gla(q, k, v, g, per_key, h0, out, state, B, T, H, K, V, scale);
}

int eg_cpu_delta_f32(const float* q, const float* k, const float* v, const float* g,
                     const float* beta, const float* h0, float* out, float* state, int B, int T,
                     int H, int K, int V, float scale) {
    return delta(q, k, v, g, beta, h0, out, state, B, T, H, K, V, scale);
}

int eg_cpu_delta_f16(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* g,
                     const uint16_t* beta, const float* h0, uint16_t* out, float* state, int B,
                     int T, int H, int K, int V, float scale) {
    return delta(q, k, v, g, beta, h0, out, state, B, T, H, K, V, scale);
}

int eg_cpu_scan_f32(const float* x, const float* g, const float* h0, float* out, float* state,
                    int B, int T, int H, int D) {
    return scan(x, g, h0, out, state, B, T, H, D);
}

int eg_cpu_scan_f16(const uint16_t* x, const uint16_t* g, const float* h0, uint16_t* out,
                    float* state, int B, int T, int H, int D) {
    return scan(x, g, h0, out, state, B, T, H, D);
}

uint16_t eg_float_to_half(float x) { return edgegate::float_to_half(x); }
float eg_half_to_float(uint16_t h) { return edgegate::half_to_float(h); }

}  // extern "C"
