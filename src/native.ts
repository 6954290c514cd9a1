// Loads the native shim: the source build when it exists (npm run build:source), else the
// prebuilt-linked one (npm install). Backends are loaded once, on first use.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MathneuroError, asMathneuroError } from './errors.ts';
import type { FixtureTensor } from './fixture/model.ts';
import type { TrainOptions, TrainProgress, TrainResult } from './fixture/train.ts';
import type { GgufMetadataEntry } from './gguf/reader.ts';
import type { CodecTypeInfo, PatchTensorRequest, PatchTensorResult, RequantizeRequest, RequantizeResult, TopKRequest } from './core/codec.ts';
import type { NativeModel } from './stats/collect.ts';

const require = createRequire(import.meta.url);
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const paths = require(path.join(packageRoot, 'scripts', 'paths.cjs')) as {
  binsDir(): string; llamaSourceDir(): string; bundlePath(): string; nodeLlamaCppDir(): string;
};

export type BuildKind = 'source' | 'prebuilt';

export const buildPaths: Record<BuildKind, string> = {
  source: path.join(packageRoot, 'build-source', 'Release', 'mathneuro.node'),
  prebuilt: path.join(packageRoot, 'build', 'Release', 'mathneuro.node'),
};

export interface DeviceInfo {
  name: string; description: string; type: 'cpu' | 'gpu' | 'accel' | 'other'; backend: string;
  memoryTotalBytes: number; memoryFreeBytes: number;
  /** the library the backend was loaded from (mathneuro.node itself when ggml is compiled in) */
  library: string;
}
/** A CPU library of the prebuilt (libggml-cpu-<name>.so) and its ggml_backend_score here (0: unsupported, -1: unloadable). */
export interface CpuVariant { name: string; path: string; score: number }
export interface SystemInfo {
  buildKind: string; llamaSystemInfo: string; devices: DeviceInfo[];
  supportsGpuOffload: boolean; supportsMmap: boolean;
}

/** A tensor of a header to build: ggml type id and shape in ggml order (ne[0] first). */
export interface NativeTensorSpec { name: string; type: number; shape: readonly number[] }

/** A GGUF header from ggml's gguf code, with where each tensor's data goes (offsets from the data section). */
export interface NativeHeader {
  header: Buffer;
  tensors: { name: string; offset: number; byteSize: number }[];
  alignment: number;
}

/** One metadata key for writeF32Gguf (the fixture writer): typed by name, not by gguf_type id. */
export interface NativeF32Metadata {
  key: string;
  type: 'string' | 'u32' | 'i32' | 'f32' | 'bool' | 'string[]' | 'f32[]' | 'i32[]';
  value: string | number | boolean | readonly string[] | readonly number[];
}

/** Options of loadModel (see ModelOptions in src/stats/collect.ts for what each means). */
export interface NativeLoadOptions {
  nCtx?: number; nBatch?: number; nThreads?: number; nGpuLayers?: number; nSeqMax?: number;
  useMmap?: boolean; flashAttn?: 'auto' | 'on' | 'off'; kvType?: 'f16' | 'f32';
  /** false: no CPU extra buffer types (repacked weights), as the trainer loads them. Default true. */
  repack?: boolean;
  /** false: one K/V stream per sequence (llama.cpp's default, the trainer's context); only with nSeqMax 1. Default true. */
  kvUnified?: boolean;
}

/** The weights of a model that loadModel opened (native/model.cpp), read and written in place (src/tune). */
export interface NativeWeightAccess {
  /** ggml's view of one weight: type id, bytes, shape (ne, 4 dims), its buffer's name; EUNSUPPORTED/ENOENT coded errors */
  weightInfo(name: string): { name: string; type: number; nbytes: number; ne: number[]; buffer: string; host: boolean; writable: boolean };
  /** The whole tensor's bytes in its stored type (ggml_backend_tensor_set); EMMAP when loaded with mmap, EUSAGE on a size mismatch. */
  setWeight(name: string, bytes: Uint8Array): void;
  /** The tensor's bytes (host buffers only: EUNSUPPORTED for a GPU or repacked CPU buffer). */
  getWeight(name: string): Uint8Array;
}

/**
 * The raw binding: every function native/*.cpp exports (the Register* functions of addon.cpp's
 * module), with its argument and result types. Typed wrappers live beside their TS module.
 */
