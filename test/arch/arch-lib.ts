// Shared by the architecture tests and scripts/arch-table.ts: the synthesized model of each
// architecture, the float64 reference of block 0's input, KL of next-token distributions and the
// coverage comparison (matmuls seen by the eval callback vs the tensors MathNeuro scores).
import { closeSync, existsSync, mkdirSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { readGgufSync, type GgufInfo } from '../../src/gguf/reader.ts';
import { GGML_TYPE } from '../../src/gguf/types.ts';
import { tensorRoles } from '../../src/gguf/tensor-roles.ts';
import { archTables, synthModel, type SynthTypeName } from '../../src/synth.ts';
import type { SeenMatmul } from '../../src/stats/index.ts';
import type { Stats } from '../../src/stats/types.ts';
import { fixtureDir } from '../helpers/fixtures.ts';

/** The architectures under test, in the README table's order. */
export const ARCHS = ['llama', 'qwen2', 'qwen3', 'gemma2', 'gemma3', 'phi3', 'qwen2moe', 'qwen3moe', 'deepseek2', 'granitehybrid', 'qwen3next'] as const;

/**
 * The test size of each architecture: its tiny preset (2 blocks, n_embd 64), with llama-spm's 32k
 * vocabulary (a few MB); phi3 keeps Phi-3's own (llama.cpp's phi3 vocabulary code looks up <|end|>).
 * llama's own tiny preset is n_embd 256: the tests use 64 here too.
 */
export async function archModel(arch: string, type: SynthTypeName = 'f32', seed = 1): Promise<string> {
  const out = path.join(fixtureDir, `arch-${arch}-tiny-${type}-s${seed}.gguf`);
  if (!existsSync(out)) {
    mkdirSync(fixtureDir, { recursive: true });
    const shape = arch === 'llama' ? { nEmbd: 64, nFf: 128 } : arch === 'phi3' ? {} : { vocab: 'llama-spm' as const };
    await synthModel({ arch, shape, type, seed, out, overwrite: true });
  }
  return out;
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/** One row of an F32/F16 tensor, decoded in float64. */
export function readRow(info: GgufInfo, name: string, row: number): Float64Array {
  const tensor = info.tensorByName.get(name)!;
  const n = tensor.shape[0];
  const elem = tensor.type === GGML_TYPE.F32 ? 4 : 2;
  const buf = Buffer.alloc(n * elem);
  const fd = openSync(info.path, 'r');
  try { readSync(fd, buf, 0, buf.length, tensor.absoluteOffset + row * n * elem); } finally { closeSync(fd); }
  const out = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    if (tensor.type === GGML_TYPE.F32) out[j] = buf.readFloatLE(j * 4);
    else if (tensor.type === GGML_TYPE.F16) out[j] = halfToFloat(buf.readUInt16LE(j * 2));
    else throw new Error(`unsupported type in reference: ${tensor.typeName}`);
  }
  return out;
}

/**
 * Statistics of block 0's first matmul input, in float64 from the GGUF's bytes: the token
 * embedding (times the architecture's embedding scale), RMSNorm, times attn_norm.
 */
export function referenceLayer0(info: GgufInfo, arch: string, tokenLists: Int32Array[]) {
  const table = archTables[arch];
  const eps = Number(info.metadata.get(`${arch}.attention.layer_norm_rms_epsilon`));
  const gain = readRow(info, 'blk.0.attn_norm.weight', 0);
  const n = gain.length;
  const scale = table.embedScale ? table.embedScale({ nEmbd: n } as never) : 1;
  const normSum = new Float64Array(n);
  const sum2 = new Float64Array(n);
  for (const tokens of tokenLists) {
    const sq = new Float64Array(n);
    for (const tok of tokens) {
      const x = readRow(info, 'token_embd.weight', tok).map((v) => v * scale);
      let ms = 0;
      for (let j = 0; j < n; j++) ms += x[j] * x[j];
      const s = 1 / Math.sqrt(ms / n + eps);
      for (let j = 0; j < n; j++) { const h = x[j] * s * gain[j]; sq[j] += h * h; }
    }
    for (let j = 0; j < n; j++) { normSum[j] += Math.sqrt(sq[j]); sum2[j] += sq[j]; }
  }
  return { normSum, sum2 };
}

export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1e-12, Math.abs(b[i])));
  return worst;
}

/** Mean over positions of KL(p || q) of two logit matrices (nTokens x nVocab), in float64. */
export function meanKl(p: Float32Array, q: Float32Array, nVocab: number): number {
  const rows = p.length / nVocab;
  let total = 0;
  const logSoftmax = (x: Float32Array, o: number) => {
    let max = -Infinity;
    for (let i = 0; i < nVocab; i++) max = Math.max(max, x[o + i]);
    let z = 0;
    for (let i = 0; i < nVocab; i++) z += Math.exp(x[o + i] - max);
    const lz = max + Math.log(z);
    const out = new Float64Array(nVocab);
    for (let i = 0; i < nVocab; i++) out[i] = x[o + i] - lz;
    return out;
  };
  for (let r = 0; r < rows; r++) {
    const lp = logSoftmax(p, r * nVocab), lq = logSoftmax(q, r * nVocab);
    let kl = 0;
    for (let i = 0; i < nVocab; i++) kl += Math.exp(lp[i]) * (lp[i] - lq[i]);
    total += kl;
  }
  return total / rows;
}

export interface Coverage {
  /** GGUF tensors the callback saw as src0 of a MUL_MAT / MUL_MAT_ID */
  seenWeights: string[];
  /** matmuls whose src0 is not a GGUF tensor (KQ, KQV, ...): not weights */
  seenOther: string[];
  /** GGUF tensors seen but not collected (must be none) */
  rejectedWeights: string[];
  /** tensors MathNeuro scores (tensor-roles) */
  scored: string[];
  /** tensors the roles call matmuls but excluded, with the reason */
  excludedSeen: { name: string; reason: string }[];
}

export function coverage(info: GgufInfo, matmuls: SeenMatmul[]): Coverage {
  const roles = tensorRoles(info);
  const inGguf = (n: string) => info.tensorByName.has(n);
  return {
    seenWeights: matmuls.filter((m) => inGguf(m.name)).map((m) => m.name).sort(),
    seenOther: matmuls.filter((m) => !inGguf(m.name)).map((m) => `${m.name} (${m.op})`).sort(),
    rejectedWeights: matmuls.filter((m) => inGguf(m.name) && !m.accepted).map((m) => m.name).sort(),
    scored: roles.filter((r) => r.scored).map((r) => r.name).sort(),
    excludedSeen: roles.filter((r) => !r.scored && r.matmul).map((r) => ({ name: r.name, reason: r.reason })),
  };
}

/** Per-expert checks of a MoE weight's statistics: experts used per token, columns present iff tokens. */
export function expertCounts(stats: Stats, name: string) {
  const w = stats.weights.get(name)!;
  const perExpert = Array.from(w.counts);
  let consistent = true;
  for (let e = 0; e < w.nMat; e++) {
    const cols = w.normSum.subarray(e * w.nIn, (e + 1) * w.nIn);
    if (cols.some((v) => v > 0) !== perExpert[e] > 0) consistent = false;
  }
  return { nMat: w.nMat, perExpert, total: perExpert.reduce((a, b) => a + b, 0), consistent };
}
