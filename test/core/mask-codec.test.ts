// The Rice mask codec (native/mask_codec.cpp) against references written here from its spec: a JS
// encoder (byte for byte) and a JS decoder reading the stream bit by bit. Then corrupt and hostile
// codes: each must throw a coded error (EDATA) or decode to a mask of the stated count, never crash.
import t from 'tap';
import { decodeMask, encodeMask, packMask, unpackMask } from '../../src/core/mask-codec.ts';
import { MathneuroError } from '../../src/errors.ts';

function rng(seed: number) {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
}

const bytesOf = (nBits: number) => Math.ceil(nBits / 8);
const bit = (m: Uint8Array, i: number) => (m[i >> 3] >> (i & 7)) & 1;
function countOnes(m: Uint8Array, nBits: number): number { let c = 0; for (let i = 0; i < nBits; i++) c += bit(m, i); return c; }

/** A mask of nBits with each bit set with probability p (no stray bits past nBits). */
function randomMask(nBits: number, p: number, r: () => number): Uint8Array {
  const m = new Uint8Array(bytesOf(nBits));
  if (p >= 1) { for (let i = 0; i < nBits; i++) m[i >> 3] |= 1 << (i & 7); return m; }
  for (let i = 0; i < nBits; i++) if (r() < p) m[i >> 3] |= 1 << (i & 7);
  return m;
}

/** A randomMask, its number of set bits, and encodeMask's code of it. */
async function codedMask(nBits: number, p: number, r: () => number) {
  const mask = randomMask(nBits, p, r);
  return { mask, count: countOnes(mask, nBits), code: await encodeMask(mask, nBits) };
}

// ------------------------------------------------------------------------------------------
// The spec, in JS. Header byte: k in bits 0-5 (0..56), bit 6 zero, bit 7 = the clear bits are coded.
// Stream from byte 1, LSB first: per coded position, gap g = p - prev - 1 as (g >> k) zeros, a one,
// then g's k low bits (least significant first); zero-padded to a byte, nothing after.

/** The documented k: the smallest with (1-p)^(2^k) <= golden ratio - 1, by squaring in doubles. */
function riceParameter(coded: number, nBits: number): number {
  if (coded === 0 || nBits === 0) return 0;
  let x = 1 - coded / nBits, k = 0;
  while (k < 56 && x + x * x > 1) { x *= x; k++; }
  return k;
}

function referenceEncode(mask: Uint8Array, nBits: number): Uint8Array {
  const ones = countOnes(mask, nBits);
  const invert = ones > nBits - ones;
  const coded = invert ? nBits - ones : ones;
  const attempt = (k: number): number[] => {
    const bits: number[] = [];
    let prev = -1;
    for (let i = 0; i < nBits; i++) {
      if ((bit(mask, i) === 1) === invert) continue;
      const g = i - prev - 1;
      prev = i;
      const q = Math.floor(g / 2 ** k);
      for (let z = 0; z < q; z++) bits.push(0);
      bits.push(1);
      for (let j = 0; j < k; j++) bits.push(Math.floor(g / 2 ** j) % 2);
    }
    const out = [k | (invert ? 0x80 : 0)];
    for (let b = 0; b < bits.length; b += 8) { let v = 0; for (let j = 0; j < 8 && b + j < bits.length; j++) v |= bits[b + j] << j; out.push(v); }
    return out;
  };
  const k = riceParameter(coded, nBits);
  let out = attempt(k);
  if (out.length > bytesOf(nBits) + 1) out = attempt(0);   // the bound: never longer than the mask and its header
  return Uint8Array.from(out);
}

function referenceDecode(code: Uint8Array, nBits: number, count: number): Uint8Array {
  const header = code[0];
  const k = header & 63, invert = (header & 0x80) !== 0;
  if (header & 0x40 || k > 56) throw new Error('bad header');
  const total = (code.length - 1) * 8;
  let at = 0;
  const read = () => { if (at >= total) throw new Error('past the end'); const b = (code[1 + (at >> 3)] >> (at & 7)) & 1; at++; return b; };
  const out = invert ? randomMask(nBits, 1, Math.random) : new Uint8Array(bytesOf(nBits));
  let prev = -1;
  for (let c = 0; c < (invert ? nBits - count : count); c++) {
    let q = 0;
    while (read() === 0) q++;
    let low = 0;
    for (let j = 0; j < k; j++) low += read() * 2 ** j;
    const p = prev + 1 + q * 2 ** k + low;
    if (p >= nBits) throw new Error('past nBits');
    out[p >> 3] ^= 1 << (p & 7);
    prev = p;
  }
  if (Math.ceil(at / 8) !== code.length - 1) throw new Error('trailing bytes');
  while (at < total) if (read() !== 0) throw new Error('nonzero padding');
  return out;
}

