// sha256 of a file computed on a worker thread, so that a new-file patch reads and hashes its
// source while the main thread and the native threads write the patched copy.
import { Worker } from 'node:worker_threads';
import { MathneuroError } from '../errors.ts';

// Plain JavaScript (no TypeScript loader needed in the worker): reads the file in 8 MiB chunks.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { openSync, readSync, closeSync } = require('node:fs');
try {
  const fd = openSync(workerData.path, 'r');
  try {
    const hash = createHash('sha256');
    const chunk = Buffer.allocUnsafe(8 << 20);
    let position = 0;
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, position);
      if (n === 0) break;
      hash.update(chunk.subarray(0, n));
      position += n;
    }
    parentPort.postMessage({ sha256: hash.digest('hex') });
  } finally { closeSync(fd); }
} catch (e) { parentPort.postMessage({ error: String(e && e.message || e) }); }
`;

export interface BackgroundHash {
  /** the hex digest; rejects with EIO when the file cannot be read */
  result: Promise<string>;
  /** stops the worker (the result then never settles) */
  cancel(): void;
}

export function sha256InBackground(file: string): BackgroundHash {
  const worker = new Worker(WORKER, { eval: true, workerData: { path: file } });
  const result = new Promise<string>((resolve, reject) => {
    worker.once('message', (m: { sha256?: string; error?: string }) => {
      if (m.sha256) resolve(m.sha256);
      else reject(new MathneuroError('EIO', `cannot hash ${file}: ${m.error}`));
      void worker.terminate();
    });
    worker.once('error', (e: Error) => reject(new MathneuroError('EIO', `cannot hash ${file}: ${e.message}`)));
  });
  result.catch(() => { /* handled by whoever awaits it */ });
  return { result, cancel: () => { void worker.terminate(); } };
}
