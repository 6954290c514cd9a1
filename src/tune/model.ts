// One model loaded once (without mmap) whose scored weights are patched in memory, candidate after
// candidate: the patched bytes come from the code that patches files (patchTensorInPlace on the
// tensor's original bytes, with the masks of one selection pass for every K), written over the
// loaded weights with ggml_backend_tensor_set (native/model.cpp setWeight); restore writes the
// original bytes back. Then forward passes score the candidate: the objective (NLL of answer tokens
// given the question) and, against the unpatched model's distributions computed once, the KL
// divergence and the NLL on general prompts.
import os from 'node:os';
import { closeSync, openSync } from 'node:fs';
import type { RequantizeStrategy } from '../core/codec.ts';
import { packMask, unpackMask, type PackedMask } from '../core/mask-codec.ts';
import { readExactly } from '../core/tensor-io.ts';
import { MathneuroError, asMathneuroError } from '../errors.ts';
import { klOfLogRows, logSoftmaxRow, logSumExpRow } from '../eval/divergence.ts';
import { checkModel, emitModelWarnings } from '../gguf/model-check.ts';
import { openModelSync, type GgufModel } from '../gguf/model.ts';
import { assertEncodable } from '../gguf/encodable.ts';
import type { GgufTensorInfo } from '../gguf/reader.ts';
import { loadNative, type NativeWeightAccess } from '../native.ts';
import { patchTensorInPlace } from '../patch/tensor-patch.ts';
import { planTensors, selectTensors, type ColumnStatistics, type SelectionMethod, type StatisticsSource, type TensorPlan } from '../select/select.ts';
import type { NativeModel } from '../stats/collect.ts';
import type { ObjectiveSample } from './tasks.ts';

export interface TuneModelOptions {
  nThreads?: number;
  nCtx?: number;
  nBatch?: number;
  nGpuLayers?: number;
  /** false: skip the semantic model checks (the validator still runs) */
  modelChecks?: boolean;
  /** KV cache type (default f16 as llama.cpp runs models; f32 in the tests' exact comparisons) */
  kvType?: 'f16' | 'f32';
  /** test hook: load with mmap (every setWeight is then an EMMAP error) */
  useMmap?: boolean;
}

type Native = NativeModel & NativeWeightAccess;

/** The model, opened once for in-memory patching: validated first, loaded without mmap. */
export class TuneModel {
  private constructor(readonly path: string, readonly gguf: GgufModel, readonly native: Native) {}

  static async open(path: string, options: TuneModelOptions = {}): Promise<TuneModel> {
    if (process.env.MATHNEURO_TEST_REFUSE_LOAD === '1') throw new MathneuroError('ELOAD', 'model load refused (MATHNEURO_TEST_REFUSE_LOAD=1: a test asserting that nothing runs the model)');
    const gguf = openModelSync(path);   // the validator (every shard): nothing reaches llama.cpp before it says yes
    emitModelWarnings(gguf, checkModel(gguf, { modelChecks: options.modelChecks }));
    const arch = gguf.metadata.get('general.architecture');
    const trainCtx = typeof arch === 'string' ? Number(gguf.metadata.get(`${arch}.context_length`) ?? 0) : 0;
    const nCtx = options.nCtx ?? Math.min(trainCtx || 4096, 4096);
    try {
      const native = await loadNative().loadModel(path, {
        nCtx, nBatch: options.nBatch ?? 512, nThreads: options.nThreads ?? os.availableParallelism(), nGpuLayers: options.nGpuLayers ?? 0,
        nSeqMax: 1, useMmap: options.useMmap ?? false, flashAttn: 'auto', kvType: options.kvType ?? 'f16',
      });
      return new TuneModel(path, gguf, native);
    } catch (e) {
      throw asMathneuroError(e, 'ELOAD');
    }
  }

  tokenize(text: string): Int32Array {
    assertEncodable(this.gguf, text, this.path);
    return this.native.tokenize(text, true);
  }

  async logits(tokens: Int32Array): Promise<{ logits: Float32Array; nVocab: number }> {
    try { return await this.native.logits(tokens); } catch (e) { throw asMathneuroError(e, 'EDECODE'); }
  }

  setWeight(name: string, bytes: Uint8Array): void {
    try { this.native.setWeight(name, bytes); } catch (e) { throw asMathneuroError(e, 'EPATCH'); }
  }

  info() { return this.native.info(); }
  dispose() { this.native.dispose(); }
}

/** Reads a tensor's stored bytes from its file (a split model's shard). */
function readTensor(model: GgufModel, t: GgufTensorInfo): Uint8Array {
  const fd = openSync(t.file ?? model.path, 'r');
  try {
    const out = new Uint8Array(t.byteSize);
    readExactly(fd, out, t.absoluteOffset, `tensor ${t.name}`);
    return out;
  } finally { closeSync(fd); }
}

