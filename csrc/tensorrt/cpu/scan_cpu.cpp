// CPU build of the gated-scan kernels: the same per-step functions (scan_step.h) in the same
// order as the CUDA kernels. Each state column is split over the same lanes, each lane's partial
// dot products are summed in the device's butterfly order, the staged rows are padded with the
// same neutral keys, and decays are exp(g) once per step. Exported with C linkage so the test
// suite can call them through ctypes and compare with naive.py.
#include <type_traits>
#include <vector>

#include "edgegate/scan_step.h"

namespace {

using edgegate::bhkv;
using edgegate::bthd;
using edgegate::kMaxKeyDim;
using edgegate::kMaxLanes;
using edgegate::kMaxValueDim;

// Stage one time step's key row as fp32, padded to ``padded`` keys with ``fill``, as the kernel
// does in shared memory.
template <typename T>
void stage(const T* src, int b, int t, int h, int T_, int H, int K, int padded, float fill,
           float* dst) {
    for (int i = 0; i < padded; ++i)
        dst[i] = i < K ? edgegate::load(src, bthd(b, t, h, i, T_, H, K)) : fill;
}

// One state column, split over ``lanes`` lanes of E keys.
template <int E>
struct Column {
    int lanes;
    float s[kMaxLanes][E] = {};

    void load(const float* h0, int b, int h, int j, int H, int K, int V) {
        for (int l = 0; l < lanes; ++l)
            for (int e = 0; e < E; ++e) {
                int const i = l * E + e;
                s[l][e] = (h0 != nullptr && i < K) ? h0[bhkv(b, h, i, j, H, K, V)] : 0.f;
            }
    }

