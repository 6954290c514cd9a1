// The shim's klRows (native/divergence.cpp: what the kl task sums) against divergence.ts's float64 JS
// (logSoftmaxRow + klOfLogRows, the reference) on real logits rows of generated models.
import t, { type Test } from 'tap';
import { copyFileSync, closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import { klOfLogRows, logSoftmaxRow } from '../../src/eval/divergence.ts';
import { NativeRuntime } from '../../src/eval/native-runtime.ts';
import { loadNative } from '../../src/native.ts';
import { evalTestModel } from './helpers.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'mathneuro-kl-rows-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** The JS reference: per row, log-softmax of both in float64, then KL and top-token agreement. */
function reference(p: Float32Array, q: Float32Array, n: number): { kl: number[]; sameTop: boolean[] } {
  const lp = new Float64Array(n), lq = new Float64Array(n);
  const out = { kl: [] as number[], sameTop: [] as boolean[] };
  for (let off = 0; off < p.length; off += n) {
    logSoftmaxRow(p, off, n, lp);
    logSoftmaxRow(q, off, n, lq);
    const r = klOfLogRows(lp, lq);
    out.kl.push(r.kl);
    out.sameTop.push(r.sameTop);
  }
  return out;
}

/**
 * How far two correct double computations of one row's KL may differ. Both sides read the same float32
 * logits and sum n terms naively in double (unit roundoff u = 2^-53): a sum of n terms is off by at most
 * (n - 1) u of the sum of their magnitudes (Higham, gamma_n). The JS's log-sum-exp, hence each log p_i and
 * log q_i, is off by <= n u + a few u (exp and log are within 1 ulp); its KL weighs |log p_i - log q_i| <= D
 * by p_i (sum 1), so it is off by <= 2 (n u)(1 + D) from the log-probabilities and n u D from its own sum.
 * The shim's Sd / Sp - (lse p - lse q) is off by <= n u D (Sd's terms are e^a_i |p_i - q_i|, Sp's times D)
 * plus 2 n u (the two lse). Together <= 6 n u (1 + D); the bound takes 8. D is the largest
 * |log p_i - log q_i| of the row, bounded by max |p_i - q_i| + |lse p - lse q|.
 */
function tolerance(p: Float32Array, q: Float32Array, off: number, n: number): number {
  const lse = (x: Float32Array) => {
    let m = -Infinity; for (let i = 0; i < n; i++) m = Math.max(m, x[off + i]!);
    let s = 0; for (let i = 0; i < n; i++) s += Math.exp(x[off + i]! - m);
    return m + Math.log(s);
  };
  let d = 0;
  // a token p gives no mass adds nothing to either side's KL
  for (let i = 0; i < n; i++) if (p[off + i] !== -Infinity) d = Math.max(d, Math.abs(p[off + i]! - q[off + i]!));
  d += Math.abs(lse(p) - lse(q));
  return 8 * n * 2 ** -53 * (1 + d);
}

async function compare(t: Test, p: Float32Array, q: Float32Array, n: number, what: string) {
  const got = await loadNative().klRows(p, q, n);
  const want = reference(p, q, n);
  t.equal(got.kl.length, p.length / n, `${what}: one KL per row`);
  let worst = 0, worstRatio = 0, mismatchedTop = 0;
  for (let r = 0; r < want.kl.length; r++) {
    const diff = Math.abs(got.kl[r]! - want.kl[r]!);
    const tol = tolerance(p, q, r * n, n);
    worst = Math.max(worst, diff);
    worstRatio = Math.max(worstRatio, diff / tol);
    if ((got.sameTop[r] === 1) !== want.sameTop[r]) mismatchedTop++;
  }
  t.ok(worstRatio <= 1, `${what}: worst |native - JS| ${worst.toExponential(2)} (${worstRatio.toExponential(2)} of the bound)`);
  t.equal(mismatchedTop, 0, `${what}: the same top-token agreement on every row`);
  return { got, want };
}

/** A copy of `source` with one F32 weight matrix scaled by `factor` in place (a patched model's kind of change). */
async function scaledCopy(source: string, tensorName: string, factor: number, name: string): Promise<string> {
  const info = await readGgufFileInfo(source, { readTensorInfo: true });
  const tensor = info.fullTensorInfo!.find((x) => x.name === tensorName)!;
  const numel = tensor.dimensions.reduce((a: number, b) => a * Number(b), 1);
  const out = path.join(dir, name);
  copyFileSync(source, out);
  const fd = openSync(out, 'r+');
  const buf = Buffer.alloc(numel * 4);
  readSync(fd, buf, 0, numel * 4, Number(tensor.fileOffset));
  const f = new Float32Array(buf.buffer, buf.byteOffset, numel);
  for (let i = 0; i < numel; i++) f[i] = f[i]! * factor;
  writeSync(fd, buf, 0, numel * 4, Number(tensor.fileOffset));
  closeSync(fd);
  return out;
}

const text = 'The river runs past the old mill, where the miller keeps seven cats and a dog named Rex. In the evening the cats sit on the wall and watch the water.';

async function rows(modelPath: string): Promise<{ logits: Float32Array; nVocab: number }> {
  const rt = await NativeRuntime.open(modelPath, { nCtx: 256, nThreads: 1 });
  try {
    return await rt.withSlot((slot) => slot.logits(rt.tokenize(text)));
  } finally { await rt.close(); }
}

t.test('klRows equals the float64 JS reference on real logits rows', async (t) => {
  const model = await evalTestModel();
  const source = await rows(model);
  const n = source.nVocab;
  t.ok(n > 1000 && source.logits.length / n > 20, `${source.logits.length / n} rows of ${n} logits`);
  // a slightly changed model (one FFN matrix x1.1: boost's kind of change; KL small) and a damaged one (x0: large)
  const scaled = await rows(await scaledCopy(model, 'blk.1.ffn_down.weight', 1.1, 'scaled.gguf'));
  const zeroed = await rows(await scaledCopy(model, 'blk.0.ffn_down.weight', 0, 'zeroed.gguf'));
  const other = await rows(await evalTestModel({ seed: 8 }));
  const self = await compare(t, source.logits, source.logits, n, 'self');
  t.ok(self.got.kl.every((x) => x === 0), 'self: every KL exactly 0');
  const small = await compare(t, source.logits, scaled.logits, n, 'x1.1');
  t.ok(small.want.kl.some((x) => x > 0), 'x1.1: KL > 0');
  await compare(t, source.logits, zeroed.logits, n, 'zeroed');
  const far = await compare(t, source.logits, other.logits, n, 'another model');
  t.ok(far.got.sameTop.some((x) => x === 0), 'another model: some top tokens differ');
});

t.test('logits into a caller\'s buffer: the same values as a fresh one, reused; a short or wrong buffer is refused', async (t) => {
  const rt = await NativeRuntime.open(await evalTestModel(), { nCtx: 256, nThreads: 1 });
  try {
    const tokens = rt.tokenize(text);
    const fresh = await rt.logits(tokens);
    const n = fresh.nVocab;
    const buffer = new Float32Array((tokens.length + 3) * n).fill(Number.NaN);
    const into = await rt.logits(tokens, buffer);
    t.equal(into.logits.buffer, buffer.buffer, 'a view of the given buffer');
    t.equal(into.logits.length, tokens.length * n, 'tokens x nVocab values');
    t.ok(Buffer.from(into.logits.buffer, into.logits.byteOffset, into.logits.byteLength).equals(Buffer.from(fresh.logits.buffer, fresh.logits.byteOffset, fresh.logits.byteLength)), 'bitwise the fresh logits');
    t.ok(Number.isNaN(buffer[tokens.length * n]!), 'nothing written past tokens x nVocab');
    // reused for a shorter prompt: its rows are that prompt's
    const shorter = tokens.slice(0, 5);
    const again = await rt.logits(shorter, buffer);
    const alone = await rt.logits(shorter);
    t.same(Array.from(again.logits), Array.from(alone.logits), 'a second prompt in the same buffer');
    await t.rejects(rt.logits(tokens, new Float32Array(tokens.length * n - 1)), { code: 'EUSAGE' }, 'one value short');
    await t.rejects(rt.logits(tokens, new Float64Array(tokens.length * n) as unknown as Float32Array), { code: 'EUSAGE' }, 'not a Float32Array');
  } finally { await rt.close(); }
});

t.test('klRows: edge rows and usage', async (t) => {
  const klRows = loadNative().klRows;
  // -Infinity in p adds nothing; in q where p has mass, KL is +Infinity; ties pick the first maximum
  const n = 4;
  const p = Float32Array.from([0, -Infinity, 1, 1, /**/ 0, 0, 0, 0, /**/ 2, 1, 0, -1]);
  const q = Float32Array.from([0, 5, 1, 1, /**/ 0, -Infinity, 0, 0, /**/ 2, 1, 0, -1]);
  const got = await klRows(p, q, n);
  const want = reference(p, q, n);
  t.ok(Math.abs(got.kl[0]! - want.kl[0]!) <= 1e-15 && want.kl[0]! > 0, `row with -inf in p: ${got.kl[0]} vs ${want.kl[0]}`);
  t.equal(got.kl[1], Infinity);
  t.equal(want.kl[1], Infinity);
  t.equal(got.kl[2], 0);
  t.same(Array.from(got.sameTop, (x) => x === 1), want.sameTop);
  // rows long enough for the shim's lane loops (16 at a time) plus a tail, spread past where exp()
  // leaves the normal numbers (below max - 708) and underflows to 0 (below max - 745), with -inf in p
  // and q inside the lanes (rows 2 and 3 have one token far above the rest): the float64 reference within its bound
  {
    const m = 16 * 7 + 5, rowsN = 6;
    const wp = new Float32Array(m * rowsN), wq = new Float32Array(m * rowsN);
    for (let r = 0; r < rowsN; r++) {
      for (let i = 0; i < m; i++) {
        const x = i === 40 + r && (r === 2 || r === 3) ? 1000 : Math.sin(i * 1.7 + r) * (r < 3 ? 900 : 12);
        wp[r * m + i] = x;
        wq[r * m + i] = x + Math.cos(i * 0.9 + r) * (r % 2 ? 0.5 : 0.01);
      }
    }
    wp[5] = -Infinity; wq[5] = -Infinity; // no mass on either side
    wp[m + 17] = -Infinity; // no mass in p only
    const wide = await compare(t, wp, wq, m, 'wide rows in lanes and tail');
    t.ok([0, 1, 4, 5].every((r) => wide.want.kl[r]! > 1e-6), `rows without one far top token have a KL to get right: ${wide.want.kl.map((x) => x.toExponential(1)).join(', ')}`);
    // q gives no mass where p has its top, or a denormal e^(280 - 1000): +Infinity, as in the reference
    const top = Float32Array.from(wq); top[2 * m + 42] = -Infinity;
    const denormal = Float32Array.from(wp); denormal[3 * m + 20] = 280; const dq = Float32Array.from(wq); dq[3 * m + 20] = -Infinity;
    t.equal((await klRows(wp, top, m)).kl[2], Infinity, 'no mass in q at p\'s top: +Infinity');
    t.equal(reference(denormal.subarray(3 * m, 4 * m), dq.subarray(3 * m, 4 * m), m).kl[0], Infinity, 'the reference: a denormal mass against none is +Infinity');
    t.equal((await klRows(denormal, dq, m)).kl[3], Infinity, 'no mass in q where p has e^-720 of its top: +Infinity');
  }
  // several threads give the same numbers
  const big = Float32Array.from({ length: 64 * 50 }, (_, i) => Math.sin(i * 0.37) * 4);
  const big2 = Float32Array.from({ length: 64 * 50 }, (_, i) => Math.sin(i * 0.37 + 0.01) * 4);
  t.same(await klRows(big, big2, 64, 3), await klRows(big, big2, 64));
  // checked on the JS thread, before any worker starts
  t.throws(() => klRows(p, q.subarray(0, 8), n), { code: 'EUSAGE' });
  t.throws(() => klRows(p, q, 5), { code: 'EUSAGE' });
  t.throws(() => klRows(p, q, 0), { code: 'EUSAGE' });
  t.throws(() => klRows(p, new Float64Array(12) as unknown as Float32Array, n), { code: 'EUSAGE' });
});
