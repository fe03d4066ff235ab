// The plugin objects' life as TensorRT leads it, on a machine without a GPU or TensorRT's
// runtime: the library is opened as IPluginRegistry::loadLibrary opens it (dlopen,
// setLoggerFinder, getCreators), then create -> clone -> serialise fields -> recreate, and the
// build-time shape checks. Usage: plugin_lifecycle LIBRARY. Prints one line per failed check
// and exits 1 if any failed.
//
// When the library was linked with recording_launchers.cpp (no kernels), enqueue's launches are
// read back, which shows what a clone or a recreated plugin would compute with.
#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include <NvInferRuntime.h>

using namespace nvinfer1;

namespace {

int gChecks = 0, gFailures = 0;

void check(bool ok, std::string const& what) {
    ++gChecks;
    if (!ok) {
        ++gFailures;
        std::printf("FAIL: %s\n", what.c_str());
    }
}

// What the plugin reported through TensorRT's logger.
class Logger final : public ILogger {
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override {
        if (severity <= Severity::kERROR) errors.emplace_back(msg);
    }
    std::string last() const { return errors.empty() ? std::string() : errors.back(); }
    std::vector<std::string> errors;
};

class Finder final : public ILoggerFinder {
public:
    explicit Finder(ILogger* logger) : mLogger(logger) {}
    ILogger* findLogger() override { return mLogger; }

private:
    ILogger* mLogger;
};

struct Launch {
    int calls, op, per_key, with_state, B, T, H, K, V;
    float scale;
};

Dims dims(std::initializer_list<int64_t> values) {
    Dims d{};
    d.nbDims = int32_t(values.size());
    int32_t i = 0;
    for (int64_t v : values) d.d[i++] = v;
    return d;
}

// A build-time tensor: -1 dims are dynamic, bounded by the profile's max (``high``).
DynamicPluginTensorDesc tensor(Dims const& d, Dims const* high = nullptr) {
    DynamicPluginTensorDesc t{};
    t.desc.dims = d;
    t.desc.type = DataType::kFLOAT;
    t.desc.format = TensorFormat::kLINEAR;
    t.min = d;
    t.opt = d;
    t.max = high ? *high : d;
    for (int32_t i = 0; i < d.nbDims; ++i) {
        if (d.d[i] < 0) t.min.d[i] = t.opt.d[i] = 1;
    }
    return t;
}

IPluginV3OneCore* core(IPluginV3* p) {
    return static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE));
}
IPluginV3OneBuild* build(IPluginV3* p) {
    return static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
}
IPluginV3OneRuntime* runtime(IPluginV3* p) {
    return static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}

// The scale field of a collection, NaN if absent.
float scale_of(PluginFieldCollection const* fc) {
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
        if (std::strcmp(fc->fields[i].name, "scale") == 0 && fc->fields[i].data != nullptr) {
            return *static_cast<float const*>(fc->fields[i].data);
        }
    }
    return std::nanf("");
}

struct Library {
    IPluginCreatorV3One* creator(char const* name) const {
        for (IPluginCreatorV3One* c : creators) {
            if (std::strcmp(c->getPluginName(), name) == 0) return c;
        }
        return nullptr;
    }
    std::vector<IPluginCreatorV3One*> creators;
    Launch const* launch = nullptr;  // only with recording_launchers.cpp
};

// q, k [B,T,H,K], v [B,T,H,V], gates, optional h0 [B,H,K,V].
std::vector<DynamicPluginTensorDesc> attention(int64_t B, int64_t T, int64_t H, int64_t K,
                                               int64_t V, std::vector<Dims> const& gates,
                                               bool with_state) {
    std::vector<DynamicPluginTensorDesc> in = {tensor(dims({B, T, H, K})), tensor(dims({B, T, H, K})),
                                               tensor(dims({B, T, H, V}))};
    for (Dims const& g : gates) in.push_back(tensor(g));
    if (with_state) in.push_back(tensor(dims({B, H, K, V})));
    return in;
}