export interface PatcherOptions {
  method: SelectionMethod;
  math: StatisticsSource;
  general?: StatisticsSource;
  strategy: RequantizeStrategy;
  threads?: number;
  seed?: number;
  /** the scored tensors' original bytes stay in memory up to this many bytes (default 4 GiB); beyond, they are read from the file when needed */
  maxResidentBytes?: number;
  /** the masks of one K are kept as they are up to this many bytes (default 256 MiB); beyond, Rice-coded */
  rawMaskBytes?: number;
  signal?: AbortSignal;
}

const key = (k: number) => k.toPrecision(12);
/** Tensors patched at once by apply (their native requantization overlaps). */
const APPLY_LANES = 4;
/** Masks of one K are kept as they are up to this many bytes by default (Rice-coded beyond, as selection files store them). */
const RAW_MASK_BYTES = 256 * 2 ** 20;

/**
 * The scored tensors of one model, their masks per K and their patched bytes per (K, scale), set
 * into a loaded TuneModel. Masks are kept as they are, or Rice-coded when large (as selection files store them).
 */
export class InMemoryPatcher {
  readonly plan: TensorPlan;
  private readonly originals = new Map<string, Uint8Array>();
  private readonly masks = new Map<string, Map<string, { raw?: Uint8Array; packed?: PackedMask; count: number }>>();
  private readonly scratch: Uint8Array[] = [];
  /** tensors whose loaded bytes are not the original ones now */
  private readonly dirty = new Set<string>();
  private resident = true;

  constructor(readonly gguf: GgufModel, readonly model: TuneModel | undefined, readonly options: PatcherOptions) {
    this.plan = planTensors(gguf, options.math);
    if (model) {
      // the loaded weights must be exactly the file's tensors: same type and byte size
      for (const s of this.plan.scored) {
        let w;
        try { w = model.native.weightInfo(s.tensor.name); } catch (e) { throw asMathneuroError(e, 'ELOAD'); }
        if (w.type !== s.tensor.type || w.nbytes !== s.tensor.byteSize) throw new MathneuroError('ELOAD', `${s.tensor.name}: llama.cpp holds type ${w.type}, ${w.nbytes} bytes; the file has type ${s.tensor.type}, ${s.tensor.byteSize} bytes`);
        if (!w.writable) throw new MathneuroError('EMMAP', 'the model was loaded with mmap: its weights cannot be changed in memory');
      }
    }
    const total = this.plan.scored.reduce((a, s) => a + s.tensor.byteSize, 0);
    this.resident = total <= (options.maxResidentBytes ?? 4 * 2 ** 30);
  }

  /** Selected weights of a K (after prepare). */
  selectedWeights(topK: number): number {
    let n = 0;
    for (const m of this.masks.get(key(topK))?.values() ?? []) n += m.count;
    return n;
  }

  /** One selection pass for every K not yet seen (the scores are computed once per tensor for all of them). */
  async prepare(topKs: number[]): Promise<void> {
    const fresh = [...new Set(topKs.map(key))].filter((k) => !this.masks.has(k)).map(Number);
    if (fresh.length === 0) return;
    const keep = this.resident && this.originals.size === 0;
    const raw = this.plan.scored.reduce((a, x) => a + Math.ceil(x.tensor.numel / 8), 0) <= (this.options.rawMaskBytes ?? RAW_MASK_BYTES);
    for (const k of fresh) this.masks.set(key(k), new Map());
    try {
      const packing: Promise<void>[] = [];
      for await (const sel of selectTensors(this.gguf, this.plan, {
        method: this.options.method, topK: fresh, math: this.options.math, general: this.options.general, seed: this.options.seed,
        threads: this.options.threads, signal: this.options.signal, keepBytes: keep,
      })) {
        if (keep && sel.bytes) this.originals.set(sel.tensor.name, sel.bytes);
        fresh.forEach((k, q) => {
          if (sel.counts[q] <= 0) return;
          if (raw) { this.masks.get(key(k))!.set(sel.tensor.name, { raw: sel.masks[q].slice(), count: sel.counts[q] }); return; }
          const entry: { packed?: PackedMask; count: number } = { count: sel.counts[q] };
          this.masks.get(key(k))!.set(sel.tensor.name, entry);
          const p = packMask(sel.masks[q], sel.tensor.numel).then((packed) => { entry.packed = packed; });
          p.catch(() => {});   // (awaited below, unless the selection fails first)
          packing.push(p);
        });
      }
      await Promise.all(packing);
    } catch (e) {
      for (const k of fresh) this.masks.delete(key(k));   // not prepared: a later call selects them again
      throw e;
    }
  }

