// llama.cpp's own imatrix collection versus `mathneuro stats` on the same model and text: both
// collect per-column sums of squares inside llama.cpp's graph evaluation; mathneuro also keeps the
// per-sample norms and requests every token's logits. llama-imatrix is compiled here (benchmark only)
// from the bundled source (tools/imatrix/imatrix.cpp) against node-llama-cpp's prebuilt libllama-common.
//   npm run bench -- imatrix [--model M.gguf | --shape llama-1b --type mixed] [--chunks 4] [--ctx 512] [--repeats 3]
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { llamaSourceDir, prebuiltBinsDir } from '../../src/native.ts';
import { StatsModel } from '../../src/stats/index.ts';
import type { SynthShapeName, SynthTypeName } from '../../src/synth.ts';
import { benchDir, benchModel, dataDir, machine, machineLine, median, table, writeSection } from './common.ts';

function buildImatrix(): string {
  const dir = path.join(benchDir, 'imatrix');
  const exe = path.join(dir, 'llama-imatrix');
  if (existsSync(exe)) return exe;
  mkdirSync(dir, { recursive: true });
  const bins = prebuiltBinsDir();
  const src = llamaSourceDir();
  process.stderr.write('compiling llama-imatrix against the prebuilt libllama-common (benchmark only)...\n');
  execFileSync('g++', ['-std=c++17', '-O2', path.join(src, 'tools', 'imatrix', 'imatrix.cpp'), '-o', exe,
    `-I${path.join(src, 'common')}`, `-I${path.join(src, 'include')}`, `-I${path.join(src, 'ggml', 'include')}`, `-I${path.join(src, 'vendor')}`,
    path.join(bins, 'libllama-common.so'), path.join(bins, 'libllama.v0.4.0.so'), path.join(bins, 'libggml.v0.4.0.so'), path.join(bins, 'libggml-base.so'),
    `-Wl,-rpath,${bins}`], { stdio: 'inherit' });
  // ggml_backend_load_all looks for the CPU backends beside the executable
  for (const f of readdirSync(bins)) if (/^libggml-cpu-.*\.so$/.test(f)) symlinkSync(path.join(bins, f), path.join(dir, f));
  return exe;
}

export async function benchImatrix(argv: string[]) {
  const { values } = parseArgs({ args: argv, options: {
    model: { type: 'string' }, shape: { type: 'string', default: 'llama-1b' }, type: { type: 'string', default: 'mixed' },
    chunks: { type: 'string', default: '4' }, ctx: { type: 'string', default: '512' }, repeats: { type: 'string', default: '3' }, 'no-write': { type: 'boolean' },
  } });
  const m = machine();
  const model = values.model ?? await benchModel(values.shape as SynthShapeName, values.type as SynthTypeName);
  const nCtx = Number(values.ctx), chunks = Number(values.chunks), repeats = Number(values.repeats);
  const threads = os.availableParallelism();
  const exe = buildImatrix();
  // the same text for both: GSM8K train samples until there are enough tokens for `chunks` windows
  const statsModel = await StatsModel.open(model, { nCtx, nBatch: nCtx, nThreads: threads, nSeqMax: 1 });
  const lines = readFileSync(path.join(dataDir, 'gsm8k_train.jsonl'), 'utf8').split('\n').filter(Boolean);
  const windows: string[] = [];
  let current = '';
  for (const l of lines) {
    const o = JSON.parse(l);
    const next = current ? `${current}\n\n${o.question}\n${o.answer}` : `${o.question}\n${o.answer}`;
    if (statsModel.tokenize(next).length > nCtx) { windows.push(current); current = `${o.question}\n${o.answer}`; if (windows.length === chunks + 2) break; } else current = next;
  }
  const textFile = path.join(benchDir, 'imatrix-text.txt');
  writeFileSync(textFile, windows.join('\n\n')); // llama-imatrix wants more text than it uses
  windows.length = chunks;
  const ours: number[] = [];
  let ourTokens = 0;
  await statsModel.collect(windows.slice(0, 1), { pack: false }); // warm-up
  for (let r = 0; r < repeats; r++) {
    const res = await statsModel.collect(windows, { pack: false });
    ours.push(res.elapsedMs); ourTokens = res.stats.tokens;
  }
  statsModel.dispose();
  const theirs: number[] = [];
  let theirTokens = 0;
  for (let r = 0; r < repeats + 1; r++) {
    const out = path.join(benchDir, 'imatrix-out.gguf');
    const t0 = Date.now();
    const run = spawnSync(exe, ['-m', model, '-f', textFile, '-o', out, '-c', String(nCtx), '-b', String(nCtx), '-t', String(threads), '--chunks', String(chunks), '--no-ppl', '-ngl', '0'], { encoding: 'utf8' });
    const wall = Date.now() - t0;
    if (run.status !== 0) throw new Error(`llama-imatrix failed: ${run.stderr.slice(-1500)}`);
    const spp = /([\d.]+) seconds per pass/.exec(run.stderr);
    const n = /computing over (\d+) chunks/.exec(run.stderr);
    theirTokens = Number(n?.[1] ?? chunks) * nCtx;
    // the compute time: seconds per pass x chunks when printed, else the wall time
    if (r > 0) theirs.push(spp ? Number(spp[1]) * 1000 * Number(n?.[1] ?? chunks) : wall);
    rmSync(out, { force: true });
  }
  const ourTps = ourTokens / (median(ours) / 1000);
  const theirTps = theirTokens / (median(theirs) / 1000);
  const cmd = `npm run bench -- imatrix ${values.model ? `--model ${values.model}` : `--shape ${values.shape} --type ${values.type}`} --chunks ${chunks} --ctx ${nCtx} --repeats ${repeats}`;
  const md = `## Collection versus llama.cpp's own imatrix tool

\`${cmd}\`

${machineLine(m)} Model: ${path.basename(model)}; the text: GSM8K train samples in ${chunks} windows of <= ${nCtx} tokens; ${threads} threads; median of ${repeats} after a warm-up. llama-imatrix (tools/imatrix of the bundled llama.cpp, compiled against the prebuilt libraries) with --no-ppl; its time is its own "seconds per pass" x chunks (model loading excluded on both sides).

${table(['collector', 'tokens', 'tokens/s', 'ratio to llama-imatrix'], [
    ['llama-imatrix (sums of squares)', theirTokens, theirTps.toFixed(1), '1.000'],
    ['mathneuro stats (sums of squares + per-sample norms + all logits)', ourTokens, ourTps.toFixed(1), (ourTps / theirTps).toFixed(3)],
  ])}`;
  if (!values['no-write']) writeSection(`imatrix-${path.basename(model, '.gguf')}`, md, { machine: m, model: path.basename(model), nCtx, chunks, repeats, oursMs: ours, theirsMs: theirs, ourTokens, theirTokens });
  process.stdout.write(md + '\n');
}
