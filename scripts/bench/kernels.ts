// Two of the shim's kernels alone, on their real inputs, in one process:
//   npm run bench -- kernels [--model M.gguf | --shape llama-1b --type mixed] [--repeats 3]
// - klRows (native/divergence.cpp), what boost's KL check sums: the model's own logits for the
//   check's first built-in prompt, every position, against themselves (the cost does not depend on
//   how far the rows differ, only on their spread), at 1 and 2 threads, beside divergence.ts's float64
//   JS (the tests' reference);
// - countMaskBits (native/mask_codec.cpp), select's per-matrix counts, beside bits.ts's JS countBits,
//   on a mask the size of llama-1b's 121.6 MB of block-weight bits at 10% density, 16 parts;
// - patchTensor (native/requantize.cpp), a quantized tensor's patch alone (no file I/O): the model's
//   first quantized ffn_gate and ffn_down, x1.1 on two masks: 6% of the weights at random (the density
//   select's K = 0.1 gives llama-1b), and the weights MathNeuro's K = 0.1 selects in that tensor with
//   the bench's synthetic statistics (the patch bench's; the largest |w| x column norm, so many sit
//   at their block's largest code: auto then builds its rescaled candidate, and a block costs up to
//   1.7x the random mask's); keep-scale and auto, 1 and 2 threads, per block of 256 weights.
// A build without countMaskBits (one from before it) skips that row, so the same script times an older
// build: check the older commit out in a worktree, copy this file in, `npm run build` there and run it.
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { builtinSamples } from '../../src/calibration/index.ts';
import { klOfLogRows, logSoftmaxRow } from '../../src/eval/divergence.ts';
import { NativeRuntime } from '../../src/eval/native-runtime.ts';
import { loadNative } from '../../src/native.ts';
import { DEFAULT_KL_TOKENS } from '../../src/pipeline.ts';
import { countBits } from '../../src/select/bits.ts';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { codecTypeInfo, patchTensor } from '../../src/core/codec.ts';
import { readTensorBytes } from '../../src/core/tensor-io.ts';
import { RATIO_HISTOGRAM } from '../../src/patch/realized.ts';
import { planTensors, selectTensor } from '../../src/select/select.ts';
import { loadStatisticsFor } from '../../src/select/statistics.ts';
import type { SynthShapeName, SynthTypeName } from '../../src/synth.ts';
import { benchModel, machine, machineLine, median, table, writeSection } from './common.ts';
import { syntheticStats } from './patch.ts';