int32_t configure(IPluginV3* p, std::vector<DynamicPluginTensorDesc> const& in) {
    std::vector<DynamicPluginTensorDesc> out(2);
    return build(p)->configurePlugin(in.data(), int32_t(in.size()), out.data(), 2);
}

void test_creators(Library const& lib) {
    check(lib.creators.size() == 3, "getCreators returns the three creators");
    for (char const* name : {"GatedLinearScan", "GatedLinearAttention", "GatedDeltaRule"}) {
        IPluginCreatorV3One* c = lib.creator(name);
        check(c != nullptr, std::string("a creator named ") + name);
        if (c == nullptr) continue;
        check(std::strcmp(c->getPluginNamespace(), "edgegate") == 0, std::string(name) + " namespace");
        check(std::strcmp(c->getPluginVersion(), "1") == 0, std::string(name) + " version");
        PluginFieldCollection const* names = c->getFieldNames();
        bool const scaled = std::strcmp(name, "GatedLinearScan") != 0;
        check(names != nullptr && names->nbFields == (scaled ? 1 : 0),
              std::string(name) + " lists its fields (scale for the attention ops)");
    }
}

void test_clone_and_serialise(Library const& lib, Logger& logger) {
    for (char const* name : {"GatedLinearAttention", "GatedDeltaRule"}) {
        std::string const op = name;
        IPluginCreatorV3One* creator = lib.creator(name);
        if (creator == nullptr) continue;
        float const scale = 0.375f;
        PluginField field("scale", &scale, PluginFieldType::kFLOAT32, 1);
        PluginFieldCollection fc{1, &field};
        IPluginV3* original = creator->createPlugin("node", &fc, TensorRTPhase::kBUILD);
        check(original != nullptr, op + ": createPlugin with a scale field");
        if (original == nullptr) continue;
        check(std::strcmp(core(original)->getPluginName(), name) == 0, op + ": core capability");
        check(build(original) != nullptr && runtime(original) != nullptr, op + ": capabilities");

        // configured without the initial state: a clone must keep that (4 or 5 inputs, not 5 or 6)
        bool const gla = op == "GatedLinearAttention";
        std::vector<Dims> gates = gla ? std::vector<Dims>{dims({2, 16, 3, 32})}
                                      : std::vector<Dims>{dims({2, 16, 3}), dims({2, 16, 3})};
        check(configure(original, attention(2, 16, 3, 32, 48, gates, false)) == 0,
              op + ": configurePlugin accepts a valid graph without initial state: " + logger.last());

        IPluginV3* copy = original->clone();
        check(copy != nullptr, op + ": clone");
        if (copy == nullptr) continue;
        PluginFieldCollection const* a = runtime(original)->getFieldsToSerialize();
        PluginFieldCollection const* b = runtime(copy)->getFieldsToSerialize();
        check(a != b && a->fields != b->fields && a->fields[0].data != b->fields[0].data,
              op + ": the clone owns its fields (no aliasing of the original's storage)");
        delete original;  // the clone must outlive it with valid fields
        check(scale_of(b) == scale, op + ": the clone serialises the same scale");

        IPluginV3* again = creator->createPlugin("node", b, TensorRTPhase::kRUNTIME);
        check(again != nullptr, op + ": recreated from the serialised fields");
        if (again == nullptr) {
            delete copy;
            continue;
        }
        check(scale_of(runtime(again)->getFieldsToSerialize()) == scale,
              op + ": the recreated plugin has the same scale");

        if (lib.launch != nullptr) {
            // enqueue on the clone: 4 (5) inputs, no initial state, as configured
            std::vector<PluginTensorDesc> in(gla ? 4 : 5), out(2);
            for (size_t i = 0; i < in.size(); ++i) in[i].type = DataType::kFLOAT;
            in[0].dims = in[1].dims = dims({2, 16, 3, 32});
            in[2].dims = dims({2, 16, 3, 48});
            for (size_t i = 3; i < in.size(); ++i) in[i].dims = gla ? dims({2, 16, 3, 32}) : dims({2, 16, 3});
            std::vector<void const*> inputs(in.size() + 1, nullptr);
            inputs[in.size()] = reinterpret_cast<void const*>(0x1);  // past the last input
            void* outputs[2] = {nullptr, nullptr};
            IPluginV3* attached = runtime(copy)->attachToContext(nullptr);
            check(attached != nullptr, op + ": attachToContext clones");
            if (attached != nullptr) {
                int32_t const status = runtime(attached)->enqueue(in.data(), out.data(), inputs.data(),
                                                                  outputs, nullptr, nullptr);
                check(status == 0, op + ": enqueue on the attached clone");
                check(lib.launch->with_state == 0,
                      op + ": the clone remembers there is no initial state");
                check(lib.launch->scale == scale, op + ": the clone launches with the scale");
                check(!gla || lib.launch->per_key == 1, op + ": [B,T,H,K] gates are per key");
                delete attached;
            }
        }
        delete again;
        delete copy;
    }
}