  original(t: GgufTensorInfo): Uint8Array {
    return this.originals.get(t.name) ?? readTensor(this.gguf, t);
  }

  importance(name: string): ColumnStatistics | undefined {
    return this.options.math.weights.get(name);   // as patchModel's importanceOf: the math statistics
  }

  /** The bytes a patch of this K and scale gives one tensor (the original when none of its weights is selected). */
  async patchedBytes(t: GgufTensorInfo, topK: number, scale: number): Promise<{ bytes: Uint8Array; patched: boolean }> {
    const m = this.masks.get(key(topK))?.get(t.name);
    if (!this.masks.has(key(topK))) throw new MathneuroError('EUSAGE', `K=${topK} was not prepared`);
    const original = this.original(t);
    if (!m) return { bytes: original, patched: false };
    const bytes = original.slice();
    await patchTensorInPlace(t, bytes, m.raw ?? unpackMask(m.packed!, t.numel, m.count), {
      scale, strategy: this.options.strategy, importance: this.importance(t.name), threads: this.options.threads, ranges: false,
    });
    return { bytes, patched: true };
  }

  /**
   * Writes the candidate's bytes over the loaded weights (tensors it leaves alone get their original
   * bytes back). Tensors are patched a few at a time into reused buffers (no allocation per
   * candidate); setWeight copies the bytes into ggml's buffer, so a buffer is free again right after.
   */
  async apply(topK: number, scale: number): Promise<void> {
    const model = this.requireModel();
    const masks = this.masks.get(key(topK));
    if (!masks) throw new MathneuroError('EUSAGE', `K=${topK} was not prepared`);
    const jobs = this.plan.scored.filter((s) => masks.has(s.tensor.name) || this.dirty.has(s.tensor.name));
    const largest = jobs.reduce((a, s) => Math.max(a, s.tensor.byteSize), 0);
    const lanes = Math.min(APPLY_LANES, jobs.length);
    while (this.scratch.length < lanes) this.scratch.push(new Uint8Array(0));
    let next = 0;
    const lane = async (l: number) => {
      if (this.scratch[l]!.length < largest) this.scratch[l] = new Uint8Array(largest);
      while (next < jobs.length) {
        if (this.options.signal?.aborted) throw new MathneuroError('EABORT', 'tune cancelled');
        const s = jobs[next++]!;
        const m = masks.get(s.tensor.name);
        const original = this.original(s.tensor);
        if (!m) { model.setWeight(s.tensor.name, original); this.dirty.delete(s.tensor.name); continue; }
        const bytes = this.scratch[l]!.subarray(0, s.tensor.byteSize);
        bytes.set(original);
        await patchTensorInPlace(s.tensor, bytes, m.raw ?? unpackMask(m.packed!, s.tensor.numel, m.count), {
          scale, strategy: this.options.strategy, importance: this.importance(s.tensor.name), threads: this.options.threads, ranges: false,
        });
        model.setWeight(s.tensor.name, bytes);
        this.dirty.add(s.tensor.name);
      }
    };
    await Promise.all(Array.from({ length: lanes }, (_, l) => lane(l)));
  }

  /** The original bytes of every changed weight, set back. */
  restore(): void {
    const model = this.requireModel();
    for (const s of this.plan.scored) {
      if (!this.dirty.has(s.tensor.name)) continue;
      model.setWeight(s.tensor.name, this.original(s.tensor));
      this.dirty.delete(s.tensor.name);
    }
  }

  private requireModel(): TuneModel {
    if (!this.model) throw new MathneuroError('EUSAGE', 'no model loaded to patch');
    return this.model;
  }
}

/** The tokens of one objective sample and where its answer starts. */
export interface PreparedSample { tokens: Int32Array; answerStart: number }

/**
 * prompt + answer tokenized as one text (as the model reads it); the answer's tokens are those past
 * the longest common prefix with the prompt's own tokens (a BPE merge across the boundary moves it).
 */
export function prepareSample(model: TuneModel, s: ObjectiveSample, maxTokens: number): PreparedSample {
  const full = model.tokenize(s.prompt + s.answer);
  const prompt = model.tokenize(s.prompt);
  let p = 0;
  while (p < prompt.length && p < full.length && prompt[p] === full[p]) p++;
  const answerStart = Math.max(1, p);
  if (full.length > maxTokens) throw new MathneuroError('EUSAGE', `an objective sample has ${full.length} tokens, more than the context of ${maxTokens}: ${JSON.stringify(s.prompt.slice(0, 60))}...`);
  if (answerStart >= full.length) throw new MathneuroError('EDATA', `an objective sample has no answer tokens: ${JSON.stringify(s.prompt.slice(0, 60))}`);
  return { tokens: full, answerStart };
}

