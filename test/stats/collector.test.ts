// The collector against an independent float64 reference: the input of layer 0's attn_q/k/v is
// RMSNorm(token embedding) * attn_norm, computed here from the GGUF's own bytes and the tokenizer's ids.
import t from 'tap';
import { closeSync, openSync, readSync } from 'node:fs';
import { readGgufSync, type GgufInfo } from '../../src/gguf/reader.ts';
import { GGML_TYPE } from '../../src/gguf/types.ts';
import { StatsModel, collectStats, mergeStats, saveStats, loadStats } from '../../src/stats/index.ts';
import { fixtureModel } from '../helpers/fixtures.ts';

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/** One row of an F32/F16/BF16 tensor, decoded here in float64. */
function readRow(info: GgufInfo, name: string, row: number): Float64Array {
  const tensor = info.tensorByName.get(name)!;
  const n = tensor.shape[0];
  const elem = tensor.type === GGML_TYPE.F32 ? 4 : 2;
  const buf = Buffer.alloc(n * elem);
  const fd = openSync(info.path, 'r');
  readSync(fd, buf, 0, buf.length, tensor.absoluteOffset + row * n * elem);
  closeSync(fd);
  const out = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    if (tensor.type === GGML_TYPE.F32) out[j] = buf.readFloatLE(j * 4);
    else if (tensor.type === GGML_TYPE.F16) out[j] = halfToFloat(buf.readUInt16LE(j * 2));
    else if (tensor.type === GGML_TYPE.BF16) { const b = Buffer.alloc(4); b.writeUInt16LE(buf.readUInt16LE(j * 2), 2); out[j] = b.readFloatLE(0); }
    else throw new Error(`unsupported type in reference: ${tensor.typeName}`);
  }
  return out;
}

/** Reference statistics of layer 0's q/k/v input, in float64. */
function referenceLayer0(info: GgufInfo, tokenLists: Int32Array[]) {
  const eps = Number(info.metadata.get('llama.attention.layer_norm_rms_epsilon'));
  const gain = readRow(info, 'blk.0.attn_norm.weight', 0);
  const n = gain.length;
  const normSum = new Float64Array(n);
  const sum2 = new Float64Array(n);
  for (const tokens of tokenLists) {
    const sq = new Float64Array(n);
    for (const tok of tokens) {
      const x = readRow(info, 'token_embd.weight', tok);
      let ms = 0;
      for (let j = 0; j < n; j++) ms += x[j] * x[j];
      const scale = 1 / Math.sqrt(ms / n + eps);
      for (let j = 0; j < n; j++) { const h = x[j] * scale * gain[j]; sq[j] += h * h; }
    }
    for (let j = 0; j < n; j++) { normSum[j] += Math.sqrt(sq[j]); sum2[j] += sq[j]; }
  }
  return { normSum, sum2 };
}

function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / Math.max(1e-12, Math.abs(b[i])));
  return worst;
}

const texts = [
  'Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.',
  'The mitochondria is the powerhouse of the cell.',
  'x',
];

