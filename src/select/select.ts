// Selection: which weights of a model are math-specific (MathNeuro) or chosen by a baseline.
// One tensor at a time: its stored bytes are read, dequantized and scored in native code
// (S = |W| * column weight, float64), and the exact top-K per matrix (or per row) comes back as
// bit masks. Every K of one call reuses the same scores.
import { availableParallelism } from 'node:os';
import { closeSync, openSync } from 'node:fs';
import { MathneuroError } from '../errors.ts';
import { mulberry32 } from '../core/random.ts';
import type { WeightStats } from '../stats/types.ts';
import type { GgufInfo, GgufTensorInfo } from '../gguf/reader.ts';
import { countBits, getBit, newMask, setBit } from './bits.ts';
import { fileViews, requireDequantizable, selectTopK, type FileAt } from '../core/codec.ts';
import { loadNative } from '../native.ts';
import { readExactly, readTensorBytes } from '../core/tensor-io.ts';

export type SelectionMethod = 'mathneuro' | 'wanda' | 'random' | 'wanda-row';
export const SELECTION_METHODS: readonly SelectionMethod[] = ['mathneuro', 'wanda', 'random', 'wanda-row'];

/** Per-column statistics of one weight, as the statistics files hold them (src/stats). */
export type ColumnStatistics = WeightStats;

export interface StatisticsSource {
  weights: Map<string, ColumnStatistics>;
}

export const MIN_TOP_K = 0.0001;
export const MAX_TOP_K = 0.5;

/** floor(n * K), robust to the binary representation of K (0.29 * 100 is 28.999999999999996). */
export function topKCount(n: number, fraction: number): number {
  return Math.floor(Number((n * fraction).toPrecision(12)));
}

export function validateTopK(topK: number[]): void {
  if (topK.length === 0) throw new MathneuroError('EUSAGE', 'at least one K is needed');
  for (const k of topK) {
    if (!Number.isFinite(k) || k < MIN_TOP_K || k > MAX_TOP_K) throw new MathneuroError('EUSAGE', `K must be a fraction in [${MIN_TOP_K}, ${MAX_TOP_K}], got ${k}`);
  }
}

/** The layer a tensor belongs to: its block number, or its name for tensors outside the blocks. */
export function layerOf(name: string): string {
  const m = /^blk\.(\d+)\./.exec(name);
  return m ? m[1] : name.replace(/\.weight$/, '');
}

/** The MoE router is a linear layer too, but changing it changes routing, not the experts. */
export const EXCLUDED_BLOCK_WEIGHTS = /(^|\.)(ffn_gate_inp|ffn_gate_inp_shexp|exp_probs_b)\.weight$|_norm\.weight$|(^|\.)norm\.weight$/;

export interface ScoredTensor {
  tensor: GgufTensorInfo;
  stats: ColumnStatistics;
  /** rows per matrix (ne1) */
  rows: number;
  /** matrices per tensor (ne2 for experts, else 1) */
  matrices: number;
}

export interface SkippedTensor { name: string; reason: string }

export interface TensorPlan { scored: ScoredTensor[]; skipped: SkippedTensor[] }

/**
 * The tensors a selection scores: the linear weights of the blocks (attention and MLP, experts
 * included) that the statistics saw, and the output head when asked and when it is its own tensor.
 * Never token embeddings, norms, biases or the MoE router.
 */
export function planTensors(model: GgufInfo, math: StatisticsSource, options: { includeOutput?: boolean } = {}): TensorPlan {
  const scored: ScoredTensor[] = [];
  const skipped: SkippedTensor[] = [];
  if (options.includeOutput && !model.tensorByName.has('output.weight')) {
    throw new MathneuroError('EUSAGE', 'the model has no output.weight tensor (its output head is tied to the token embeddings), so it cannot be selected');
  }
  for (const tensor of model.tensors) {
    const isBlock = tensor.name.startsWith('blk.') && tensor.name.endsWith('.weight');
    const isOutput = tensor.name === 'output.weight';
    if (!isBlock && !(isOutput && options.includeOutput)) continue;
    if (tensor.shape.length < 2 || tensor.shape.length > 3 || EXCLUDED_BLOCK_WEIGHTS.test(tensor.name)) continue;
    const stats = math.weights.get(tensor.name);
    if (!stats && isOutput) throw new MathneuroError('ESTATS', 'the statistics have no entry for output.weight: collect them with --include-output (mathneuro stats --include-output; by default a forward pass stops before the output head)');
    if (!stats) { skipped.push({ name: tensor.name, reason: 'no statistics' }); continue; }
    const matrices = tensor.shape[2] ?? 1;
    if (stats.nIn !== tensor.shape[0] || stats.nMat !== matrices) {
      throw new MathneuroError('ESTATS', `statistics of ${tensor.name} are for ${stats.nIn} inputs x ${stats.nMat} matrices, the model has ${tensor.shape[0]} x ${matrices}: were they collected on this model?`);
    }
    scored.push({ tensor, stats, rows: tensor.shape[1], matrices });
  }
  if (scored.length === 0) throw new MathneuroError('ESTATS', 'the statistics cover none of the model\'s block weights: were they collected on this model?');
  return { scored, skipped };
}

