// Backend loading and build/system information (for `mathneuro doctor`).
#include "common.h"
#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"
#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <vector>
#ifndef _WIN32
#include <dlfcn.h>
#endif

#ifndef MATHNEURO_BUILD_KIND
#define MATHNEURO_BUILD_KIND "unknown"
#endif

static std::atomic<bool> g_ready{false};
static std::mutex g_init_mutex;
static std::atomic<int> g_log_level{GGML_LOG_LEVEL_ERROR};

bool BackendReady() { return g_ready.load(); }

static thread_local std::string * t_capture = nullptr;
static thread_local bool t_capture_cont = false;

// llama.cpp logs to stderr by default; keep it quiet unless asked (MATHNEURO_LLAMA_LOG=1).
static void quiet_log(enum ggml_log_level level, const char * text, void *) {
    if (t_capture) {
        // warnings and errors (and their continuation lines) of this thread, for LlamaLogCapture
        if (level == GGML_LOG_LEVEL_CONT ? t_capture_cont : level >= GGML_LOG_LEVEL_WARN) {
            t_capture->append(text);
            if (t_capture->size() > 16384) t_capture->erase(0, t_capture->size() - 8192);
            t_capture_cont = true;
        } else if (level != GGML_LOG_LEVEL_CONT) {
            t_capture_cont = false;
        }
    }
    if (level == GGML_LOG_LEVEL_CONT) return;
    if ((int) level >= g_log_level.load()) fputs(text, stderr);
}

LlamaLogCapture::LlamaLogCapture() { t_capture = &text_; t_capture_cont = false; }
LlamaLogCapture::~LlamaLogCapture() { if (t_capture == &text_) t_capture = nullptr; }

// The last error line llama.cpp logged ("llama_model_load: error loading model: <why>" -> "<why>"),
// else the last warning; the generic "failed to load model" lines are skipped.
std::string LlamaLogCapture::reason() const {
    std::string best;
    size_t pos = 0;
    while (pos < text_.size()) {
        size_t end = text_.find('\n', pos);
        if (end == std::string::npos) end = text_.size();
        std::string line = text_.substr(pos, end - pos);
        pos = end + 1;
        if (line.empty() || line.find("failed to load model") != std::string::npos) continue;
        const std::string marker = "error loading model: ";
        size_t m = line.find(marker);
        if (m != std::string::npos) { best = line.substr(m + marker.size()); continue; }
        if (best.empty() || line.find("error") != std::string::npos) best = line;
    }
    std::string out;   // runs of spaces (llama.cpp pads its shape columns) become one
    for (char c : best) if (!(c == ' ' && !out.empty() && out.back() == ' ') && c != '\r') out += c;
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
}

// ---- CPU variants of the prebuilt (libggml-cpu-<variant>.so beside libggml) ----
// ggml_backend_load_all_from_path() dlopens every libggml-cpu-*.so in the folder, asks each its
// ggml_backend_score() (0 = this CPU lacks its instructions) and loads the highest. The variants
// round quantized matmuls differently, so MATHNEURO_CPU_VARIANT=<name> loads that one file instead
// (ggml_backend_load), and `mathneuro doctor` lists them with the one the default picks.
#if defined(_WIN32)
static const char * kCpuPrefix = "ggml-cpu-";
static const char * kCpuSuffix = ".dll";
#elif defined(__APPLE__)
static const char * kCpuPrefix = "libggml-cpu-";
static const char * kCpuSuffix = ".dylib";
static const char * kBaseLib = "libggml-base.dylib";
#else
static const char * kCpuPrefix = "libggml-cpu-";
static const char * kCpuSuffix = ".so";
static const char * kBaseLib = "libggml-base.so";
#endif

struct CpuVariant { std::string name; std::string path; int score; };

