// `mathneuro synth`: random-weight llama-architecture GGUF models of realistic shapes and types,
// written with ggml's gguf and quantization code. Tests, benchmarks and first-time users use them.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { MathneuroError } from './errors.ts';
import { readGgufSync, type GgufMetadataEntry } from './gguf/reader.ts';
import { GGML_TYPE, GGUF_VALUE, ggmlType } from './gguf/types.ts';
import { llamaSourceDir, loadNative } from './native.ts';
import { writeGgufFile } from './gguf/writer.ts';
import { archTables, F32, ROLE_INIT, SHAPE_DEFAULTS, type ResolvedShape, type SynthShape, type TensorRole } from './synth/arch.ts';

export { archTables, ARCHITECTURES, type ArchTable, type SynthShape, type ResolvedShape, type TensorRule, type TensorRole } from './synth/arch.ts';

export type SynthShapeName = 'tiny' | 'moe-tiny' | 'qwen-0.5b' | 'llama-1b';
export type SynthTypeName = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_k' | 'q5_k' | 'q6_k' | 'mixed' | 'cycle';

/** The llama architecture's presets (every architecture's are in archTables[arch].shapes). */
export const synthShapes = archTables.llama.shapes as Record<SynthShapeName, SynthShape>;

export interface SynthOptions {
  /** output path; written to a temporary file beside it and renamed at the end */
  out: string;
  /** architecture: a key of archTables (default llama) */
  arch?: string;
  /** a preset of the architecture (default tiny), or fields over its tiny preset */
  shape?: string | Partial<SynthShape>;
  /** tensor type of the weight matrices; norms are always F32 (default 'mixed') */
  type?: SynthTypeName;
  seed?: number;
  /** override the shape's tied/untied output head */
  untiedOutput?: boolean;
  /** standard deviation of the weight matrices (default 0.02 x sqrt(256 / n_embd)...) */
  weightStd?: number;
  overwrite?: boolean;
  onProgress?: (p: { tensorsDone: number; tensorCount: number; bytesWritten: number; totalBytes: number }) => void;
}

export interface SynthResult {
  path: string; bytes: number; tensorCount: number; parameterCount: number; arch: string; shape: SynthShape; type: SynthTypeName; seed: number;
  tensorTypes: Record<string, string>;
}

