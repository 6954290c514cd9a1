// Reading and hashing tensor data of a GGUF file, one tensor at a time.
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { MathneuroError } from '../errors.ts';
import type { GgufTensorInfo } from '../gguf/reader.ts';

export function readExactly(fd: number, buffer: Uint8Array, position: number, what: string): void {
  let done = 0;
  while (done < buffer.length) {
    const n = readSync(fd, buffer, done, buffer.length - done, position + done);
    if (n === 0) throw new MathneuroError('EIO', `${what}: unexpected end of file at byte ${position + done}`);
    done += n;
  }
}

/** The stored bytes of one tensor. */
export function readTensorBytes(fd: number, tensor: GgufTensorInfo): Uint8Array {
  const buffer = new Uint8Array(tensor.byteSize);
  readExactly(fd, buffer, tensor.absoluteOffset, `tensor ${tensor.name}`);
  return buffer;
}

export interface HashProgress { bytesDone: number; bytesTotal: number }

/** sha256 of a whole file (hex), read in 8 MiB chunks. */
export function sha256File(path: string, onProgress?: (p: HashProgress) => void): string {
  let fd: number;
  try { fd = openSync(path, 'r'); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new MathneuroError('ENOENT', `no such file: ${path}`);
    throw new MathneuroError('EIO', `cannot open ${path}: ${(e as Error).message}`);
  }
  try {
    const hash = createHash('sha256');
    const chunk = Buffer.allocUnsafe(8 << 20);
    const bytesTotal = fstatSync(fd).size;
    let position = 0;
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, position);
      if (n === 0) break;
      hash.update(chunk.subarray(0, n));
      position += n;
      onProgress?.({ bytesDone: position, bytesTotal });
    }
    return hash.digest('hex');
  } finally {
    closeSync(fd);
  }
}
