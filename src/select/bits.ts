// Bit masks over the flat weights of a tensor: bit i lives in byte i >> 3 at position i & 7.

export function maskBytes(nBits: number): number { return Math.ceil(nBits / 8); }

export function newMask(nBits: number): Uint8Array { return new Uint8Array(maskBytes(nBits)); }

export function getBit(mask: Uint8Array, i: number): boolean { return ((mask[i >>> 3] >>> (i & 7)) & 1) === 1; }

export function setBit(mask: Uint8Array, i: number): void { mask[i >>> 3] |= 1 << (i & 7); }

const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + POPCOUNT[i >> 1];

function popcount32(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24);
}

/** Set bits in [begin, end). */
export function countBits(mask: Uint8Array, begin = 0, end = mask.length * 8): number {
  let n = 0;
  let i = begin;
  while (i < end && (i & 7) !== 0) { if (getBit(mask, i)) n++; i++; }
  const fullEnd = end & ~7;
  let b = i >>> 3;
  const bEnd = fullEnd >>> 3;
  // whole 32-bit words where the bytes are aligned (masks are fresh allocations: offset 0)
  while (b < bEnd && ((mask.byteOffset + b) & 3) !== 0) n += POPCOUNT[mask[b++]];
  const words = (bEnd - b) >>> 2;
  if (words > 0) {
    const w = new Uint32Array(mask.buffer, mask.byteOffset + b, words);
    for (let k = 0; k < words; k++) n += popcount32(w[k]);
    b += words * 4;
  }
  for (; b < bEnd; b++) n += POPCOUNT[mask[b]];
  for (i = Math.max(i, fullEnd); i < end; i++) if (getBit(mask, i)) n++;
  return n;
}

/** a AND NOT b, as a new mask. */
export function andNot(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length);
  let i = 0;
  if ((a.byteOffset & 3) === 0 && (b.byteOffset & 3) === 0) {
    const words = a.length >>> 2;
    const aw = new Uint32Array(a.buffer, a.byteOffset, words), bw = new Uint32Array(b.buffer, b.byteOffset, words), ow = new Uint32Array(out.buffer, 0, words);
    for (let k = 0; k < words; k++) ow[k] = aw[k] & ~bw[k];
    i = words * 4;
  }
  for (; i < a.length; i++) out[i] = a[i] & ~b[i];
  return out;
}

/** Calls fn(i) for every set bit, in increasing order. */
export function forEachBit(mask: Uint8Array, fn: (i: number) => void, begin = 0, end = mask.length * 8): void {
  for (let b = begin >>> 3; b < Math.ceil(end / 8); b++) {
    let byte = mask[b];
    while (byte) {
      const low = byte & -byte;
      const i = b * 8 + (31 - Math.clz32(low));
      if (i >= begin && i < end) fn(i);
      byte &= byte - 1;
    }
  }
}