void test_default_scale(Library const& lib, Logger& logger) {
    IPluginCreatorV3One* creator = lib.creator("GatedDeltaRule");
    if (creator == nullptr) return;
    PluginFieldCollection empty{0, nullptr};
    IPluginV3* p = creator->createPlugin("node", &empty, TensorRTPhase::kBUILD);
    check(p != nullptr, "GatedDeltaRule: createPlugin without fields");
    if (p == nullptr) return;
    std::vector<Dims> gates = {dims({1, 8, 2}), dims({1, 8, 2})};
    check(configure(p, attention(1, 8, 2, 64, 64, gates, true)) == 0,
          "GatedDeltaRule: configurePlugin with an initial state: " + logger.last());
    check(scale_of(runtime(p)->getFieldsToSerialize()) == 0.125f,
          "GatedDeltaRule: scale defaults to K^-0.5 (0.125 for K=64), not 1");
    delete p;

    // K unknown until run time: the default follows the K of each launch
    IPluginV3* q = creator->createPlugin("node", nullptr, TensorRTPhase::kRUNTIME);
    if (q != nullptr && lib.launch != nullptr) {
        std::vector<PluginTensorDesc> in(6), out(2);
        in[0].dims = in[1].dims = dims({1, 4, 2, 16});
        in[2].dims = dims({1, 4, 2, 8});
        in[3].dims = in[4].dims = dims({1, 4, 2});
        in[5].dims = dims({1, 2, 16, 8});
        std::vector<void const*> inputs(6, nullptr);
        void* outputs[2] = {nullptr, nullptr};
        check(runtime(q)->onShapeChange(in.data(), 6, out.data(), 2) == 0,
              "GatedDeltaRule: onShapeChange accepts a valid shape: " + logger.last());
        check(runtime(q)->enqueue(in.data(), out.data(), inputs.data(), outputs, nullptr, nullptr) == 0,
              "GatedDeltaRule: enqueue");
        check(lib.launch->scale == 0.25f, "GatedDeltaRule: unset scale launches with K^-0.5 = 0.25");
    }
    delete q;
}

// One configurePlugin call that must fail with ``expected`` in the logged message.
void refuses(Library const& lib, Logger& logger, char const* op,
             std::vector<DynamicPluginTensorDesc> const& in, char const* expected, std::string const& what) {
    IPluginV3* p = lib.creator(op)->createPlugin("node", nullptr, TensorRTPhase::kBUILD);
    size_t const before = logger.errors.size();
    int32_t const status = configure(p, in);
    std::string const message = logger.errors.size() > before ? logger.last() : "(nothing logged)";
    check(status != 0 && message.find(expected) != std::string::npos,
          std::string(op) + ": configurePlugin refuses " + what + " (status " + std::to_string(status) +
              ", logged: " + message + ")");
    delete p;
}

