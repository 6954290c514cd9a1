// Boost's KL check against the forward passes it needs, before and after the check moved its
// arithmetic into the shim and opened its two models at once, interleaved round by round in one
// process (the 2-core machine is shared: a change of load hits every configuration of a round).
//   npm run bench -- kl [--model M.gguf | --shape llama-1b --type mixed] [--repeats 2]
// Per round: the forward passes alone (the check's tokens through two models, every position's
// logits, not read: plain passes of the shim, models opened beforehand), the check as it ran before
// (reproduced here: both files hashed, the models opened one after the other, each prompt's logits
// log-softmaxed and KL'd in float64 JS, divergence.ts) and the check now (checkPatched, what boost
// runs). Here the model is checked against itself, which costs what patched vs source costs.
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { builtinSamples } from '../../src/calibration/index.ts';
import { fileSha256 } from '../../src/eval/cache.ts';
import { klOfLogRows, logSoftmaxRow } from '../../src/eval/divergence.ts';
import { NativeRuntime } from '../../src/eval/native-runtime.ts';
import { checkPatched, DEFAULT_KL_PROMPTS, DEFAULT_KL_TOKENS } from '../../src/pipeline.ts';
import { StatsModel } from '../../src/stats/index.ts';
import type { SynthShapeName, SynthTypeName } from '../../src/synth.ts';
import { benchModel, machine, machineLine, median, table, writeSection } from './common.ts';

interface Round { forwardMs: number; beforeMs: number; beforeOpenMs: number; beforeKlMs: number; afterMs: number; afterOpenMs: number; tokens: number; meanKlBefore: number; meanKlAfter: number }

