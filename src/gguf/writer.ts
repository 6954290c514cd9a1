// Writing a new GGUF safely: a temporary file beside the destination, the header from ggml's gguf
// code, tensor data at the offsets that header gives, padding as ggml writes it, fsync, optional
// validation, then one rename. A failed write leaves no partial file and says why in one line.
import { closeSync, fsyncSync, ftruncateSync, openSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { MathneuroError } from '../errors.ts';

export interface PlacedTensor { offset: number; byteSize: number }

/** Removes `<out>.<pid>.tmp` files of earlier writers that were killed (their process is gone). */
export function removeStaleTemporaries(out: string) {
  const dir = path.dirname(out);
  const prefix = `${path.basename(out)}.`;
  let names: string[];
  try { names = readdirSync(dir); } catch { return; }
  for (const name of names) {
    const m = name.startsWith(prefix) ? /^(\d+)\.tmp$/.exec(name.slice(prefix.length)) : null;
    if (!m || Number(m[1]) === process.pid) continue;
    let alive = false;
    try { process.kill(Number(m[1]), 0); alive = true; } catch (e) { alive = (e as NodeJS.ErrnoException).code === 'EPERM'; }
    if (!alive) rmSync(path.join(dir, name), { force: true });
  }
}

/**
 * A failed write as one clear line: disk full (ENOSPC), file-size limit (EFBIG) or quota (EDQUOT)
 * say so; the temporary file is gone and the destination untouched (writes go to tmp + rename).
 */
export function writeFailure(e: unknown, file: string, state: string): MathneuroError {
  if (e instanceof MathneuroError) return e;
  const code = (e as NodeJS.ErrnoException)?.code;
  const why = code === 'ENOSPC' ? 'no space left on device' : code === 'EFBIG' ? 'file too large (a file-size limit)' : code === 'EDQUOT' ? 'disk quota exceeded'
    : `${(e as Error)?.message ?? String(e)}`;
  return new MathneuroError('EIO', `${why} while writing ${file}; ${state} and the source is untouched`, { cause: e });
}

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
  const tmp = `${out}.${process.pid}.tmp`;
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
