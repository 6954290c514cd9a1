// Compact bit masks: Golomb-Rice codes of the gaps between set bits (native/mask_codec.cpp, whose
// top comment specifies the bytes), or the mask itself where that is smaller. Selection files
// store masks this way (src/select/file.ts), and so do patch and tune between their steps.
import { asMathneuroError, MathneuroError } from '../errors.ts';
import { loadNative } from '../native.ts';

/** How a mask is stored: `rice` (encodeMask's code) or `raw` (the mask's own bytes). */
export type MaskCodec = 'rice' | 'raw';

export interface PackedMask { codec: MaskCodec; bytes: Uint8Array }

/**
 * The Rice code of a mask of nBits bits (ceil(nBits / 8) bytes; bits at nBits and past are
 * ignored), computed on the thread pool: the mask must not change until the promise settles. At
 * most maskBytes(nBits) + 1 bytes.
 */
export async function encodeMask(mask: Uint8Array, nBits: number): Promise<Uint8Array> {
  try { return await loadNative().encodeMask(mask, nBits); } catch (e) { throw asMathneuroError(e, 'EIO'); }
}

/**
 * The mask of nBits bits with `count` set bits that encodeMask coded as `encoded`: a new one, or
 * `into` (ceil(nBits / 8) bytes, not overlapping `encoded`) overwritten. A code that is not one
 * (truncated, altered, or of another count) throws EDATA; nothing is read past its end.
 */
export function decodeMask(encoded: Uint8Array, nBits: number, count: number, into?: Uint8Array): Uint8Array {
  try { return loadNative().decodeMask(encoded, nBits, count, into); } catch (e) { throw asMathneuroError(e, 'EDATA'); }
}

/** The smaller of the mask's Rice code and the mask itself (kept as it is, not copied). */
export async function packMask(mask: Uint8Array, nBits: number): Promise<PackedMask> {
  const rice = await encodeMask(mask, nBits);
  return rice.length < mask.length ? { codec: 'rice', bytes: rice } : { codec: 'raw', bytes: mask };
}

/**
 * The mask packMask packed (a raw one as it is, not copied; a coded one decoded into `into` when
 * given); EDATA when the bytes are not a mask of nBits bits and `count` set bits.
 */
export function unpackMask(packed: PackedMask, nBits: number, count: number, into?: Uint8Array): Uint8Array {
  if (packed.codec === 'rice') return decodeMask(packed.bytes, nBits, count, into);
  if (packed.bytes.length !== Math.ceil(nBits / 8)) throw new MathneuroError('EDATA', `a raw mask of ${nBits} bits has ${Math.ceil(nBits / 8)} bytes, not ${packed.bytes.length}`);
  return packed.bytes;
}
