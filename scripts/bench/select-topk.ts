// Micro-bench of the native top-K selector alone: every scored tensor of a model is read into memory
// once, then selectTopK runs over all of them as `mathneuro select` calls it (the mathneuro method:
// math and general column weights, one group per matrix; --row: wanda-row's one group per row).
// Prints the seconds of each repeat and a sha256 over every mask, so that two builds can be
// compared in one process, interleaved (--addon path/to/other/mathneuro.node, repeatable; "current"
// is the build src/native.ts picks).
//   npx tsx scripts/bench/select-topk.ts model.gguf --math m.stats.gguf --general g.stats.gguf --top-k 0.1 [--threads N[,N...]] [--repeats 3] [--addon base.node]
//     [--simd-level 0,1,2] (the fused pass's kernels: baseline, AVX2, AVX-512, as far as the CPU runs them)
import { createHash } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { openModelSync } from '../../src/gguf/model.ts';
import { loadNative, type NativeBinding } from '../../src/native.ts';
import { planTensors, topKCount, wandaColumnWeights } from '../../src/select/select.ts';
import { loadStatisticsFor } from '../../src/select/statistics.ts';
import { readTensorBytes } from '../../src/core/tensor-io.ts';
import { median } from './common.ts';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    math: { type: 'string' }, general: { type: 'string' }, 'top-k': { type: 'string' }, threads: { type: 'string' },
    repeats: { type: 'string' }, 'simd-level': { type: 'string' }, addon: { type: 'string', multiple: true }, row: { type: 'boolean' }, 'radix-min-group': { type: 'string' },
  },
});
const model = openModelSync(positionals[0]);
const method = values.row ? 'wanda-row' : 'mathneuro';
const math = (await loadStatisticsFor(values.math!, 'math', model, method)).stats;
const general = values.general ? (await loadStatisticsFor(values.general, 'general', model, method)).stats : undefined;
const topK = (values['top-k'] ?? '0.1').split(',').map(Number);
const threadCounts = values.threads ? values.threads.split(',').map(Number) : [undefined];
const simdLevels = values['simd-level'] ? values['simd-level'].split(',').map(Number) : [undefined];
const repeats = Number(values.repeats ?? 3);
const radixMinGroup = values['radix-min-group'] ? Number(values['radix-min-group']) : undefined;
const plan = planTensors(model, math);
const fd = openSync(model.path, 'r');
const tensors = plan.scored.map((s) => ({ s, bytes: readTensorBytes(fd, s.tensor) }));
closeSync(fd);

const require = createRequire(import.meta.url);
const builds: { name: string; binding: NativeBinding }[] = [{ name: 'current', binding: loadNative() }];
for (const a of values.addon ?? []) builds.push({ name: path.basename(a), binding: require(path.resolve(a)) as NativeBinding });
// every build at every thread count and SIMD level, interleaved
const addons = builds.flatMap((b) => threadCounts.flatMap((threads) => simdLevels.map((simdLevel) => ({
  ...b, threads, simdLevel, name: [b.name, threads === undefined ? '' : `t=${threads}`, simdLevel === undefined ? '' : `simd=${simdLevel}`].filter(Boolean).join(' '),
}))));

async function once(binding: NativeBinding, threads: number | undefined, simdLevel: number | undefined): Promise<{ seconds: number; sha256: string }> {
  const hash = createHash('sha256');
  const t0 = performance.now();
  const results: Uint8Array[][][] = [];
  for (const { s, bytes } of tensors) {
    const nIn = s.tensor.shape[0];
    const request = { type: s.tensor.type, data: bytes, nIn, rows: s.rows, matrices: s.matrices, threads, radixMinGroup, simdLevel };
    if (values.row) results.push(await binding.selectTopK({ ...request, colWeights: [wandaColumnWeights(s.stats)], groupBy: 'row', counts: topK.map((k) => topKCount(nIn, k)) }));
    else {
      const g = general!.weights.get(s.tensor.name)!;
      results.push(await binding.selectTopK({ ...request, colWeights: [s.stats.normSum, g.normSum], groupBy: 'matrix', counts: topK.map((k) => topKCount(nIn * s.rows, k)) }));
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  for (const r of results) for (const set of r) for (const m of set) hash.update(m);
  return { seconds, sha256: hash.digest('hex').slice(0, 16) };
}

const times = new Map<string, number[]>();
const hashes = new Map<string, Set<string>>();
for (const a of addons) await once(a.binding, a.threads, a.simdLevel);   // warm-up: page faults of the buffers, code
for (let r = 0; r < repeats; r++) {
  for (const a of addons) {
    const { seconds, sha256 } = await once(a.binding, a.threads, a.simdLevel);
    times.set(a.name, [...(times.get(a.name) ?? []), seconds]);
    hashes.set(a.name, (hashes.get(a.name) ?? new Set()).add(sha256));
  }
}
for (const a of addons) {
  const t = times.get(a.name)!;
  process.stdout.write(`${a.name.padEnd(24)} median ${median(t).toFixed(3)} s  [${t.map((x) => x.toFixed(3)).join(', ')}]  masks ${[...hashes.get(a.name)!].join(',')}\n`);
}
