// requantizeModel (src/quantize.ts): a whole model rewritten in another ggml type. Checked against
// references that do not go through the code under test: Q8_0 blocks decoded here in JS (fp16 scale +
// int8) and bounded by the format's own error, byte equality with ggufQuantizeRows on the same floats,
// llama-quantize's fallback table, an importance matrix lowering the weighted error, and the copy
// loading in llama.cpp with logits close to the source's.
import t from 'tap';
import { existsSync, mkdtempSync, openSync, closeSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readGgufSync, type GgufTensorInfo } from '../../src/gguf/reader.ts';
import { GGML_TYPE } from '../../src/gguf/types.ts';
import { loadNative } from '../../src/native.ts';
import { dequantize } from '../../src/core/codec.ts';
import type { ColumnStatistics } from '../../src/select/select.ts';
import { readTensorBytes } from '../../src/core/tensor-io.ts';
import { StatsModel } from '../../src/stats/collect.ts';
import { fallbackType, isRequantizedTensor, requantizeModel } from '../../src/quantize.ts';
import { synthModel } from '../../src/synth.ts';

process.env.OMP_WAIT_POLICY ??= 'passive';
const dir = mkdtempSync(path.join(os.tmpdir(), 'mathneuro-quantize-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function tensorBytes(file: string, tensor: GgufTensorInfo): Uint8Array {
  const fd = openSync(file, 'r');
  try { return readTensorBytes(fd, tensor); } finally { closeSync(fd); }
}
const f32 = (b: Uint8Array) => new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Q8_0 decoded without ggml: blocks of 34 bytes, fp16 scale d then 32 int8. */
function decodeQ8_0(bytes: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < n / 32; b++) {
    const d = halfToFloat(dv.getUint16(b * 34, true));
    for (let i = 0; i < 32; i++) out[b * 32 + i] = d * dv.getInt8(b * 34 + 2 + i);
  }
  return out;
}

t.test('fallback types follow llama-quantize', async (t) => {
  t.equal(fallbackType(GGML_TYPE.Q4_K, 256), GGML_TYPE.Q4_K);
  t.equal(fallbackType(GGML_TYPE.Q4_K, 128), GGML_TYPE.Q5_0);
  t.equal(fallbackType(GGML_TYPE.Q5_K, 96), GGML_TYPE.Q5_1);
  t.equal(fallbackType(GGML_TYPE.Q6_K, 64), GGML_TYPE.Q8_0);
  t.equal(fallbackType(GGML_TYPE.Q3_K, 32), GGML_TYPE.Q4_0);
  t.equal(fallbackType(GGML_TYPE.Q4_K, 80), GGML_TYPE.F16, 'a row that no 32-block fits goes to F16');
  t.equal(fallbackType(GGML_TYPE.Q8_0, 80), GGML_TYPE.F16);
});

t.test('Q8_0 copy of a generated F32 model', async (t) => {
  const src = (await synthModel({ out: path.join(dir, 'src.gguf'), shape: 'tiny', type: 'f32', seed: 5, untiedOutput: true })).path;
  const out = path.join(dir, 'q8.gguf');
  const r = await requantizeModel({ source: src, out, type: 'q8_0' });
  const a = readGgufSync(src), b = readGgufSync(out);
  t.equal(b.metadata.get('general.file_type'), 7, 'general.file_type is MOSTLY_Q8_0');
  t.equal(b.metadata.get('general.quantization_version'), 2);
  for (const e of a.metadataEntries) {
    if (e.key === 'general.file_type') continue;
    t.same(b.metadata.get(e.key), e.value, `metadata ${e.key} kept`);
  }
  t.same(b.tensors.map((x) => x.name), a.tensors.map((x) => x.name), 'same tensors in the same order');
  t.equal(r.tensors.filter((x) => x.to === 'Q8_0').length, 2 * 7 + 1, 'every block matrix and output.weight requantized');
  const native = loadNative();
  for (const ta of a.tensors) {
    const tb = b.tensorByName.get(ta.name)!;
    t.same(tb.shape, ta.shape);
    const srcBytes = tensorBytes(src, ta);
    const outBytes = tensorBytes(out, tb);
    if (!isRequantizedTensor(ta)) {
      t.equal(tb.type, ta.type, `${ta.name} keeps its type`);
      t.ok(Buffer.from(outBytes).equals(Buffer.from(srcBytes)), `${ta.name} copied byte for byte`);
      continue;
    }
    t.equal(tb.type, GGML_TYPE.Q8_0, `${ta.name} is Q8_0`);
    const w = f32(srcBytes);
    const ref: Buffer = native.ggufQuantizeRows(GGML_TYPE.Q8_0, w, ta.shape[0]);
    t.ok(Buffer.from(outBytes).equals(ref), `${ta.name} is byte-equal to ggufQuantizeRows of the same floats`);
    const q = decodeQ8_0(outBytes, ta.numel);
    let worst = 0;
    for (let blk = 0; blk < ta.numel / 32; blk++) {
      let amax = 0;
      for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(w[blk * 32 + i]));
      for (let i = 0; i < 32; i++) worst = Math.max(worst, Math.abs(w[blk * 32 + i] - q[blk * 32 + i]) / (amax / 127));
    }
    t.ok(worst <= 1, `${ta.name}: |w - w'| <= max|block|/127 in every block (worst ${worst.toFixed(3)} of that bound)`);
    const viaGgml = dequantize(GGML_TYPE.Q8_0, outBytes, ta.numel);
    t.same(Array.from(viaGgml.subarray(0, 64)), Array.from(q.subarray(0, 64)), `${ta.name}: ggml's dequantization agrees with the JS decoder`);
  }

  // the copy loads in llama.cpp and predicts like the source
  const logitsOf = async (file: string) => {
    const m = await StatsModel.open(file, { nCtx: 64, nThreads: 1, kvType: 'f32' });
    try {
      const tokens = m.tokenize('The sum of 12 and 30 is 42.');
      return (await m.logits(tokens)).logits;
    } finally { m.dispose(); }
  };
  const la = await logitsOf(src), lb = await logitsOf(out);
  t.equal(lb.length, la.length);
  let d2 = 0, a2 = 0;
  for (let i = 0; i < la.length; i++) { d2 += (la[i] - lb[i]) ** 2; a2 += la[i] ** 2; }
  t.ok(lb.every(Number.isFinite), 'finite logits from the Q8_0 copy');
  t.ok(Math.sqrt(d2 / a2) < 0.05, `logits within 5% RMS of the source's (${(100 * Math.sqrt(d2 / a2)).toFixed(2)}%)`);

  await t.rejects(requantizeModel({ source: src, out, type: 'q8_0' }), { code: 'EEXIST' }, 'an existing output needs force');
  await t.rejects(requantizeModel({ source: src, out: src, type: 'q8_0', force: true }), { code: 'EUSAGE' }, 'the output must differ from the source');
  await t.rejects(requantizeModel({ source: src, out: path.join(dir, 'x.gguf'), type: 'q9_9' }), { code: 'EUSAGE' }, 'unknown type');
  t.notOk(existsSync(path.join(dir, 'x.gguf')));
});

