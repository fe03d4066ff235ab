// edgegate gated scans: the arithmetic of one recurrence step, shared by the CUDA kernels and
// a CPU build of the very same functions (csrc/tensorrt/cpu), which the test suite checks
// against the PyTorch references (edgegate/ops/*/naive.py) on machines without a GPU.
//
// Layout [B, T, H, D]; gates in log space (decay = exp(g)); state [B, H, K, V] (or [B, H, D])
// always in fp32. Inputs and outputs are fp32 or fp16; fp16 travels as its 16 bits and is
// converted here: in code on the CPU, by the conversion instructions on the GPU (both round to
// nearest even, so the bits agree).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define EG_HD __host__ __device__ __forceinline__
#else
#define EG_HD inline
#endif

namespace edgegate {

// Largest key dim a state column holds on chip (registers of up to a warp of lanes on the GPU).
constexpr int kMaxKeyDim = 128;
// Largest value dim the plugins take (the kernels tile value columns over blocks, so this bounds
// the interface, not registers).
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
// On the GPU the conversion instructions (cvt, round to nearest even like the code above: the
// same bits) replace the bit manipulation, whose branches held back the loads in flight.
EG_HD float load(const half_bits* p, int64_t i) {
#if defined(__CUDA_ARCH__)
    return __half2float(__ushort_as_half(p[i]));
#else
    return half_to_float(p[i]);
#endif
}
EG_HD void store(float* p, int64_t i, float v) { p[i] = v; }
EG_HD void store(half_bits* p, int64_t i, float v) {
#if defined(__CUDA_ARCH__)
    p[i] = __half_as_ushort(__float2half_rn(v));
#else
    p[i] = float_to_half(v);
#endif
}

// ---- The state column split across lanes --------------------------------------------------
// A state column S[:, j] (K keys) is spread over ``lanes`` threads (a power of two, at most a
// warp): lane l holds keys l E .. l E + E - 1 in ``s[0..E)``, E = keys per lane, a compile-time
// bound so that a GPU thread keeps its share in registers. The staged rows of q, k and decays
// are padded to lanes * E keys with neutral entries (q = k = 0, decay = 1; the state there stays
// 0), so the step functions below run E entries without bounds checks: a lane passes pointers
// to its own E entries. Each step gives one partial dot product per lane; ``lanes_sum`` (device:
// xor-shuffle butterfly; host: lanes_butterfly_sum, the same pairing) adds them. Decays arrive as
// exp(g), computed once per step.

// Keys per lane the kernels are built for, most to fewest: few lanes cost the least work, many
// lanes shorten each step's dependent chain and give small batches more threads.
constexpr int kKeysPerLaneChoices[3] = {32, 8, 2};
constexpr int kMaxLanes = 32;  // the lanes of one column stay within a warp

// exp of a log-space gate: the decay, computed once per step and head (or key) by the staging.
EG_HD float gate_decay(float g) { return expf(g); }

// Smallest power of two >= ceil(K / keys_per_lane): the lanes one column spreads over.
EG_HD int lanes_for(int K, int keys_per_lane) {
    int const needed = (K + keys_per_lane - 1) / keys_per_lane;
    int lanes = 1;
    while (lanes < needed) lanes *= 2;
    return lanes;
}

// Gated linear attention, one step, one lane's E keys of column j:
//   S = diag(decay) S + k^T v_j;  returns this lane's part of q . S[:, j] (unscaled).
// ``decay`` holds the lane's per-key decays, or is null for one per head (``head_decay``).
template <int E>
EG_HD float gla_lane_step(float (&s)[E], const float* q, const float* k, const float* decay,
                          float head_decay, float v_j) {
    float read = 0.f;
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int e = 0; e < E; ++e) {
        float const d = decay != nullptr ? decay[e] : head_decay;
        s[e] = d * s[e] + k[e] * v_j;
        read += q[e] * s[e];
    }
    return read;
}

// Gated delta rule, first half of a step on one lane's E keys of column j:
//   S = decay S;  returns this lane's part of k . S[:, j] (the prediction of v_j).
template <int E>
EG_HD float delta_lane_decay(float (&s)[E], const float* k, float decay) {
    float predicted = 0.f;
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int e = 0; e < E; ++e) {
        s[e] *= decay;
        predicted += k[e] * s[e];
    }
    return predicted;
}

// The delta rule's correction of column j: u_j = beta (v_j - k . S[:, j]).
EG_HD float delta_correction(float beta, float v_j, float predicted) {
    return beta * (v_j - predicted);
}

