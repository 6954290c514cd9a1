// Bit masks over the flat weights of a tensor: bit i lives in byte i >> 3 at position i & 7.

export function maskBytes(nBits: number): number { return Math.ceil(nBits / 8); }

export function newMask(nBits: number): Uint8Array { return new Uint8Array(maskBytes(nBits)); }

export function getBit(mask: Uint8Array, i: number): boolean { return ((mask[i >>> 3] >>> (i & 7)) & 1) === 1; }

export function setBit(mask: Uint8Array, i: number): void { mask[i >>> 3] |= 1 << (i & 7); }

const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + POPCOUNT[i >> 1];

/** Set bits in [begin, end). */
export function countBits(mask: Uint8Array, begin = 0, end = mask.length * 8): number {
  let n = 0;
  let i = begin;
  while (i < end && (i & 7) !== 0) { if (getBit(mask, i)) n++; i++; }
  const fullEnd = end & ~7;
  for (let b = i >>> 3; b < fullEnd >>> 3; b++) n += POPCOUNT[mask[b]];
  for (i = Math.max(i, fullEnd); i < end; i++) if (getBit(mask, i)) n++;
  return n;
}

/** a AND NOT b, as a new mask. */
export function andNot(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] & ~b[i];
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