const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

// ------------------------------------------------------------------------------------------

const DENSITIES = [0, 1e-6, 1e-3, 0.01, 0.1, 0.5, 0.99, 1];
const LENGTHS = [0, 1, 7, 8, 63, 64, 65, 1000, 1e6 + 3];

t.test('round trips at every density and length; bytes equal the JS encoder; the JS decoder agrees', async (t) => {
  const r = rng(1);
  for (const nBits of LENGTHS) {
    for (const p of DENSITIES) {
      const { mask, count, code } = await codedMask(nBits, p, r);
      const what = `nBits=${nBits} p=${p} count=${count}`;
      const full = nBits >= 1000;
      if (!full) t.ok(code.length <= bytesOf(nBits) + 1, `${what}: ${code.length} bytes, at most the mask's + 1`);
      else if (code.length > bytesOf(nBits) + 1) t.fail(`${what}: ${code.length} bytes`);
      const ref = referenceEncode(mask, nBits);
      if (!same(code, ref)) t.fail(`${what}: native bytes differ from the JS encoder's`);
      if (!same(referenceDecode(code, nBits, count), mask)) t.fail(`${what}: the JS decoder reads another mask`);
      if (!same(decodeMask(code, nBits, count), mask)) t.fail(`${what}: decodeMask gives another mask`);
      // into a mask that held anything before (every bit of it is overwritten)
      const into = new Uint8Array(bytesOf(nBits)).map(() => Math.floor(r() * 256));
      const got = decodeMask(code, nBits, count, into);
      if (got !== into || !same(into, mask)) t.fail(`${what}: decodeMask into a used mask gives another mask`);
    }
  }
  t.pass('all round trips checked');
});

t.test('decoding into a given mask: its length, no overlap with the code, a corrupt code', async (t) => {
  const r = rng(7);
  const nBits = 10007;
  const { mask, count, code } = await codedMask(nBits, 0.05, r);
  t.equal(thrownCode(() => decodeMask(code, nBits, count, new Uint8Array(bytesOf(nBits) + 1))), 'EUSAGE', 'one byte too many');
  t.equal(thrownCode(() => decodeMask(code, nBits, count, new Uint8Array(bytesOf(nBits) - 1))), 'EUSAGE', 'one byte too few');
  // the code inside the mask's own memory (its start, or its end) would be overwritten while read
  const shared = new Uint8Array(bytesOf(nBits) + code.length);
  shared.set(code, 0);
  t.equal(thrownCode(() => decodeMask(shared.subarray(0, code.length), nBits, count, shared.subarray(code.length - 1, code.length - 1 + bytesOf(nBits)))), 'EUSAGE', 'the last byte of the code shared');
  t.ok(same(decodeMask(shared.subarray(0, code.length), nBits, count, shared.subarray(code.length)), mask), 'beside it: decoded');
  t.equal(thrownCode(() => decodeMask(code.subarray(0, code.length - 2), nBits, count, new Uint8Array(bytesOf(nBits)))), 'EDATA', 'truncated: EDATA as without `into`');
  t.equal(thrownCode(() => decodeMask(code, nBits, count + 1, new Uint8Array(bytesOf(nBits)))), 'EDATA', 'another count');
  const inverted = randomMask(nBits, 0.9, r);
  const icode = await encodeMask(inverted, nBits);
  t.equal(icode[0] & 0x80, 0x80);
  t.ok(same(decodeMask(icode, nBits, countOnes(inverted, nBits), new Uint8Array(bytesOf(nBits)).fill(0x5a)), inverted), 'an inverted code into a used mask');
  t.ok(same(unpackMask({ codec: 'rice', bytes: code }, nBits, count, new Uint8Array(bytesOf(nBits)).fill(0xff)), mask), 'unpackMask passes `into` on');
});

