// TensorRT IPluginV3 plugins for edgegate's gated scans: GatedLinearScan, GatedLinearAttention
// (per-key or per-head gates) and GatedDeltaRule, namespace "edgegate", version "1".
//
// The ONNX node of each op (domain "edgegate", attributes plugin_namespace / plugin_version)
// reaches its creator by op type; the only field is ``scale`` (attention ops). Inputs are fp32
// or fp16, the state is always fp32; the initial state (last input) may be absent. Outputs:
// the scan's output in the input dtype and the final state.
//
// One source compiles against the TensorRT 10.x and 11.x headers (the V3 interfaces are
// unchanged). Registration: extern "C" getCreators / setLoggerFinder (trtexec --dynamicPlugins,
// IPluginRegistry::loadLibrary); with EDGEGATE_TRT_STATIC_REGISTRATION, REGISTER_TENSORRT_PLUGIN
// instead (--staticPlugins). A build uses one of the two, never both.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <NvInferRuntime.h>

#include "edgegate/scan_step.h"
#include "scan_kernels.h"

namespace edgegate {
namespace {

using namespace nvinfer1;

char const* const kNamespace = "edgegate";
char const* const kVersion = "1";

enum class Op { kLinearScan, kLinearAttention, kDeltaRule };

struct OpInfo {
    char const* name;
    int32_t required_inputs;  // without the optional initial state
    bool has_scale;
};

constexpr OpInfo info(Op op) {
    return op == Op::kLinearScan        ? OpInfo{"GatedLinearScan", 2, false}
           : op == Op::kLinearAttention ? OpInfo{"GatedLinearAttention", 4, true}
                                        : OpInfo{"GatedDeltaRule", 5, true};
}

ILoggerFinder* gLoggerFinder = nullptr;

void log_error(char const* message) {
    if (gLoggerFinder != nullptr) {
        if (ILogger* logger = gLoggerFinder->findLogger()) {
            logger->log(ILogger::Severity::kERROR, message);
        }
    }
}

bool is_float_type(DataType type) { return type == DataType::kFLOAT || type == DataType::kHALF; }

template <Op OP>
class ScanPlugin final : public IPluginV3,
                         public IPluginV3OneCore,
                         public IPluginV3OneBuild,
                         public IPluginV3OneRuntime {
public:
    explicit ScanPlugin(float scale) : mScale(scale) {
        mFields.emplace_back("scale", &mScale, PluginFieldType::kFLOAT32, 1);
        mCollection.nbFields = info(OP).has_scale ? 1 : 0;
        mCollection.fields = mFields.data();
    }

    // IPluginV3
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    IPluginV3* clone() noexcept override {
        try {
            return new ScanPlugin<OP>(mScale);
        } catch (...) {
            return nullptr;
        }
    }

    // IPluginV3OneCore
    AsciiChar const* getPluginName() const noexcept override { return info(OP).name; }
    AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return 2; }

    int32_t configurePlugin(DynamicPluginTensorDesc const* /*in*/, int32_t nbInputs,
                            DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override {
        if (!valid_arity(nbInputs) || nbOutputs != 2) return -1;
        mInputs = nbInputs;
        return 0;
    }

    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override {
        if (nbOutputs != 2 || !valid_arity(nbInputs)) return -1;
        outputTypes[0] = inputTypes[0];
        outputTypes[1] = DataType::kFLOAT;
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
                            int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
                            IExprBuilder& /*exprBuilder*/) noexcept override {
        if (nbOutputs != 2 || !valid_arity(nbInputs)) return -1;
        if (OP == Op::kLinearScan) {
            DimsExprs const& x = inputs[0];  // [B, T, H, D]
            if (x.nbDims != 4) return -1;
            outputs[0] = x;
            outputs[1].nbDims = 3;  // [B, H, D]
            outputs[1].d[0] = x.d[0];
            outputs[1].d[1] = x.d[2];
            outputs[1].d[2] = x.d[3];
            return 0;
        }
        DimsExprs const& q = inputs[0];  // [B, T, H, K]
        DimsExprs const& v = inputs[2];  // [B, T, H, V]
        if (q.nbDims != 4 || v.nbDims != 4) return -1;
        outputs[0] = v;
        outputs[1].nbDims = 4;  // [B, H, K, V]
        outputs[1].d[0] = q.d[0];
        outputs[1].d[1] = q.d[2];
        outputs[1].d[2] = q.d[3];
        outputs[1].d[3] = v.d[3];
        return 0;
    }

    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t /*nbOutputs*/) noexcept override {
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR) return false;
        bool const initial_state = nbInputs > info(OP).required_inputs && pos == nbInputs - 1;
        bool const final_state = pos == nbInputs + 1;
        if (initial_state || final_state) return desc.type == DataType::kFLOAT;
        // every other input, and the output, share the first input's float type
        if (pos == 0) return is_float_type(desc.type);
        return desc.type == inOut[0].desc.type;
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/,
                          int32_t nbOutputs) noexcept override {
        if (!valid_arity(nbInputs) || nbOutputs != 2) return -1;
        mInputs = nbInputs;
        if (OP != Op::kLinearScan) {
            int64_t const K = in[0].dims.d[3], V = in[2].dims.d[3];
            if (K > kMaxKeyDim || V > kMaxValueDim) {
                log_error("edgegate scan plugin: key and value dims must be at most 128");
                return -1;
            }
        }
        return 0;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
                    void const* const* inputs, void* const* outputs, void* /*workspace*/,
                    cudaStream_t stream) noexcept override {
        int32_t const nbInputs = mInputs;
        bool const with_state = nbInputs > info(OP).required_inputs;
        auto const* h0 = with_state ? static_cast<float const*>(inputs[nbInputs - 1]) : nullptr;
        auto* state = static_cast<float*>(outputs[1]);
        ScanDtype const dtype =
            inputDesc[0].type == DataType::kHALF ? ScanDtype::kHalf : ScanDtype::kFloat;
        Dims const& d = inputDesc[0].dims;
        int const B = int(d.d[0]), T = int(d.d[1]), H = int(d.d[2]), K = int(d.d[3]);
        cudaError_t status = cudaSuccess;
        if (OP == Op::kLinearScan) {
            status = launch_gated_linear_scan(dtype, inputs[0], inputs[1], h0, outputs[0], state, B,
                                              T, H, K, stream);
        } else {
            int const V = int(inputDesc[2].dims.d[3]);
            if (OP == Op::kLinearAttention) {
                bool const per_key = inputDesc[3].dims.nbDims == 4;
                status = launch_gated_linear_attention(dtype, inputs[0], inputs[1], inputs[2],
                                                       inputs[3], per_key, h0, outputs[0], state, B,
                                                       T, H, K, V, mScale, stream);
            } else {
                status = launch_gated_delta_rule(dtype, inputs[0], inputs[1], inputs[2], inputs[3],
                                                 inputs[4], h0, outputs[0], state, B, T, H, K, V,
                                                 mScale, stream);
            }
        }
        if (status != cudaSuccess) {
            log_error(cudaGetErrorString(status));
            return -1;
        }
        return 0;
    }

