// Backend loading and build/system information (for `mathneuro doctor`).
#include "common.h"
#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"
#include <atomic>
#include <mutex>

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

// init(binsDir?: string, verbose?: boolean): loads the ggml backends once (a no-op after the first call).
static Napi::Value Init(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    std::lock_guard<std::mutex> lock(g_init_mutex);
    bool verbose = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
    g_log_level = verbose ? GGML_LOG_LEVEL_INFO : GGML_LOG_LEVEL_ERROR;
    if (!g_ready) {
        llama_log_set(quiet_log, nullptr);
        // A static (source) build has its CPU backend compiled in; the prebuilt one loads them at run time.
        if (ggml_backend_dev_count() == 0 && info.Length() > 0 && info[0].IsString()) {
            std::string dir = info[0].As<Napi::String>().Utf8Value();
            ggml_backend_load_all_from_path(dir.c_str());
        }
        if (ggml_backend_dev_count() == 0) ggml_backend_load_all();
        llama_backend_init();
        g_ready = ggml_backend_dev_count() > 0;
        if (!g_ready) ThrowCoded(env, "ENOBACKEND", "no ggml backend could be loaded (no CPU backend library found)");
    }
    return env.Undefined();
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
}
