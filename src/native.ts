// Loads the native shim: the source build when it exists (npm run build:source), else the
// prebuilt-linked one (npm install). Backends are loaded once, on first use.
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MathneuroError } from './errors.ts';
import type { FixtureTensor } from './fixture/model.ts';
import type { TrainOptions, TrainProgress, TrainResult } from './fixture/train.ts';
import type { GgufMetadataEntry } from './gguf/reader.ts';
import type { CodecTypeInfo, PatchTensorRequest, PatchTensorResult, RequantizeRequest, RequantizeResult, TopKRequest } from './select/codec.ts';
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
}
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

/** Options of greedyComplete / textLoss: a fresh context per call, one sequence. */
export interface NativeEvalCallOptions { threads?: number; nCtx?: number; maxNewTokens?: number; stop?: string }

/** Options of loadModel (see ModelOptions in src/stats/collect.ts for what each means). */
export interface NativeLoadOptions {
  nCtx?: number; nBatch?: number; nThreads?: number; nGpuLayers?: number; nSeqMax?: number;
  useMmap?: boolean; flashAttn?: 'auto' | 'on' | 'off'; kvType?: 'f16' | 'f32';
}

/**
 * The raw binding: every function native/*.cpp exports (the Register* functions of addon.cpp's
 * module), with its argument and result types. Typed wrappers live beside their TS module.
 */
export interface NativeBinding {
  // backend.cpp
  /** Loads the ggml backends once (from binsDir for the prebuilt build); later calls only set verbosity. */
  init(binsDir?: string, verbose?: boolean): void;
  systemInfo(): SystemInfo;
  // collector.cpp
  /** The class behind loadModel's result (not constructible from JS). */
  Model: abstract new () => NativeModel;
  loadModel(path: string, options?: NativeLoadOptions): Promise<NativeModel>;
  // codec.cpp
  /** ggml's traits of a type id; null for an id that names no type. */
  codecTypeInfo(type: number): CodecTypeInfo | null;
  dequantize(type: number, bytes: Uint8Array, nElements: number): Float32Array;
  quantize(type: number, values: Float32Array, nPerRow: number, imatrix: Float32Array | null): Uint8Array;
  selectTopK(request: TopKRequest): Promise<Uint8Array[][]>;
  requantizeBlocks(request: Omit<RequantizeRequest, 'imatrix'> & { imatrix: Float32Array | null }): Promise<RequantizeResult>;
  patchTensor(request: Omit<PatchTensorRequest, 'importance'> & { importance: Float32Array | null }): Promise<PatchTensorResult>;
  // gguf_io.cpp
  ggufBuildHeader(spec: { metadata: readonly GgufMetadataEntry[]; tensors: readonly NativeTensorSpec[] }): NativeHeader;
  /** The header of srcPath with metadata set and keys removed; the tensor layout stays the source's. */
  ggufRewriteHeader(srcPath: string, set?: readonly GgufMetadataEntry[], remove?: readonly string[]): NativeHeader;
  ggufQuantizeRows(type: number, values: Float32Array, nPerRow: number): Buffer;
  // Linux only (absent elsewhere):
  /** Bytes copied inside the kernel (copy_file_range), or -1 where the kernel or file systems cannot. */
  copyFileRange?(srcFd: number, dstFd: number, srcOffset: number, dstOffset: number, length: number): number;
  /** A shared writable mapping of [offset, offset + length) of the file; null where mapping fails. */
  mapFileRange?(fd: number, offset: number, length: number): ArrayBuffer | null;
  unmapFileRange?(buffer: ArrayBuffer): void;
  // train.cpp
  trainModel(options: Omit<TrainOptions, 'onProgress'>, onProgress?: (p: TrainProgress) => void): Promise<TrainResult>;
  greedyComplete(modelPath: string, prompts: readonly string[], options?: NativeEvalCallOptions): Promise<string[]>;
  textLoss(modelPath: string, texts: readonly string[], options?: NativeEvalCallOptions): Promise<{ negativeLogLikelihood: Float64Array; tokenCounts: Float64Array }>;
  tokenizeWithModel(modelPath: string, text: string, addSpecial?: boolean): Int32Array;
  writeF32Gguf(path: string, metadata: readonly NativeF32Metadata[], tensors: readonly FixtureTensor[]): void;
  /** out = metadataFrom's keys and tensor order with tensorsFrom's tensor data. */
  copyWithMetadataOf(metadataFrom: string, tensorsFrom: string, out: string): void;
}

let cached: { binding: NativeBinding; kind: BuildKind; path: string } | undefined;

/** Which build to use: MATHNEURO_BUILD=source|prebuilt forces one; otherwise the one that exists,
 * and when both do, the more recently built (a rebuild after editing native/ is what you meant). */
export function pickBuild(): { kind: BuildKind; path: string } | undefined {
  const forced = process.env.MATHNEURO_BUILD as BuildKind | undefined;
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
  binding.init(bins, process.env.MATHNEURO_LLAMA_LOG === '1');
  cached = { binding, kind: picked.kind, path: picked.path };
  return binding;
}

export function nativeBuild(): { kind: BuildKind; path: string } {
  loadNative();
  return { kind: cached!.kind, path: cached!.path };
}

export function prebuiltBinsDir(): string { return paths.binsDir(); }
export function llamaSourceDir(): string { return paths.llamaSourceDir(); }
/** node-llama-cpp's folder, wherever the package manager put it. */
export function nodeLlamaCppDir(): string { return paths.nodeLlamaCppDir(); }
