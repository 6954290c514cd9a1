// Statistics files: GGUF in llama.cpp's imatrix layout (<tensor>.in_sum2, <tensor>.counts, F32,
// general.type = imatrix) so llama-quantize --imatrix reads them, plus our <tensor>.in_norm_sum
// and provenance keys. Checkpoints use the same layout with F64 tensors so a resumed run adds up
// to exactly what an uninterrupted one does.
import { createHash } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { readFully } from '../core/tensor-io.ts';
import { MathneuroError } from '../errors.ts';
import { writeGgufFile } from '../gguf/writer.ts';
import { parsedHeaderBytes, readGgufSync, type GgufInfo, type GgufMetadataEntry } from '../gguf/reader.ts';
import { GGML_TYPE, GGUF_VALUE } from '../gguf/types.ts';
import { loadNative } from '../native.ts';
import { STATS_FORMAT_VERSION, type ModelIdentity, type Stats, type WeightStats } from './types.ts';

const SUFFIX_SUM2 = '.in_sum2';
const SUFFIX_COUNTS = '.counts';
const SUFFIX_NORM = '.in_norm_sum';

export interface SaveStatsOptions {
  /** store F64 tensors (checkpoints); default F32 as llama.cpp's imatrix loader requires */
  float64?: boolean;
  /** extra metadata entries */
  extraMetadata?: GgufMetadataEntry[];
}

/**
 * Identity of a model file from its validated header: sha256 of the header bytes, size, name. A
 * split model's view (src/gguf/model.ts) hashes every shard's header, one after the other, and
 * counts the bytes of all shards.
 */
export function modelIdentity(info: GgufInfo): ModelIdentity {
  const known = identities.get(info);
  if (known) return { ...known };
  const shards = (info as GgufInfo & { shards?: GgufInfo[] }).shards ?? [info];
  const hash = createHash('sha256');
  for (const shard of shards) {
    // the bytes the header was parsed from (a Qwen2 header is 5.7 MB), else read again
    const parsed = parsedHeaderBytes(shard);
    if (parsed) { for (const b of parsed) hash.update(b); continue; }
    const fd = openSync(shard.path, 'r');
    try {
      const header = Buffer.alloc(shard.headerBytes);
      readFully(fd, header, 0);   // (a short file hashes as zeros past its end, as before)
      hash.update(header);
    } finally {
      closeSync(fd);
    }
  }
  const identity = { fileName: path.basename(info.path), sizeBytes: shards.reduce((a, s) => a + s.fileSize, 0), headerSha256: hash.digest('hex') };
  identities.set(info, identity);
  return { ...identity };
}
/** (a parse is read-only and stands for the header bytes it was made from: see readGgufSync) */
const identities = new WeakMap<GgufInfo, ModelIdentity>();

export async function saveStats(stats: Stats, file: string, options: SaveStatsOptions = {}): Promise<void> {
  const native = loadNative();
  const type = options.float64 ? GGML_TYPE.F64 : GGML_TYPE.F32;
  const names = [...stats.weights.keys()].sort();
  const metadata: GgufMetadataEntry[] = [
    { key: 'general.type', type: GGUF_VALUE.STRING, value: 'imatrix' },
    { key: 'imatrix.datasets', type: GGUF_VALUE.ARRAY, arrayType: GGUF_VALUE.STRING, value: stats.datasets.length ? stats.datasets : ['unknown'] },
    { key: 'imatrix.chunk_count', type: GGUF_VALUE.UINT32, value: Math.min(stats.samples, 0xffffffff) },
    { key: 'imatrix.chunk_size', type: GGUF_VALUE.UINT32, value: stats.samples ? Math.round(stats.tokens / stats.samples) : 0 },
    { key: 'mathneuro.stats.version', type: GGUF_VALUE.UINT32, value: STATS_FORMAT_VERSION },
    { key: 'mathneuro.stats.sample_count', type: GGUF_VALUE.UINT64, value: stats.samples },
    { key: 'mathneuro.stats.token_count', type: GGUF_VALUE.UINT64, value: stats.tokens },
    { key: 'mathneuro.model.file_name', type: GGUF_VALUE.STRING, value: stats.model.fileName },
    { key: 'mathneuro.model.size_bytes', type: GGUF_VALUE.UINT64, value: stats.model.sizeBytes },
    { key: 'mathneuro.model.header_sha256', type: GGUF_VALUE.STRING, value: stats.model.headerSha256 },
    ...(options.extraMetadata ?? []),
  ];
  const tensors: { name: string; type: number; shape: number[]; data: ArrayLike<number> }[] = [];
  for (const name of names) {
    const w = stats.weights.get(name)!;
    tensors.push({ name: name + SUFFIX_SUM2, type, shape: [w.nIn, w.nMat], data: w.sum2 });
    tensors.push({ name: name + SUFFIX_COUNTS, type, shape: [1, w.nMat], data: w.counts });
    tensors.push({ name: name + SUFFIX_NORM, type, shape: [w.nIn, w.nMat], data: w.normSum });
  }
  for (const t of tensors) {
    if (Buffer.byteLength(t.name) > 63) throw new MathneuroError('ESTATS', `statistics tensor name "${t.name}" is longer than 63 bytes`);
  }
  const { header, tensors: placed } = native.ggufBuildHeader({ metadata, tensors: tensors.map(({ name, type, shape }) => ({ name, type, shape })) });
  const out = path.resolve(file);
  await writeGgufFile(out, header, placed, (put) => {
    for (let i = 0; i < tensors.length; i++) {
      const src = tensors[i].data;
      put(i, options.float64 ? new Uint8Array(Float64Array.from(src).buffer) : new Uint8Array(Float32Array.from(src).buffer));
    }
  });
}

