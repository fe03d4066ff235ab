// CUDA kernels of the gated scans. Each thread owns one column of one head's state and keeps
// it in registers for the whole sequence (K <= 128); blocks run batch x heads x value tiles in
// parallel; each time step's q, k and g are staged once per block in shared memory. The step
// arithmetic itself is scan_step.h, which the CPU build (and so the test suite) runs too.
#include "scan_kernels.h"

#include "edgegate/scan_step.h"

namespace edgegate {
namespace {

constexpr int kValueTile = 32;  // value columns (threads) per block: one warp
constexpr int kScanThreads = 128;

template <int KMAX>
__device__ __forceinline__ void load_column(float (&s)[KMAX], float const* h0, int b, int h, int j,
                                            int H, int K, int V) {
#pragma unroll
    for (int i = 0; i < KMAX; ++i) s[i] = (h0 != nullptr && i < K) ? h0[bhkv(b, h, i, j, H, K, V)] : 0.f;
}

template <int KMAX>
__device__ __forceinline__ void save_column(float const (&s)[KMAX], float* state, int b, int h, int j,
                                            int H, int K, int V) {
#pragma unroll
    for (int i = 0; i < KMAX; ++i)
        if (i < K) state[bhkv(b, h, i, j, H, K, V)] = s[i];
}

template <typename T, int KMAX>
__global__ void gated_linear_attention_kernel(T const* q, T const* k, T const* v, T const* g,
                                              bool per_key, float const* h0, T* out, float* state,
                                              int steps, int H, int K, int V, float scale) {
    __shared__ float qs[KMAX], ks[KMAX], gs[KMAX];
    int const b = blockIdx.x / H, h = blockIdx.x % H;
    int const j = blockIdx.y * blockDim.x + threadIdx.x;
    bool const active = j < V;
    float s[KMAX];
    load_column<KMAX>(s, active ? h0 : nullptr, b, h, j, H, K, V);
    for (int t = 0; t < steps; ++t) {
        for (int i = threadIdx.x; i < K; i += blockDim.x) {
            int64_t const at = bthd(b, t, h, i, steps, H, K);
            qs[i] = load(q, at);
            ks[i] = load(k, at);
            if (per_key) gs[i] = load(g, at);
        }
        __syncthreads();
        if (active) {
            float const g_scalar = per_key ? 0.f : load(g, (int64_t(b) * steps + t) * H + h);
            int64_t const at = bthd(b, t, h, j, steps, H, V);
            float const o = gla_column_step<KMAX>(s, qs, ks, per_key ? gs : nullptr, g_scalar,
                                                  load(v, at), scale, K);
            store(out, at, o);
        }
        __syncthreads();
    }
    if (active) save_column<KMAX>(s, state, b, h, j, H, K, V);
}

template <typename T, int KMAX>
__global__ void gated_delta_rule_kernel(T const* q, T const* k, T const* v, T const* g,
                                        T const* beta, float const* h0, T* out, float* state,
                                        int steps, int H, int K, int V, float scale) {
    __shared__ float qs[KMAX], ks[KMAX];
    int const b = blockIdx.x / H, h = blockIdx.x % H;
    int const j = blockIdx.y * blockDim.x + threadIdx.x;
    bool const active = j < V;
    float s[KMAX];
    load_column<KMAX>(s, active ? h0 : nullptr, b, h, j, H, K, V);
    for (int t = 0; t < steps; ++t) {
        for (int i = threadIdx.x; i < K; i += blockDim.x) {
            int64_t const at = bthd(b, t, h, i, steps, H, K);
            qs[i] = load(q, at);
            ks[i] = load(k, at);
        }
        __syncthreads();
        if (active) {
            int64_t const head = (int64_t(b) * steps + t) * H + h;
            int64_t const at = bthd(b, t, h, j, steps, H, V);
            float const o = delta_column_step<KMAX>(s, qs, ks, load(g, head), load(beta, head),
                                                    load(v, at), scale, K);
            store(out, at, o);
        }
        __syncthreads();
    }
    if (active) save_column<KMAX>(s, state, b, h, j, H, K, V);
}

template <typename T>
__global__ void gated_linear_scan_kernel(T const* x, T const* g, float const* h0, T* out,
                                         float* state, int B, int steps, int H, int D) {
    int64_t const channel = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (channel >= int64_t(B) * H * D) return;
    int const d = int(channel % D);
    int const h = int((channel / D) % H);
    int const b = int(channel / (int64_t(D) * H));
    float value = h0 != nullptr ? h0[channel] : 0.f;
    for (int t = 0; t < steps; ++t) {
        int64_t const at = bthd(b, t, h, d, steps, H, D);
        value = scan_step(value, load(g, at), load(x, at));
        store(out, at, value);
    }
    state[channel] = value;
}

// Launch ``launch<KMAX>`` with the smallest register tile that holds K.
template <typename F>
cudaError_t by_key_dim(int K, F&& launch) {
    if (K <= 32) return launch(std::integral_constant<int, 32>{});
    if (K <= 64) return launch(std::integral_constant<int, 64>{});
    if (K <= kMaxKeyDim) return launch(std::integral_constant<int, kMaxKeyDim>{});
    return cudaErrorInvalidValue;
}

bool valid_attention(int B, int T, int H, int K, int V) {
    return B >= 0 && T >= 0 && H >= 1 && K >= 1 && K <= kMaxKeyDim && V >= 1 && V <= kMaxValueDim;
}

}  // namespace

template <typename T>
static cudaError_t gla_typed(void const* q, void const* k, void const* v, void const* g,
                             bool per_key, float const* h0, void* out, float* state, int B, int T_,
                             int H, int K, int V, float scale, cudaStream_t stream) {
    dim3 const grid(B * H, (V + kValueTile - 1) / kValueTile);
    return by_key_dim(K, [&](auto kmax) {
        gated_linear_attention_kernel<T, decltype(kmax)::value><<<grid, kValueTile, 0, stream>>>(
            static_cast<T const*>(q), static_cast<T const*>(k), static_cast<T const*>(v),
            static_cast<T const*>(g), per_key, h0, static_cast<T*>(out), state, T_, H, K, V, scale);
        return cudaGetLastError();
    });
}

template <typename T>
static cudaError_t delta_typed(void const* q, void const* k, void const* v, void const* g,
                               void const* beta, float const* h0, void* out, float* state, int B,
                               int T_, int H, int K, int V, float scale, cudaStream_t stream) {
    dim3 const grid(B * H, (V + kValueTile - 1) / kValueTile);
    return by_key_dim(K, [&](auto kmax) {
        gated_delta_rule_kernel<T, decltype(kmax)::value><<<grid, kValueTile, 0, stream>>>(
            static_cast<T const*>(q), static_cast<T const*>(k), static_cast<T const*>(v),
            static_cast<T const*>(g), static_cast<T const*>(beta), h0, static_cast<T*>(out), state,
            T_, H, K, V, scale);
        return cudaGetLastError();
    });
}

cudaError_t launch_gated_linear_attention(ScanDtype dtype, void const* q, void const* k,
                                          void const* v, void const* g, bool per_key,
                                          float const* h0, void* out, float* state, int B, int T,
                                          int H, int K, int V, float scale, cudaStream_t stream) {
    if (!valid_attention(B, T, H, K, V)) return cudaErrorInvalidValue;
    if (B == 0) return cudaSuccess;
    if (dtype == ScanDtype::kHalf)
        return gla_typed<half_bits>(q, k, v, g, per_key, h0, out, state, B, T, H, K, V, scale, stream);
    return gla_typed<float>(q, k, v, g, per_key, h0, out, state, B, T, H, K, V, scale, stream);
}

cudaError_t launch_gated_delta_rule(ScanDtype dtype, void const* q, void const* k, void const* v,
                                    void const* g, void const* beta, float const* h0, void* out,
                                    float* state, int B, int T, int H, int K, int V, float scale,
                                    cudaStream_t stream) {
    if (!valid_attention(B, T, H, K, V)) return cudaErrorInvalidValue;
    if (B == 0) return cudaSuccess;
    if (dtype == ScanDtype::kHalf)
        return delta_typed<half_bits>(q, k, v, g, beta, h0, out, state, B, T, H, K, V, scale, stream);
    return delta_typed<float>(q, k, v, g, beta, h0, out, state, B, T, H, K, V, scale, stream);
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

// C entry points for stand-alone GPU tests (ctypes over device pointers; stream 0 = default).
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

}  // extern "C"