for (const type of ['f32', 'f16'] as const) {
  t.test(`layer-0 q/k/v statistics equal a float64 reference (${type} model)`, async (t) => {
    const path = await fixtureModel({ shape: 'tiny', type, seed: 3 });
    const info = readGgufSync(path);
    const model = await StatsModel.open(path, { nCtx: 256 });
    t.teardown(() => model.dispose());
    const tokenLists = texts.map((s) => model.tokenize(s));
    t.equal(tokenLists[0][0], model.info().bos, 'BOS is added');
    const { stats } = await model.collect(texts);
    const ref = referenceLayer0(info, tokenLists);
    const q = stats.weights.get('blk.0.attn_q.weight')!;
    t.ok(q, 'attn_q was observed');
    // layer 0's q/k/v input involves no matmul: RMSNorm in float32 over n = 256 values, within
    // n * 2^-24 = 1.5e-5 relative, doubled in sum2, on every CPU variant (measured: 9.5e-8)
    t.ok(maxRelErr(q.normSum, ref.normSum) < 1e-4, `norm_sum within 1e-4 relative (worst ${maxRelErr(q.normSum, ref.normSum).toExponential(2)})`);
    t.ok(maxRelErr(q.sum2, ref.sum2) < 1e-4, `sum2 within 1e-4 relative (worst ${maxRelErr(q.sum2, ref.sum2).toExponential(2)})`);
    const totalTokens = tokenLists.reduce((a, l) => a + l.length, 0);
    t.equal(stats.tokens, totalTokens, 'token count');
    t.equal(stats.samples, texts.length, 'sample count');
    for (const name of ['blk.0.attn_k.weight', 'blk.0.attn_v.weight']) {
      const w = stats.weights.get(name)!;
      t.same(Array.from(w.normSum), Array.from(q.normSum), `${name} norm_sum identical to attn_q`);
      t.same(Array.from(w.sum2), Array.from(q.sum2), `${name} sum2 identical to attn_q`);
    }
    for (let l = 0; l < 2; l++) {
      const gate = stats.weights.get(`blk.${l}.ffn_gate.weight`)!;
      const up = stats.weights.get(`blk.${l}.ffn_up.weight`)!;
      t.same(Array.from(up.normSum), Array.from(gate.normSum), `layer ${l}: ffn_up equals ffn_gate`);
    }
    for (const w of stats.weights.values()) t.same(Array.from(w.counts), [totalTokens], `${w.name} counted every token`);
    // the last layer sees every token, because logits are requested for all; the output head is not
    // computed unless includeOutput asks for its statistics (test/stats/early-stop.test.ts)
    t.notOk(stats.weights.has('output.weight'), 'untied output head not computed by default');
    t.ok(stats.weights.has('blk.1.ffn_down.weight'), 'last layer ffn_down observed');
    t.notOk(stats.weights.has('token_embd.weight'), 'token embedding lookup is not a matmul');
  });
}

t.test('two samples in one run equal the merge of two one-sample runs', async (t) => {
  const path = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 });
  const model = await StatsModel.open(path, { nCtx: 256 });
  t.teardown(() => model.dispose());
  // One sample per forward pass in all three runs: the same computations, so the merge must be exact
  // (packing changes the batch size and with it the rounding: see the packing test below)
  const both = (await model.collect(texts.slice(0, 2), { pack: false })).stats;
  const a = (await model.collect(texts.slice(0, 1), { pack: false })).stats;
  const b = (await model.collect(texts.slice(1, 2), { pack: false })).stats;
  const merged = mergeStats(a, b);
  t.equal(merged.samples, both.samples);
  t.equal(merged.tokens, both.tokens);
  t.equal(merged.weights.size, both.weights.size);
  let worst = 0;
  for (const [name, w] of both.weights) {
    const m = merged.weights.get(name)!;
    worst = Math.max(worst, maxRelErr(m.normSum, w.normSum), maxRelErr(m.sum2, w.sum2));
    t.same(Array.from(m.counts), Array.from(w.counts), `${name} counts`);
  }
  t.ok(worst < 1e-9, `merged statistics equal the two-sample run (worst relative difference ${worst.toExponential(2)})`);
});