export interface Measurement {
  /** mean NLL per answer token of the objective samples (nats) */
  objective: number;
  objectiveTokens: number;
  /** mean KL(unpatched || candidate) per general token (nats) */
  kl: number;
  /** share of general positions whose top token is the unpatched model's */
  sameTop: number;
  /** mean NLL per general token (nats) */
  generalNll: number;
  generalTokens: number;
}

/** Scores a loaded model (as patched now) on a fixed set of samples, against its unpatched distributions. */
export class Scorer {
  private reference: { tokens: Int32Array; logProbs: Float32Array }[] = [];
  private nVocab = 0;
  /** positions whose reference distribution is kept (bounded by maxReferenceBytes) */
  readonly klPositions: number;

  private constructor(private readonly model: TuneModel, private readonly samples: PreparedSample[], private readonly prompts: Int32Array[], klPositions: number) {
    this.klPositions = klPositions;
  }

  /**
   * Tokenizes and, on the model as it is now (unpatched), keeps the log-probabilities of every
   * general position: prompts x tokens x vocabulary float32, at most `maxReferenceBytes` (default
   * 512 MiB: 8 prompts x 128 tokens of a 128k vocabulary); longer prompts are cut so it holds.
   */
  static async create(model: TuneModel, samples: ObjectiveSample[], prompts: string[], options: { klTokens: number; maxReferenceBytes?: number; signal?: AbortSignal }): Promise<Scorer> {
    const nCtx = model.info().nCtx;
    const nVocab = model.info().nVocab;
    const prepared = samples.map((s) => prepareSample(model, s, nCtx));
    const maxPositions = Math.floor((options.maxReferenceBytes ?? 512 * 2 ** 20) / (4 * nVocab));
    const perPrompt = Math.max(2, Math.min(options.klTokens, nCtx, Math.floor(maxPositions / Math.max(1, prompts.length)) + 1));
    const tokens = prompts.map((p) => model.tokenize(p).slice(0, perPrompt)).filter((t) => t.length >= 2);
    if (prepared.length === 0) throw new MathneuroError('EUSAGE', 'no objective samples');
    if (tokens.length === 0) throw new MathneuroError('EUSAGE', 'no general prompt of two tokens or more');
    const scorer = new Scorer(model, prepared, tokens, tokens.reduce((a, t) => a + t.length - 1, 0));
    scorer.nVocab = nVocab;
    const row = new Float64Array(nVocab);
    for (const t of tokens) {
      if (options.signal?.aborted) throw new MathneuroError('EABORT', 'tune cancelled');
      const { logits } = await model.logits(t);
      const logProbs = new Float32Array((t.length - 1) * nVocab);
      for (let i = 0; i + 1 < t.length; i++) {
        logSoftmaxRow(logits, i * nVocab, nVocab, row);
        logProbs.set(row, i * nVocab);
      }
      scorer.reference.push({ tokens: t, logProbs });
    }
    return scorer;
  }

  /** One forward pass per objective sample and per general prompt. */
  async measure(signal?: AbortSignal): Promise<Measurement> {
    const n = this.nVocab;
    let objNll = 0, objTokens = 0;
    for (const s of this.samples) {
      if (signal?.aborted) throw new MathneuroError('EABORT', 'tune cancelled');
      const { logits } = await this.model.logits(s.tokens);
      for (let t = s.answerStart; t < s.tokens.length; t++) {
        objNll += logSumExpRow(logits, (t - 1) * n, n) - logits[(t - 1) * n + s.tokens[t]!]!;
        objTokens++;
      }
    }
    let kl = 0, same = 0, nll = 0, positions = 0;
    const row = new Float64Array(n);
    for (const ref of this.reference) {
      if (signal?.aborted) throw new MathneuroError('EABORT', 'tune cancelled');
      const { logits } = await this.model.logits(ref.tokens);
      for (let i = 0; i + 1 < ref.tokens.length; i++) {
        logSoftmaxRow(logits, i * n, n, row);
        const r = klOfLogRows(ref.logProbs.subarray(i * n, (i + 1) * n), row, n);
        kl += r.kl;
        if (r.sameTop) same++;
        nll -= row[ref.tokens[i + 1]!]!;
        positions++;
      }
    }
    return { objective: objNll / objTokens, objectiveTokens: objTokens, kl: kl / positions, sameTop: same / positions, generalNll: nll / positions, generalTokens: positions };
  }
}