t.test('k is the documented one, and Rice is about as small as iid bits allow', async (t) => {
  const r = rng(2);
  const nBits = 1 << 20;
  for (const p of [0.001, 0.01, 0.05, 0.1, 0.2]) {
    const { mask, count, code } = await codedMask(nBits, p, r);
    t.equal(code[0], riceParameter(count, nBits), `p=${p}: header k`);
    const h = -(p * Math.log2(p) + (1 - p) * Math.log2(1 - p));
    const ratio = (code.length * 8) / (nBits * h);
    t.ok(ratio < 1.04, `p=${p}: ${code.length} bytes, ${ratio.toFixed(4)} x the entropy`);
  }
});

t.test('masks past half full code their clear bits', async (t) => {
  const r = rng(3);
  const nBits = 100003;
  const mask = randomMask(nBits, 0.9, r);
  const code = await encodeMask(mask, nBits);
  t.equal(code[0] & 0x80, 0x80, 'inverted');
  t.ok(code.length < bytesOf(nBits) * 0.6, `${code.length} bytes for ${bytesOf(nBits)}`);
  const full = randomMask(nBits, 1, r);
  t.same([...await encodeMask(full, nBits)], [0x80], 'a full mask is its header');
  t.ok(same(decodeMask(Uint8Array.of(0x80), nBits, nBits), full), 'and decodes back');
});

t.test('a clustered mask whose Rice code would pass the bound falls back to k = 0', async (t) => {
  // 62 clear bits then 38 set, repeated: density 0.38 gives k = 1, whose code of the runs (109 bits
  // per 100) is longer than the mask; the k = 0 code ends at the last bit: the mask and its header
  const nBits = 100000;
  const mask = new Uint8Array(bytesOf(nBits));
  for (let i = 0; i < nBits; i++) if (i % 100 >= 62) mask[i >> 3] |= 1 << (i & 7);
  t.equal(riceParameter(38000, nBits), 1);
  const code = await encodeMask(mask, nBits);
  t.equal(code[0], 0, 'k = 0');
  t.equal(code.length, bytesOf(nBits) + 1, 'the mask and its header');
  t.ok(same(code, referenceEncode(mask, nBits)));
  t.ok(same(decodeMask(code, nBits, 38000), mask));
  const packed = await packMask(mask, nBits);
  t.equal(packed.codec, 'raw', 'packMask keeps the mask itself when the code is not smaller');
  t.equal(packed.bytes, mask);
  t.equal(unpackMask(packed, nBits, 38000), mask);
});

t.test('bits past nBits in the last byte are ignored; a mask may be a view at any offset', async (t) => {
  const r = rng(4);
  for (const nBits of [1, 5, 13, 65, 1001]) {
    const mask = randomMask(nBits, 0.3, r);
    const count = countOnes(mask, nBits);
    const dirty = mask.slice();
    if (nBits % 8) dirty[dirty.length - 1] |= 0xff << (nBits % 8);
    const backing = new Uint8Array(dirty.length + 7);
    backing.set(dirty, 3);
    const view = backing.subarray(3, 3 + dirty.length);
    const code = await encodeMask(view, nBits);
    t.ok(same(code, await encodeMask(mask, nBits)), `nBits=${nBits}: same code as the clean mask`);
    t.ok(same(decodeMask(code, nBits, count), mask), `nBits=${nBits}: decodes to the clean mask`);
  }
});

/** Calls fn and returns the MathneuroError code it throws (fails the test when it returns). */
function thrownCode(fn: () => unknown): string | undefined {
  try { fn(); } catch (e) { return e instanceof MathneuroError ? e.code : `not a MathneuroError: ${String(e)}`; }
  return undefined;
}

