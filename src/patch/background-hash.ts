// sha256 of a file computed on a worker thread, so that a new-file patch reads and hashes its
// source while the main thread and the native threads write the patched copy.
import { Worker } from 'node:worker_threads';
import { MathneuroError } from '../errors.ts';
import { HASH_FILE_MODULE } from '../select/tensor-io.ts';

// Plain JavaScript (no TypeScript loader in the worker); the hashing loop is sha256File's own.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { openSync, closeSync } = require('node:fs');
const { sha256Fd } = require(workerData.module);
try {
  const fd = openSync(workerData.path, 'r');
  try { parentPort.postMessage({ sha256: sha256Fd(fd) }); } finally { closeSync(fd); }
} catch (e) { parentPort.postMessage({ error: String(e && e.message || e) }); }
`;

export interface BackgroundHash {
  /** the hex digest; rejects with EIO when the file cannot be read */
  result: Promise<string>;
  /** stops the worker (the result then never settles) */
  cancel(): void;
}

export function sha256InBackground(file: string): BackgroundHash {
  const worker = new Worker(WORKER, { eval: true, workerData: { path: file, module: HASH_FILE_MODULE } });
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
