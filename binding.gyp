{
  "variables": {
    "bins": "<!(node scripts/paths.cjs bins)",
    "llama": "<!(node scripts/paths.cjs llama)"
  },
  "targets": [
    {
      "target_name": "mathneuro",
      "sources": [
        "native/addon.cpp",
        "native/backend.cpp",
        "native/collector.cpp",
        "native/model.cpp",
        "native/codec.cpp",
        "native/keep_scale.cpp",
        "native/top_k.cpp",
        "native/mask_codec.cpp",
        "native/requantize.cpp",
        "native/gguf_io.cpp",
        "native/train.cpp",
        "native/train_eval.cpp",
        "native/divergence.cpp"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<(llama)/include",
        "<(llama)/ggml/include"
      ],
      "defines": ["NAPI_VERSION=7", "NAPI_CPP_EXCEPTIONS", "MATHNEURO_BUILD_KIND=\"prebuilt\""],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O3"],
      "libraries": [
        "<(bins)/libllama.v0.4.0.so",
        "<(bins)/libggml.v0.4.0.so",
        "<(bins)/libggml-base.so",
        "-Wl,-rpath,<(bins)",
        "-ldl"
      ],
      "conditions": [
        ["OS=='mac'", {
          "xcode_settings": {
            "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "OTHER_LDFLAGS": ["-Wl,-rpath,<(bins)"]
          },
          "libraries!": ["<(bins)/libllama.v0.4.0.so", "<(bins)/libggml.v0.4.0.so", "<(bins)/libggml-base.so"],
          "libraries": ["<(bins)/libllama.dylib", "<(bins)/libggml.dylib", "<(bins)/libggml-base.dylib"]
        }]
      ]
    }
  ]
}
