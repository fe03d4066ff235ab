// Host-only stand-ins for the CUDA launchers (scan_kernels.cu) for the lifecycle test: the
// plugin library is linked with these instead of the kernels, so that a machine without a GPU
// can see what enqueue would launch (the initial state, the gate kind, the scale). Test only:
// never part of the plugin library that build.sh or CMake builds.
#include "scan_kernels.h"

extern "C" {
// The last launch's arguments, read by plugin_lifecycle.cpp through dlsym.
struct EdgegateTestLaunch {
    int calls;
    int op;  // 0 linear scan, 1 linear attention, 2 delta rule
    int per_key;
    int with_state;
    int B, T, H, K, V;
    float scale;
};
__attribute__((visibility("default"))) EdgegateTestLaunch edgegate_test_last_launch = {};
}

namespace edgegate {
namespace {
void record(int op, int per_key, float const* h0, int B, int T, int H, int K, int V, float scale) {
    EdgegateTestLaunch& last = edgegate_test_last_launch;
    last = EdgegateTestLaunch{last.calls + 1, op, per_key, h0 != nullptr, B, T, H, K, V, scale};
}
}  // namespace

cudaError_t launch_gated_linear_attention(ScanDtype, void const*, void const*, void const*,
                                          void const*, bool per_key, float const* h0, void*,
                                          float*, int B, int T, int H, int K, int V, float scale,
                                          cudaStream_t) {
    record(1, per_key, h0, B, T, H, K, V, scale);
    return cudaSuccess;
}

cudaError_t launch_gated_delta_rule(ScanDtype, void const*, void const*, void const*, void const*,
                                    void const*, float const* h0, void*, float*, int B, int T,
                                    int H, int K, int V, float scale, cudaStream_t) {
    record(2, 0, h0, B, T, H, K, V, scale);
    return cudaSuccess;
}

cudaError_t launch_gated_linear_scan(ScanDtype, void const*, void const*, float const* h0, void*,
                                     float*, int B, int T, int H, int D, cudaStream_t) {
    record(0, 0, h0, B, T, H, D, 0, 0.f);
    return cudaSuccess;
}
}  // namespace edgegate