export interface SelectOptions {
  /** default 'mathneuro' */
  method?: SelectionMethod;
  /** fractions in [0.0001, 0.5]; several reuse the same scores */
  topK: number[];
  math: StatisticsSource;
  /** required by mathneuro and random (whose counts are MathNeuro's) */
  general?: StatisticsSource;
  /** include output.weight when it is its own tensor (default false) */
  includeOutput?: boolean;
  /** seed of the random baseline (default 0) */
  seed?: number;
  /** groups of at least this many weights use the sampled one-pass select (default 2^16; tests lower it) */
  radixMinGroup?: number;
  /** threads for scoring (default: all cores); the selection does not depend on it */
  threads?: number;
  onProgress?: (p: { done: number; total: number; tensor: string }) => void;
  signal?: AbortSignal;
}

export interface TensorSelection {
  tensor: GgufTensorInfo;
  matrices: number;
  /** one mask per K: bit i set when flat weight i is selected */
  masks: Uint8Array[];
  /** selected weights per K */
  counts: number[];
  /** selected weights per K and matrix */
  countsPerMatrix: number[][];
  /** the stored bytes of the tensor, when options keep them (patching reuses them) */
  bytes?: Uint8Array;
}

/**
 * Mean square input per column: sum2 / tokens (0 where no token was seen), for every matrix
 * (nIn * nMat values) or for one.
 */
export function meanSquares(stats: ColumnStatistics, matrix?: number): Float64Array {
  const first = matrix ?? 0, last = matrix ?? stats.nMat - 1;
  const out = new Float64Array(stats.nIn * (last - first + 1));
  const perColumn = stats.counts.length === stats.nIn * stats.nMat;
  for (let m = first; m <= last; m++) {
    for (let j = 0; j < stats.nIn; j++) {
      const i = m * stats.nIn + j;
      const count = perColumn ? stats.counts[i] : stats.counts[m];
      out[i - first * stats.nIn] = count > 0 ? stats.sum2[i] / count : 0;
    }
  }
  return out;
}

/** Column weights of Wanda: sqrt(sum2 / tokens) per column. */
export function wandaColumnWeights(stats: ColumnStatistics): Float64Array {
  return meanSquares(stats).map(Math.sqrt);
}

/** A string hash (FNV-1a), for the random baseline's per-tensor seeds (PRNG: src/core/random.ts). */

export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) { h ^= text.charCodeAt(i); h = Math.imul(h, 0x01000193); }
  return h >>> 0;
}

/**
 * `count` distinct uniformly random positions in [begin, begin + length), set in mask. Seeded by
 * (seed, tensor, matrix, K index) so that every run, and every K, is reproducible on its own.
 */
export function markRandom(mask: Uint8Array, begin: number, length: number, count: number, key: string): void {
  if (count <= 0) return;
  const next = mulberry32(fnv1a(key));
  const uniform = () => (next() * 2 ** 21 + (next() >>> 11)) / 2 ** 53;
  const complement = count > length / 2;
  const want = complement ? length - count : count;
  const chosen = newMask(length);
  let got = 0;
  while (got < want) {
    const i = Math.floor(uniform() * length);
    if (!getBit(chosen, i)) { setBit(chosen, i); got++; }
  }
  for (let i = 0; i < length; i++) if (getBit(chosen, i) !== complement) setBit(mask, begin + i);
}

export function checkMethod(options: SelectOptions): SelectionMethod {
  const method = options.method ?? 'mathneuro';
  if (!SELECTION_METHODS.includes(method)) throw new MathneuroError('EUSAGE', `unknown method "${method}" (${SELECTION_METHODS.join(', ')})`);
  validateTopK(options.topK);
  if ((method === 'mathneuro' || method === 'random') && !options.general) throw new MathneuroError('EUSAGE', `method ${method} needs general statistics`);
  return method;
}

