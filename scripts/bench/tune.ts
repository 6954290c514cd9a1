// The cost of one tune candidate (patch the loaded weights in memory, then the forward passes that
// score it) against the same forward passes on the unpatched model, on the arith fixture (F32) and
// its Q8_0 copy (requantized blocks: the 'best' strategy). Medians over repeats, candidates and
// baseline passes interleaved so that machine load hits both alike. Goal: ratio <= 1.2.
//   npm run bench -- tune [--repeats 5] [--threads 1] [--objective 32] [--prompts 4] [--synth tiny:q8_0] [--model M.gguf]
// (a --synth or --model row uses the gsm8k task: built-in calibration, GSM8K worked solutions)
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { openModelSync } from '../../src/gguf/model.ts';
import { calibrationStats } from '../../src/pipeline.ts';
import { requantizeModel } from '../../src/quantize.ts';
import { InMemoryPatcher, Scorer, TuneModel } from '../../src/tune/model.ts';
import { arithFixtureTask, gsm8kTask, type TuneTask } from '../../src/tune/tasks.ts';
import type { SynthShapeName, SynthTypeName } from '../../src/synth.ts';
import { benchDir, benchModel, machine, machineLine, median, repoRoot, table, writeSection } from './common.ts';

process.env.OMP_WAIT_POLICY ??= 'passive';

export async function benchTune(argv: string[]) {
  const { values } = parseArgs({ args: argv, options: {
    repeats: { type: 'string', default: '5' }, threads: { type: 'string', default: '1' },
    objective: { type: 'string', default: '32' }, prompts: { type: 'string', default: '4' }, 'no-write': { type: 'boolean' },
    model: { type: 'string' }, synth: { type: 'string' }, 'only-model': { type: 'boolean' },
  } });
  const repeats = Number(values.repeats), threads = Number(values.threads);
  const sizes = { objective: Number(values.objective), general: Number(values.prompts), samples: 20, seed: 0 };
  const m = machine();
  const fixture = path.join(repoRoot, 'test', 'fixtures', 'arith', 'model.gguf');
  mkdirSync(benchDir, { recursive: true });
  const q8 = await requantizeModel({ source: fixture, out: path.join(benchDir, 'arith-q8_0.gguf'), type: 'q8_0', force: true });
  const rows: (string | number)[][] = [];
  const json: unknown[] = [];
  const points = [{ topK: 0.005, scale: 1.1 }, { topK: 0.1, scale: 1.1 }];
  // --model M: also a model of your own, with the gsm8k task (built-in calibration, GSM8K objective)
  const models: [string, string, TuneTask][] = values['only-model'] ? [] : [['arith F32', fixture, arithFixtureTask()], ['arith Q8_0', q8.path, arithFixtureTask()]];
  if (values.model) models.push([path.basename(values.model), values.model, gsm8kTask()]);
  if (values.synth) {   // e.g. tiny:q8_0, a generated model with a real tokenizer (scripts/bench/common.ts benchModel)
    const [shape, type] = values.synth.split(':');
    models.push([`synth ${values.synth}`, await benchModel(shape as SynthShapeName, (type ?? 'q8_0') as SynthTypeName), gsm8kTask()]);
  }
  for (const [label, model, task] of models) {
    const info = openModelSync(model);
    const data = task.data(sizes, benchDir);
    const math = await calibrationStats(info, 'math', data.calibration.math, { cacheDir: benchDir, samples: sizes.samples, nThreads: threads });
    const general = await calibrationStats(info, 'general', data.calibration.general, { cacheDir: benchDir, samples: sizes.samples, nThreads: threads });
    if (!label.startsWith('arith')) console.error(`${label}: ${data.describe}`);
    const tm = await TuneModel.open(model, { nThreads: threads });
    try {
      const patcher = new InMemoryPatcher(info, tm, { method: 'mathneuro', math: math.stats, general: general.stats, strategy: 'best', threads });
      await patcher.prepare(points.map((p) => p.topK));
      const scorer = await Scorer.create(tm, data.objective.search, data.general.search, { klTokens: 128 });
      await scorer.measure();   // warm-up
      for (const p of points) {
        const forward: number[] = [], patch: number[] = [], candidate: number[] = [];
        const forwardCpu: number[] = [], patchCpu: number[] = [], candidateCpu: number[] = [];
        // CPU time of the process (every thread: JS, libuv's pool, ggml's) besides wall time: on a
        // shared machine the wall clock mostly measures the other processes
        const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
        for (let r = 0; r < repeats; r++) {
          patcher.restore();
          let t0 = performance.now(), c0 = cpu();
          await scorer.measure();
          forward.push(performance.now() - t0); forwardCpu.push(cpu() - c0);
          t0 = performance.now(); c0 = cpu();
          await patcher.apply(p.topK, p.scale);
          const t1 = performance.now(), c1 = cpu();
          await scorer.measure();
          patch.push(t1 - t0); patchCpu.push(c1 - c0);
          candidate.push(performance.now() - t0); candidateCpu.push(cpu() - c0);
        }
        patcher.restore();
        const row = {
          model: label, topK: p.topK, scale: p.scale, selected: patcher.selectedWeights(p.topK),
          forwardMs: median(forward), patchMs: median(patch), candidateMs: median(candidate), ratio: median(candidate) / median(forward),
          forwardCpuMs: median(forwardCpu), patchCpuMs: median(patchCpu), candidateCpuMs: median(candidateCpu), cpuRatio: median(candidateCpu) / median(forwardCpu),
        };
        json.push(row);
        rows.push([label, `${p.topK * 100}% x${p.scale}`, row.selected, row.forwardCpuMs, row.patchCpuMs, row.candidateCpuMs, row.cpuRatio, row.forwardMs, row.candidateMs, row.ratio]);
        console.error(`${label} K=${p.topK} x${p.scale}: CPU forward ${row.forwardCpuMs.toFixed(1)} ms, patch ${row.patchCpuMs.toFixed(1)} ms, candidate ${row.candidateCpuMs.toFixed(1)} ms, x${row.cpuRatio.toFixed(3)}; wall forward ${row.forwardMs.toFixed(1)}, candidate ${row.candidateMs.toFixed(1)}, x${row.ratio.toFixed(3)}`);
      }
    } finally { tm.dispose(); }
  }
  const md = [
    '## tune: cost of one candidate versus one unpatched pass',
    '',
    `\`npm run bench -- tune ${argv.join(' ')}\`: per candidate, the loaded weights are patched in memory (src/tune/model.ts: patchTensorInPlace on the original bytes, setWeight) and the same forward passes are run as on the unpatched model (${sizes.objective} objective problems, ${sizes.general} general prompts of up to 128 tokens, one sequence per pass; the unpatched pass includes the same log-softmax and KL arithmetic over the logits as a candidate's); medians of ${repeats}, interleaved. CPU time is the process's (all threads; robust to other load on the machine), wall time is what a user waits. Goal: ratio <= 1.2.`,
    '',
    machineLine(m),
    '',
    table(['model', 'candidate', 'weights selected', 'unpatched pass, CPU ms', 'patch, CPU ms', 'candidate, CPU ms', 'ratio (CPU)', 'unpatched pass, wall ms', 'candidate, wall ms', 'ratio (wall)'], rows),
  ].join('\n');
  if (!values['no-write']) writeSection('tune', md, { machine: m, repeats, threads, sizes, rows: json });
  console.log(md);
}