/**
 * One statistics tensor as float64, from the file's data section read whole (one read per file, a
 * view per tensor: a read and two copies per tensor were ~35 ms for two qwen-0.5b statistics).
 */
function readTensor(data: Uint8Array, info: GgufInfo, name: string): Float64Array {
  const t = info.tensorByName.get(name);
  if (!t) throw new MathneuroError('ESTATS', `${info.path}: tensor ${name} is missing`);
  if (t.type !== GGML_TYPE.F32 && t.type !== GGML_TYPE.F64) throw new MathneuroError('ESTATS', `${info.path}: tensor ${name} is ${t.typeName}, expected F32 or F64`);
  const at = t.absoluteOffset - info.dataOffset;
  if (at < 0 || at + t.byteSize > data.length) throw new MathneuroError('ESTATS', `${info.path}: unexpected end of file in ${name}`);
  const size = t.type === GGML_TYPE.F64 ? 8 : 4;
  const off = data.byteOffset + at;
  // (a view where the offset allows one, else a copy; the data section is aligned, so always here)
  const bytes = off % size === 0 ? data.buffer : data.slice(at, at + t.byteSize).buffer;
  const start = off % size === 0 ? off : 0;
  const values = t.type === GGML_TYPE.F64 ? new Float64Array(bytes, start, t.numel) : new Float32Array(bytes, start, t.numel);
  // converted and checked in one loop (new Float64Array(float32s) and a second loop to check took
  // ~50 ms more for two qwen-0.5b statistics)
  const out = new Float64Array(t.numel);
  for (let i = 0; i < out.length; i++) {
    const v = values[i];
    if (!(v >= 0) || v === Infinity) throw new MathneuroError('ESTATS', `${info.path}: ${name} holds a negative or non-finite value`);
    out[i] = v;
  }
  return out;
}

/** The data section of a statistics file, read whole. */
function readData(fd: number, info: GgufInfo): Uint8Array {
  const data = new Uint8Array(Math.max(0, info.fileSize - info.dataOffset));
  if (readFully(fd, data, info.dataOffset) < data.length) throw new MathneuroError('ESTATS', `${info.path}: unexpected end of file`);
  return data;
}

export interface LoadedStats extends Stats {
  path: string;
  /** false when the file is a plain llama.cpp imatrix (no per-sample norms: MathNeuro scores need them) */
  hasNormSum: boolean;
  metadata: Map<string, unknown>;
}

export async function loadStats(file: string): Promise<LoadedStats> {
  const info = readGgufSync(file);
  if (info.metadata.get('general.type') !== 'imatrix') throw new MathneuroError('ESTATS', `${file} is not a statistics file (general.type is ${JSON.stringify(info.metadata.get('general.type') ?? null)}, expected "imatrix")`);
  const num = (k: string) => { const v = info.metadata.get(k); return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined; };
  const str = (k: string) => { const v = info.metadata.get(k); return typeof v === 'string' ? v : undefined; };
  const fd = openSync(file, 'r');
  try {
    const weights = new Map<string, WeightStats>();
    const data = readData(fd, info);
    let hasNormSum = true;
    for (const t of info.tensors) {
      if (!t.name.endsWith(SUFFIX_SUM2)) continue;
      const name = t.name.slice(0, -SUFFIX_SUM2.length);
      const nIn = t.shape[0];
      const nMat = t.shape[1] ?? 1;
      const sum2 = readTensor(data, info, name + SUFFIX_SUM2);
      const counts = readTensor(data, info, name + SUFFIX_COUNTS);
      if (counts.length !== nMat) throw new MathneuroError('ESTATS', `${file}: ${name}.counts has ${counts.length} values for ${nMat} matrices`);
      let normSum: Float64Array;
      if (info.tensorByName.has(name + SUFFIX_NORM)) {
        normSum = readTensor(data, info, name + SUFFIX_NORM);
        if (normSum.length !== sum2.length) throw new MathneuroError('ESTATS', `${file}: ${name}.in_norm_sum and .in_sum2 differ in size`);
      } else {
        hasNormSum = false;
        normSum = new Float64Array(sum2.length);
      }
      weights.set(name, { name, nIn, nMat, sum2, normSum, counts });
    }
    const datasets = info.metadata.get('imatrix.datasets');
    return {
      path: file,
      hasNormSum,
      metadata: info.metadata,
      model: {
        fileName: str('mathneuro.model.file_name') ?? '',
        sizeBytes: num('mathneuro.model.size_bytes') ?? 0,
        headerSha256: str('mathneuro.model.header_sha256') ?? '',
      },
      samples: num('mathneuro.stats.sample_count') ?? num('imatrix.chunk_count') ?? 0,
      tokens: num('mathneuro.stats.token_count') ?? 0,
      datasets: Array.isArray(datasets) ? datasets.map(String) : [],
      weights,
    };
  } finally {
    closeSync(fd);
  }
}
