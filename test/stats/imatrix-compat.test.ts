// llama.cpp's own imatrix loader (common_imatrix_load, what llama-quantize --imatrix calls, exported by
// the prebuilt libllama-common) reads our statistics files: same names, sums and counts.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { llamaSourceDir, prebuiltBinsDir } from '../../src/native.ts';
import { collectStats, saveStats } from '../../src/stats/index.ts';
import { fixtureModel, repoRoot } from '../helpers/fixtures.ts';

const program = `
#include "imatrix-loader.h"
#include <cstdio>
int main(int argc, char ** argv) {
    common_imatrix m;
    if (argc < 2 || !common_imatrix_load(argv[1], m)) { printf("{\\"ok\\":false}\\n"); return 1; }
    printf("{\\"ok\\":true,\\"chunk_count\\":%d,\\"chunk_size\\":%d,\\"has_metadata\\":%s,\\"datasets\\":[", m.chunk_count, m.chunk_size, m.has_metadata ? "true" : "false");
    for (size_t i = 0; i < m.datasets.size(); ++i) printf("%s\\"%s\\"", i ? "," : "", m.datasets[i].c_str());
    printf("],\\"entries\\":{");
    bool first = true;
    for (const auto & kv : m.entries) {
        printf("%s\\"%s\\":{\\"sums\\":[", first ? "" : ",", kv.first.c_str());
        first = false;
        for (size_t j = 0; j < kv.second.sums.size(); ++j) printf("%s%.9g", j ? "," : "", kv.second.sums[j]);
        printf("],\\"counts\\":[");
        for (size_t j = 0; j < kv.second.counts.size(); ++j) printf("%s%lld", j ? "," : "", (long long) kv.second.counts[j]);
        printf("]}");
    }
    printf("}}\\n");
    return 0;
}
`;

const bins = prebuiltBinsDir();
const common = path.join(bins, 'libllama-common.so');
const haveCompiler = spawnSync('g++', ['--version']).status === 0;
const skip = process.platform !== 'linux' ? 'linux only' : !existsSync(common) ? 'no prebuilt libllama-common' : !haveCompiler ? 'no g++' : false;

t.test('common_imatrix_load reads a mathneuro statistics file', { skip }, async (t) => {
  const dir = path.join(repoRoot, '.cache', 'imatrix-loader');
  mkdirSync(dir, { recursive: true });
  const exe = path.join(dir, 'read-imatrix');
  if (!existsSync(exe)) {
    writeFileSync(path.join(dir, 'read-imatrix.cpp'), program);
    const src = llamaSourceDir();
    execFileSync('g++', ['-std=c++17', '-O1', path.join(dir, 'read-imatrix.cpp'), '-o', exe,
      `-I${path.join(src, 'common')}`, `-I${path.join(src, 'include')}`, `-I${path.join(src, 'ggml', 'include')}`,
      common, path.join(bins, 'libllama.v0.4.0.so'), path.join(bins, 'libggml.v0.4.0.so'), path.join(bins, 'libggml-base.so'), `-Wl,-rpath,${bins}`]);
  }
  for (const shape of ['tiny', 'moe-tiny'] as const) {
    const model = await fixtureModel({ shape, type: 'q8_0', seed: 5 });
    const texts = ['Tom has 3 apples and buys 5 more.', 'The river flows north.', 'Seven and six make thirteen.'];
    const { stats } = await collectStats(model, texts, { nCtx: 256, dataset: 'compat-test' });
    const file = path.join(t.testdir(), `${shape}.stats.gguf`);
    await saveStats(stats, file);
    const out = JSON.parse(execFileSync(exe, [file], { encoding: 'utf8' }));
    t.equal(out.ok, true, `${shape}: loaded`);
    t.equal(out.has_metadata, true);
    t.same(out.datasets, ['compat-test']);
    t.equal(out.chunk_count, 3, 'chunk_count = samples');
    t.same(Object.keys(out.entries).sort(), [...stats.weights.keys()].sort(), `${shape}: one entry per weight, in_norm_sum ignored by the loader`);
    let worst = 0;
    for (const [name, w] of stats.weights) {
      const e = out.entries[name];
      t.same(e.counts, Array.from(w.counts), `${name} counts`);
      t.equal(e.sums.length, w.sum2.length, `${name} size (x experts)`);
      for (let i = 0; i < w.sum2.length; i++) worst = Math.max(worst, Math.abs(e.sums[i] - w.sum2[i]) / Math.max(1e-12, w.sum2[i]));
    }
    t.ok(worst < 1e-6, `${shape}: sums equal our sum2 (F32 rounding, worst ${worst.toExponential(2)})`);
  }
});
