// One architecture's checks, shared by test/arch/arch.test.ts (each check a tap assertion) and
// scripts/arch-table.ts (each check a cell of the README table): it loads and generates (the shim and
// node-llama-cpp); the matmuls the eval callback saw are exactly the scored tensors plus the
// documented exclusions (src/gguf/tensor-roles.ts); block 0's statistics equal a float64 reference;
// MoE experts have their own columns and counts; select, new-file patch, in-place patch + unpatch
// (sha256) work and never change an excluded tensor; a x1.1 boost moves next-token distributions
// only a little.
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { builtinSamples } from '../../src/calibration/index.ts';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { tensorRoles } from '../../src/gguf/tensor-roles.ts';
import { patchModel, unpatchModel } from '../../src/patch/patch.ts';
import { planTensors, selectTensors } from '../../src/select/select.ts';
import { StatsModel } from '../../src/stats/index.ts';
import { archTables, resolveShape } from '../../src/synth.ts';
import { sha256, tensorBytes } from '../patch/helpers.ts';
import { repoRoot } from '../helpers/fixtures.ts';
import { archModel, coverage, expertCounts, maxRelErr, meanKl, referenceLayer0 } from './arch-lib.ts';

/** Where the patched copies go; scripts/arch-table.ts sets MATHNEURO_ARCH_WORK to run beside the test. */
const workDir = () => process.env.MATHNEURO_ARCH_WORK ?? path.join(repoRoot, '.cache', 'test-arch');

const mathTexts = builtinSamples('math', { count: 4, seed: 11 }).map((s) => s.text);
const generalTexts = builtinSamples('general', { count: 4, seed: 12 }).map((s) => s.text);
const klText = 'The old lighthouse keeper climbed the stairs every evening to light the lamp above the sea.';
export const GENERATE_TOKENS = 8;
// F32 weights, float32 accumulation in ggml vs float64 here, over n_embd 64: ~1e-6 relative per
// value (RMSNorm's mean and rsqrt in float32); 1e-4 leaves two orders of margin
export const REFERENCE_TOLERANCE = 1e-4;
// x1.1 on the math-specific share (~1-2%) of each matrix's weights at K = 10%: each touched weight
// moves by 10% of itself. Measured (README table, scripts/arch-table.ts): 2e-10 (tied heads without
// soft-capping: random embeddings of std 1 make next-token distributions nearly one-hot) to 3.5e-3
// nats/token (granitehybrid); zeroing the same set gives 7e-8 to 0.26. 0.02 is 5x over the largest
// boost and below what zeroing does to the most sensitive model.
export const KL_BOUND = 0.02;

export type Column = 'loads' | 'generates' | 'coverage' | 'reference' | 'experts' | 'select' | 'patch' | 'kl' | 'unpatch';

/** What a check reports to: tap in the test, a table cell in the script. */
export interface Checker {
  section(column: Column): void;
  ok(value: unknown, message: string): void;
  notOk(value: unknown, message: string): void;
  equal(a: unknown, b: unknown, message: string): void;
  same(a: unknown, b: unknown, message: string): void;
  comment(message: string): void;
}

export interface ArchMeasurements {
  arch: string;
  scored: string[];
  excludedSeen: { name: string; reason: string }[];
  nonWeightMatmuls: string[];
  /** worst relative error of block 0's statistics against the float64 reference */
  referenceError: number;
  klBoost: number;
  klPrune?: number;
  selected: number;
  experts: { name: string; counts: number[] }[];
}

let llamaPromise: Promise<import('node-llama-cpp').Llama> | undefined;
async function nodeLlama() {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  llamaPromise ??= getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, progressLogs: false });
  return llamaPromise;
}