t.test('corrupt codes throw EDATA, never crash', async (t) => {
  const r = rng(5);
  const nBits = 20011;
  const { mask, count, code } = await codedMask(nBits, 0.02, r);
  t.ok(code.length > 10);

  for (let n = 0; n < code.length; n++) {
    const c = thrownCode(() => decodeMask(code.subarray(0, n), nBits, count));
    if (c !== 'EDATA') t.fail(`truncated to ${n} bytes: ${c}`);
  }
  t.pass('every truncation throws EDATA');

  for (const header of [0x40, 57, 58, 63, 0x7f, 0xff, 0xc0 | 3]) {
    const bad = code.slice(); bad[0] = header;
    t.equal(thrownCode(() => decodeMask(bad, nBits, count)), 'EDATA', `header 0x${header.toString(16)}`);
  }
  t.equal(thrownCode(() => decodeMask(code, nBits, nBits + 1)), 'EDATA', 'count over nBits');
  t.equal(thrownCode(() => decodeMask(code, nBits, count + 1)), 'EDATA', 'a count the code does not hold');
  t.equal(thrownCode(() => decodeMask(code, nBits, count - 1)), 'EDATA', 'a smaller count leaves bytes after the last code');
  t.equal(thrownCode(() => decodeMask(Uint8Array.from([...code, 0]), nBits, count)), 'EDATA', 'a byte after the code');
  const last = code.length - 1;
  const lastBit = 31 - Math.clz32(code[last]);
  if (lastBit < 7) {
    const padded = code.slice(); padded[last] |= 0x80;
    t.equal(thrownCode(() => decodeMask(padded, nBits, count)), 'EDATA', 'a set padding bit');
  }
  t.equal(thrownCode(() => decodeMask(new Uint8Array(0), nBits, 0)), 'EDATA', 'no header');
  t.equal(thrownCode(() => decodeMask(Uint8Array.of(0, 0), 8, 0)), 'EDATA', 'bytes after an empty code');

  // a position past nBits: the code of bit 99 read as a mask of 99 bits (and 50)
  const one = new Uint8Array(13); one[12] = 1 << 3;
  const code99 = await encodeMask(one, 100);
  t.equal(thrownCode(() => decodeMask(code99, 99, 1)), 'EDATA', 'position 99 of 99 bits');
  t.equal(thrownCode(() => decodeMask(code99, 50, 1)), 'EDATA', 'position 99 of 50 bits');
  t.ok(same(decodeMask(code99, 100, 1), one));
  // long zero runs that pass the end: k = 0 and nothing but zeros, then a one
  const zeros = new Uint8Array(40); zeros[39] = 0x80;
  t.equal(thrownCode(() => decodeMask(zeros, 100, 1)), 'EDATA', 'a run of zeros past nBits');
  t.equal(thrownCode(() => decodeMask(Uint8Array.of(0, 0, 0, 0), 1e6, 1)), 'EDATA', 'zeros to the end');
  // hostile sizes are refused before a mask is allocated
  t.equal(thrownCode(() => decodeMask(Uint8Array.of(0, 0xff), 2 ** 53 - 1, 2 ** 52)), 'EDATA', 'a count far beyond what the code can hold');
  t.equal(thrownCode(() => decodeMask(Uint8Array.of(0x80 | 56, 0xff), 2 ** 53 - 1, 0)), 'EDATA', 'an inverted count far beyond it');

  // every single-bit flip, and random bytes: EDATA, or a mask of the stated count with nothing past nBits
  let rejected = 0, accepted = 0;
  const check = (bad: Uint8Array, what: string) => {
    let out: Uint8Array;
    try { out = decodeMask(bad, nBits, count); } catch (e) {
      if (!(e instanceof MathneuroError) || e.code !== 'EDATA') t.fail(`${what}: ${String(e)}`);
      rejected++;
      return;
    }
    accepted++;
    if (out.length !== bytesOf(nBits) || countOnes(out, nBits) !== count || (nBits % 8 && out[out.length - 1] >> (nBits % 8))) t.fail(`${what}: a bad mask`);
  };
  for (let i = 0; i < code.length; i++) for (let b = 0; b < 8; b++) { const bad = code.slice(); bad[i] ^= 1 << b; check(bad, `flip ${i}:${b}`); }
  for (let n = 0; n < 300; n++) {
    const bad = new Uint8Array(1 + Math.floor(r() * 3 * code.length));
    for (let i = 0; i < bad.length; i++) bad[i] = Math.floor(r() * 256);
    bad[0] &= 0x3f;
    check(bad, `random ${n}`);
  }
  t.ok(rejected > 0, `${rejected} rejected, ${accepted} decoded to a mask of the count (the file's crc32 catches those)`);
});

