// TensorRT IPluginV3 plugins for edgegate's gated scans: GatedLinearScan, GatedLinearAttention
// (per-key or per-head gates) and GatedDeltaRule, namespace "edgegate", version "1".
//
// The ONNX node of each op (domain "edgegate", attributes plugin_namespace / plugin_version)
// reaches its creator by op type; the only field is ``scale`` (attention ops), K^-0.5 when absent
// as in the op's definition. Inputs are fp32 or fp16, the state is always fp32; the initial state
// (last input) may be absent. Outputs: the scan's output in the input dtype and the final state.
//
// Shapes are checked wherever TensorRT shows them (getOutputShapes, configurePlugin with the
// profile's bounds, onShapeChange); a refusal is one line through TensorRT's logger and a
// non-zero status, so a bad graph fails the engine build rather than a kernel.
//
// One source compiles against the TensorRT 10.x and 11.x headers (the V3 interfaces are
// unchanged). Registration: extern "C" getCreators / setLoggerFinder (trtexec --dynamicPlugins,
// IPluginRegistry::loadLibrary); with EDGEGATE_TRT_STATIC_REGISTRATION, REGISTER_TENSORRT_PLUGIN
// instead (--staticPlugins). A build uses one of the two, never both.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
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
// ``scale`` not given: resolved to K^-0.5 once K is known (the op's default).
float const kScaleUnset = std::numeric_limits<float>::quiet_NaN();

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

// One line to the logger of whoever called the plugin (the builder's or the runtime's); stderr
// when TensorRT handed the library no logger finder.
void log_error(std::string const& message) {
    std::string const line = "edgegate plugin: " + message;
    if (gLoggerFinder != nullptr) {
        if (ILogger* logger = gLoggerFinder->findLogger()) {
            logger->log(ILogger::Severity::kERROR, line.c_str());
            return;
        }
    }
    std::fprintf(stderr, "%s\n", line.c_str());
}

bool is_float_type(DataType type) { return type == DataType::kFLOAT || type == DataType::kHALF; }

std::string show(Dims const& d) {
    std::string text = "[";
    for (int32_t i = 0; i < d.nbDims && i < Dims::MAX_DIMS; ++i) {
        text += (i ? "," : "") + (d.d[i] < 0 ? std::string("?") : std::to_string(d.d[i]));
    }
    return text + "]";
}

// The constant dims of shape expressions, -1 where a dim is only known at run time.
Dims known_dims(DimsExprs const& e) {
    Dims d{};
    d.nbDims = e.nbDims;
    for (int32_t i = 0; i < e.nbDims && i < Dims::MAX_DIMS; ++i) {
        d.d[i] = e.d[i] != nullptr && e.d[i]->isConstant() ? e.d[i]->getConstantValue() : -1;
    }
    return d;
}

// Named dims of a layout ("BTHK"): the first tensor to use a letter fixes its size; unknown
// sizes (-1) match anything. Mirrors the op's own check (edgegate/ops/shapes.py).
class Layout {
public:
    explicit Layout(char const* op) : mOp(op) {}

    bool check(char const* name, Dims const& d, char const* layout) {
        if (!mError.empty()) return false;
        int32_t const rank = int32_t(std::strlen(layout));
        if (d.nbDims != rank) {
            mError = std::string(mOp) + ": " + name + " must be [" + spaced(layout) + "] (" +
                     std::to_string(rank) + " dims), got " + show(d);
            return false;
        }
        for (int32_t i = 0; i < rank; ++i) {
            int64_t& size = mSizes[letter_index(layout[i])];
            char const*& first = mFirst[letter_index(layout[i])];
            if (d.d[i] < 0) continue;
            if (size < 0) {
                size = d.d[i];
                first = name;
            } else if (size != d.d[i]) {
                mError = std::string(mOp) + ": " + name + " " + show(d) + " has " + layout[i] +
                         "=" + std::to_string(d.d[i]) + " where " + first + " has " +
                         std::to_string(size) + " (expected [" + spaced(layout) + "])";
                return false;
            }
        }
        return true;
    }

    int64_t size(char letter) const { return mSizes[letter_index(letter)]; }
    bool ok() const { return mError.empty(); }
    std::string const& error() const { return mError; }
    void fail(std::string message) {
        if (mError.empty()) mError = std::string(mOp) + ": " + message;
    }

private:
    static int letter_index(char c) { return c == 'B' ? 0 : c == 'T' ? 1 : c == 'H' ? 2 : c == 'K' ? 3 : 4; }
    static std::string spaced(char const* layout) {
        std::string text;
        for (char const* c = layout; *c; ++c) text += (c == layout ? "" : ",") + std::string(1, *c);
        return text;
    }

    char const* mOp;
    int64_t mSizes[5] = {-1, -1, -1, -1, -1};
    char const* mFirst[5] = {};
    std::string mError;
};

bool valid_arity(Op op, int32_t nbInputs) {
    int32_t const required = info(op).required_inputs;
    return nbInputs == required || nbInputs == required + 1;
}