/** Selects the weights of one tensor, given its stored bytes (or where they lie in an open file, when fileViews), for every K of the options. */
export async function selectTensor(scored: ScoredTensor, bytes: Uint8Array | FileAt, options: SelectOptions): Promise<TensorSelection> {
  const method = checkMethod(options);
  const { tensor, rows, matrices } = scored;
  const nIn = tensor.shape[0];
  const perMatrix = nIn * rows;
  const needsGeneral = method === 'mathneuro' || method === 'random';
  let general: ColumnStatistics | undefined;
  if (needsGeneral) {
    general = options.general!.weights.get(tensor.name);
    if (!general) throw new MathneuroError('ESTATS', `the general statistics have no entry for ${tensor.name} (the math statistics do): were both collected on this model?`);
    if (general.nIn !== nIn || general.nMat !== matrices) throw new MathneuroError('ESTATS', `general statistics of ${tensor.name} do not match the model's shape`);
  }
  const request = { type: tensor.type, ...(bytes instanceof Uint8Array ? { data: bytes } : { read: bytes }), nIn, rows, matrices, radixMinGroup: options.radixMinGroup, threads: options.threads };
  let masks: Uint8Array[];
  if (method === 'wanda-row') {
    const counts = options.topK.map((k) => topKCount(nIn, k));
    masks = (await selectTopK({ ...request, colWeights: [wandaColumnWeights(scored.stats)], groupBy: 'row', counts }))[0];
  } else {
    const counts = options.topK.map((k) => topKCount(perMatrix, k));
    const colWeights = needsGeneral ? [scored.stats.normSum, general!.normSum] : [scored.stats.normSum];
    // math top-K less general top-K, on the worker (the JS AND NOT cost 0.4 s per K on llama-1b)
    masks = (await selectTopK({ ...request, colWeights, groupBy: 'matrix', counts, subtract: needsGeneral }))[0];
    if (method === 'random') {
      masks = masks.map((mathSpecificMask, q) => {
        const randomMask = newMask(tensor.numel);
        for (let m = 0; m < matrices; m++) {
          const count = countBits(mathSpecificMask, m * perMatrix, (m + 1) * perMatrix);
          markRandom(randomMask, m * perMatrix, perMatrix, count, `${options.seed ?? 0}:${tensor.name}:${m}:${options.topK[q]}`);
        }
        return randomMask;
      });
    }
  }
  return tensorSelection(tensor, matrices, masks);
}

/** A tensor's selection from its masks (one per K): the selected weights per K and per matrix counted. */
export function tensorSelection(tensor: GgufTensorInfo, matrices: number, masks: Uint8Array[]): TensorSelection {
  const perMatrix = tensor.numel / matrices;
  // in the shim: JS took ~50 ms per K for llama-1b's 121.6 MB of mask bits
  const countsPerMatrix = masks.map((mask) => Array.from(loadNative().countMaskBits(mask, tensor.numel, perMatrix)));
  return { tensor, matrices, masks, counts: countsPerMatrix.map((c) => c.reduce((a, b) => a + b, 0)), countsPerMatrix };
}

/**
 * Selects, tensor by tensor, the weights of the method for every K. The model file is read one
 * tensor at a time; nothing else of it is held in memory.
 */