t.test('arguments are checked before memory is touched', async (t) => {
  const rejects = async (p: () => Promise<unknown>) => { try { await p(); return undefined; } catch (e) { return e instanceof MathneuroError ? e.code : String(e); } };
  const m = new Uint8Array(2);
  for (const [what, call] of [
    ['a string mask', () => encodeMask('ab' as unknown as Uint8Array, 16)],
    ['a Float32Array mask', () => encodeMask(new Float32Array(4) as unknown as Uint8Array, 16)],
    ['too few bytes', () => encodeMask(m, 17)],
    ['too many bytes', () => encodeMask(m, 8)],
    ['negative nBits', () => encodeMask(m, -1)],
    ['fractional nBits', () => encodeMask(m, 15.5)],
    ['NaN nBits', () => encodeMask(m, NaN)],
    ['nBits past 2^53', () => encodeMask(m, 2 ** 53)],
    ['no nBits', () => (encodeMask as unknown as (m: Uint8Array) => Promise<Uint8Array>)(m)],
  ] as const) t.equal(await rejects(call), 'EUSAGE', `encodeMask: ${what}`);
  for (const [what, call] of [
    ['a string code', () => decodeMask('x' as unknown as Uint8Array, 8, 0)],
    ['an Int32Array code', () => decodeMask(new Int32Array(1) as unknown as Uint8Array, 8, 0)],
    ['negative count', () => decodeMask(Uint8Array.of(0), 8, -1)],
    ['fractional nBits', () => decodeMask(Uint8Array.of(0), 8.5, 0)],
    ['a string count', () => decodeMask(Uint8Array.of(0), 8, '0' as unknown as number)],
  ] as const) t.equal(thrownCode(call), 'EUSAGE', `decodeMask: ${what}`);
  t.equal(thrownCode(() => unpackMask({ codec: 'raw', bytes: new Uint8Array(3) }, 16, 0)), 'EDATA', 'a raw mask of the wrong size');
});

t.test('a large mask: many in flight at once on the thread pool', async (t) => {
  const r = rng(6);
  const masks = [0.001, 0.02, 0.08, 0.15, 0.3, 0.6].map((p) => randomMask(1 << 21, p, r));
  const codes = await Promise.all(masks.map((m) => encodeMask(m, 1 << 21)));
  codes.forEach((c, i) => { if (!same(decodeMask(c, 1 << 21, countOnes(masks[i], 1 << 21)), masks[i])) t.fail(`mask ${i}`); });
  t.pass('all decoded');
});

t.test('countMaskBits: the set bits of each part equal a bit-by-bit count, at any part size and offset', async (t) => {
  const { loadNative } = await import('../../src/native.ts');
  const count = loadNative().countMaskBits;
  let seed = 7;
  const rnd = () => { seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0; return seed / 2 ** 32; };
  for (const [nBits, part, density] of [[0, 1, 0], [1, 1, 1], [64, 64, 0.5], [200, 8, 0.3], [4096 * 3, 4096, 0.1], [5 * 4100, 4100, 0.02], [7 * 1000 + 0, 1000, 0.97], [96 * 33, 33, 0.5], [1 << 20, 1 << 18, 0.15]] as const) {
    const buffer = new Uint8Array(Math.ceil(nBits / 8) + 3);
    const mask = buffer.subarray(3); // a view at an odd offset
    for (let i = 0; i < nBits; i++) if (rnd() < density) mask[i >> 3]! |= 1 << (i & 7);
    if (nBits % 8) mask[mask.length - 1]! |= 0xff << (nBits % 8) & 0xff; // bits past nBits: not counted
    const want: number[] = [];
    for (let p = 0; p < nBits / part; p++) { let n = 0; for (let i = p * part; i < (p + 1) * part; i++) n += (mask[i >> 3]! >> (i & 7)) & 1; want.push(n); }
    t.same(Array.from(count(mask, nBits, part)), want, `${nBits} bits in parts of ${part}, density ${density}`);
  }
  t.throws(() => count(new Uint8Array(2), 17, 1), { code: 'EUSAGE' }, 'a mask of the wrong size');
  t.throws(() => count(new Uint8Array(2), 16, 3), { code: 'EUSAGE' }, 'parts that do not divide the mask');
  t.throws(() => count(new Uint8Array(2), 16, 0), { code: 'EUSAGE' }, 'parts of 0 bits');
  t.throws(() => count(new Uint8Array(2), -1, 1), { code: 'EUSAGE' });
});
