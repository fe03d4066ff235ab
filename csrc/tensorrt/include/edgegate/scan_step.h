// edgegate gated scans: the arithmetic of one recurrence step, shared by the CUDA kernels and
// a CPU build of the very same functions (csrc/tensorrt/cpu), which the test suite checks
// against the PyTorch references (edgegate/ops/*/naive.py) on machines without a GPU.
//
// Layout [B, T, H, D]; gates in log space (decay = exp(g)); state [B, H, K, V] (or [B, H, D])
// always in fp32. Inputs and outputs are fp32 or fp16; fp16 travels as its 16 bits and is
// converted here, by the same code on both sides.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define EG_HD __host__ __device__ __forceinline__
#else
#define EG_HD inline
#endif

namespace edgegate {

// Largest key dim a state column holds on chip (registers on the GPU).
constexpr int kMaxKeyDim = 128;
// Largest value dim the kernels take (threads of one block walk the value columns).
constexpr int kMaxValueDim = 128;

using half_bits = uint16_t;

EG_HD uint32_t float_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof(u));
    return u;
}

EG_HD float bits_float(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof(x));
    return x;
}

// IEEE binary16 -> binary32, exact (normals, subnormals, zeros, infinities, NaNs).
EG_HD float half_to_float(half_bits h) {
    uint32_t sign = (uint32_t(h) & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0) {
        if (mantissa == 0) return bits_float(sign);
        // subnormal: value = mantissa * 2^-24
        float value = float(mantissa) * 5.9604644775390625e-8f;
        return sign ? -value : value;
    }
    if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));
    return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// IEEE binary32 -> binary16, rounding to nearest even; overflow goes to infinity.
EG_HD half_bits float_to_half(float x) {
    uint32_t u = float_bits(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t magnitude = u & 0x7fffffffu;
    if (magnitude >= 0x7f800000u) {  // inf or NaN
        return half_bits(sign | 0x7c00u | (magnitude > 0x7f800000u ? 0x200u : 0u));
    }
    if (magnitude >= 0x477ff000u) return half_bits(sign | 0x7c00u);  // rounds past 65504
    if (magnitude < 0x38800000u) {  // below the smallest normal half: subnormal or zero
        if (magnitude < 0x33000000u) return half_bits(sign);  // below half the smallest subnormal
        uint32_t exponent = magnitude >> 23;
        uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - exponent;  // 14..24
        uint32_t result = mantissa >> shift;
        uint32_t remainder = mantissa & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1u);
        if (remainder > halfway || (remainder == halfway && (result & 1u))) ++result;
        return half_bits(sign | result);
    }
    uint32_t result = ((magnitude - 0x38000000u) >> 13);  // rebias exponent 127 -> 15
    uint32_t remainder = magnitude & 0x1fffu;
    if (remainder > 0x1000u || (remainder == 0x1000u && (result & 1u))) ++result;
    return half_bits(sign | result);
}

// Element access in either precision: the kernels and the CPU build load and store alike.
EG_HD float load(const float* p, int64_t i) { return p[i]; }
EG_HD float load(const half_bits* p, int64_t i) { return half_to_float(p[i]); }
EG_HD void store(float* p, int64_t i, float v) { p[i] = v; }
EG_HD void store(half_bits* p, int64_t i, float v) { p[i] = float_to_half(v); }

// One step of gated linear attention on a state column s = S[:, j] (K entries):
//   S = diag(exp(g)) S + k^T v;  o_j = scale * (q . S[:, j]).
// ``g`` holds K log-decays (per key), or ``g_scalar`` one per head when ``g`` is null.
// KMAX is a compile-time bound, so a GPU thread keeps ``s`` in registers.
template <int KMAX>
EG_HD float gla_column_step(float (&s)[KMAX], const float* q, const float* k, const float* g,
                            float g_scalar, float v_j, float scale, int K) {
    float read = 0.f;
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int i = 0; i < KMAX; ++i) {
        if (i < K) {
            float decay = expf(g != nullptr ? g[i] : g_scalar);
            s[i] = decay * s[i] + k[i] * v_j;
            read += q[i] * s[i];
        }
    }
    return scale * read;
}

// One step of the gated delta rule on a state column s = S[:, j]:
//   S = exp(g) S;  u_j = beta (v_j - k . S[:, j]);  S[:, j] += k u_j;  o_j = scale q . S[:, j].
// Every column updates on its own, which is what lets a thread own one.
template <int KMAX>
EG_HD float delta_column_step(float (&s)[KMAX], const float* q, const float* k, float g,
                              float beta, float v_j, float scale, int K) {
    float decay = expf(g);
    float predicted = 0.f;
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int i = 0; i < KMAX; ++i) {
        if (i < K) {
            s[i] *= decay;
            predicted += k[i] * s[i];
        }
    }
    float u = beta * (v_j - predicted);
    float read = 0.f;
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int i = 0; i < KMAX; ++i) {
        if (i < K) {
            s[i] += k[i] * u;
            read += q[i] * s[i];
        }
    }
    return scale * read;
}

// One step of the gated linear scan on one channel: h = exp(g) h + x (the output is h).
EG_HD float scan_step(float h, float g, float x) { return expf(g) * h + x; }

// Index of element [b, t, h, d] in a contiguous [B, T, H, D] tensor.
EG_HD int64_t bthd(int b, int t, int h, int d, int T, int H, int D) {
    return ((int64_t(b) * T + t) * H + h) * D + d;
}

// Index of state element [b, h, i, j] in a contiguous [B, H, K, V] tensor.
EG_HD int64_t bhkv(int b, int h, int i, int j, int H, int K, int V) {
    return ((int64_t(b) * H + h) * K + i) * V + j;
}

}  // namespace edgegate