export interface NativeBinding {
  // backend.cpp
  /** Loads the ggml backends once (from binsDir for the prebuilt build); later calls only set verbosity. */
  init(binsDir?: string, verbose?: boolean, cpuVariant?: string): void;
  systemInfo(): SystemInfo;
  /** The prebuilt's CPU libraries in binsDir with ggml_backend_score (0: this CPU lacks their instructions). */
  cpuVariants(binsDir: string): CpuVariant[];
  // model.cpp (the statistics themselves: collector.cpp)
  /** The class behind loadModel's result (not constructible from JS). */
  Model: abstract new () => NativeModel;
  loadModel(path: string, options?: NativeLoadOptions): Promise<NativeModel & NativeWeightAccess>;
  // codec.cpp; selectTopK: top_k.cpp; requantizeBlocks, patchTensor: requantize.cpp
  /** ggml's traits of a type id; null for an id that names no type. */
  codecTypeInfo(type: number): CodecTypeInfo | null;
  dequantize(type: number, bytes: Uint8Array, nElements: number): Float32Array;
  quantize(type: number, values: Float32Array, nPerRow: number, imatrix: Float32Array | null): Uint8Array;
  selectTopK(request: TopKRequest): Promise<Uint8Array[][]>;
  requantizeBlocks(request: Omit<RequantizeRequest, 'imatrix'> & { imatrix: Float32Array | null }): Promise<RequantizeResult>;
  patchTensor(request: Omit<PatchTensorRequest, 'importance'> & { importance: Float32Array | null }): Promise<PatchTensorResult>;
  // gguf_io.cpp
  ggufBuildHeader(spec: { metadata: readonly GgufMetadataEntry[]; tensors: readonly NativeTensorSpec[] }): NativeHeader;
  /**
   * The header of srcPath with metadata set and keys removed; the tensor layout stays the source's
   * (read and written on the thread pool). headerBytes: the source's header as read and validated,
   * parsed instead of the file (dataOffset: where its data starts); undefined reads the file.
   */
  ggufRewriteHeader(srcPath: string, set?: readonly GgufMetadataEntry[], remove?: readonly string[], headerBytes?: readonly Uint8Array[], dataOffset?: number): Promise<NativeHeader>;
  ggufQuantizeRows(type: number, values: Float32Array, nPerRow: number): Buffer;
  // Linux only (absent elsewhere):
  /** Bytes copied inside the kernel (copy_file_range, on the thread pool), or -1 where the kernel or file systems cannot. */
  copyFileRange?(srcFd: number, dstFd: number, srcOffset: number, dstOffset: number, length: number): Promise<number>;
  // train.cpp; tokenizeWithModel: train_eval.cpp
  trainModel(options: Omit<TrainOptions, 'onProgress'>, onProgress?: (p: TrainProgress) => void): Promise<TrainResult>;
  tokenizeWithModel(modelPath: string, text: string, addSpecial?: boolean): Int32Array;
  writeF32Gguf(path: string, metadata: readonly NativeF32Metadata[], tensors: readonly FixtureTensor[]): void;
  /** out = metadataFrom's keys and tensor order with tensorsFrom's tensor data. */
  copyWithMetadataOf(metadataFrom: string, tensorsFrom: string, out: string): void;
  // divergence.cpp
  /**
   * Per row of nVocab logits, on a worker thread: KL(softmax(p) || softmax(q)) in nats (double sums)
   * and whether the rows' top tokens (first of equal maxima) agree (1) or not (0). p and q hold the same
   * number of whole rows and must not change until the promise settles.
   */
  klRows(p: Float32Array, q: Float32Array, nVocab: number, threads?: number): Promise<{ kl: Float64Array; sameTop: Uint8Array }>;
  // mask_codec.cpp (wrappers: src/core/mask-codec.ts)
  encodeMask(mask: Uint8Array, nBits: number): Promise<Uint8Array>;
  decodeMask(encoded: Uint8Array, nBits: number, count: number, into?: Uint8Array): Uint8Array;
  /** Set bits of each part [i partBits, (i + 1) partBits) of a mask of nBits bits (partBits divides nBits), on the calling thread. */
  countMaskBits(mask: Uint8Array, nBits: number, partBits: number): Float64Array;
}

let cached: { binding: NativeBinding; kind: BuildKind; path: string } | undefined;

/**
 * MATHNEURO_CPU_VARIANT=<name> (e.g. x64, sse42, haswell, zen4): the prebuilt loads only
 * libggml-cpu-<name>.so instead of the best one this CPU supports, so quantized matmuls round the same
 * on every machine that can run that variant. It holds for the whole process: the prebuilt shim and
 * node-llama-cpp (CPU, gpu: false) share one libggml, the shim registers the CPU backend first
 * (sharedLlama loads it before getLlama) and node-llama-cpp then finds a CPU device and loads none.
 * The source build has its CPU backend compiled in, so the variant selects the prebuilt build.
 * Not covered: node-llama-cpp's CUDA/Vulkan builds (MATHNEURO_GPU=1 on a GPU machine) have a libggml
 * of their own that picks its own CPU variant; sharedLlama refuses that combination (ENOBACKEND).
 */
export function cpuVariantRequest(): string | undefined {
  const v = process.env.MATHNEURO_CPU_VARIANT?.trim();
  return v ? v : undefined;
}

/** Which build to use: MATHNEURO_BUILD=source|prebuilt forces one; otherwise the one that exists,
 * and when both do, the more recently built (a rebuild after editing native/ is what you meant).
 * MATHNEURO_CPU_VARIANT picks the prebuilt (the only build with variants) unless a build is forced. */