// Every libggml-cpu-<name> in dir with its score, as ggml_backend_load_best computes it (-1: the file
// did not load or has no score function). Sorted by name. Safe on any CPU: ggml's default loader
// dlopens all of them too; only the score function runs.
static std::vector<CpuVariant> ScanCpuVariants(const std::string & dir) {
    std::vector<CpuVariant> out;
#ifndef _WIN32
    namespace fs = std::filesystem;
    std::error_code ec;
    // Keep the variants' libggml-base loaded for good: its static initializer installs a terminate
    // handler and asserts (aborts) when it finds its own, which happens when it is unloaded with the
    // last variant and loaded again at the same address by the next one. The prebuilt shim links it
    // anyway; this matters to the source build, which has its own ggml compiled in.
    static std::mutex pin_mutex;
    static std::vector<std::string> pinned;
    {
        std::lock_guard<std::mutex> lock(pin_mutex);
        if (std::find(pinned.begin(), pinned.end(), dir) == pinned.end()) {
            std::string base = (fs::path(dir) / kBaseLib).string();
            if (fs::exists(base, ec)) dlopen(base.c_str(), RTLD_NOW | RTLD_LOCAL); // never closed
            pinned.push_back(dir);
        }
    }
    const std::string prefix = kCpuPrefix, suffix = kCpuSuffix;
    for (fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string file = it->path().filename().string();
        if (file.size() <= prefix.size() + suffix.size() || file.compare(0, prefix.size(), prefix) != 0 ||
            file.compare(file.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
        CpuVariant v{file.substr(prefix.size(), file.size() - prefix.size() - suffix.size()), it->path().string(), -1};
        if (void * h = dlopen(v.path.c_str(), RTLD_NOW | RTLD_LOCAL)) {
            if (auto score = (int (*)()) dlsym(h, "ggml_backend_score")) v.score = score();
            dlclose(h);
        }
        out.push_back(v);
    }
    std::sort(out.begin(), out.end(), [](const CpuVariant & a, const CpuVariant & b) { return a.name < b.name; });
#else
    (void) dir;
#endif
    return out;
}

// The variant ggml_backend_load_all_from_path would pick: the highest score (empty when none scores).
static const CpuVariant * DefaultCpuVariant(const std::vector<CpuVariant> & variants) {
    const CpuVariant * best = nullptr;
    for (const auto & v : variants) if (v.score > 0 && (!best || v.score > best->score)) best = &v;
    return best;
}

// The file a backend registration lives in (its static reg object is inside that library): the
// prebuilt's libggml-cpu-<variant>.so, or mathneuro.node itself when ggml is compiled in.
static std::string RegLibraryPath(ggml_backend_reg_t reg) {
#ifndef _WIN32
    Dl_info info;
    if (reg && dladdr((const void *) reg, &info) && info.dli_fname) return info.dli_fname;
#else
    (void) reg;
#endif
    return "";
}

static std::string VariantOfPath(const std::string & path) {
    const std::string file = std::filesystem::path(path).filename().string();
    const std::string prefix = kCpuPrefix, suffix = kCpuSuffix;
    if (file.size() > prefix.size() + suffix.size() && file.compare(0, prefix.size(), prefix) == 0 &&
        file.compare(file.size() - suffix.size(), suffix.size(), suffix) == 0)
        return file.substr(prefix.size(), file.size() - prefix.size() - suffix.size());
    return "";
}

static ggml_backend_dev_t FirstCpuDevice() {
    // llama.cpp uses the first CPU device (ggml_backend_dev_by_type), so that is the one that computes.
    return ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
}

static std::string VariantList(const std::vector<CpuVariant> & variants, bool supported_only) {
    std::string s;
    for (const auto & v : variants) {
        if (supported_only && v.score <= 0) continue;
        if (!s.empty()) s += ", ";
        s += v.name;
    }
    return s.empty() ? "none" : s;
}

// Loads exactly one CPU variant; throws (never aborts) when it is unknown, unsupported or too late.
static void LoadCpuVariant(Napi::Env env, const std::string & dir, const std::string & variant) {
    if (ggml_backend_dev_count() > 0) {
        ggml_backend_dev_t cpu = FirstCpuDevice();
        std::string path = cpu ? RegLibraryPath(ggml_backend_dev_backend_reg(cpu)) : "";
        if (!path.empty() && VariantOfPath(path) == variant) return; // already the one asked for
        if (strcmp(MATHNEURO_BUILD_KIND, "source") == 0)
            ThrowCoded(env, "ENOBACKEND", "MATHNEURO_CPU_VARIANT=" + variant + " applies to the prebuilt build only: the source build has its CPU backend compiled in (unset MATHNEURO_CPU_VARIANT or use MATHNEURO_BUILD=prebuilt)");
        ThrowCoded(env, "ENOBACKEND", "MATHNEURO_CPU_VARIANT=" + variant + ": a CPU backend was already loaded in this process from " +
            (path.empty() ? std::string("an unknown library") : path) + " (by node-llama-cpp before mathneuro's shim?); the variant must be chosen before any other llama.cpp user starts");
    }
    std::vector<CpuVariant> variants = ScanCpuVariants(dir);
    const CpuVariant * def = DefaultCpuVariant(variants);
    std::string tail = "; available in " + dir + ": " + VariantList(variants, false) + "; this CPU supports: " + VariantList(variants, true) +
        (def ? "; the default picks " + def->name : "");
    auto it = std::find_if(variants.begin(), variants.end(), [&](const CpuVariant & v) { return v.name == variant; });
    if (it == variants.end()) ThrowCoded(env, "ENOBACKEND", "MATHNEURO_CPU_VARIANT=" + variant + " is not a CPU variant of the prebuilt" + tail);
    if (it->score < 0) ThrowCoded(env, "ENOBACKEND", "MATHNEURO_CPU_VARIANT=" + variant + ": " + it->path + " could not be loaded or has no ggml_backend_score" + tail);
    if (it->score == 0) ThrowCoded(env, "ENOBACKEND", "MATHNEURO_CPU_VARIANT=" + variant + " needs instructions this CPU lacks" + tail);
    if (!ggml_backend_load(it->path.c_str())) ThrowCoded(env, "ENOBACKEND", "MATHNEURO_CPU_VARIANT=" + variant + ": ggml_backend_load(" + it->path + ") failed" + tail);
}

// init(binsDir?: string, verbose?: boolean, cpuVariant?: string): loads the ggml backends once (a no-op
// after the first call). With cpuVariant, only that CPU library of the prebuilt (and no GPU backend).
static Napi::Value Init(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::lock_guard<std::mutex> lock(g_init_mutex);
    bool verbose = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
    std::string variant = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
    g_log_level = verbose ? GGML_LOG_LEVEL_INFO : GGML_LOG_LEVEL_ERROR;
    if (!g_ready) {
        llama_log_set(quiet_log, nullptr);
        std::string dir = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
        if (!variant.empty()) {
            LoadCpuVariant(env, dir, variant);
        } else {
            // A static (source) build has its CPU backend compiled in; the prebuilt one loads them at run time.
            if (ggml_backend_dev_count() == 0 && !dir.empty()) ggml_backend_load_all_from_path(dir.c_str());
            if (ggml_backend_dev_count() == 0) ggml_backend_load_all();
        }
        llama_backend_init();
        g_ready = ggml_backend_dev_count() > 0;
        if (!g_ready) ThrowCoded(env, "ENOBACKEND", "no ggml backend could be loaded (no CPU backend library found)");
    }
    return env.Undefined();
}

// cpuVariants(binsDir): [{ name, path, score }] of the prebuilt's CPU libraries (score 0: unsupported here).
static Napi::Value CpuVariants(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::string dir = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
    Napi::Array out = Napi::Array::New(env);
    for (const auto & v : ScanCpuVariants(dir)) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("name", v.name);
        o.Set("path", v.path);
        o.Set("score", v.score);
        out.Set(out.Length(), o);
    }
    return out;
}

static Napi::Value SystemInfo(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("buildKind", MATHNEURO_BUILD_KIND);
    out.Set("llamaSystemInfo", llama_print_system_info());
    Napi::Array devices = Napi::Array::New(env);
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        Napi::Object d = Napi::Object::New(env);
        size_t free_mem = 0, total_mem = 0;
        ggml_backend_dev_memory(dev, &free_mem, &total_mem);
        d.Set("name", ggml_backend_dev_name(dev));
        d.Set("description", ggml_backend_dev_description(dev));
        const char * type = "other";
        switch (ggml_backend_dev_type(dev)) {
            case GGML_BACKEND_DEVICE_TYPE_CPU: type = "cpu"; break;
            case GGML_BACKEND_DEVICE_TYPE_GPU: type = "gpu"; break;
            case GGML_BACKEND_DEVICE_TYPE_ACCEL: type = "accel"; break;
            default: break;
        }
        d.Set("type", type);
        d.Set("backend", ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev)));
        // the library the backend was loaded from (mathneuro.node itself when ggml is compiled in)
        d.Set("library", RegLibraryPath(ggml_backend_dev_backend_reg(dev)));
        d.Set("memoryTotalBytes", (double) total_mem);
        d.Set("memoryFreeBytes", (double) free_mem);
        devices.Set(devices.Length(), d);
    }
    out.Set("devices", devices);
    out.Set("supportsGpuOffload", llama_supports_gpu_offload());
    out.Set("supportsMmap", llama_supports_mmap());
    return out;
}

void RegisterBackend(Napi::Env env, Napi::Object exports) {
    exports.Set("init", Napi::Function::New(env, Init));
    exports.Set("systemInfo", Napi::Function::New(env, SystemInfo));
    exports.Set("cpuVariants", Napi::Function::New(env, CpuVariants));
}
