// Every architecture synth writes (one table each, src/synth/arch.ts), at 2 blocks and n_embd 64,
// F32: the checks of arch-checks.ts, one subtest per architecture.
import t from 'tap';
import { collectStats } from '../../src/stats/index.ts';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { ARCHS, archModel, coverage, maxRelErr } from './arch-lib.ts';
import { runArchChecks, type Checker } from './arch-checks.ts';

for (const arch of ARCHS) {
  t.test(arch, async (t) => {
    const c: Checker = {
      section() {},
      ok: (v, m) => t.ok(v, m), notOk: (v, m) => t.notOk(v, m), equal: (a, b, m) => t.equal(a, b, m), same: (a, b, m) => t.same(a, b, m),
      comment: (m) => t.comment(m),
    };
    await runArchChecks(arch, c);
  });
}

// MLA's per-head attn_k_b / attn_v_b are 3D dense weights: the packed path (several samples in one
// forward pass) splits their rows by sample as the one-sample path does
t.test('deepseek2: packed statistics equal one sample per forward pass', async (t) => {
  const modelPath = await archModel('deepseek2');
  const texts = ['Seven times eight is fifty-six.', 'Rain fell all night over the quiet harbour town.', '12 + 30 = 42', 'x'];
  // F32 KV cache without flash attention: llama.cpp's F16 attention kernels round differently per batch size
  const exact = { nCtx: 256, nThreads: 1, kvType: 'f32', flashAttn: 'off' } as const;
  const packed = await collectStats(modelPath, texts, { ...exact, pack: true });
  const single = await collectStats(modelPath, texts, { ...exact, pack: false });
  for (const name of ['blk.0.attn_k_b.weight', 'blk.1.attn_v_b.weight']) {
    const p = packed.stats.weights.get(name)!, s = single.stats.weights.get(name)!;
    t.equal(p.nMat, 4, `${name}: one matrix per head`);
    t.same(Array.from(p.counts), Array.from(s.counts), `${name}: counts per head`);
  }
  let worst = 0;
  for (const [name, w] of single.stats.weights) {
    const p = packed.stats.weights.get(name)!;
    worst = Math.max(worst, maxRelErr(p.normSum, w.normSum), maxRelErr(p.sum2, w.sum2));
  }
  t.ok(worst < 1e-5, `packed equals one-at-a-time (worst relative difference ${worst.toExponential(2)})`);
});

// Without flash attention the graph multiplies K by Q and the scores by V with MUL_MAT too: the
// callback sees them, their src0 is no GGUF tensor, and they are never collected
for (const arch of ['llama', 'deepseek2'] as const) {
  t.test(`${arch}: attention's own matmuls (flash attention off) are seen, not collected`, async (t) => {
    const modelPath = await archModel(arch);
    const info = readGgufSync(modelPath);
    const texts = ['Seven times eight is fifty-six.', 'Rain fell all night.'];
    const on = await collectStats(modelPath, texts, { nCtx: 256, nThreads: 1, matmuls: true, flashAttn: 'on' });
    const off = await collectStats(modelPath, texts, { nCtx: 256, nThreads: 1, matmuls: true, flashAttn: 'off' });
    const other = off.matmuls!.filter((m) => !info.tensorByName.has(m.name));
    t.ok(other.length > 0, `non-weight matmuls: ${other.map((m) => m.name).join(', ')}`);
    t.ok(other.every((m) => !m.accepted), 'none collected');
    t.same(coverage(info, off.matmuls!).seenWeights, coverage(info, on.matmuls!).seenWeights, 'the same weight matmuls either way');
    t.same([...off.stats.weights.keys()].sort(), [...on.stats.weights.keys()].sort(), 'the same statistics either way');
  });
}