t.test('MoE: per-expert statistics, counts sum to tokens x experts used', async (t) => {
  const path = await fixtureModel({ shape: 'moe-tiny', type: 'q8_0', seed: 5 });
  const r = await collectStats(path, texts, { nCtx: 256 });
  const tokens = r.stats.tokens;
  for (let l = 0; l < 2; l++) {
    for (const kind of ['gate', 'up', 'down']) {
      const w = r.stats.weights.get(`blk.${l}.ffn_${kind}_exps.weight`)!;
      t.ok(w, `blk.${l}.ffn_${kind}_exps observed`);
      t.equal(w.nMat, 4, 'four experts');
      t.equal(w.counts.reduce((a, b) => a + b, 0), tokens * 2, `blk.${l}.ffn_${kind}_exps counts sum to tokens x 2`);
      // an expert's columns are non-zero exactly when it received tokens
      for (let e = 0; e < 4; e++) {
        const cols = w.normSum.subarray(e * w.nIn, (e + 1) * w.nIn);
        const any = cols.some((v) => v > 0);
        t.equal(any, w.counts[e] > 0, `expert ${e} has statistics iff it got tokens`);
      }
    }
    const gate = r.stats.weights.get(`blk.${l}.ffn_gate_exps.weight`)!;
    const up = r.stats.weights.get(`blk.${l}.ffn_up_exps.weight`)!;
    t.same(Array.from(up.normSum), Array.from(gate.normSum), 'gate and up experts see the same inputs');
  }
});

t.test('statistics file: imatrix layout, round trip, provenance', async (t) => {
  const path = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 });
  const r = await collectStats(path, texts, { nCtx: 256, dataset: 'unit-test' });
  const dir = t.testdir();
  const file = `${dir}/s.gguf`;
  await saveStats(r.stats, file);
  const info = readGgufSync(file);
  t.equal(info.metadata.get('general.type'), 'imatrix');
  t.same(info.metadata.get('imatrix.datasets'), ['unit-test']);
  const q = info.tensorByName.get('blk.0.attn_q.weight.in_sum2')!;
  t.equal(q.typeName, 'F32');
  // ggml's writer drops trailing 1-dimensions, exactly as llama.cpp's imatrix tool writes them
  t.same(q.shape, [256]);
  t.same(info.tensorByName.get('blk.0.attn_q.weight.counts')!.shape, [1]);
  t.ok(info.tensorByName.has('blk.0.attn_q.weight.in_norm_sum'));
  const loaded = await loadStats(file);
  t.equal(loaded.samples, 3);
  t.equal(loaded.tokens, r.stats.tokens);
  t.same(loaded.model, r.stats.model);
  const a = loaded.weights.get('blk.1.ffn_down.weight')!;
  const b = r.stats.weights.get('blk.1.ffn_down.weight')!;
  t.ok(maxRelErr(a.normSum, b.normSum) < 1e-6, 'F32 round trip');
});

/** Largest |a - b| over the largest |b|: the difference in units of the statistic's scale. */
function maxScaledErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let scale = 0, worst = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst / Math.max(1e-30, scale);
}

/**
 * Packing puts several samples into one forward pass, so every kernel runs at another batch size
 * (and CPU variant: MATHNEURO_CPU_VARIANT) and may sum in another order. The tolerance, relative to
 * each statistic's largest column (maxScaledErr), follows from how the weights are multiplied:
 * - F32 weights: float32 dot products in another order. Each is within gamma_n = n * 2^-24 of the
 *   exact value relative to sum |w x| (n = 512, the longest dot product of these shapes: n_ff);
 *   squared in sum2 (x2) and carried through the 2 layers and the head (x3): 6 * 512 * 2^-24 = 1.8e-4.
 *   Measured worst (x64, sse42, haswell, zen4): 1.8e-7.
 * - Q8_0 weights: ggml quantizes each matmul's input (src1) to q8_0 before the integer dot products:
 *   per block of 32 values, d = max|x| / 127 and x -> round(x / d) * d. A value that float rounding
 *   moves across a rounding boundary lands one step d = 1/127 of its block's largest value away, so
 *   two exact-to-1e-7 runs can differ by up to one quantization step in any element of every
 *   quantized matmul's input, and downstream by that fraction of the activations' scale: 1/127,
 *   doubled for the squares in sum2: 2/127 = 1.6e-2. Measured worst: 9.2e-4 (zen4, the 2-token
 *   sample 'x' run alone: AVX-512 kernels sum attention in another order at that batch size, which
 *   flips roundings in the next q8_0 input); x64, sse42, haswell: 1.6e-8.
 * Elementwise relative differences are reported but not bounded: a column whose statistic is near 0
 * can differ by any fraction of itself.
 */