export async function* selectTensors(model: GgufInfo, plan: TensorPlan, options: SelectOptions & { keepBytes?: boolean }): AsyncGenerator<TensorSelection> {
  checkMethod(options);
  for (const s of plan.scored) requireDequantizable(s.tensor.type, s.tensor.name);
  // a split model's tensors lie in several files: one descriptor per file, opened when first needed
  const fds = new Map<string, number>();
  const fdOf = (t: GgufTensorInfo) => {
    const file = t.file ?? model.path;
    let fd = fds.get(file);
    if (fd === undefined) { fd = openSync(file, 'r'); fds.set(file, fd); }
    return fd;
  };
  // the worker views each tensor in the file (mapped: no copy, nothing read on this thread); else
  // one buffer of the largest tensor, reused (unless the caller keeps the bytes)
  const views = fileViews && !options.keepBytes;
  const shared = options.keepBytes || views ? undefined : new Uint8Array(plan.scored.reduce((m, s) => Math.max(m, s.tensor.byteSize), 0));
  // Viewed in the file (or read whole), two tensors are selected at a time (the next one starts
  // before this one is awaited): the two calls fill each other's single-threaded parts (mapping the
  // tensor, the sample's windows, the thresholds, the masks' allocation), and the consumer's work
  // overlaps the next selection. Each call runs on its own worker with its own scratch, on half
  // the threads. The masks do not depend on the threads.
  // One shared buffer: one tensor at a time.
  const start = (s: ScoredTensor, i: number) => {
    let bytes: Uint8Array | FileAt;
    const fd = fdOf(s.tensor);
    if (views) bytes = { fd, offset: s.tensor.absoluteOffset };
    else if (shared) { bytes = shared.subarray(0, s.tensor.byteSize); readExactly(fd, bytes, s.tensor.absoluteOffset, `tensor ${s.tensor.name}`); }
    else bytes = readTensorBytes(fd, s.tensor);
    const selection = selectTensor(s, bytes, ahead ? halves[i % 2] : options).then((r) => { if (options.keepBytes) r.bytes = bytes as Uint8Array; return r; });
    selection.catch(() => { /* awaited in order below, or on the way out */ });
    return selection;
  };
  const threads = options.threads ?? availableParallelism();
  const ahead = !shared && threads >= 2;
  // the threads shared by the two calls in flight (calls i and i + 1 take the two halves)
  const halves = [{ ...options, threads: Math.ceil(threads / 2) }, { ...options, threads: Math.floor(threads / 2) }];
  let next: Promise<TensorSelection> | undefined;
  try {
    let done = 0;
    for (let i = 0; i < plan.scored.length; i++) {
      const s = plan.scored[i];
      if (options.signal?.aborted) throw new MathneuroError('EABORT', 'selection cancelled');
      options.onProgress?.({ done, total: plan.scored.length, tensor: s.tensor.name });
      const current = next ?? start(s, i);
      next = ahead && i + 1 < plan.scored.length ? start(plan.scored[i + 1], i + 1) : undefined;
      const selection = await current;
      done++;
      yield selection;
    }
    options.onProgress?.({ done, total: plan.scored.length, tensor: '' });
  } finally {
    // a selection still in flight reads through these descriptors: let it end before they are closed
    if (next) await next.catch(() => undefined);
    for (const fd of fds.values()) closeSync(fd);
  }
}

export interface SelectionSummaryTensor { name: string; type: string; shape: number[]; numel: number; layer: string; counts: number[] }

export interface SelectionSummary {
  method: SelectionMethod;
  topK: number[];
  /** all parameters of the model (every tensor) */
  modelParameters: number;
  /** parameters of the scored tensors */
  scoredParameters: number;
  /** per K: selected weights, their share of all and of scored parameters */
  totals: { topK: number; selected: number; fractionOfModel: number; fractionOfScored: number }[];
  perLayer: { layer: string; parameters: number; counts: number[] }[];
  tensors: SelectionSummaryTensor[];
  skipped: SkippedTensor[];
}

/** Accumulates counts per tensor, per layer and overall while selections stream by. */
export class SelectionSummaryBuilder {
  private readonly tensors: SelectionSummaryTensor[] = [];
  constructor(private readonly model: GgufInfo, private readonly method: SelectionMethod, private readonly topK: number[], private readonly skipped: SkippedTensor[]) {}

  add(selection: TensorSelection): void {
    const t = selection.tensor;
    this.tensors.push({ name: t.name, type: t.typeName, shape: t.shape, numel: t.numel, layer: layerOf(t.name), counts: selection.counts });
  }

  build(): SelectionSummary {
    const modelParameters = this.model.tensors.reduce((a, t) => a + t.numel, 0);
    const scoredParameters = this.tensors.reduce((a, t) => a + t.numel, 0);
    const layers = new Map<string, { layer: string; parameters: number; counts: number[] }>();
    for (const t of this.tensors) {
      let l = layers.get(t.layer);
      if (!l) { l = { layer: t.layer, parameters: 0, counts: this.topK.map(() => 0) }; layers.set(t.layer, l); }
      l.parameters += t.numel;
      t.counts.forEach((c, q) => { l!.counts[q] += c; });
    }
    const totals = this.topK.map((topK, q) => {
      const selected = this.tensors.reduce((a, t) => a + t.counts[q], 0);
      return { topK, selected, fractionOfModel: modelParameters ? selected / modelParameters : 0, fractionOfScored: scoredParameters ? selected / scoredParameters : 0 };
    });
    const perLayer = [...layers.values()].sort((a, b) => {
      const na = Number(a.layer), nb = Number(b.layer);
      if (Number.isInteger(na) && Number.isInteger(nb)) return na - nb;
      return Number.isInteger(na) ? -1 : Number.isInteger(nb) ? 1 : a.layer.localeCompare(b.layer);
    });
    return { method: this.method, topK: this.topK, modelParameters, scoredParameters, totals, perLayer, tensors: this.tensors, skipped: this.skipped };
  }
}
