// Launchers of the gated-scan CUDA kernels (scan_kernels.cu), for the TensorRT plugins and for
// a stand-alone test build. Pointers are device pointers; inputs are contiguous [B, T, H, D].
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace edgegate {

enum class ScanDtype : int32_t { kFloat = 0, kHalf = 1 };

// Gated linear attention: q, k [B,T,H,K]; v [B,T,H,V]; g [B,T,H,K] (per_key) or [B,T,H];
// h0 [B,H,K,V] fp32 or null; out [B,T,H,V] (input dtype); state [B,H,K,V] fp32. K, V <= 128.
cudaError_t launch_gated_linear_attention(ScanDtype dtype, void const* q, void const* k,
                                          void const* v, void const* g, bool per_key,
                                          float const* h0, void* out, float* state, int B, int T,
                                          int H, int K, int V, float scale, cudaStream_t stream);

// Gated delta rule: as above, with g and beta [B,T,H].
cudaError_t launch_gated_delta_rule(ScanDtype dtype, void const* q, void const* k, void const* v,
                                    void const* g, void const* beta, float const* h0, void* out,
                                    float* state, int B, int T, int H, int K, int V, float scale,
                                    cudaStream_t stream);

// Gated linear scan: x, g [B,T,H,D]; h0 [B,H,D] fp32 or null; out [B,T,H,D]; state [B,H,D].
cudaError_t launch_gated_linear_scan(ScanDtype dtype, void const* x, void const* g,
                                     float const* h0, void* out, float* state, int B, int T,
                                     int H, int D, cudaStream_t stream);

}  // namespace edgegate
