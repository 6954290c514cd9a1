// Writing a new GGUF safely: a temporary file beside the destination (src/core/atomic-file.ts), the header from ggml's gguf
// code, tensor data at the offsets that header gives, padding as ggml writes it, fsync, optional
// validation, then one rename. A failed write leaves no partial file and says why in one line.
import { closeSync, fsyncSync, ftruncateSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { removeStaleTemporaries, temporaryPath, writeFailure } from '../core/atomic-file.ts';
import { MathneuroError } from '../errors.ts';

export interface PlacedTensor { offset: number; byteSize: number }

export interface WriteGgufOptions {
  /** the header's data alignment (default 32, ggml's) */
  alignment?: number;
  /** checks the finished temporary file before it is renamed into place (throw to abort) */
  validate?: (tmpPath: string) => void;
}

/**
 * Writes `out` from a header (ggufBuildHeader/ggufRewriteHeader) and its tensors' placement.
 * `fill(put)` calls `put(index, bytes)` for each tensor's data, possibly in several consecutive pieces.
 */
export async function writeGgufFile(out: string, header: Uint8Array, placed: PlacedTensor[],
  fill: (put: (index: number, bytes: Uint8Array) => void) => void | Promise<void>, options: WriteGgufOptions = {}): Promise<void> {
  const alignment = options.alignment ?? 32;
  removeStaleTemporaries(out);
  const tmp = temporaryPath(out);
  let fd: number;
  try { fd = openSync(tmp, 'w'); } catch (e) { throw writeFailure(e, out, 'nothing was written'); }
  let ok = false;
  let closed = false;
  try {
    writeSync(fd, header, 0, header.length, 0);
    const cursor = placed.map((t) => header.length + t.offset);
    const end = placed.map((t) => header.length + t.offset + t.byteSize);
    await fill((index, bytes) => {
      if (!(index >= 0 && index < placed.length)) throw new MathneuroError('EIO', `tensor #${index} is not in the header`);
      if (cursor[index] + bytes.length > end[index]) throw new MathneuroError('EIO', `tensor #${index}: more bytes than the header gives it`);
      let done = 0;
      while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, cursor[index] + done);
      cursor[index] += bytes.length;
    });
    const short = cursor.findIndex((c, i) => c !== end[i]);
    if (short >= 0) throw new MathneuroError('EIO', `tensor #${short}: ${end[short] - cursor[short]} bytes were not written`);
    // ggml pads every tensor, the last one included, to the alignment
    const last = placed[placed.length - 1];
    ftruncateSync(fd, header.length + (last ? last.offset + Math.ceil(last.byteSize / alignment) * alignment : 0));
    fsyncSync(fd);
    closeSync(fd);
    closed = true;
    options.validate?.(tmp);
    renameSync(tmp, out);
    ok = true;
  } catch (e) {
    throw writeFailure(e, out, 'no partial file was left');
  } finally {
    if (!ok) {
      if (!closed) try { closeSync(fd); } catch { /* already closed */ }
      rmSync(tmp, { force: true });
    }
  }
}