// Per-key gates are [B,T,H,K]; per-head gates are [B,T,H] or [B,T,H,1]. Decided by the shape:
// a rank-4 gate whose last dim is 1 is per-head (the same memory as [B,T,H]).
bool per_key_gate(Dims const& g, int64_t K) { return g.nbDims == 4 && g.d[3] == K && K != 1; }

// The inputs' dims (-1 where unknown) against the op's layouts: "" when they fit, else why.
std::string shape_error(Op op, Dims const* in, int32_t nbInputs) {
    if (!valid_arity(op, nbInputs)) {
        return std::string(info(op).name) + ": takes " + std::to_string(info(op).required_inputs) +
               " inputs and an optional initial state, got " + std::to_string(nbInputs);
    }
    bool const with_state = nbInputs > info(op).required_inputs;
    Layout layout(info(op).name);
    if (op == Op::kLinearScan) {
        layout.check("x", in[0], "BTHK");
        layout.check("g", in[1], "BTHK");
        if (with_state) layout.check("h0", in[2], "BHK");
        return layout.error();
    }
    // after a refusal, later checks keep the first message
    layout.check("q", in[0], "BTHK");
    layout.check("k", in[1], "BTHK");
    layout.check("v", in[2], "BTHV");
    if (op == Op::kLinearAttention && layout.ok()) {
        Dims const& g = in[3];
        int64_t const last = g.nbDims == 4 ? g.d[3] : 0;
        if (g.nbDims == 4 && last >= 0 && last != 1 && layout.size('K') >= 0 &&
            last != layout.size('K')) {
            layout.fail("g " + show(g) + " must be per key [B,T,H,K] (K=" +
                        std::to_string(layout.size('K')) + ") or per head [B,T,H] / [B,T,H,1]");
        } else if (g.nbDims == 4) {
            Dims head = g;  // [B,T,H,1] or [B,T,H,K]: B, T, H as q's
            head.nbDims = 3;
            layout.check("g", head, "BTH");
        } else {
            layout.check("g", g, "BTH");
        }
    }
    if (op == Op::kDeltaRule) {
        layout.check("g", in[3], "BTH");
        layout.check("beta", in[4], "BTH");
    }
    if (with_state) layout.check("h0", in[nbInputs - 1], "BHKV");
    if (!layout.ok()) return layout.error();
    for (char dim : {'K', 'V'}) {
        int64_t const size = layout.size(dim), most = dim == 'K' ? kMaxKeyDim : kMaxValueDim;
        if (size == 0 || size > most) {
            return std::string(info(op).name) + ": " + dim + "=" + std::to_string(size) +
                   " is outside 1.." + std::to_string(most) + " (the kernels' largest " +
                   (dim == 'K' ? "key" : "value") + " dim)";
        }
    }
    return "";
}

// The largest key and value dims a profile allows (desc.max), checked at build time.
std::string bound_error(Op op, DynamicPluginTensorDesc const* in) {
    if (op == Op::kLinearScan) return "";
    int64_t const K = in[0].max.nbDims == 4 ? in[0].max.d[3] : -1;
    int64_t const V = in[2].max.nbDims == 4 ? in[2].max.d[3] : -1;
    if (K > kMaxKeyDim || V > kMaxValueDim) {
        return std::string(info(op).name) + ": the profile allows K=" + std::to_string(K) +
               ", V=" + std::to_string(V) + "; the kernels take K <= " +
               std::to_string(kMaxKeyDim) + " and V <= " + std::to_string(kMaxValueDim);
    }
    return "";
}