void test_shape_checks(Library const& lib, Logger& logger) {
    if (lib.creator("GatedLinearAttention") == nullptr || lib.creator("GatedDeltaRule") == nullptr ||
        lib.creator("GatedLinearScan") == nullptr) {
        return;
    }
    // ranks and matching dims
    auto bad_q = attention(2, 16, 3, 32, 32, {dims({2, 16, 3})}, false);
    bad_q[0] = tensor(dims({2, 16, 96}));
    refuses(lib, logger, "GatedLinearAttention", bad_q, "q must be [B,T,H,K]", "a rank-3 q");
    auto bad_k = attention(2, 16, 3, 32, 32, {dims({2, 16, 3})}, false);
    bad_k[1] = tensor(dims({2, 16, 4, 32}));
    refuses(lib, logger, "GatedLinearAttention", bad_k, "k [2,16,4,32] has H=4 where q has 3",
            "k with other heads than q");
    refuses(lib, logger, "GatedLinearAttention",
            attention(2, 16, 3, 32, 32, {dims({2, 16, 3, 5})}, false), "must be per key",
            "a gate that is neither per key nor per head");
    refuses(lib, logger, "GatedDeltaRule",
            attention(2, 16, 3, 32, 32, {dims({2, 16, 3, 32}), dims({2, 16, 3})}, false),
            "g must be [B,T,H]", "a per-key gate (the delta rule's gate is per head)");
    auto bad_state = attention(2, 16, 3, 32, 32, {dims({2, 16, 3}), dims({2, 16, 3})}, true);
    bad_state[5] = tensor(dims({2, 3, 32, 16}));
    refuses(lib, logger, "GatedDeltaRule", bad_state, "h0 [2,3,32,16] has V=16 where v has 32",
            "an initial state of another value dim");
    auto too_many = attention(2, 16, 3, 32, 32, {dims({2, 16, 3}), dims({2, 16, 3})}, true);
    too_many.push_back(too_many.back());
    refuses(lib, logger, "GatedDeltaRule", too_many, "takes 5 inputs", "seven inputs");
    std::vector<DynamicPluginTensorDesc> scan = {tensor(dims({2, 16, 3, 8})), tensor(dims({2, 16, 8}))};
    refuses(lib, logger, "GatedLinearScan", scan, "g must be [B,T,H,K]", "a rank-3 gate");

    // K <= 128 at build time, from the profile's max when K is dynamic
    refuses(lib, logger, "GatedLinearAttention",
            attention(1, 8, 2, 256, 64, {dims({1, 8, 2})}, false), "K=256", "a static K of 256");
    Dims const high = dims({8, 64, 2, 256});
    auto dynamic_k = attention(-1, -1, 2, -1, 64, {dims({-1, -1, 2})}, false);
    dynamic_k[0] = tensor(dims({-1, -1, 2, -1}), &high);
    dynamic_k[1] = tensor(dims({-1, -1, 2, -1}), &high);
    refuses(lib, logger, "GatedLinearAttention", dynamic_k, "the profile allows K=256",
            "a dynamic K whose profile reaches 256");
    Dims const fits = dims({8, 64, 2, 128});
    dynamic_k[0] = tensor(dims({-1, -1, 2, -1}), &fits);
    dynamic_k[1] = tensor(dims({-1, -1, 2, -1}), &fits);
    IPluginV3* ok = lib.creator("GatedLinearAttention")->createPlugin("node", nullptr, TensorRTPhase::kBUILD);
    check(configure(ok, dynamic_k) == 0,
          "GatedLinearAttention: a dynamic K up to 128 configures: " + logger.last());

    // per-head gates as [B,T,H,1]: accepted, and launched as per head
    IPluginV3* head = lib.creator("GatedLinearAttention")->createPlugin("node", nullptr, TensorRTPhase::kBUILD);
    check(configure(head, attention(2, 16, 3, 32, 32, {dims({2, 16, 3, 1})}, false)) == 0,
          "GatedLinearAttention: a [B,T,H,1] gate configures: " + logger.last());
    if (lib.launch != nullptr) {
        std::vector<PluginTensorDesc> in(4), out(2);
        in[0].dims = in[1].dims = in[2].dims = dims({2, 16, 3, 32});
        in[3].dims = dims({2, 16, 3, 1});
        std::vector<void const*> inputs(4, nullptr);
        void* outputs[2] = {nullptr, nullptr};
        check(runtime(head)->onShapeChange(in.data(), 4, out.data(), 2) == 0, "onShapeChange [B,T,H,1]");
        runtime(head)->enqueue(in.data(), out.data(), inputs.data(), outputs, nullptr, nullptr);
        check(lib.launch->per_key == 0, "GatedLinearAttention: a [B,T,H,1] gate launches per head");
    }

    // at run time: a K over 128 is refused again
    std::vector<PluginTensorDesc> in(4), out(2);
    in[0].dims = in[1].dims = dims({1, 4, 2, 200});
    in[2].dims = dims({1, 4, 2, 16});
    in[3].dims = dims({1, 4, 2});
    check(runtime(head)->onShapeChange(in.data(), 4, out.data(), 2) != 0 &&
              logger.last().find("K=200") != std::string::npos,
          "onShapeChange refuses K=200: " + logger.last());
    delete head;
    delete ok;

    // getOutputShapes: ranks are checked before any dim is read
    IPluginV3* p = lib.creator("GatedDeltaRule")->createPlugin("node", nullptr, TensorRTPhase::kBUILD);
    std::vector<DimsExprs> exprs(5);
    for (DimsExprs& e : exprs) {
        e.nbDims = 4;
        for (auto& d : e.d) d = nullptr;  // dims unknown: only ranks are compared
    }
    exprs[3].nbDims = exprs[4].nbDims = 3;
    DimsExprs outputs[2];
    // The plugin copies its inputs' expressions and never builds new ones; TensorRT's builder
    // cannot be made without its library (11.x's destructor lives there), so: opaque storage.
    alignas(IExprBuilder) static unsigned char storage[sizeof(IExprBuilder)] = {};
    IExprBuilder& unused_builder = *reinterpret_cast<IExprBuilder*>(storage);
    size_t const before = logger.errors.size();
    exprs[2].nbDims = 2;  // v [B,T]
    check(build(p)->getOutputShapes(exprs.data(), 5, nullptr, 0, outputs, 2,
                                    unused_builder) != 0 &&
              logger.errors.size() > before && logger.last().find("v must be") != std::string::npos,
          "getOutputShapes refuses a rank-2 v: " + logger.last());
    exprs[2].nbDims = 4;
    check(build(p)->getOutputShapes(exprs.data(), 5, nullptr, 0, outputs, 2,
                                    unused_builder) == 0 &&
              outputs[1].nbDims == 4 && outputs[0].nbDims == 4,
          "getOutputShapes gives [B,T,H,V] and [B,H,K,V] for valid ranks: " + logger.last());
    delete p;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::printf("usage: %s LIBRARY\n", argv[0]);
        return 2;
    }
    void* handle = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
        std::printf("FAIL: dlopen: %s\n", dlerror());
        return 1;
    }
    using SetFinder = void (*)(ILoggerFinder*);
    using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
    auto set_finder = reinterpret_cast<SetFinder>(dlsym(handle, "setLoggerFinder"));
    auto get_creators = reinterpret_cast<GetCreators>(dlsym(handle, "getCreators"));
    if (set_finder == nullptr || get_creators == nullptr) {
        std::printf("FAIL: the library exports no setLoggerFinder / getCreators\n");
        return 1;
    }
    Logger logger;
    Finder finder(&logger);
    set_finder(&finder);
    Library lib;
    lib.launch = static_cast<Launch const*>(dlsym(handle, "edgegate_test_last_launch"));
    int32_t count = 0;
    IPluginCreatorInterface* const* creators = get_creators(count);
    for (int32_t i = 0; i < count; ++i) {
        InterfaceInfo const kind = creators[i]->getInterfaceInfo();
        check(std::strcmp(kind.kind, "PLUGIN CREATOR_V3ONE") == 0, "creator kind PLUGIN CREATOR_V3ONE");
        lib.creators.push_back(static_cast<IPluginCreatorV3One*>(creators[i]));
    }
    test_creators(lib);
    test_clone_and_serialise(lib, logger);
    test_default_scale(lib, logger);
    test_shape_checks(lib, logger);
    std::printf("%s: %d checks, %d failed (TensorRT headers %d.%d, launches %s)\n",
                gFailures ? "FAIL" : "PASS", gChecks, gFailures, NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR,
                lib.launch ? "recorded" : "not recorded");
    return gFailures ? 1 : 0;
}