    IPluginV3* attachToContext(IPluginResourceContext* /*context*/) noexcept override { return clone(); }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &mCollection; }

private:
    static bool valid_arity(int32_t nbInputs) {
        int32_t const required = info(OP).required_inputs;
        return nbInputs == required || nbInputs == required + 1;
    }

    float mScale;
    int32_t mInputs{info(OP).required_inputs + 1};  // set by configurePlugin / onShapeChange
    std::vector<PluginField> mFields;
    PluginFieldCollection mCollection{};
};

template <Op OP>
class ScanPluginCreator final : public IPluginCreatorV3One {
public:
    ScanPluginCreator() {
        if (info(OP).has_scale) mFields.emplace_back("scale", nullptr, PluginFieldType::kFLOAT32, 1);
        mCollection.nbFields = int32_t(mFields.size());
        mCollection.fields = mFields.data();
    }

    AsciiChar const* getPluginName() const noexcept override { return info(OP).name; }
    AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }
    PluginFieldCollection const* getFieldNames() noexcept override { return &mCollection; }

    IPluginV3* createPlugin(AsciiChar const* /*name*/, PluginFieldCollection const* fc,
                            TensorRTPhase /*phase*/) noexcept override {
        try {
            float scale = 1.f;
            for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
                PluginField const& field = fc->fields[i];
                if (std::strcmp(field.name, "scale") == 0 && field.data != nullptr &&
                    field.type == PluginFieldType::kFLOAT32 && field.length >= 1) {
                    scale = *static_cast<float const*>(field.data);
                }
            }
            return new ScanPlugin<OP>(scale);
        } catch (...) {
            return nullptr;
        }
    }

private:
    std::vector<PluginField> mFields;
    PluginFieldCollection mCollection{};
};

}  // namespace

using GatedLinearScanCreator = ScanPluginCreator<Op::kLinearScan>;
using GatedLinearAttentionCreator = ScanPluginCreator<Op::kLinearAttention>;
using GatedDeltaRuleCreator = ScanPluginCreator<Op::kDeltaRule>;

}  // namespace edgegate

#if defined(EDGEGATE_TRT_STATIC_REGISTRATION)
// REGISTER_TENSORRT_PLUGIN pastes its argument into an identifier: unqualified aliases.
using EdgegateGatedLinearScanCreator = edgegate::GatedLinearScanCreator;
using EdgegateGatedLinearAttentionCreator = edgegate::GatedLinearAttentionCreator;
using EdgegateGatedDeltaRuleCreator = edgegate::GatedDeltaRuleCreator;
REGISTER_TENSORRT_PLUGIN(EdgegateGatedLinearScanCreator);
REGISTER_TENSORRT_PLUGIN(EdgegateGatedLinearAttentionCreator);
REGISTER_TENSORRT_PLUGIN(EdgegateGatedDeltaRuleCreator);
#else
extern "C" {

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) { edgegate::gLoggerFinder = finder; }

nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static edgegate::GatedLinearScanCreator scan;
    static edgegate::GatedLinearAttentionCreator attention;
    static edgegate::GatedDeltaRuleCreator delta;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&scan, &attention, &delta};
    nbCreators = 3;
    return creators;
}

}  // extern "C"
#endif