// Gated delta rule, second half: S[:, j] += k u_j; returns this lane's part of q . S[:, j].
template <int E>
EG_HD float delta_lane_update(float (&s)[E], const float* q, const float* k, float u) {
    float read = 0.f;
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int e = 0; e < E; ++e) {
        s[e] += k[e] * u;
        read += q[e] * s[e];
    }
    return read;
}

// Host form of the device's lane sum: at each distance o = lanes/2, ..., 1 every lane adds the
// value of lane (l xor o), the pairing of __shfl_xor_sync, so every lane ends with the same
// bits as on the GPU. ``partial`` holds one value per lane; all of them hold the sum after.
inline void lanes_butterfly_sum(float* partial, int lanes) {
    float next[kMaxLanes];
    for (int o = lanes / 2; o > 0; o /= 2) {
        for (int l = 0; l < lanes; ++l) next[l] = partial[l] + partial[l ^ o];
        for (int l = 0; l < lanes; ++l) partial[l] = next[l];
    }
}

// ---- How a launch covers the problem ------------------------------------------------------
// Work unit: one (batch, head, value tile of ``tile`` columns). A block of ``threads`` (64 or
// 128) threads holds ``slots`` units side by side, each column on ``lanes`` threads; the whole
// block stages ``steps_per_chunk`` time steps of q, k, decays, beta and v in shared memory at a
// time. Plain host code, so the CPU build (and the tests) see the very layout a launch uses.
struct ScanLayout {
    int keys_per_lane;    // E: state entries per thread
    int lanes;            // threads per state column
    int threads;          // per block
    int tile;             // value columns per unit
    int slots;            // units per block
    int tiles;            // units per (batch, head)
    int64_t units;        // B * H * tiles
    int64_t blocks;       // ceil(units / slots)
    int steps_per_chunk;  // time steps staged per __syncthreads pair
};

constexpr int kMaxThreads = 128;
constexpr int kMaxStageFloats = 8192;  // 32 KiB of staged inputs per block
constexpr int kMaxStepsPerChunk = 32;

// Floats of shared memory one staged step takes for ``slots`` units with rows of ``padded`` keys
// (lanes * keys_per_lane).
EG_HD int stage_floats_per_step(int slots, int padded, int tile) {
    return slots * (3 * padded + tile + 2);
}

// The layout with ``keys_per_lane`` and ``threads`` fixed (lanes must fit a warp).
inline ScanLayout layout_with(int B, int H, int K, int V, int keys_per_lane, int threads) {
    ScanLayout l{};
    l.keys_per_lane = keys_per_lane;
    l.lanes = lanes_for(K, keys_per_lane);
    l.threads = threads;
    int const columns = threads / l.lanes;
    l.tile = V < columns ? V : columns;
    l.slots = columns / l.tile;
    int const padded = l.lanes * keys_per_lane;
    int const fit = kMaxStageFloats / stage_floats_per_step(1, padded, l.tile);
    if (l.slots > fit) l.slots = fit > 0 ? fit : 1;
    l.tiles = (V + l.tile - 1) / l.tile;
    l.units = int64_t(B) * H * l.tiles;
    l.blocks = (l.units + l.slots - 1) / l.slots;
    int steps = kMaxStageFloats / stage_floats_per_step(l.slots, padded, l.tile);
    l.steps_per_chunk = steps < 1 ? 1 : (steps > kMaxStepsPerChunk ? kMaxStepsPerChunk : steps);
    return l;
}

// The launch layout: the fewest lanes per column (least work) whose grid still gives every SM
// ``2 * sm_count`` blocks; failing that, the layout with the most blocks (small batches).
// ``forced_keys_per_lane`` (one of kKeysPerLaneChoices, else 0) pins E, for benchmarks.
inline ScanLayout choose_layout(int B, int H, int K, int V, int sm_count,
                                int forced_keys_per_lane = 0) {
    ScanLayout best{};
    bool have = false;
    for (int keys_per_lane : kKeysPerLaneChoices) {
        if (forced_keys_per_lane != 0 && keys_per_lane != forced_keys_per_lane) continue;
        if (lanes_for(K, keys_per_lane) > kMaxLanes) continue;
        for (int threads : {kMaxThreads, kMaxThreads / 2}) {
            ScanLayout const l = layout_with(B, H, K, V, keys_per_lane, threads);
            if (l.blocks >= 2 * int64_t(sm_count)) return l;
            if (!have || l.blocks > best.blocks) best = l, have = true;
        }
    }
    return best;
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