export async function runArchChecks(arch: string, c: Checker, options: { measurePrune?: boolean } = {}): Promise<ArchMeasurements> {
  const work = workDir();
  mkdirSync(work, { recursive: true });
  const table = archTables[arch];
  const t0 = Date.now();
  const phase = (label: string) => { if (process.env.MATHNEURO_TEST_TIMING) c.comment(`${label}: ${Date.now() - t0} ms`); };
  c.section('loads');
  const modelPath = await archModel(arch);
  const info = readGgufSync(modelPath);
  c.equal(info.metadata.get('general.architecture'), arch, 'general.architecture');
  const roles = tensorRoles(info);
  const excluded = roles.filter((r) => !r.scored);
  const m: ArchMeasurements = { arch, scored: [], excludedSeen: [], nonWeightMatmuls: [], referenceError: NaN, klBoost: NaN, selected: 0, experts: [] };

  // --- loads and generates through the shim; statistics, coverage, block 0, experts (model open) ---
  const model = await StatsModel.open(modelPath, { nCtx: 256, nThreads: 1 });
  const { math, general, cov, plan } = await (async () => {
    try {
      const prompt = model.tokenize('Once upon a time');
      const tokens = Array.from(prompt);
      c.section('generates');
      for (let i = 0; i < GENERATE_TOKENS; i++) {
        const { logits, nVocab } = await model.logits(Int32Array.from(tokens));
        const last = logits.subarray((tokens.length - 1) * nVocab, tokens.length * nVocab);
        let best = 0;
        for (let v = 1; v < nVocab; v++) if (last[v] > last[best]) best = v;
        c.ok(Number.isFinite(last[best]), 'finite logits');
        tokens.push(best);
      }
      c.equal(tokens.length - prompt.length, GENERATE_TOKENS, `shim: generated ${GENERATE_TOKENS} tokens`);

      phase('generate');
      c.section('coverage');
      // --- statistics, with every matmul the callback was asked about ---
      // with the output head (includeOutput), so that the callback sees every matmul of the graph
      const math = await model.collect(mathTexts, { matmuls: true, dataset: 'math', includeOutput: true });
      const general = await model.collect(generalTexts, { dataset: 'general' });
      const tokenLists = mathTexts.map((s) => model.tokenize(s));
      const nTokens = tokenLists.reduce((a, l) => a + l.length, 0);
      c.equal(math.stats.tokens, nTokens, 'every token counted');

      // coverage: the callback's weight matmuls = scored + documented exclusions that are matmuls
      const cov = coverage(info, math.matmuls!);
      c.same(cov.rejectedWeights, [], 'every GGUF tensor the callback saw as a matmul operand was collected');
      c.same(cov.seenWeights, [...cov.scored, ...cov.excludedSeen.map((e) => e.name)].sort(), 'callback set = scored + documented exclusions');
      c.same([...math.stats.weights.keys()].sort(), cov.seenWeights, 'statistics hold exactly the weights the callback saw');
      for (const r of excluded) c.notOk(cov.scored.includes(r.name), `${r.name} excluded: ${r.reason}`);
      const plan = planTensors(info, math.stats);
      c.same(plan.scored.map((s) => s.tensor.name).sort(), cov.scored, 'the selection scores exactly the tensors the roles call scored');
      for (const s of plan.skipped) c.ok(excluded.some((r) => r.name === s.name), `${s.name} skipped by the selection is a documented exclusion`);
      m.scored = cov.scored; m.excludedSeen = cov.excludedSeen; m.nonWeightMatmuls = cov.seenOther;
      c.comment(`${arch}: ${cov.scored.length} scored, seen but excluded: ${cov.excludedSeen.map((e) => e.name.replace(/^blk\.\d+\./, 'blk.*.')).filter((v, i, a) => a.indexOf(v) === i).join(', ') || 'none'}; non-weight matmuls: ${cov.seenOther.join(', ') || 'none'}`);

      phase('stats');
      c.section('reference');
      // --- block 0 against the float64 reference ---
      const ref = referenceLayer0(info, arch, tokenLists);
      for (const kind of table.layer0Inputs) {
        const w = math.stats.weights.get(`blk.0.${kind}.weight`);
        c.ok(w, `blk.0.${kind} observed`);
        if (!w) continue;
        const e1 = maxRelErr(w.normSum, ref.normSum), e2 = maxRelErr(w.sum2, ref.sum2);
        m.referenceError = Math.max(Number.isNaN(m.referenceError) ? 0 : m.referenceError, e1, e2);
        c.ok(e1 < REFERENCE_TOLERANCE && e2 < REFERENCE_TOLERANCE, `blk.0.${kind} norm_sum / sum2 equal the float64 reference (worst ${e1.toExponential(2)} / ${e2.toExponential(2)})`);
        c.same(Array.from(w.counts), [nTokens], `blk.0.${kind} counted every token`);
      }

      c.section('experts');
      // --- MoE: per-expert statistics; routed and shared experts apart ---
      const shape = resolveShape(arch, 'tiny');
      for (let l = 0; l < shape.nLayer; l++) {
        const moe = info.tensorByName.has(`blk.${l}.ffn_gate_inp.weight`);
        if (!moe) continue;
        for (const kind of ['gate', 'up', 'down']) {
          const name = `blk.${l}.ffn_${kind}_exps.weight`;
          const e = expertCounts(math.stats, name);
          c.equal(e.nMat, shape.nExpert, `${name}: one matrix per expert`);
          c.equal(e.total, nTokens * shape.nExpertUsed, `${name}: counts sum to tokens x ${shape.nExpertUsed} experts used`);
          m.experts.push({ name, counts: e.perExpert });
          c.ok(e.consistent, `${name}: an expert has statistics iff it received tokens (${e.perExpert.join('/')})`);
          const shexp = math.stats.weights.get(`blk.${l}.ffn_${kind}_shexp.weight`);
          if (shexp) c.same(Array.from(shexp.counts), [nTokens], `blk.${l}.ffn_${kind}_shexp: the shared expert sees every token`);
        }
        c.same(Array.from(math.stats.weights.get(`blk.${l}.ffn_gate_inp.weight`)!.counts), [nTokens], `blk.${l} router sees every token (collected, never scored)`);
      }
      return { math, general, cov, plan };
    } finally {
      model.dispose();
    }
  })();

  phase('reference+moe');
  c.section('loads');
  // --- through node-llama-cpp ---
  const llama = await nodeLlama();
  const nlModel = await llama.loadModel({ modelPath, gpuLayers: 0 });
  try {
    const ctx = await nlModel.createContext({ contextSize: 128, threads: 1 });
    try {
      c.section('generates');
      const seq = ctx.getSequence();
      const got: number[] = [];
      for await (const tok of seq.evaluate(nlModel.tokenize('Once upon a time'))) { got.push(tok); if (got.length >= GENERATE_TOKENS) break; }
      c.equal(got.length, GENERATE_TOKENS, `node-llama-cpp: generated ${GENERATE_TOKENS} tokens`);
    } finally { await ctx.dispose(); }
  } finally { await nlModel.dispose(); }

  phase('node-llama-cpp');
  c.section('select');
  // --- select ---
  const counts = new Map<string, number[]>();
  for await (const s of selectTensors(info, plan, { topK: [0.1], math: math.stats, general: general.stats })) counts.set(s.tensor.name, s.countsPerMatrix[0]);
  c.same([...counts.keys()].sort(), cov.scored, 'a selection for every scored tensor');
  const selected = [...counts.values()].flat().reduce((a, b) => a + b, 0);
  m.selected = selected;
  c.ok(selected > 0, `selected ${selected} weights at K = 10%`);

  const excludedBytes = (file: string) => {
    const i = readGgufSync(file);
    return new Map(excluded.map((r) => [r.name, tensorBytes(i, i.tensorByName.get(r.name)!)]));
  };
  const before = excludedBytes(modelPath);
  const sameExcluded = (file: string, label: string) => {
    const after = excludedBytes(file);
    const changed = excluded.filter((r) => !before.get(r.name)!.equals(after.get(r.name)!)).map((r) => r.name);
    c.same(changed, [], `${label}: no excluded tensor changed (${excluded.length} compared byte for byte)`);
  };

  phase('select');
  c.section('patch');
  // --- new-file patch: a x1.1 boost ---
  const boosted = path.join(work, `${arch}.boosted.gguf`);
  const r = await patchModel({ model: modelPath, out: boosted, math: math.stats, general: general.stats, topK: 0.1, scale: 1.1, force: true });
  c.equal(r.selectedWeights, selected, 'the patch applies the selection');
  c.ok(r.tensors.every((x) => cov.scored.includes(x.name)), 'only scored tensors were patched');
  sameExcluded(boosted, 'new-file patch');

  phase('newfile');
  c.section('kl');
  // --- KL of the boost ---
  const src = await StatsModel.open(modelPath, { nCtx: 256, nThreads: 1, kvType: 'f32' });
  const dst = await StatsModel.open(boosted, { nCtx: 256, nThreads: 1, kvType: 'f32' });
  try {
    const toks = src.tokenize(klText);
    const a = await src.logits(toks), b = await dst.logits(toks);
    const kl = meanKl(a.logits, b.logits, a.nVocab);
    m.klBoost = kl;
    if (options.measurePrune) {
      const pruned = path.join(work, `${arch}.pruned.gguf`);
      await patchModel({ model: modelPath, out: pruned, math: math.stats, general: general.stats, topK: 0.1, prune: true, force: true });
      const pm = await StatsModel.open(pruned, { nCtx: 256, nThreads: 1, kvType: 'f32' });
      try { m.klPrune = meanKl(a.logits, (await pm.logits(toks)).logits, a.nVocab); } finally { pm.dispose(); rmSync(pruned, { force: true }); }
    }
    c.ok(kl > 0 && kl < KL_BOUND, `boost x1.1, K = 10%: KL ${kl.toExponential(2)} nats/token (0 < KL < ${KL_BOUND})`);
  } finally { src.dispose(); dst.dispose(); }

  phase('kl');
  c.section('unpatch');
  // --- in-place patch (prune) + unpatch ---
  const copy = path.join(work, `${arch}.inplace.gguf`);
  rmSync(`${copy}.mathneuro-undo`, { force: true });
  copyFileSync(modelPath, copy);
  const original = sha256(copy);
  const p = await patchModel({ model: copy, inPlace: true, math: math.stats, general: general.stats, topK: 0.05, prune: true });
  c.ok(p.selectedWeights > 0 && sha256(copy) !== original, `in place: ${p.selectedWeights} weights zeroed`);
  sameExcluded(copy, 'in-place patch');
  const u = await unpatchModel(copy);
  c.equal(u.sha256, original, 'unpatch reports the original sha256');
  c.equal(sha256(copy), original, 'unpatch restores the file bit for bit');
  phase('inplace');
  rmSync(copy, { force: true });
  rmSync(boosted, { force: true });
  return m;
}
