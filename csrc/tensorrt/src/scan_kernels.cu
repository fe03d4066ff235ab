// CUDA kernels of the gated scans.
//
// A state column S[:, j] (K keys) is spread over a few lanes of a warp (scan_step.h: lane l holds
// E consecutive keys), so each thread keeps at most 32 state entries in registers (no spills
// at K = 128). A block of 64 or 128 threads covers several value columns, of one head or of
// several heads (ScanLayout); value columns are independent, so a head's columns are also split
// over blocks, which gives a batch-1 launch enough blocks for the GPU. Every chunk of time steps
// is staged once per block in shared memory: q, k, v, beta and the decays exp(g), each computed
// once, not per lane. The step arithmetic itself is scan_step.h, which the CPU build (and so the
// test suite) runs too.
#include "scan_kernels.h"

#include <type_traits>

#include "edgegate/scan_step.h"

namespace edgegate {
namespace {

constexpr int kScanThreads = 128;
constexpr int kScanPrefetch = 8;  // time steps of the linear scan loaded ahead per thread
constexpr int kMinBlocksPerSM = 4;

// Sum of one partial per lane over the ``lanes`` threads of a column (a power of two <= 32, the
// column's lanes contiguous and aligned in the warp): the butterfly lanes_butterfly_sum mirrors.
__device__ __forceinline__ float lanes_sum(float x, int lanes) {
    for (int o = lanes >> 1; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Where unit ``unit`` (batch, head, value tile) lies; false past the last unit.
struct Unit {
    int b, h, tile;
    bool valid;
};

__device__ __forceinline__ Unit unit_at(int64_t unit, int64_t units, int tiles, int H) {
    if (unit >= units) return {0, 0, 0, false};
    int64_t const bh = unit / tiles;
    return {int(bh / H), int(bh % H), int(unit % tiles), true};
}

// What one launch needs besides the tensors.
struct Shape {
    int T, H, K, V, padded, tile, slots, tiles, steps_per_chunk;  // padded = lanes * E
    int64_t units;
    float scale;
};

// Shared-memory staging of one chunk [t0, t0 + steps_per_chunk): per step and slot, rows q, k
// and decay (per-key gates) of ``padded`` keys each, then per step and slot two head values
// (decay, beta), then per step and slot the tile's v. Keys past K, steps past T and units past
// the last stage neutral values (q = k = v = beta = 0, decay = 1).
struct Stage {
    float* rows;   // [steps][slots][3][padded]
    float* heads;  // [steps][slots][2]
    float* vals;   // [steps][slots][tile]

    __device__ Stage(float* smem, Shape const& s) {
        rows = smem;
        heads = rows + int64_t(s.steps_per_chunk) * s.slots * 3 * s.padded;
        vals = heads + int64_t(s.steps_per_chunk) * s.slots * 2;
    }
};

// ``Gate``: 0 = GLA per-key decays, 1 = GLA per-head decay, 2 = delta rule (decay and beta).
template <int Gate, typename T>
__device__ __forceinline__ void stage_chunk(Stage const& st, Shape const& s, int t0, T const* q,
                                            T const* k, T const* v, T const* g, T const* beta) {
    int const tid = threadIdx.x, nt = blockDim.x;
    int const first_unit = blockIdx.x * s.slots;
    int const row_items = s.steps_per_chunk * s.slots * s.padded;
    for (int n = tid; n < row_items; n += nt) {
        int const i = n % s.padded, sl = (n / s.padded) % s.slots, ts = n / (s.padded * s.slots);
        Unit const u = unit_at(first_unit + sl, s.units, s.tiles, s.H);
        int const t = t0 + ts;
        float qv = 0.f, kv = 0.f, dv = 1.f;
        if (u.valid && t < s.T && i < s.K) {
            int64_t const at = bthd(u.b, t, u.h, i, s.T, s.H, s.K);
            qv = load(q, at);
            kv = load(k, at);
            if (Gate == 0) dv = gate_decay(load(g, at));
        }
        float* row = st.rows + (int64_t(ts) * s.slots + sl) * 3 * s.padded;
        row[i] = qv;
        row[s.padded + i] = kv;
        row[2 * s.padded + i] = dv;
    }
    int const head_items = s.steps_per_chunk * s.slots;
    if (Gate != 0) {
        for (int n = tid; n < head_items; n += nt) {
            int const sl = n % s.slots, ts = n / s.slots;
            Unit const u = unit_at(first_unit + sl, s.units, s.tiles, s.H);
            int const t = t0 + ts;
            float dv = 1.f, bv = 0.f;
            if (u.valid && t < s.T) {
                int64_t const head = (int64_t(u.b) * s.T + t) * s.H + u.h;
                dv = gate_decay(load(g, head));
                if (Gate == 2) bv = load(beta, head);
            }
            st.heads[2 * n] = dv;
            st.heads[2 * n + 1] = bv;
        }
    }
    int const value_items = head_items * s.tile;
    for (int n = tid; n < value_items; n += nt) {
        int const c = n % s.tile, sl = (n / s.tile) % s.slots, ts = n / (s.tile * s.slots);
        Unit const u = unit_at(first_unit + sl, s.units, s.tiles, s.H);
        int const t = t0 + ts, j = u.tile * s.tile + c;
        st.vals[n] = (u.valid && t < s.T && j < s.V) ? load(v, bthd(u.b, t, u.h, j, s.T, s.H, s.V))
                                                     : 0.f;
    }
}

// This thread's place: column ``j`` of unit ``u``, lane ``lane`` of ``lanes``; ``slot`` is
// clamped to a real slot so that idle threads read staged memory in bounds (and still take
// part in the warp's shuffles).
struct Place {
    Unit u;
    int slot, col, j, lane;
    bool active;
};

__device__ __forceinline__ Place place_of(Shape const& s, int lanes) {
    int const column = threadIdx.x / lanes;
    Place p;
    p.lane = threadIdx.x & (lanes - 1);
    int const slot = column / s.tile;
    p.col = column % s.tile;
    p.slot = slot < s.slots ? slot : 0;
    p.u = unit_at(int64_t(blockIdx.x) * s.slots + slot, s.units, s.tiles, s.H);
    p.j = p.u.tile * s.tile + p.col;
    p.active = slot < s.slots && p.u.valid && p.j < s.V;
    return p;
}

template <int E>
__device__ __forceinline__ void load_state(float (&st)[E], float const* h0, Place const& p,
                                           Shape const& s, int lanes) {
#pragma unroll
    for (int e = 0; e < E; ++e) {
        int const i = p.lane * E + e;
        st[e] = (p.active && h0 != nullptr && i < s.K)
                    ? h0[bhkv(p.u.b, p.u.h, i, p.j, s.H, s.K, s.V)]
                    : 0.f;
    }
}

template <int E>
__device__ __forceinline__ void save_state(float const (&st)[E], float* state, Place const& p,
                                           Shape const& s, int lanes) {
    if (!p.active) return;
#pragma unroll
    for (int e = 0; e < E; ++e) {
        int const i = p.lane * E + e;
        if (i < s.K) state[bhkv(p.u.b, p.u.h, i, p.j, s.H, s.K, s.V)] = st[e];
    }
}

// Gated linear attention (``Gate`` 0: per-key decays, 1: one per head) and the gated delta rule
// (``Gate`` 2), E state entries per thread.
template <int Gate, typename T, int E>
__global__ void __launch_bounds__(kMaxThreads, kMinBlocksPerSM)
    scan_attention_kernel(T const* __restrict__ q, T const* __restrict__ k,
                          T const* __restrict__ v, T const* __restrict__ g,
                          T const* __restrict__ beta, float const* __restrict__ h0,
                          T* __restrict__ out, float* __restrict__ state, Shape s, int lanes) {
    extern __shared__ float smem[];
    Stage const st(smem, s);
    Place const p = place_of(s, lanes);
    float col[E];
    load_state<E>(col, h0, p, s, lanes);
    for (int t0 = 0; t0 < s.T; t0 += s.steps_per_chunk) {
        __syncthreads();  // the previous chunk is consumed
        stage_chunk<Gate>(st, s, t0, q, k, v, g, beta);
        __syncthreads();
        int const steps = s.T - t0 < s.steps_per_chunk ? s.T - t0 : s.steps_per_chunk;
        for (int ts = 0; ts < steps; ++ts) {
            int const at = ts * s.slots + p.slot;
            float const* qs = st.rows + int64_t(at) * 3 * s.padded + p.lane * E;
            float const* ks = qs + s.padded;
            float const v_j = st.vals[at * s.tile + p.col];
            float read;
            if (Gate == 2) {
                float const predicted =
                    lanes_sum(delta_lane_decay<E>(col, ks, st.heads[2 * at]), lanes);
                float const u = delta_correction(st.heads[2 * at + 1], v_j, predicted);
                read = delta_lane_update<E>(col, qs, ks, u);
            } else {
                read = gla_lane_step<E>(col, qs, ks, Gate == 0 ? ks + s.padded : nullptr,
                                        st.heads[2 * at], v_j);
            }
            read = lanes_sum(read, lanes);
            if (p.active && p.lane == 0)
                store(out, bthd(p.u.b, t0 + ts, p.u.h, p.j, s.T, s.H, s.V), s.scale * read);
        }
    }
    save_state<E>(col, state, p, s, lanes);
}

template <typename T>
__global__ void __launch_bounds__(kScanThreads)
    gated_linear_scan_kernel(T const* __restrict__ x, T const* __restrict__ g,
                             float const* __restrict__ h0, T* __restrict__ out,
                             float* __restrict__ state, int B, int steps, int H, int D) {
    int64_t const channel = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (channel >= int64_t(B) * H * D) return;
    int const d = int(channel % D);
    int const h = int((channel / D) % H);
    int const b = int(channel / (int64_t(D) * H));
    int64_t const stride = int64_t(H) * D;  // one time step
    float value = h0 != nullptr ? h0[channel] : 0.f;
    for (int t0 = 0; t0 < steps; t0 += kScanPrefetch) {
        int64_t const at0 = bthd(b, t0, h, d, steps, H, D);
        float gs[kScanPrefetch], xs[kScanPrefetch];  // loads issued together, ahead of the chain
#pragma unroll
        for (int u = 0; u < kScanPrefetch; ++u) {
            bool const in = t0 + u < steps;
            gs[u] = in ? load(g, at0 + u * stride) : 0.f;
            xs[u] = in ? load(x, at0 + u * stride) : 0.f;
        }
#pragma unroll
        for (int u = 0; u < kScanPrefetch; ++u) {
            if (t0 + u < steps) {
                value = scan_step(value, gs[u], xs[u]);
                store(out, at0 + u * stride, value);
            }
        }
    }
    state[channel] = value;
}

bool valid_attention(int B, int T, int H, int K, int V) {
    return B >= 0 && T >= 0 && H >= 1 && K >= 1 && K <= kMaxKeyDim && V >= 1 && V <= kMaxValueDim;
}

int g_forced_keys_per_lane = 0;  // benchmarks only (eg_cuda_force_keys_per_lane); 0 = choose

ScanLayout launch_layout(int B, int H, int K, int V) {
    int device = 0, sms = 16;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
        cudaGetLastError();  // keep the query's failure out of the launch's error state
        sms = 16;
    }
    return choose_layout(B, H, K, V, sms, g_forced_keys_per_lane);
}

// Launch the kernel instantiated for the layout's keys per lane.
template <int Gate, typename T>
cudaError_t launch_attention(void const* q, void const* k, void const* v, void const* g,
                             void const* beta, float const* h0, void* out, float* state, int B,
                             int T_, int H, int K, int V, float scale, cudaStream_t stream) {
    ScanLayout const l = launch_layout(B, H, K, V);
    if (l.blocks <= 0 || l.blocks > 0x7fffffff) return cudaErrorInvalidValue;
    int const padded = l.lanes * l.keys_per_lane;
    Shape const s{T_, H, K, V, padded, l.tile, l.slots, l.tiles, l.steps_per_chunk, l.units, scale};
    size_t const smem = sizeof(float) * size_t(l.steps_per_chunk) *
                        size_t(stage_floats_per_step(l.slots, padded, l.tile));
    auto run = [&](auto kernel) {
        kernel<<<unsigned(l.blocks), l.threads, smem, stream>>>(
            static_cast<T const*>(q), static_cast<T const*>(k), static_cast<T const*>(v),
            static_cast<T const*>(g), static_cast<T const*>(beta), h0, static_cast<T*>(out), state,
            s, l.lanes);
        return cudaGetLastError();
    };
    switch (l.keys_per_lane) {
        case kKeysPerLaneChoices[0]: return run(scan_attention_kernel<Gate, T, kKeysPerLaneChoices[0]>);
        case kKeysPerLaneChoices[1]: return run(scan_attention_kernel<Gate, T, kKeysPerLaneChoices[1]>);
        case kKeysPerLaneChoices[2]: return run(scan_attention_kernel<Gate, T, kKeysPerLaneChoices[2]>);
        default: return cudaErrorInvalidValue;
    }
}

}  // namespace

cudaError_t launch_gated_linear_attention(ScanDtype dtype, void const* q, void const* k,
                                          void const* v, void const* g, bool per_key,
                                          float const* h0, void* out, float* state, int B, int T,
                                          int H, int K, int V, float scale, cudaStream_t stream) {
    if (!valid_attention(B, T, H, K, V)) return cudaErrorInvalidValue;
    if (B == 0) return cudaSuccess;
    bool const half = dtype == ScanDtype::kHalf;
    if (per_key)
        return half ? launch_attention<0, half_bits>(q, k, v, g, nullptr, h0, out, state, B, T, H,
                                                     K, V, scale, stream)
                    : launch_attention<0, float>(q, k, v, g, nullptr, h0, out, state, B, T, H, K,
                                                 V, scale, stream);
    return half ? launch_attention<1, half_bits>(q, k, v, g, nullptr, h0, out, state, B, T, H, K,
                                                 V, scale, stream)
                : launch_attention<1, float>(q, k, v, g, nullptr, h0, out, state, B, T, H, K, V,
                                             scale, stream);
}

cudaError_t launch_gated_delta_rule(ScanDtype dtype, void const* q, void const* k, void const* v,
                                    void const* g, void const* beta, float const* h0, void* out,
                                    float* state, int B, int T, int H, int K, int V, float scale,
                                    cudaStream_t stream) {
    if (!valid_attention(B, T, H, K, V)) return cudaErrorInvalidValue;
    if (B == 0) return cudaSuccess;
    if (dtype == ScanDtype::kHalf)
        return launch_attention<2, half_bits>(q, k, v, g, beta, h0, out, state, B, T, H, K, V,
                                              scale, stream);
    return launch_attention<2, float>(q, k, v, g, beta, h0, out, state, B, T, H, K, V, scale,
                                      stream);
}

cudaError_t launch_gated_linear_scan(ScanDtype dtype, void const* x, void const* g,
                                     float const* h0, void* out, float* state, int B, int T,
                                     int H, int D, cudaStream_t stream) {
    if (B < 0 || T < 0 || H < 1 || D < 1) return cudaErrorInvalidValue;
    int64_t const channels = int64_t(B) * H * D;
    if (channels == 0) return cudaSuccess;
    unsigned const blocks = unsigned((channels + kScanThreads - 1) / kScanThreads);
    if (dtype == ScanDtype::kHalf) {
        gated_linear_scan_kernel<half_bits><<<blocks, kScanThreads, 0, stream>>>(
            static_cast<half_bits const*>(x), static_cast<half_bits const*>(g), h0,
            static_cast<half_bits*>(out), state, B, T, H, D);
    } else {
        gated_linear_scan_kernel<float><<<blocks, kScanThreads, 0, stream>>>(
            static_cast<float const*>(x), static_cast<float const*>(g), h0,
            static_cast<float*>(out), state, B, T, H, D);
    }
    return cudaGetLastError();
}

}  // namespace edgegate

// C entry points for stand-alone GPU tests and benchmarks (ctypes over device pointers; a null
// stream is the default stream). Return values are cudaError_t codes (0 = launched).
extern "C" {

int eg_cuda_gla(int dtype, void const* q, void const* k, void const* v, void const* g, int per_key,
                float const* h0, void* out, float* state, int B, int T, int H, int K, int V,
                float scale, void* stream) {
    return int(edgegate::launch_gated_linear_attention(
        edgegate::ScanDtype(dtype), q, k, v, g, per_key != 0, h0, out, state, B, T, H, K, V, scale,
        static_cast<cudaStream_t>(stream)));
}

int eg_cuda_delta(int dtype, void const* q, void const* k, void const* v, void const* g,
                  void const* beta, float const* h0, void* out, float* state, int B, int T, int H,
                  int K, int V, float scale, void* stream) {
    return int(edgegate::launch_gated_delta_rule(edgegate::ScanDtype(dtype), q, k, v, g, beta, h0,
                                                 out, state, B, T, H, K, V, scale,
                                                 static_cast<cudaStream_t>(stream)));
}

int eg_cuda_scan(int dtype, void const* x, void const* g, float const* h0, void* out, float* state,
                 int B, int T, int H, int D, void* stream) {
    return int(edgegate::launch_gated_linear_scan(edgegate::ScanDtype(dtype), x, g, h0, out, state,
                                                  B, T, H, D, static_cast<cudaStream_t>(stream)));
}

// Pin the keys per lane (one of 32, 8, 2) for the launches that follow, or 0 to let the layout
// choose; returns 0, or 1 for a value no kernel is built for. Benchmarks only: not thread-safe.
int eg_cuda_force_keys_per_lane(int keys_per_lane) {
    if (keys_per_lane != 0 && keys_per_lane != edgegate::kKeysPerLaneChoices[0] &&
        keys_per_lane != edgegate::kKeysPerLaneChoices[1] &&
        keys_per_lane != edgegate::kKeysPerLaneChoices[2])
        return 1;
    edgegate::g_forced_keys_per_lane = keys_per_lane;
    return 0;
}

// The layout the next attention launch of this shape takes on the current device, as 8 ints:
// keys_per_lane, lanes, threads, tile, slots, tiles, blocks, steps_per_chunk.
int eg_cuda_layout(int B, int H, int K, int V, int* out8) {
    edgegate::ScanLayout const l = edgegate::launch_layout(B, H, K, V);
    int const values[8] = {l.keys_per_lane, l.lanes, l.threads, l.tile, l.slots, l.tiles,
                           int(l.blocks), l.steps_per_chunk};
    for (int i = 0; i < 8; ++i) out8[i] = values[i];
    return 0;
}

}  // extern "C"