t.test('Q4_K with fallbacks and an importance matrix', async (t) => {
  // n_embd 96: no row of width 96 holds whole 256-blocks, so those matrices fall back to Q5_0;
  // ffn_down (width n_ff 512) stays Q4_K
  const src = (await synthModel({ out: path.join(dir, 'narrow.gguf'), shape: { nEmbd: 96, nFf: 512, nHead: 4, nHeadKv: 2, nLayer: 1 }, type: 'f32', seed: 2, untiedOutput: true })).path;
  const plain = await requantizeModel({ source: src, out: path.join(dir, 'q4k.gguf'), type: 'q4_k' });
  t.equal(readGgufSync(plain.path).metadata.get('general.file_type'), 14, 'general.file_type is MOSTLY_Q4_K_S');
  for (const x of plain.tensors) {
    if (x.name.endsWith('ffn_down.weight')) t.equal(x.to, 'Q4_K', `${x.name} (rows of 512) is Q4_K`);
    else if (x.to !== 'F32') { t.equal(x.to, 'Q5_0', `${x.name} (rows of 96) falls back to Q5_0`); t.ok(x.fallback); }
  }
  // an importance matrix that makes the first 8 columns of ffn_down matter 1000x
  const a = readGgufSync(src);
  const down = a.tensorByName.get('blk.0.ffn_down.weight')!;
  const nIn = down.shape[0];
  const sum2 = new Float64Array(nIn).fill(1);
  for (let j = 0; j < nIn; j += 32) for (let i = 0; i < 8; i++) sum2[j + i] = 1000;
  const stats: ColumnStatistics = { name: down.name, nIn, nMat: 1, sum2, normSum: new Float64Array(nIn), counts: new Float64Array([1]) };
  const weighted = await requantizeModel({ source: src, out: path.join(dir, 'q4k-im.gguf'), type: 'q4_k', imatrix: { weights: new Map([[down.name, stats]]) } });
  t.ok(weighted.tensors.find((x) => x.name === down.name)!.imatrix, 'ffn_down quantized with the importance matrix');
  const w = f32(tensorBytes(src, down));
  const err = (file: string) => {
    const info = readGgufSync(file);
    const tt = info.tensorByName.get(down.name)!;
    const q = dequantize(tt.type, tensorBytes(file, tt), tt.numel);
    let e = 0;
    for (let i = 0; i < w.length; i++) e += sum2[i % nIn] * (w[i] - q[i]) ** 2;
    return e;
  };
  const ePlain = err(plain.path), eWeighted = err(weighted.path);
  t.ok(eWeighted < ePlain, `importance-weighted error lower with the matrix (${eWeighted.toExponential(3)} < ${ePlain.toExponential(3)})`);
  const other = readGgufSync(weighted.path).tensorByName.get('blk.0.attn_q.weight')!;
  t.ok(Buffer.from(tensorBytes(weighted.path, other)).equals(Buffer.from(tensorBytes(plain.path, readGgufSync(plain.path).tensorByName.get(other.name)!))), 'tensors without statistics are quantized as without a matrix');
});