template <Op OP>
class ScanPlugin final : public IPluginV3,
                         public IPluginV3OneCore,
                         public IPluginV3OneBuild,
                         public IPluginV3OneRuntime {
public:
    explicit ScanPlugin(float scale) : mScale(scale) { expose_fields(); }

    // A copy owns its field collection: the implicit copy would point into the other's storage.
    ScanPlugin(ScanPlugin const& other)
        : IPluginV3(), IPluginV3OneCore(), IPluginV3OneBuild(), IPluginV3OneRuntime(),
          mScale(other.mScale), mInputs(other.mInputs) {
        expose_fields();
    }
    ScanPlugin& operator=(ScanPlugin const&) = delete;

    // IPluginV3
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    // Fully initialised, as IPluginV3 requires: the same scale and input count as this one.
    IPluginV3* clone() noexcept override {
        try {
            return new ScanPlugin<OP>(*this);
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

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                            DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override {
        try {
            if (!outputs_ok(nbOutputs)) return -1;
            std::vector<Dims> dims(size_t(nbInputs > 0 ? nbInputs : 0));
            for (int32_t i = 0; i < nbInputs; ++i) dims[size_t(i)] = in[i].desc.dims;
            std::string error = shape_error(OP, dims.data(), nbInputs);
            if (error.empty()) error = bound_error(OP, in);
            if (!error.empty()) {
                log_error(error);
                return -1;
            }
            mInputs = nbInputs;
            resolve_scale(in[0].desc.dims);
            return 0;
        } catch (...) {
            return -1;
        }
    }

    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override {
        if (!outputs_ok(nbOutputs)) return -1;
        if (!valid_arity(OP, nbInputs)) {
            log_error(shape_error(OP, nullptr, nbInputs));
            return -1;
        }
        outputTypes[0] = inputTypes[0];
        outputTypes[1] = DataType::kFLOAT;
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
                            int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
                            IExprBuilder& /*exprBuilder*/) noexcept override {
        try {
            if (!outputs_ok(nbOutputs)) return -1;
            std::vector<Dims> dims(size_t(nbInputs > 0 ? nbInputs : 0));
            for (int32_t i = 0; i < nbInputs; ++i) dims[size_t(i)] = known_dims(inputs[i]);
            std::string const error = shape_error(OP, dims.data(), nbInputs);
            if (!error.empty()) {
                log_error(error);
                return -1;
            }
        } catch (...) {
            return -1;
        }
        if (OP == Op::kLinearScan) {
            DimsExprs const& x = inputs[0];  // [B, T, H, D]
            outputs[0] = x;
            outputs[1].nbDims = 3;  // [B, H, D]
            outputs[1].d[0] = x.d[0];
            outputs[1].d[1] = x.d[2];
            outputs[1].d[2] = x.d[3];
            return 0;
        }
        DimsExprs const& q = inputs[0];  // [B, T, H, K]
        DimsExprs const& v = inputs[2];  // [B, T, H, V]
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
        try {
            if (!outputs_ok(nbOutputs)) return -1;
            std::vector<Dims> dims(size_t(nbInputs > 0 ? nbInputs : 0));
            for (int32_t i = 0; i < nbInputs; ++i) dims[size_t(i)] = in[i].dims;
            std::string const error = shape_error(OP, dims.data(), nbInputs);
            if (!error.empty()) {
                log_error(error);
                return -1;
            }
            mInputs = nbInputs;
            return 0;
        } catch (...) {
            return -1;
        }
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
            float const scale = std::isnan(mScale) ? 1.f / std::sqrt(float(K)) : mScale;
            if (OP == Op::kLinearAttention) {
                bool const per_key = per_key_gate(inputDesc[3].dims, K);
                status = launch_gated_linear_attention(dtype, inputs[0], inputs[1], inputs[2],
                                                       inputs[3], per_key, h0, outputs[0], state, B,
                                                       T, H, K, V, scale, stream);
            } else {
                status = launch_gated_delta_rule(dtype, inputs[0], inputs[1], inputs[2], inputs[3],
                                                 inputs[4], h0, outputs[0], state, B, T, H, K, V,
                                                 scale, stream);
            }
        }
        if (status != cudaSuccess) {
            log_error(std::string(info(OP).name) + ": " + cudaGetErrorString(status));
            return -1;
        }
        return 0;
    }

    IPluginV3* attachToContext(IPluginResourceContext* /*context*/) noexcept override { return clone(); }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &mCollection; }

private:
    void expose_fields() {
        mFields.clear();
        if (info(OP).has_scale) mFields.emplace_back("scale", &mScale, PluginFieldType::kFLOAT32, 1);
        mCollection.nbFields = int32_t(mFields.size());
        mCollection.fields = mFields.data();
    }

    // The op's default scale, K^-0.5, fixed as soon as K is (the engine serialises it).
    void resolve_scale(Dims const& q) {
        if (info(OP).has_scale && std::isnan(mScale) && q.nbDims == 4 && q.d[3] > 0) {
            mScale = 1.f / std::sqrt(float(q.d[3]));
        }
    }

    static bool outputs_ok(int32_t nbOutputs) {
        if (nbOutputs == 2) return true;
        log_error(std::string(info(OP).name) + ": has 2 outputs, TensorRT asked for " +
                  std::to_string(nbOutputs));
        return false;
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
    ScanPluginCreator(ScanPluginCreator const&) = delete;
    ScanPluginCreator& operator=(ScanPluginCreator const&) = delete;

    AsciiChar const* getPluginName() const noexcept override { return info(OP).name; }
    AsciiChar const* getPluginVersion() const noexcept override { return kVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kNamespace; }
    PluginFieldCollection const* getFieldNames() noexcept override { return &mCollection; }

    // ``scale`` absent means the op's default, K^-0.5, resolved when K is known.
    IPluginV3* createPlugin(AsciiChar const* /*name*/, PluginFieldCollection const* fc,
                            TensorRTPhase /*phase*/) noexcept override {
        try {
            float scale = kScaleUnset;
            for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
                PluginField const& field = fc->fields[i];
                if (field.name == nullptr || std::strcmp(field.name, "scale") != 0) continue;
                if (field.data == nullptr || field.type != PluginFieldType::kFLOAT32 ||
                    field.length < 1) {
                    log_error(std::string(info(OP).name) + ": field scale must be one float32");
                    return nullptr;
                }
                scale = *static_cast<float const*>(field.data);
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