export function pickBuild(): { kind: BuildKind; path: string } | undefined {
  const forced = process.env.MATHNEURO_BUILD as BuildKind | undefined;
  if (!forced && cpuVariantRequest() && existsSync(buildPaths.prebuilt)) return { kind: 'prebuilt', path: buildPaths.prebuilt };
  if (forced) {
    if (!(forced in buildPaths)) throw new MathneuroError('EUSAGE', `MATHNEURO_BUILD must be "source" or "prebuilt", not "${forced}"`);
    return existsSync(buildPaths[forced]) ? { kind: forced, path: buildPaths[forced] } : undefined;
  }
  const present = (['source', 'prebuilt'] as BuildKind[]).filter((k) => existsSync(buildPaths[k]));
  if (present.length === 0) return undefined;
  present.sort((a, b) => statSync(buildPaths[b]).mtimeMs - statSync(buildPaths[a]).mtimeMs);
  return { kind: present[0], path: buildPaths[present[0]] };
}

export function loadNative(): NativeBinding {
  if (cached) return cached.binding;
  let picked = pickBuild();
  if (!picked) {
    // Installed as a dependency with install scripts disabled: build on first use, loudly.
    const forced = process.env.MATHNEURO_BUILD;
    if (forced) throw new MathneuroError('ENATIVE', `the ${forced} build of the native shim is missing (${buildPaths[forced as BuildKind]}); run ${forced === 'source' ? 'npm run build:source' : 'npm run build'}`);
    // (npm 11 and later skip dependencies' install scripts unless allowed, so this is the usual path.)
    const script = path.join(packageRoot, 'scripts', 'install.mjs');
    const retry = `node ${/[\s"'$]/.test(script) ? JSON.stringify(script) : script} --force`;
    // --first-use builds unless another process built it meanwhile (they take turns on a lock)
    process.stderr.write(`mathneuro: the native shim is not built yet (install scripts were skipped); building it now, once (10-60 s): ${retry}\n`);
    const { spawnSync } = require('node:child_process') as typeof import('node:child_process');
    const r = spawnSync(process.execPath, [script, '--first-use'], { stdio: ['ignore', 2, 2] });
    picked = pickBuild();
    if (r.status !== 0 || !picked) throw new MathneuroError('ENATIVE', `could not build the native shim (its output is above); fix what it names, then run: ${retry}`);
  }
  const binding = require(picked.path) as NativeBinding;
  // The prebuilt build loads its backends from node-llama-cpp's platform package; a source build has them inside.
  let bins: string | undefined;
  try { bins = paths.binsDir(); } catch (e) { if (picked.kind === 'prebuilt') throw new MathneuroError('ENATIVE', (e as Error).message); }
  try {
    binding.init(bins, process.env.MATHNEURO_LLAMA_LOG === '1', cpuVariantRequest());
  } catch (e) {
    throw asMathneuroError(e, 'ENOBACKEND');
  }
  cached = { binding, kind: picked.kind, path: picked.path };
  return binding;
}

export function nativeBuild(): { kind: BuildKind; path: string } {
  loadNative();
  return { kind: cached!.kind, path: cached!.path };
}

export function prebuiltBinsDir(): string { return paths.binsDir(); }

/** Linux: every CPU-variant library mapped into this process (any ggml copy's, node-llama-cpp's GPU builds' too); undefined elsewhere. */
export function mappedCpuVariantLibraries(): string[] | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    const files = readFileSync('/proc/self/maps', 'utf8').split('\n').map((line) => line.split(/\s+/)[5] ?? '');
    return [...new Set(files.filter((f) => /\/libggml-cpu-[^/]+\.so$/.test(f)))];
  } catch { return undefined; }
}

/** The variant name of a libggml-cpu-<variant>.so path, or undefined. */
export function cpuVariantOfPath(file: string): string | undefined {
  return /(?:lib)?ggml-cpu-(.+)\.(?:so|dylib|dll)$/.exec(path.basename(file))?.[1];
}

/** The loaded CPU backend (the first CPU device: the one llama.cpp computes with) and the prebuilt's
 * variants: which ones this CPU supports and which one ggml's default loader picks. */
export function cpuBackendInfo(): { loaded: string; library: string; forced: string | undefined; cpuDevices: number; variants: CpuVariant[]; defaultVariant: string | undefined } {
  const native = loadNative();
  const cpus = native.systemInfo().devices.filter((d) => d.type === 'cpu');
  const library = cpus[0]?.library ?? '';
  const variant = cpuVariantOfPath(library);
  const loaded = variant ? variant : cpus.length === 0 ? 'none' : library.endsWith('.node') ? 'built-in' : path.basename(library) || 'unknown';
  const variants = native.cpuVariants(paths.binsDir());
  let best: CpuVariant | undefined;
  for (const v of variants) if (v.score > 0 && (!best || v.score > best.score)) best = v;
  return { loaded, library, forced: cpuVariantRequest(), cpuDevices: cpus.length, variants, defaultVariant: best?.name };
}
export function llamaSourceDir(): string { return paths.llamaSourceDir(); }
/** node-llama-cpp's folder, wherever the package manager put it. */
export function nodeLlamaCppDir(): string { return paths.nodeLlamaCppDir(); }