/** xoshiro128** : small, fast, seeded; normals by Box-Muller. */
export class Random {
  private s0: number; private s1: number; private s2: number; private s3: number;
  private spare: number | undefined;
  constructor(seed: number) {
    // splitmix32 to spread the seed over the state
    let x = (seed >>> 0) ^ 0x9e3779b9;
    const next = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next(); this.s1 = next(); this.s2 = next(); this.s3 = next();
  }
  u32(): number {
    const result = Math.imul(((Math.imul(this.s1, 5) << 7) | (Math.imul(this.s1, 5) >>> 25)), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 ^= this.s0; this.s3 ^= this.s1; this.s1 ^= this.s2; this.s0 ^= this.s3;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = ((this.s3 << 11) | (this.s3 >>> 21)) >>> 0;
    return result;
  }
  /** uniform in [0, 1) */
  uniform(): number { return (this.u32() + 0.5) / 4294967296; }
  normal(): number {
    if (this.spare !== undefined) { const v = this.spare; this.spare = undefined; return v; }
    const u = this.uniform(), v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
  fillNormal(out: Float32Array, mean: number, std: number) {
    for (let i = 0; i < out.length; i++) out[i] = mean + std * this.normal();
  }
}

interface TensorPlan { name: string; shape: number[]; type: number; role: TensorRole; mean: number; std: number }

const typeIds: Record<Exclude<SynthTypeName, 'mixed' | 'cycle'>, number> = {
  f32: GGML_TYPE.F32, f16: GGML_TYPE.F16, bf16: GGML_TYPE.BF16, q8_0: GGML_TYPE.Q8_0, q4_0: GGML_TYPE.Q4_0,
  q4_k: GGML_TYPE.Q4_K, q5_k: GGML_TYPE.Q5_K, q6_k: GGML_TYPE.Q6_K,
};
const cycleTypes = [GGML_TYPE.Q4_K, GGML_TYPE.Q6_K, GGML_TYPE.Q8_0, GGML_TYPE.F16, GGML_TYPE.Q5_K, GGML_TYPE.BF16, GGML_TYPE.Q4_0, GGML_TYPE.F32];

/** Types whose block does not divide the row length fall back as llama-quantize does. */
function fitType(type: number, rowLength: number): number {
  const t = ggmlType(type)!;
  if (rowLength % t.blockSize === 0) return type;
  const fallback: Record<number, number> = {
    [GGML_TYPE.Q4_K]: GGML_TYPE.Q5_0, [GGML_TYPE.Q5_K]: GGML_TYPE.Q5_1, [GGML_TYPE.Q6_K]: GGML_TYPE.Q8_0,
  };
  const f = fallback[type] ?? GGML_TYPE.Q8_0;
  return rowLength % ggmlType(f)!.blockSize === 0 ? f : GGML_TYPE.F16;
}

function planTensors(arch: string, shape: ResolvedShape, type: SynthTypeName, weightStd: number): TensorPlan[] {
  const table = archTables[arch];
  let cycle = 0;
  const matrixType = (kind: string): number => {
    if (type === 'cycle') return cycleTypes[cycle++ % cycleTypes.length];
    if (type === 'mixed') return kind === 'attn_v' || kind === 'ffn_down' || kind === 'output' ? GGML_TYPE.Q6_K : GGML_TYPE.Q4_K;
    return typeIds[type];
  };
  const embdType = type === 'cycle' ? GGML_TYPE.Q8_0 : type === 'mixed' ? GGML_TYPE.Q4_K : typeIds[type];
  const plan: TensorPlan[] = [];
  const add = (rule: (typeof table.pre)[number], i: number) => {
    if (rule.when && !rule.when(shape, i)) return;
    const s = rule.shape(shape, i);
    const name = rule.name.replace('{i}', String(i));
    const role: TensorRole = rule.role;
    const init = rule.init ?? ROLE_INIT[role];
    if (role === 'matrix') plan.push({ name, shape: s, type: fitType(matrixType(rule.kind ?? name), s[0]), role, mean: init === 'weight' ? 0 : init.mean, std: init === 'weight' ? weightStd : init.std });
    else if (role === 'embd') plan.push({ name, shape: s, type: fitType(embdType, s[0]), role, mean: 0, std: 1 });
    else plan.push({ name, shape: s, type: F32, role, mean: (init as { mean: number }).mean, std: (init as { std: number }).std });
  };
  for (const rule of table.pre) add(rule, -1);
  for (let l = 0; l < shape.nLayer; l++) for (const rule of table.block) add(rule, l);
  for (const rule of table.post) add(rule, -1);
  return plan;
}

const u32 = (key: string, value: number): GgufMetadataEntry => ({ key, type: GGUF_VALUE.UINT32, value });
const str = (key: string, value: string): GgufMetadataEntry => ({ key, type: GGUF_VALUE.STRING, value });

export function vocabPath(name: SynthShape['vocab']): string {
  const p = path.join(llamaSourceDir(), 'models', `ggml-vocab-${name}.gguf`);
  if (!existsSync(p)) throw new MathneuroError('ENOENT', `vocabulary ${p} not found: run npm install (it unpacks the llama.cpp source)`);
  return p;
}

/** The shape of `arch` for a preset name or fields over its tiny preset, with every field set. */
export function resolveShape(arch: string, shape: string | Partial<SynthShape> | undefined, untiedOutput?: boolean): Required<SynthShape> {
  const table = archTables[arch];
  if (!table) throw new MathneuroError('EUSAGE', `unknown architecture "${arch}" (${Object.keys(archTables).join(', ')})`);
  const preset = typeof shape === 'string' || shape === undefined ? table.shapes[shape ?? 'tiny'] : { ...table.shapes.tiny, ...shape };
  if (!preset) throw new MathneuroError('EUSAGE', `unknown shape "${String(shape)}" for ${arch} (${Object.keys(table.shapes).join(', ')})`);
  const base = { nExpert: 0, nExpertUsed: 0, untiedOutput: true, ...SHAPE_DEFAULTS, ...table.defaults, ...preset } as Required<SynthShape>;
  // explicit shape fields win over the architecture's defaults
  const merged: Required<SynthShape> = { ...base, ...(typeof shape === 'object' ? shape : {}), untiedOutput: untiedOutput ?? (typeof shape === 'object' && shape.untiedOutput !== undefined ? shape.untiedOutput : base.untiedOutput) };
  if (!merged.nFfExp) merged.nFfExp = merged.nFf;
  return merged;
}

export async function synthModel(options: SynthOptions): Promise<SynthResult> {
  const arch = options.arch ?? 'llama';
  const shape = resolveShape(arch, options.shape, options.untiedOutput);
  const table = archTables[arch];
  const type = options.type ?? 'mixed';
  if (type !== 'mixed' && type !== 'cycle' && !(type in typeIds)) throw new MathneuroError('EUSAGE', `unknown type "${type}" (${[...Object.keys(typeIds), 'mixed', 'cycle'].join(', ')})`);
  if (shape.nEmbd % shape.nHead !== 0 || shape.nHead % shape.nHeadKv !== 0) throw new MathneuroError('EUSAGE', 'n_embd must divide by n_head and n_head by n_head_kv');
  const seed = options.seed ?? 0;
  const out = path.resolve(options.out);
  if (existsSync(out) && !options.overwrite) throw new MathneuroError('EEXIST', `${out} exists (use --force to overwrite)`);

  const native = loadNative();
  const vocab = readGgufSync(vocabPath(shape.vocab));
  const tokens = vocab.metadata.get('tokenizer.ggml.tokens');
  const nVocab = Array.isArray(tokens) ? tokens.length : 0;
  if (nVocab === 0) throw new MathneuroError('EBADGGUF', `${vocab.path} has no tokenizer.ggml.tokens`);
  const weightStd = options.weightStd ?? 0.02 * Math.sqrt(1024 / shape.nEmbd);
  const resolved: ResolvedShape = { ...shape, nVocab };
  const plan = planTensors(arch, resolved, type, weightStd);

  const archKey = (key: string, v: { type: number; value: unknown; arrayType?: number }): GgufMetadataEntry => ({ key: `${arch}.${key}`, ...v } as GgufMetadataEntry);
  const shapeLabel = typeof options.shape === 'string' ? options.shape : 'custom';
  const metadata: GgufMetadataEntry[] = [
    str('general.architecture', arch),
    str('general.name', `mathneuro-synth-${arch === 'llama' ? '' : `${arch}-`}${shapeLabel}-${type}-seed${seed}`),
    str('general.description', 'random weights written by mathneuro synth'),
    u32('general.file_type', 0),
    ...table.metadata(resolved).map(([k, v]) => archKey(k, v)),
    u32('mathneuro.synth.seed', seed),
    str('mathneuro.synth.type', type),
    ...(table.lateMetadata?.(resolved) ?? []).map(([k, v]) => archKey(k, v)),
  ];
  for (const e of vocab.metadataEntries) if (e.key.startsWith('tokenizer.')) metadata.push(e);

  const { header, tensors } = native.ggufBuildHeader({ metadata, tensors: plan.map((t) => ({ name: t.name, type: t.type, shape: t.shape })) });
  const alignment = 32;
  const totalBytes = header.length + tensors.reduce((a, t) => Math.max(a, t.offset + t.byteSize), 0);

  await writeGgufFile(out, header, tensors, (put) => {
    const rng = new Random(seed);
    let bytesWritten = header.length;
    const chunkElems = 1 << 22;
    for (let ti = 0; ti < plan.length; ti++) {
      const t = plan[ti];
      const rowLength = t.shape[0];
      const rows = t.shape.slice(1).reduce((a, b) => a * b, 1);
      const rowsPerChunk = Math.max(1, Math.floor(chunkElems / rowLength));
      for (let r = 0; r < rows; r += rowsPerChunk) {
        const n = Math.min(rowsPerChunk, rows - r);
        const values = new Float32Array(n * rowLength);
        rng.fillNormal(values, t.mean, t.std);
        const bytes = native.ggufQuantizeRows(t.type, values, rowLength);
        put(ti, bytes);
        bytesWritten += bytes.length;
        options.onProgress?.({ tensorsDone: ti, tensorCount: plan.length, bytesWritten, totalBytes });
      }
    }
  }, { alignment });
  const info = readGgufSync(out);
  const tensorTypes: Record<string, string> = {};
  for (const t of info.tensors) tensorTypes[t.name] = t.typeName;
  return {
    path: out, bytes: info.fileSize, tensorCount: info.tensors.length,
    parameterCount: info.tensors.reduce((a, t) => a + t.numel, 0), arch, shape, type, seed, tensorTypes,
  };
}