export async function benchKl(argv: string[]) {
  const { values } = parseArgs({ args: argv, options: {
    model: { type: 'string' }, shape: { type: 'string', default: 'llama-1b' }, type: { type: 'string', default: 'mixed' },
    repeats: { type: 'string', default: '2' }, 'no-write': { type: 'boolean' },
  } });
  const m = machine();
  const modelPath = values.model ?? await benchModel(values.shape as SynthShapeName, values.type as SynthTypeName);
  const repeats = Number(values.repeats);
  const threads = os.availableParallelism();
  // the check's prompts (pipeline.ts klCheckPrompts with seed 0)
  const prompts = builtinSamples('general', { count: DEFAULT_KL_PROMPTS, seed: 1_000_000 }).map((s) => s.text);
  const loadOptions = { nCtx: Math.ceil((DEFAULT_KL_TOKENS + 1) / 256) * 256, nSeqMax: 1, nThreads: threads, nGpuLayers: 0 };

  const forward = async (): Promise<{ ms: number; tokens: number }> => {
    // the collector truncates each prompt to n_ctx tokens (BOS included) as the check does to 128
    const pair = [await StatsModel.open(modelPath, { nCtx: DEFAULT_KL_TOKENS, nSeqMax: 1, nThreads: threads }), await StatsModel.open(modelPath, { nCtx: DEFAULT_KL_TOKENS, nSeqMax: 1, nThreads: threads })];
    try {
      let ms = 0, tokens = 0;
      for (const side of pair) { const r = await side.forward(prompts, { pack: false, logits: 'all' }); ms += r.elapsedMs; tokens += r.tokens; }
      return { ms, tokens };
    } finally { for (const side of pair) side.dispose(); }
  };

  // the check before: evaluateKl of main (hashes, one model opened after the other, JS arithmetic)
  const before = async (): Promise<{ ms: number; openMs: number; klMs: number; meanKl: number }> => {
    const t0 = performance.now();
    await fileSha256(modelPath);
    await fileSha256(modelPath);
    const o0 = performance.now();
    const model = await NativeRuntime.open(modelPath, loadOptions);
    const reference = await NativeRuntime.open(modelPath, loadOptions);
    const openMs = performance.now() - o0;
    let klMs = 0, sum = 0, count = 0;
    try {
      for (const text of prompts) {
        const tokens = model.tokenize(text).slice(0, DEFAULT_KL_TOKENS);
        if (reference.tokenize(text).slice(0, DEFAULT_KL_TOKENS).join(',') !== tokens.join(',')) throw new Error('tokenization differs');
        const q = await model.withSlot((s) => s.logits(tokens));
        const p = await reference.withSlot((s) => s.logits(tokens));
        const k0 = performance.now();
        const n = p.nVocab, logP = new Float64Array(n), logQ = new Float64Array(n);
        for (let i = 0; i < tokens.length - 1; i++) {
          logSoftmaxRow(p.logits, i * n, n, logP);
          logSoftmaxRow(q.logits, i * n, n, logQ);
          sum += klOfLogRows(logP, logQ).kl;
          count++;
        }
        klMs += performance.now() - k0;
      }
    } finally { await reference.close(); await model.close(); }
    return { ms: performance.now() - t0, openMs, klMs, meanKl: sum / count };
  };

  const after = async (): Promise<{ ms: number; openMs: number; meanKl: number }> => {
    const t0 = performance.now();
    let runStart = NaN;
    const r = await checkPatched(modelPath, modelPath, { kl: true }, {
      nThreads: threads,
      // the last event with no item done is the run's start, right after the pair is open (before it:
      // the two loads)
      onProgress: (p) => { if (p.stage === 'check-kl' && p.done === 0) runStart = performance.now(); },
    });
    const openMs = runStart - t0;
    return { ms: performance.now() - t0, openMs, meanKl: r.kl!.meanKl };
  };

  const rounds: Round[] = [];
  for (let round = 1; round <= repeats; round++) {
    // alternate the order: no configuration always follows the same one
    let fw: Awaited<ReturnType<typeof forward>> | undefined, bb: Awaited<ReturnType<typeof before>> | undefined, aa: Awaited<ReturnType<typeof after>> | undefined;
    const steps = [async () => { fw = await forward(); }, async () => { bb = await before(); }, async () => { aa = await after(); }];
    for (const step of round % 2 ? steps : [...steps].reverse()) await step();
    const r: Round = {
      forwardMs: fw!.ms, tokens: fw!.tokens, beforeMs: bb!.ms, beforeOpenMs: bb!.openMs, beforeKlMs: bb!.klMs,
      meanKlBefore: bb!.meanKl, afterMs: aa!.ms, afterOpenMs: aa!.openMs, meanKlAfter: aa!.meanKl,
    };
    rounds.push(r);
    process.stderr.write(`round ${round}: forward ${(r.forwardMs / 1000).toFixed(1)} s (${r.tokens} tokens); before ${(r.beforeMs / 1000).toFixed(1)} s (open ${(r.beforeOpenMs / 1000).toFixed(1)}, JS KL ${(r.beforeKlMs / 1000).toFixed(1)}) x${(r.beforeMs / r.forwardMs).toFixed(2)}; after ${(r.afterMs / 1000).toFixed(1)} s (open ${(r.afterOpenMs / 1000).toFixed(1)}) x${(r.afterMs / r.forwardMs).toFixed(2)}; mean KL ${r.meanKlBefore} / ${r.meanKlAfter}\n`);
  }
  const s = (ms: number) => (ms / 1000).toFixed(1);
  const rows = rounds.map((r, i) => [String(i + 1), s(r.forwardMs), s(r.beforeMs), s(r.beforeOpenMs), s(r.beforeKlMs), (r.beforeMs / r.forwardMs).toFixed(2), s(r.afterMs), s(r.afterOpenMs), (r.afterMs / r.forwardMs).toFixed(2)]);
  rows.push(['median', s(median(rounds.map((r) => r.forwardMs))), s(median(rounds.map((r) => r.beforeMs))), s(median(rounds.map((r) => r.beforeOpenMs))), s(median(rounds.map((r) => r.beforeKlMs))),
    median(rounds.map((r) => r.beforeMs / r.forwardMs)).toFixed(2), s(median(rounds.map((r) => r.afterMs))), s(median(rounds.map((r) => r.afterOpenMs))), median(rounds.map((r) => r.afterMs / r.forwardMs)).toFixed(2)]);
  const cmd = `npm run bench -- kl ${values.model ? `--model ${values.model}` : `--shape ${values.shape} --type ${values.type}`} --repeats ${repeats}`;
  const md = `## Boost's KL check versus the forward passes it needs

\`${cmd}\`

${machineLine(m)} Model: ${path.basename(modelPath)}, checked against itself (costs what patched vs source costs); ${DEFAULT_KL_PROMPTS} built-in general prompts x ${DEFAULT_KL_TOKENS} tokens (${rounds[0]?.tokens} tokens through both models), ${threads} threads; one round runs every configuration once, in alternating order. "forward" is the floor: the same tokens through two models with every position's logits computed (plain passes of the shim, models already open). "before" is the check as main ran it, reproduced in scripts/bench/kl.ts (both files' sha256, the models opened one after the other, each prompt's logits log-softmaxed and KL'd in float64 JS); "after" is \`checkPatched\` (what boost's check-kl runs: no hashing (the digests were never read: evaluate's identify: false), both models opened at once, each GGUF header parsed once (readGgufSync holds a parse while the header bytes are unchanged), each side's logits written into one reused buffer, per-row KL and top-token agreement in the shim, native/divergence.cpp, its exp vectorized). Seconds; "open" is opening both models (after: to the first item). Goal: check <= 1.2 x forward.

${table(['round', 'forward s', 'before s', 'before: open s', 'before: JS KL s', 'before / forward', 'after s', 'after: open s', 'after / forward (goal <= 1.2)'], rows)}

Mean KL (self, so 0): before ${rounds.map((r) => r.meanKlBefore).join(', ')}; after ${rounds.map((r) => r.meanKlAfter).join(', ')}.`;
  if (!values['no-write']) writeSection(`kl-${path.basename(modelPath, '.gguf')}`, md, { machine: m, model: path.basename(modelPath), repeats, rounds });
  process.stdout.write(md + '\n');
}
