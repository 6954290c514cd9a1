// Collection speed: statistics passes versus plain llama.cpp forward passes of the same tokens with
// the same context settings, in the same process (the floor); the share of all-token logits;
// short samples one at a time versus packed into one pass; long sequences; thread scaling.
//   npm run bench -- collect [--model M.gguf] [--shape llama-1b] [--type mixed] [--samples 8] [--repeats 3]
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { StatsModel } from '../../src/stats/index.ts';
import type { SynthShapeName, SynthTypeName } from '../../src/synth.ts';
import { benchModel, dataDir, machine, machineLine, median, table, writeSection } from './common.ts';

export async function benchCollect(argv: string[]) {
  const { values } = parseArgs({ args: argv, options: {
    model: { type: 'string' }, shape: { type: 'string', default: 'llama-1b' }, type: { type: 'string', default: 'mixed' },
    samples: { type: 'string', default: '8' }, repeats: { type: 'string', default: '3' }, 'no-write': { type: 'boolean' },
  } });
  const m = machine();
  const modelPath = values.model ?? await benchModel(values.shape as SynthShapeName, values.type as SynthTypeName);
  const nSamples = Number(values.samples);
  const repeats = Number(values.repeats);
  const gsm = readFileSync(path.join(dataDir, 'gsm8k_train.jsonl'), 'utf8').split('\n').filter(Boolean).slice(0, nSamples)
    .map((l) => { const o = JSON.parse(l); return `${o.question}\n${o.answer}`; });
  // the same text as a few long sequences (about 4 samples each)
  const long: string[] = [];
  for (let i = 0; i < gsm.length; i += 4) long.push(gsm.slice(i, i + 4).join('\n\n'));
  const threads = os.availableParallelism();

  const rows: (string | number)[][] = [];
  const results: Record<string, unknown>[] = [];
  const run = async (label: string, nThreads: number, fn: (model: StatsModel) => Promise<{ tokens: number; elapsedMs: number }>) => {
    const model = await StatsModel.open(modelPath, { nCtx: 2048, nBatch: 2048, nThreads });
    try {
      await fn(model); // warm-up: page in the weights, build the graphs once
      const times: number[] = [];
      let tokens = 0;
      for (let r = 0; r < repeats; r++) { const x = await fn(model); times.push(x.elapsedMs); tokens = x.tokens; }
      const ms = median(times);
      const tokensPerSecond = tokens / (ms / 1000);
      results.push({ label, nThreads, tokens, medianMs: ms, tokensPerSecond, runsMs: times });
      process.stderr.write(`${label}: ${tokensPerSecond.toFixed(1)} tok/s (${tokens} tokens, median of ${repeats})\n`);
      return tokensPerSecond;
    } finally { model.dispose(); }
  };
  const stats = (texts: string[], pack: boolean) => async (model: StatsModel) => { const r = await model.collect(texts, { pack }); return { tokens: r.stats.tokens, elapsedMs: r.elapsedMs }; };
  const plain = (texts: string[], pack: boolean, logits: 'all' | 'last') => (model: StatsModel) => model.forward(texts, { pack, logits });

  const plainShort = await run('plain, short samples one at a time, all logits', threads, plain(gsm, false, 'all'));
  const plainShortLast = await run('plain, short samples one at a time, last logit only', threads, plain(gsm, false, 'last'));
  const statsShort = await run('stats, short samples one at a time', threads, stats(gsm, false));
  const plainPacked = await run('plain, short samples packed, all logits', threads, plain(gsm, true, 'all'));
  const statsPacked = await run('stats, short samples packed', threads, stats(gsm, true));
  const plainLong = await run('plain, long sequences, all logits', threads, plain(long, false, 'all'));
  const statsLong = await run('stats, long sequences', threads, stats(long, false));
  const stats1 = threads > 1 ? await run('stats, short samples packed, 1 thread', 1, stats(gsm, true)) : statsPacked;

  rows.push(['short samples, one per pass', plainShort.toFixed(1), statsShort.toFixed(1), (statsShort / plainShort).toFixed(3)]);
  rows.push(['short samples, packed', plainPacked.toFixed(1), statsPacked.toFixed(1), (statsPacked / plainPacked).toFixed(3)]);
  rows.push(['long sequences (4 samples each)', plainLong.toFixed(1), statsLong.toFixed(1), (statsLong / plainLong).toFixed(3)]);
  const logitsShare = 1 - plainShort / plainShortLast; // share of the all-logits pass time spent on the extra logits
  const cmd = `npm run bench -- collect ${values.model ? `--model ${values.model}` : `--shape ${values.shape} --type ${values.type}`} --samples ${nSamples} --repeats ${repeats}`;
  const md = `## Collection: statistics versus plain forward passes

\`${cmd}\`

${machineLine(m)} Model: ${path.basename(modelPath)}; ${nSamples} GSM8K train samples (question + worked answer), BOS added; n_ctx = n_batch = 2048; median of ${repeats} runs after a warm-up; tokens/s.

${table(['samples', 'plain forward (floor), tok/s', 'stats, tok/s', 'ratio (goal >= 0.97)'], rows)}

- Logits for every token (required: the last layer and the head must see all tokens) cost ${(logitsShare * 100).toFixed(1)}% of a plain pass on short samples one at a time (${plainShort.toFixed(1)} tok/s with all logits vs ${plainShortLast.toFixed(1)} with the last only).
- Packing short samples into one pass: plain ${plainShort.toFixed(1)} -> ${plainPacked.toFixed(1)} tok/s, stats ${statsShort.toFixed(1)} -> ${statsPacked.toFixed(1)} tok/s (x${(statsPacked / statsShort).toFixed(2)}); per-sample norms stay exact (test/stats/collector.test.ts).
- Threads: stats packed ${stats1.toFixed(1)} tok/s on 1 thread, ${statsPacked.toFixed(1)} on ${threads} (x${(statsPacked / stats1).toFixed(2)}).`;
  if (!values['no-write']) writeSection(`collect-${path.basename(modelPath, '.gguf')}`, md, { machine: m, model: path.basename(modelPath), nSamples, repeats, results });
  process.stdout.write(md + '\n');
}
