// `mathneuro synth`: random-weight llama-architecture GGUF models of realistic shapes and types,
// written with ggml's gguf and quantization code. Tests, benchmarks and first-time users use them.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { MathneuroError } from './errors.ts';
import { readGgufSync, type GgufMetadataEntry } from './gguf/reader.ts';
import { GGML_TYPE, GGUF_VALUE, ggmlType } from './gguf/types.ts';
import { llamaSourceDir, loadNative } from './native.ts';
import { writeGgufFile } from './gguf/writer.ts';

export type SynthShapeName = 'tiny' | 'moe-tiny' | 'qwen-0.5b' | 'llama-1b';
export type SynthTypeName = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_k' | 'q5_k' | 'q6_k' | 'mixed' | 'cycle';

export interface SynthShape {
  nEmbd: number; nFf: number; nLayer: number; nHead: number; nHeadKv: number; nCtx: number;
  /** vocabulary GGUF in llama.cpp's models/ (tokenizer metadata copied from it) */
  vocab: 'llama-spm' | 'llama-bpe' | 'qwen2';
  /** experts per MoE layer (0 = dense) and experts used per token */
  nExpert: number; nExpertUsed: number;
  /** a separate output head (true) or tied to token_embd (false) */
  untiedOutput: boolean;
}

export const synthShapes: Record<SynthShapeName, SynthShape> = {
  tiny: { nEmbd: 256, nFf: 512, nLayer: 2, nHead: 4, nHeadKv: 2, nCtx: 512, vocab: 'llama-spm', nExpert: 0, nExpertUsed: 0, untiedOutput: true },
  'moe-tiny': { nEmbd: 256, nFf: 256, nLayer: 2, nHead: 4, nHeadKv: 2, nCtx: 512, vocab: 'llama-spm', nExpert: 4, nExpertUsed: 2, untiedOutput: true },
  // Qwen2.5-0.5B's shape (on the llama architecture, without q/k/v biases), with Qwen2's tokenizer
  'qwen-0.5b': { nEmbd: 896, nFf: 4864, nLayer: 24, nHead: 14, nHeadKv: 2, nCtx: 4096, vocab: 'qwen2', nExpert: 0, nExpertUsed: 0, untiedOutput: false },
  // Llama-3.2-1B's shape and tokenizer
  'llama-1b': { nEmbd: 2048, nFf: 8192, nLayer: 16, nHead: 32, nHeadKv: 8, nCtx: 4096, vocab: 'llama-bpe', nExpert: 0, nExpertUsed: 0, untiedOutput: false },
};

