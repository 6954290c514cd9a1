// sha256 of a file computed on a worker thread, so that a new-file patch reads and hashes its
// source while the main thread and the native threads write the patched copy.
import { Worker } from 'node:worker_threads';
import { MathneuroError } from '../errors.ts';
import { HASH_FILE_MODULE } from './tensor-io.ts';
import type { HashedFile } from './file-identity.ts';

// Plain JavaScript (no TypeScript loader in the worker); the hashing loop is sha256File's own.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { openSync, closeSync } = require('node:fs');
const { sha256FdsWithIdentity } = require(workerData.module);
const fds = [];
try {
  for (const file of workerData.files) fds.push(openSync(file, 'r'));
  parentPort.postMessage(sha256FdsWithIdentity(fds));
} catch (e) { parentPort.postMessage({ error: String(e && e.message || e) }); }
finally { for (const fd of fds) closeSync(fd); }
`;

export interface BackgroundHash {
  /** the hex digest; rejects with EIO when the file cannot be read */
  result: Promise<string>;
  /**
   * each file's identity and sha256, where the identities can vouch for the hash later (see
   * file-identity.ts); undefined when a file changed during the read or shortly before it
   */
  files: Promise<HashedFile[] | undefined>;
  /** stops the worker (the result then never settles) */
  cancel(): void;
}

/** sha256 of `file`, or of several files one after the other (a split model's shards, as sha256File). */
export function sha256InBackground(file: string | string[]): BackgroundHash {
  const files = typeof file === 'string' ? [file] : file;
  const worker = new Worker(WORKER, { eval: true, workerData: { files, module: HASH_FILE_MODULE } });
  const both = new Promise<{ sha256: string; files?: HashedFile[] }>((resolve, reject) => {
    worker.once('message', (m: { sha256?: string; files?: HashedFile[]; error?: string }) => {
      if (m.sha256) resolve({ sha256: m.sha256, files: m.files });
      else reject(new MathneuroError('EIO', `cannot hash ${file}: ${m.error}`));
      void worker.terminate();
    });
    worker.once('error', (e: Error) => reject(new MathneuroError('EIO', `cannot hash ${file}: ${e.message}`)));
  });
  const result = both.then((r) => r.sha256), identities = both.then((r) => r.files);
  for (const p of [both, result, identities]) p.catch(() => { /* handled by whoever awaits it */ });
  return { result, files: identities, cancel: () => { void worker.terminate(); } };
}