const PACK_TOLERANCE = { f32: 6 * 512 * 2 ** -24, q8_0: 2 / 127 } as const;

for (const shape of ['tiny', 'moe-tiny'] as const) {
  for (const type of ['f32', 'q8_0'] as const) {
    t.test(`packing short samples into one forward pass gives the same statistics (${shape}, ${type})`, async (t) => {
      const path = await fixtureModel({ shape, type, seed: 6 });
      const many = [...texts, 'Seven times eight is fifty-six.', 'Rain fell all night over the quiet harbour town.', '12 + 30 = 42'];
      // F32 KV cache without flash attention: with an F16 cache, K/V and the attention's Q are rounded
      // to f16 (steps of 2^-10 relative) and the same flips as above would apply to F32 models too
      const exact = { nCtx: 256, kvType: 'f32', flashAttn: 'off' } as const;
      const packed = await collectStats(path, many, { ...exact, pack: true });
      const single = await collectStats(path, many, { ...exact, pack: false });
      t.equal(packed.stats.tokens, single.stats.tokens);
      t.equal(packed.stats.samples, single.stats.samples);
      let worst = 0, worstElementwise = 0, compared = 0;
      const rerouted: string[] = [];
      for (const [name, w] of single.stats.weights) {
        const p = packed.stats.weights.get(name)!;
        t.ok(p, `${name} present`);
        t.equal(p.counts.reduce((a, b) => a + b, 0), w.counts.reduce((a, b) => a + b, 0), `${name} total count`);
        if (w.nMat > 1 && Array.from(p.counts).some((c, e) => c !== w.counts[e])) {
          // MoE routing is a top-k of router logits: a near-tie there may send one token to another
          // expert under a perturbation within the tolerance; those experts' statistics then differ by
          // a whole token, so they are not compared (the totals above still are)
          rerouted.push(`${name} [${Array.from(w.counts).join(',')}] -> [${Array.from(p.counts).join(',')}]`);
          continue;
        }
        t.same(Array.from(p.counts), Array.from(w.counts), `${name} counts`);
        compared++;
        worst = Math.max(worst, maxScaledErr(p.normSum, w.normSum), maxScaledErr(p.sum2, w.sum2));
        worstElementwise = Math.max(worstElementwise, maxRelErr(p.normSum, w.normSum), maxRelErr(p.sum2, w.sum2));
      }
      if (rerouted.length) t.comment(`routing differed at a near-tie (not compared): ${rerouted.join('; ')}`);
      if (type === 'f32') t.same(rerouted, [], 'F32: no routing differences');
      t.ok(compared >= single.stats.weights.size - 6, `most tensors compared (${compared} of ${single.stats.weights.size})`);
      t.ok(worst <= PACK_TOLERANCE[type], `packed equals one-at-a-time within ${PACK_TOLERANCE[type].toExponential(2)} of each statistic's scale (worst ${worst.toExponential(2)}; elementwise ${worstElementwise.toExponential(2)})`);
    });
  }
}

t.test('cancellation: an aborted collection rejects with EABORT and the model stays usable', async (t) => {
  const path = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 });
  const model = await StatsModel.open(path, { nCtx: 256 });
  t.teardown(() => model.dispose());
  const controller = new AbortController();
  const progress: number[] = [];
  const many = Array.from({ length: 40 }, (_, i) => `${texts[i % 3]} ${i}`);
  const run = model.collect(many, { signal: controller.signal, pack: false, onProgress: (p) => { progress.push(p.samplesDone); if (p.samplesDone >= 2) controller.abort(); } });
  await t.rejects(run, { code: 'EABORT' });
  t.ok(progress.length >= 2 && progress.length < 40, `stopped early (${progress.length} progress events)`);
  const again = await model.collect(texts.slice(0, 1));
  t.equal(again.stats.samples, 1, 'usable after cancellation');
});
