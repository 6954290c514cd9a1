// Collection speed against the floor a user sees: llama.cpp's own prompt processing of the same
// tokens with the same context settings (logits for the last token only, what llama-bench's pp
// measures), in the same process, interleaved run by run so the ratios come from one run. Beside it:
// the graph collection needs without statistics (all tokens through the last block, no head), the
// full graph with every token's logits, and collection with the output head (includeOutput: what
// collection did before it stopped at the final norm). Short samples one at a time, packed, and
// long sequences; then boost's KL check against the forward passes it needs.
//   npm run bench -- collect [--model M.gguf] [--shape llama-1b] [--type mixed] [--samples 8] [--repeats 3] [--kl-repeats 1]
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { StatsModel } from '../../src/stats/index.ts';
import { checkPatched, DEFAULT_KL_PROMPTS, DEFAULT_KL_TOKENS } from '../../src/pipeline.ts';
import { builtinSamples } from '../../src/calibration/index.ts';
import type { SynthShapeName, SynthTypeName } from '../../src/synth.ts';
import { benchModel, dataDir, machine, machineLine, median, table, writeSection } from './common.ts';

interface Run { tokens: number; elapsedMs: number; observeMs?: number; passes?: number; passesWithoutHead?: number }

export async function benchCollect(argv: string[]) {
  const { values } = parseArgs({ args: argv, options: {
    model: { type: 'string' }, shape: { type: 'string', default: 'llama-1b' }, type: { type: 'string', default: 'mixed' },
    samples: { type: 'string', default: '8' }, repeats: { type: 'string', default: '3' }, 'kl-repeats': { type: 'string', default: '1' },
    'no-write': { type: 'boolean' },
  } });
  const m = machine();
  const modelPath = values.model ?? await benchModel(values.shape as SynthShapeName, values.type as SynthTypeName);
  const nSamples = Number(values.samples);
  const repeats = Number(values.repeats);
  const klRepeats = Number(values['kl-repeats']);
  const gsm = readFileSync(path.join(dataDir, 'gsm8k_train.jsonl'), 'utf8').split('\n').filter(Boolean).slice(0, nSamples)
    .map((l) => { const o = JSON.parse(l); return `${o.question}\n${o.answer}`; });
  // the same text as a few long sequences (about 4 samples each)
  const long: string[] = [];
  for (let i = 0; i < gsm.length; i += 4) long.push(gsm.slice(i, i + 4).join('\n\n'));
  const threads = os.availableParallelism();

  const stats = (texts: string[], pack: boolean, includeOutput = false) => async (model: StatsModel): Promise<Run> => {
    const r = await model.collect(texts, { pack, includeOutput });
    return { tokens: r.stats.tokens, elapsedMs: r.elapsedMs, observeMs: r.observeMs, passes: r.passes, passesWithoutHead: r.passesWithoutHead };
  };
  const plain = (texts: string[], pack: boolean, logits: 'all' | 'last', skipHead = false) => (model: StatsModel): Promise<Run> => model.forward(texts, { pack, logits, skipHead });

  // every configuration on one loaded model, one run each per round, so a change in the machine's
  // load hits all of them alike; the warm-up pages the weights in (one sample, each kind of pass)
  const configs: { key: string; label: string; fn: (model: StatsModel) => Promise<Run> }[] = [
    { key: 'pp-short', label: 'plain, short samples one at a time, last logit only (prompt processing)', fn: plain(gsm, false, 'last') },
    { key: 'stats-short', label: 'stats, short samples one at a time', fn: stats(gsm, false) },
    { key: 'head-short', label: 'stats with the output head (includeOutput), short samples one at a time', fn: stats(gsm, false, true) },
    { key: 'pp-packed', label: 'plain, short samples packed, last logit of each', fn: plain(gsm, true, 'last') },
    { key: 'stats-packed', label: 'stats, short samples packed', fn: stats(gsm, true) },
    { key: 'head-packed', label: 'stats with the output head, short samples packed', fn: stats(gsm, true, true) },
    { key: 'pp-long', label: 'plain, long sequences, last logit only', fn: plain(long, false, 'last') },
    { key: 'stats-long', label: 'stats, long sequences', fn: stats(long, false) },
    // the graph statistics need, without statistics: every token through the last block, no head. What
    // no collector can beat, since the last block's statistics need every token's inputs
    { key: 'graph-short', label: 'plain, short samples one at a time, every token through the last block, no head', fn: plain(gsm, false, 'all', true) },
    { key: 'graph-packed', label: 'plain, short samples packed, every token through the last block, no head', fn: plain(gsm, true, 'all', true) },
    { key: 'graph-long', label: 'plain, long sequences, every token through the last block, no head', fn: plain(long, false, 'all', true) },
  ];
  const runs = new Map<string, Run[]>(configs.map((c) => [c.key, []]));
  const model = await StatsModel.open(modelPath, { nCtx: 2048, nBatch: 2048, nThreads: threads });
  try {
    await plain(gsm.slice(0, 1), false, 'last')(model);
    await stats(gsm.slice(0, 2), true, true)(model);
    for (let round = 1; round <= repeats; round++) {
      // alternate the order, so no configuration always follows the same one
      const order = round % 2 ? [...configs].reverse() : configs;
      for (const c of order) {
        const r = await c.fn(model);
        runs.get(c.key)!.push(r);
        process.stderr.write(`round ${round}: ${c.label}: ${(r.tokens / (r.elapsedMs / 1000)).toFixed(1)} tok/s (${r.tokens} tokens)\n`);
      }
    }
  } finally { model.dispose(); }
  const tps = (key: string) => { const rs = runs.get(key)!; return rs[0].tokens / (median(rs.map((r) => r.elapsedMs)) / 1000); };
  const observeShare = (key: string) => { const rs = runs.get(key)!; return median(rs.map((r) => (r.observeMs ?? 0) / r.elapsedMs)); };

  const rows: (string | number)[][] = [];
  for (const [label, suffix] of [['short samples, one per pass', 'short'], ['short samples, packed', 'packed'], ['long sequences (4 samples each)', 'long']] as const) {
    const pp = tps(`pp-${suffix}`), st = tps(`stats-${suffix}`), gr = tps(`graph-${suffix}`), hd = runs.has(`head-${suffix}`) ? tps(`head-${suffix}`) : NaN;
    rows.push([label, pp.toFixed(1), gr.toFixed(1), (gr / pp).toFixed(3), st.toFixed(1), (st / pp).toFixed(3), (st / gr).toFixed(3), Number.isNaN(hd) ? '-' : hd.toFixed(1), Number.isNaN(hd) ? '-' : (hd / pp).toFixed(3)]);
  }
  const stopped = runs.get('stats-short')!.every((r) => r.passesWithoutHead === r.passes);

  // boost's KL check (8 built-in general prompts x 128 tokens, full-vocabulary logits at every position
  // of both models, here the model against itself: the same cost as patched vs source) against the
  // forward passes it needs: the same tokens with every position's logits, through both models
  let kl: { checkMs: number; forwardMs: number; openMs: number; tokens: number } | undefined;
  if (klRepeats > 0) {
    const prompts = builtinSamples('general', { count: DEFAULT_KL_PROMPTS, seed: 1_000_000 }).map((s) => s.text);
    const checks: number[] = [], forwards: number[] = [], opens: number[] = [];
    let tokens = 0;
    for (let i = 0; i < klRepeats; i++) {
      let t0 = Date.now();
      await checkPatched(modelPath, modelPath, { kl: true }, { nThreads: threads });
      checks.push(Date.now() - t0);
      // the collector truncates each prompt to n_ctx tokens (BOS included) as the check does to 128
      t0 = Date.now();
      const pair = [await StatsModel.open(modelPath, { nCtx: DEFAULT_KL_TOKENS, nSeqMax: 1, nThreads: threads }), await StatsModel.open(modelPath, { nCtx: DEFAULT_KL_TOKENS, nSeqMax: 1, nThreads: threads })];
      opens.push(Date.now() - t0);
      try {
        let ms = 0;
        tokens = 0;
        for (const side of pair) { const r = await side.forward(prompts, { pack: false, logits: 'all' }); ms += r.elapsedMs; tokens += r.tokens; }
        forwards.push(ms);
      } finally { for (const side of pair) side.dispose(); }
      process.stderr.write(`KL check: ${(checks[i] / 1000).toFixed(1)} s; its forward passes alone: ${(forwards[i] / 1000).toFixed(1)} s (${tokens} tokens), opening both models ${(opens[i] / 1000).toFixed(1)} s\n`);
    }
    kl = { checkMs: median(checks), forwardMs: median(forwards), openMs: median(opens), tokens };
  }

  const cmd = `npm run bench -- collect ${values.model ? `--model ${values.model}` : `--shape ${values.shape} --type ${values.type}`} --samples ${nSamples} --repeats ${repeats}${klRepeats !== 1 ? ` --kl-repeats ${klRepeats}` : ''}`;
  const md = `## Collection: statistics versus llama.cpp's prompt processing

\`${cmd}\`

${machineLine(m)} Model: ${path.basename(modelPath)}; ${nSamples} GSM8K train samples (question + worked answer), BOS added; n_ctx = n_batch = 2048, ${threads} threads; every configuration on one loaded model, interleaved round by round (median of ${repeats} rounds after a warm-up); tokens/s. The floor is llama.cpp's prompt processing: the same tokens, logits for the last token only (the last block's FFN and the head then run on one token per sequence). Statistics request every token's logits, so the last block sees all tokens, but end each pass at the final norm (\`result_norm\`): the head's matmul is not computed. "with head" is \`includeOutput\` (\`stats --include-output\`): the whole graph, what collection ran before.

The "graph" columns are the passes statistics need, run without statistics (every token through the last block, no head): the ceiling of any collector of these statistics, measured.

${table(['samples', 'prompt processing (floor), tok/s', 'graph, tok/s', 'graph / pp (ceiling)', 'stats, tok/s', 'stats / pp (goal >= 0.97)', 'stats / graph', 'stats with head, tok/s', 'ratio'], rows)}

- Where a stats pass goes, short samples one at a time: the head on every token (before) cost ${((1 - tps('head-short') / tps('stats-short')) * 100).toFixed(1)}% of a pass with it; the statistics themselves (time inside the callback's accumulation, measured in the shim) take ${(observeShare('stats-short') * 100).toFixed(1)}% of a stats pass (packed ${(observeShare('stats-packed') * 100).toFixed(1)}%, long ${(observeShare('stats-long') * 100).toFixed(1)}%); the rest of the gap to prompt processing is llama.cpp running the last block on every token instead of one per sequence, which the last block's statistics need: that graph alone, with no statistics, runs at ${(tps('graph-short') / tps('pp-short')).toFixed(3)} of prompt processing one sample a pass (packed ${(tps('graph-packed') / tps('pp-packed')).toFixed(3)}, long ${(tps('graph-long') / tps('pp-long')).toFixed(3)}), so the goal of 0.97 is above what any collector of these statistics can reach on this model.${stopped ? '' : ' WARNING: some passes were not stopped at the final norm.'}${kl ? `
- Boost's KL check (${DEFAULT_KL_PROMPTS} built-in general prompts x ${DEFAULT_KL_TOKENS} tokens through both models, full-vocabulary logits at every position; here the model against itself, which costs what patched vs source costs; median of ${klRepeats}): ${(kl.checkMs / 1000).toFixed(1)} s, against ${(kl.forwardMs / 1000).toFixed(1)} s for its forward passes alone (the same ${kl.tokens} tokens, every position's logits, plain passes of the shim): x${(kl.checkMs / kl.forwardMs).toFixed(2)} (goal <= 1.2); opening both models takes ${(kl.openMs / 1000).toFixed(1)} s of the check (x${(kl.checkMs / (kl.forwardMs + kl.openMs)).toFixed(2)} of forward passes + opening).` : ''}`;
  if (!values['no-write']) writeSection(`collect-${path.basename(modelPath, '.gguf')}`, md, { machine: m, model: path.basename(modelPath), nSamples, repeats, runs: Object.fromEntries(runs), kl });
  process.stdout.write(md + '\n');
}