    void save(float* state, int b, int h, int j, int H, int K, int V) const {
        for (int l = 0; l < lanes; ++l)
            for (int e = 0; e < E; ++e) {
                int const i = l * E + e;
                if (i < K) state[bhkv(b, h, i, j, H, K, V)] = s[l][e];
            }
    }
};

bool valid(int K, int V, int keys_per_lane) {
    return K >= 1 && K <= kMaxKeyDim && V >= 1 && V <= kMaxValueDim &&
           edgegate::lanes_for(K, keys_per_lane) <= kMaxLanes;
}

template <int E, typename T>
int gla(const T* q, const T* k, const T* v, const T* g, int per_key, const float* h0, T* out,
        float* state, int B, int T_, int H, int K, int V, float scale) {
    if (!valid(K, V, E)) return 1;
    int const lanes = edgegate::lanes_for(K, E), padded = lanes * E;
    std::vector<float> qs(padded), ks(padded), ds(padded);
    float partial[kMaxLanes];
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
            for (int j = 0; j < V; ++j) {
                Column<E> column{lanes};
                column.load(h0, b, h, j, H, K, V);
                for (int t = 0; t < T_; ++t) {
                    stage(q, b, t, h, T_, H, K, padded, 0.f, qs.data());
                    stage(k, b, t, h, T_, H, K, padded, 0.f, ks.data());
                    float head_decay = 1.f;
                    if (per_key) {
                        stage(g, b, t, h, T_, H, K, padded, 0.f, ds.data());
                        for (float& d : ds) d = edgegate::gate_decay(d);  // pads: exp(0) = 1
                    } else {
                        head_decay = edgegate::gate_decay(
                            edgegate::load(g, (int64_t(b) * T_ + t) * H + h));
                    }
                    float const v_j = edgegate::load(v, bthd(b, t, h, j, T_, H, V));
                    for (int l = 0; l < lanes; ++l)
                        partial[l] = edgegate::gla_lane_step<E>(
                            column.s[l], qs.data() + l * E, ks.data() + l * E,
                            per_key ? ds.data() + l * E : nullptr, head_decay, v_j);
                    edgegate::lanes_butterfly_sum(partial, lanes);
                    edgegate::store(out, bthd(b, t, h, j, T_, H, V), scale * partial[0]);
                }
                column.save(state, b, h, j, H, K, V);
            }
    return 0;
}

template <int E, typename T>
int delta(const T* q, const T* k, const T* v, const T* g, const T* beta, const float* h0, T* out,
          float* state, int B, int T_, int H, int K, int V, float scale) {
    if (!valid(K, V, E)) return 1;
    int const lanes = edgegate::lanes_for(K, E), padded = lanes * E;
    std::vector<float> qs(padded), ks(padded);
    float partial[kMaxLanes];
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
            for (int j = 0; j < V; ++j) {
                Column<E> column{lanes};
                column.load(h0, b, h, j, H, K, V);
                for (int t = 0; t < T_; ++t) {
                    stage(q, b, t, h, T_, H, K, padded, 0.f, qs.data());
                    stage(k, b, t, h, T_, H, K, padded, 0.f, ks.data());
                    int64_t const head = (int64_t(b) * T_ + t) * H + h;
                    float const decay = edgegate::gate_decay(edgegate::load(g, head));
                    float const v_j = edgegate::load(v, bthd(b, t, h, j, T_, H, V));
                    for (int l = 0; l < lanes; ++l)
                        partial[l] =
                            edgegate::delta_lane_decay<E>(column.s[l], ks.data() + l * E, decay);
                    edgegate::lanes_butterfly_sum(partial, lanes);
                    float const u =
                        edgegate::delta_correction(edgegate::load(beta, head), v_j, partial[0]);
                    for (int l = 0; l < lanes; ++l)
                        partial[l] = edgegate::delta_lane_update<E>(
                            column.s[l], qs.data() + l * E, ks.data() + l * E, u);
                    edgegate::lanes_butterfly_sum(partial, lanes);
                    edgegate::store(out, bthd(b, t, h, j, T_, H, V), scale * partial[0]);
                }
                column.save(state, b, h, j, H, K, V);
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

// Run ``fn(std::integral_constant<int, E>{})`` for a built keys-per-lane value E; 1 otherwise.
template <typename F>
int by_keys_per_lane(int keys_per_lane, F&& fn) {
    constexpr int kWide = edgegate::kKeysPerLaneChoices[0];
    constexpr int kMid = edgegate::kKeysPerLaneChoices[1];
    constexpr int kNarrow = edgegate::kKeysPerLaneChoices[2];
    switch (keys_per_lane) {
        case kWide: return fn(std::integral_constant<int, kWide>{});
        case kMid: return fn(std::integral_constant<int, kMid>{});
        case kNarrow: return fn(std::integral_constant<int, kNarrow>{});
        default: return 1;
    }
}

// The keys per lane a launch of this shape takes on a 16-SM GPU (Orin): what the plain entry
// points emulate.
int default_keys_per_lane(int B, int H, int K, int V) {
    if (K < 1 || V < 1) return edgegate::kKeysPerLaneChoices[0];
    return edgegate::choose_layout(B, H, K, V, 16).keys_per_lane;
}

template <typename T>
int gla_any(int keys_per_lane, const T* q, const T* k, const T* v, const T* g, int per_key,
            const float* h0, T* out, float* state, int B, int T_, int H, int K, int V,
            float scale) {
    return by_keys_per_lane(keys_per_lane, [&](auto e) {
        return gla<decltype(e)::value>(q, k, v, g, per_key, h0, out, state, B, T_, H, K, V, scale);
    });
}

template <typename T>
int delta_any(int keys_per_lane, const T* q, const T* k, const T* v, const T* g, const T* beta,
              const float* h0, T* out, float* state, int B, int T_, int H, int K, int V,
              float scale) {
    return by_keys_per_lane(keys_per_lane, [&](auto e) {
        return delta<decltype(e)::value>(q, k, v, g, beta, h0, out, state, B, T_, H, K, V, scale);
    });
}

}  // namespace

extern "C" {

int eg_cpu_gla_f32(const float* q, const float* k, const float* v, const float* g, int per_key,
                   const float* h0, float* out, float* state, int B, int T, int H, int K, int V,
                   float scale) {
    return gla_any(default_keys_per_lane(B, H, K, V), q, k, v, g, per_key, h0, out, state, B, T,
                   H, K, V, scale);
}

int eg_cpu_gla_f16(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* g,
                   int per_key, const float* h0, uint16_t* out, float* state, int B, int T, int H,
                   int K, int V, float scale) {
    return gla_any(default_keys_per_lane(B, H, K, V), q, k, v, g, per_key, h0, out, state, B, T,
                   H, K, V, scale);
}

int eg_cpu_delta_f32(const float* q, const float* k, const float* v, const float* g,
                     const float* beta, const float* h0, float* out, float* state, int B, int T,
                     int H, int K, int V, float scale) {
    return delta_any(default_keys_per_lane(B, H, K, V), q, k, v, g, beta, h0, out, state, B, T, H,
                     K, V, scale);
}

int eg_cpu_delta_f16(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* g,
                     const uint16_t* beta, const float* h0, uint16_t* out, float* state, int B,
                     int T, int H, int K, int V, float scale) {
    return delta_any(default_keys_per_lane(B, H, K, V), q, k, v, g, beta, h0, out, state, B, T, H,
                     K, V, scale);
}

// As above with the keys per lane (32, 8 or 2) pinned: every lane split the GPU can take.
int eg_cpu_gla_lanes_f32(int keys_per_lane, const float* q, const float* k, const float* v,
                         const float* g, int per_key, const float* h0, float* out, float* state,
                         int B, int T, int H, int K, int V, float scale) {
    return gla_any(keys_per_lane, q, k, v, g, per_key, h0, out, state, B, T, H, K, V, scale);
}

int eg_cpu_gla_lanes_f16(int keys_per_lane, const uint16_t* q, const uint16_t* k,
                         const uint16_t* v, const uint16_t* g, int per_key, const float* h0,
                         uint16_t* out, float* state, int B, int T, int H, int K, int V,
                         float scale) {
    return gla_any(keys_per_lane, q, k, v, g, per_key, h0, out, state, B, T, H, K, V, scale);
}

int eg_cpu_delta_lanes_f32(int keys_per_lane, const float* q, const float* k, const float* v,
                           const float* g, const float* beta, const float* h0, float* out,
                           float* state, int B, int T, int H, int K, int V, float scale) {
    return delta_any(keys_per_lane, q, k, v, g, beta, h0, out, state, B, T, H, K, V, scale);
}

int eg_cpu_delta_lanes_f16(int keys_per_lane, const uint16_t* q, const uint16_t* k,
                           const uint16_t* v, const uint16_t* g, const uint16_t* beta,
                           const float* h0, uint16_t* out, float* state, int B, int T, int H,
                           int K, int V, float scale) {
    return delta_any(keys_per_lane, q, k, v, g, beta, h0, out, state, B, T, H, K, V, scale);
}

int eg_cpu_scan_f32(const float* x, const float* g, const float* h0, float* out, float* state,
                    int B, int T, int H, int D) {
    return scan(x, g, h0, out, state, B, T, H, D);
}

int eg_cpu_scan_f16(const uint16_t* x, const uint16_t* g, const float* h0, uint16_t* out,
                    float* state, int B, int T, int H, int D) {
    return scan(x, g, h0, out, state, B, T, H, D);
}

// The launch layout (scan_step.h choose_layout) for a GPU of ``sm_count`` SMs, as 8 ints:
// keys_per_lane, lanes, threads, tile, slots, tiles, blocks, steps_per_chunk; 1 if blocks
// overflow an int.
int eg_scan_layout(int B, int H, int K, int V, int sm_count, int forced_keys_per_lane,
                   int* out8) {
    edgegate::ScanLayout const l =
        edgegate::choose_layout(B, H, K, V, sm_count, forced_keys_per_lane);
    if (l.blocks > 0x7fffffff) return 1;
    int const values[8] = {l.keys_per_lane, l.lanes, l.threads, l.tile, l.slots, l.tiles,
                           int(l.blocks), l.steps_per_chunk};
    for (int i = 0; i < 8; ++i) out8[i] = values[i];
    return 0;
}

uint16_t eg_float_to_half(float x) { return edgegate::float_to_half(x); }
float eg_half_to_float(uint16_t h) { return edgegate::half_to_float(h); }

}  // extern "C"