export async function benchKernels(argv: string[]) {
  const { values } = parseArgs({ args: argv, options: {
    model: { type: 'string' }, shape: { type: 'string', default: 'llama-1b' }, type: { type: 'string', default: 'mixed' },
    repeats: { type: 'string', default: '3' }, 'no-write': { type: 'boolean' },
  } });
  const m = machine();
  const modelPath = values.model ?? await benchModel(values.shape as SynthShapeName, values.type as SynthTypeName);
  const repeats = Number(values.repeats);
  const native = loadNative() as ReturnType<typeof loadNative> & { countMaskBits?: (mask: Uint8Array, nBits: number, part: number) => Float64Array };

  // the rows: the check's first prompt (pipeline.ts klCheckPrompts, seed 0), every position
  const text = builtinSamples('general', { count: 1, seed: 1_000_000 })[0]!.text;
  const rt = await NativeRuntime.open(modelPath, { nCtx: Math.ceil((DEFAULT_KL_TOKENS + 1) / 256) * 256, nSeqMax: 1, nGpuLayers: 0 });
  let logits: Float32Array, nVocab: number;
  try {
    const r = await rt.logits(rt.tokenize(text).slice(0, DEFAULT_KL_TOKENS));
    logits = r.logits; nVocab = r.nVocab;
  } finally { await rt.close(); }
  const rowCount = logits.length / nVocab;
  const entries = logits.length;
  let spread = 0;
  for (let r = 0; r < rowCount; r++) {
    let lo = Infinity, hi = -Infinity;
    for (let i = r * nVocab; i < (r + 1) * nVocab; i++) { lo = Math.min(lo, logits[i]!); hi = Math.max(hi, logits[i]!); }
    spread = Math.max(spread, hi - lo);
  }

  const series: Record<string, number[]> = {};
  const time = async (label: string, f: () => unknown) => {
    const t0 = performance.now();
    await f();
    (series[label] ??= []).push(performance.now() - t0);
  };
  const nBits = Math.round(121.6e6 * 8 / 16) * 16, part = nBits / 16;
  const mask = new Uint8Array(nBits / 8);
  let s = 1;
  for (let i = 0; i < nBits; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; if (s < 0.1 * 2 ** 32) mask[i >> 3]! |= 1 << (i & 7); }
  const jsRows = Math.min(rowCount, 16);
  // patchTensor's inputs: each tensor's stored bytes and two masks: 6% of its weights at random, and
  // MathNeuro's K = 0.1 with the patch bench's synthetic statistics
  const info = readGgufSync(modelPath);
  const math = (await loadStatisticsFor(await syntheticStats(modelPath, 1), 'math', info, 'mathneuro')).stats;
  const general = (await loadStatisticsFor(await syntheticStats(modelPath, 2), 'general', info, 'mathneuro')).stats;
  const plan = planTensors(info, math);
  const patchInputs: { label: string; blocks: number; run: (strategy: 'keep-scale' | 'auto', threads: number) => Promise<unknown> }[] = [];
  const fd = openSync(modelPath, 'r');
  try {
    for (const suffix of ['ffn_gate.weight', 'ffn_down.weight']) {
      const t = info.tensors.find((x) => x.name.startsWith('blk.') && x.name.endsWith(suffix) && codecTypeInfo(x.type)?.keepScale);
      if (!t) continue;
      const bytes = readTensorBytes(fd, t);
      const random = new Uint8Array(Math.ceil(t.numel / 8));
      let r = 7;
      for (let i = 0; i < t.numel; i++) { r = (Math.imul(r, 1664525) + 1013904223) >>> 0; if (r < 0.06 * 2 ** 32) random[i >> 3]! |= 1 << (i & 7); }
      const scored = plan.scored.find((x) => x.tensor.name === t.name)!;
      const selected = (await selectTensor(scored, new Uint8Array(bytes), { method: 'mathneuro', topK: [0.1], math, general })).masks[0]!;
      const bs = codecTypeInfo(t.type)!.blockSize;
      for (const [kind, tmask] of [['6% at random', random], ['MathNeuro K = 0.1', selected]] as const) {
        patchInputs.push({ label: `${t.name} (${t.typeName}, ${t.shape.join(' x ')}; ${kind}: ${(100 * countBits(tmask, 0, t.numel) / t.numel).toFixed(1)}%)`, blocks: t.numel / bs, run: (strategy, threads) => patchTensor({
          type: t.type, data: new Uint8Array(bytes), mask: tmask, nIn: t.shape[0]!, rows: t.shape[1] ?? 1, matrices: t.shape[2] ?? 1,
          scale: 1.1, strategy, threads, histogram: RATIO_HISTOGRAM, ranges: false,
        }) });
      }
    }
  } finally { closeSync(fd); }
  const patchLabel = (p: { label: string }, strategy: string, threads: number) => `patchTensor ${p.label}, ${strategy}, ${threads} thread${threads > 1 ? 's' : ''}`;
  for (let i = 0; i < repeats + 1; i++) { // the first round warms up and is dropped
    await time('klRows, 1 thread', () => native.klRows(logits, logits, nVocab, 1));
    await time('klRows, 2 threads', () => native.klRows(logits, logits, nVocab, 2));
    await time(`float64 JS reference (divergence.ts), first ${jsRows} rows`, () => {
      const lp = new Float64Array(nVocab), lq = new Float64Array(nVocab);
      for (let r = 0; r < jsRows; r++) { logSoftmaxRow(logits, r * nVocab, nVocab, lp); logSoftmaxRow(logits, r * nVocab, nVocab, lq); klOfLogRows(lp, lq); }
    });
    await time('JS countBits, 16 parts', () => { for (let p = 0; p < 16; p++) countBits(mask, p * part, (p + 1) * part); });
    if (native.countMaskBits) await time('countMaskBits, 16 parts', () => native.countMaskBits!(mask, nBits, part));
    for (const p of patchInputs) for (const strategy of ['keep-scale', 'auto'] as const) for (const threads of [1, 2]) await time(patchLabel(p, strategy, threads), () => p.run(strategy, threads));
  }
  const med = (label: string) => median(series[label]!.slice(1));
  const perEntry = (label: string, n: number) => (med(label) * 1e6 / n).toFixed(1);
  const rows: string[][] = [
    ['klRows, 1 thread', med('klRows, 1 thread').toFixed(0), `${perEntry('klRows, 1 thread', entries)} ns per entry`],
    ['klRows, 2 threads', med('klRows, 2 threads').toFixed(0), `${perEntry('klRows, 2 threads', entries)} ns per entry`],
    [`float64 JS reference, ${jsRows} rows`, med(`float64 JS reference (divergence.ts), first ${jsRows} rows`).toFixed(0), `${perEntry(`float64 JS reference (divergence.ts), first ${jsRows} rows`, jsRows * nVocab)} ns per entry`],
    ['JS countBits, 16 parts', med('JS countBits, 16 parts').toFixed(1), ''],
  ];
  if (series['countMaskBits, 16 parts']) rows.push(['countMaskBits, 16 parts', med('countMaskBits, 16 parts').toFixed(1), '']);
  for (const p of patchInputs) for (const strategy of ['keep-scale', 'auto'] as const) for (const threads of [1, 2]) {
    const label = patchLabel(p, strategy, threads);
    rows.push([label, med(label).toFixed(1), `${(med(label) * 1e6 / p.blocks).toFixed(0)} ns per block`]);
  }
  const cmd = `npm run bench -- kernels ${values.model ? `--model ${values.model}` : `--shape ${values.shape} --type ${values.type}`} --repeats ${repeats}`;
  const md = `## Shim kernels: the KL check's rows, select's mask counts, a quantized tensor's patch

\`${cmd}\`

${machineLine(m)} klRows: ${path.basename(modelPath)}'s logits for the KL check's first built-in prompt, ${rowCount} rows of ${nVocab} (the widest row spans ${spread.toFixed(0)} nats), against themselves (the cost does not depend on the values' differences). Mask: ${(nBits / 8 / 1e6).toFixed(1)} MB of bits at 10% density (llama-1b's block weights), counted in 16 equal parts. patchTensor: the tensor's bytes patched in memory, x1.1 on 6% of its weights at random (the density of llama-1b's K = 0.1) and on the weights MathNeuro's K = 0.1 selects there with the patch bench's synthetic statistics (the largest |w| x column norm: many sit at their block's largest code, where auto builds its rescaled candidate); realized-scale figures accumulated, no ranges, no file I/O; per block of 256 weights. Milliseconds, median of ${repeats} after a warm-up round.

${table(['kernel', 'ms', 'per entry or block'], rows)}`;
  if (!values['no-write']) writeSection(`kernels-${path.basename(modelPath, '.gguf')}`, md, { machine: m, model: path.basename(modelPath), repeats, rowCount, nVocab, spread, series });
  process.stdout.write(md + '\n');
}