export interface SynthOptions {
  /** output path; written to a temporary file beside it and renamed at the end */
  out: string;
  shape?: SynthShapeName | Partial<SynthShape>;
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
  path: string; bytes: number; tensorCount: number; parameterCount: number; shape: SynthShape; type: SynthTypeName; seed: number;
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

interface TensorPlan { name: string; shape: number[]; type: number; role: 'matrix' | 'norm' | 'embd' | 'router'; mean: number; std: number }

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

function planTensors(shape: SynthShape, type: SynthTypeName, nVocab: number, weightStd: number): TensorPlan[] {
  const { nEmbd, nFf, nLayer, nHead, nHeadKv, nExpert } = shape;
  const headDim = nEmbd / nHead;
  const nEmbdKv = headDim * nHeadKv;
  let cycle = 0;
  const matrixType = (kind: string): number => {
    if (type === 'cycle') return cycleTypes[cycle++ % cycleTypes.length];
    if (type === 'mixed') return kind === 'attn_v' || kind === 'ffn_down' || kind === 'output' ? GGML_TYPE.Q6_K : GGML_TYPE.Q4_K;
    return typeIds[type];
  };
  const plan: TensorPlan[] = [];
  const mat = (name: string, kind: string, s: number[]) => plan.push({ name, shape: s, type: fitType(matrixType(kind), s[0]), role: 'matrix', mean: 0, std: weightStd });
  const embdType = type === 'cycle' ? GGML_TYPE.Q8_0 : type === 'mixed' ? GGML_TYPE.Q4_K : typeIds[type];
  plan.push({ name: 'token_embd.weight', shape: [nEmbd, nVocab], type: fitType(embdType, nEmbd), role: 'embd', mean: 0, std: 1 });
  for (let l = 0; l < nLayer; l++) {
    const b = `blk.${l}`;
    // norm weights around 1 with spread, so a test that recomputes RMSNorm sees them matter
    plan.push({ name: `${b}.attn_norm.weight`, shape: [nEmbd], type: GGML_TYPE.F32, role: 'norm', mean: 1, std: 0.2 });
    mat(`${b}.attn_q.weight`, 'attn_q', [nEmbd, nEmbd]);
    mat(`${b}.attn_k.weight`, 'attn_k', [nEmbd, nEmbdKv]);
    mat(`${b}.attn_v.weight`, 'attn_v', [nEmbd, nEmbdKv]);
    mat(`${b}.attn_output.weight`, 'attn_output', [nEmbd, nEmbd]);
    plan.push({ name: `${b}.ffn_norm.weight`, shape: [nEmbd], type: GGML_TYPE.F32, role: 'norm', mean: 1, std: 0.2 });
    if (nExpert > 0) {
      plan.push({ name: `${b}.ffn_gate_inp.weight`, shape: [nEmbd, nExpert], type: GGML_TYPE.F32, role: 'router', mean: 0, std: 0.5 });
      mat(`${b}.ffn_gate_exps.weight`, 'ffn_gate', [nEmbd, nFf, nExpert]);
      mat(`${b}.ffn_up_exps.weight`, 'ffn_up', [nEmbd, nFf, nExpert]);
      mat(`${b}.ffn_down_exps.weight`, 'ffn_down', [nFf, nEmbd, nExpert]);
    } else {
      mat(`${b}.ffn_gate.weight`, 'ffn_gate', [nEmbd, nFf]);
      mat(`${b}.ffn_up.weight`, 'ffn_up', [nEmbd, nFf]);
      mat(`${b}.ffn_down.weight`, 'ffn_down', [nFf, nEmbd]);
    }
  }
  plan.push({ name: 'output_norm.weight', shape: [nEmbd], type: GGML_TYPE.F32, role: 'norm', mean: 1, std: 0.2 });
  if (shape.untiedOutput) mat('output.weight', 'output', [nEmbd, nVocab]);
  return plan;
}

const u32 = (key: string, value: number): GgufMetadataEntry => ({ key, type: GGUF_VALUE.UINT32, value });
const f32 = (key: string, value: number): GgufMetadataEntry => ({ key, type: GGUF_VALUE.FLOAT32, value });
const str = (key: string, value: string): GgufMetadataEntry => ({ key, type: GGUF_VALUE.STRING, value });

export function vocabPath(name: SynthShape['vocab']): string {
  const p = path.join(llamaSourceDir(), 'models', `ggml-vocab-${name}.gguf`);
  if (!existsSync(p)) throw new MathneuroError('ENOENT', `vocabulary ${p} not found: run npm install (it unpacks the llama.cpp source)`);
  return p;
}

export async function synthModel(options: SynthOptions): Promise<SynthResult> {
  const base = typeof options.shape === 'string' || options.shape === undefined ? synthShapes[(options.shape ?? 'tiny') as SynthShapeName] : { ...synthShapes.tiny, ...options.shape };
  if (!base) throw new MathneuroError('EUSAGE', `unknown shape "${String(options.shape)}" (${Object.keys(synthShapes).join(', ')})`);
  const shape: SynthShape = { ...base, untiedOutput: options.untiedOutput ?? base.untiedOutput };
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
  const plan = planTensors(shape, type, nVocab, weightStd);

  const arch = 'llama';
  const metadata: GgufMetadataEntry[] = [
    str('general.architecture', arch),
    str('general.name', `mathneuro-synth-${typeof options.shape === 'string' ? options.shape : 'custom'}-${type}-seed${seed}`),
    str('general.description', 'random weights written by mathneuro synth'),
    u32('general.file_type', 0),
    u32(`${arch}.context_length`, shape.nCtx),
    u32(`${arch}.embedding_length`, shape.nEmbd),
    u32(`${arch}.block_count`, shape.nLayer),
    u32(`${arch}.feed_forward_length`, shape.nFf),
    u32(`${arch}.attention.head_count`, shape.nHead),
    u32(`${arch}.attention.head_count_kv`, shape.nHeadKv),
    u32(`${arch}.rope.dimension_count`, shape.nEmbd / shape.nHead),
    f32(`${arch}.rope.freq_base`, 10000),
    f32(`${arch}.attention.layer_norm_rms_epsilon`, 1e-5),
    u32(`${arch}.vocab_size`, nVocab),
    u32('mathneuro.synth.seed', seed),
    str('mathneuro.synth.type', type),
  ];
  if (shape.nExpert > 0) metadata.push(u32(`${arch}.expert_count`, shape.nExpert), u32(`${arch}.expert_used_count`, shape.nExpertUsed));
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
    parameterCount: info.tensors.reduce((a, t) => a + t.numel, 0), shape, type, seed, tensorTypes,
  };
}
