// sha256 of an open file (hex), read in 8 MiB chunks. Plain CommonJS so that one piece of code
// serves both sha256File (src/core/tensor-io.ts) and the worker thread of
// src/core/background-hash.ts, which runs without the TypeScript loader.
const { createHash } = require('node:crypto');
const { fstatSync, readSync } = require('node:fs');

/** @param {number} fd @param {(p: { bytesDone: number, bytesTotal: number }) => void} [onProgress] @returns {string} */
function sha256Fd(fd, onProgress) {
  return sha256Fds([fd], onProgress);
}

/**
 * sha256 of several open files read one after the other (a split model's shards: the hash of their
 * concatenation; one file: sha256Fd's). With `perFile`, each file's own sha256 is pushed to it too.
 * @param {number[]} fds @param {(p: { bytesDone: number, bytesTotal: number }) => void} [onProgress] @param {string[]} [perFile] @returns {string}
 */
function sha256Fds(fds, onProgress, perFile) {
  const hash = createHash('sha256');
  const chunk = Buffer.allocUnsafe(8 << 20);
  const bytesTotal = fds.reduce((a, fd) => a + fstatSync(fd).size, 0);
  let bytesDone = 0;
  for (const fd of fds) {
    const own = perFile ? createHash('sha256') : undefined;
    let position = 0;
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, position);
      if (n === 0) break;
      hash.update(chunk.subarray(0, n));
      if (own) own.update(chunk.subarray(0, n));
      position += n;
      bytesDone += n;
      if (onProgress) onProgress({ bytesDone, bytesTotal });
    }
    if (own) perFile.push(own.digest('hex'));
  }
  return hash.digest('hex');
}

/**
 * How long before a hash starts a file must have last changed for its identity to be recorded
 * (git's "racy clean" rule): a write within the same tick of the file system's clock as the last
 * one leaves both times as they were, so only a file that settled well before the hash is known to
 * show any later write in its times.
 */
const SETTLED_MS = 2000;

/**
 * The identity of an open file as the file system keeps it: device, inode, size, and the last
 * modification and change (inode) times in nanoseconds. Every write changes the change time, and no
 * call sets it back (utimes sets it to now), so while the identity is the same the bytes are too.
 * @param {number} fd
 * @returns {{ dev: string, ino: string, size: number, mtimeNs: string, ctimeNs: string }}
 */
function fileIdentity(fd) {
  const st = fstatSync(fd, { bigint: true });
  return { dev: String(st.dev), ino: String(st.ino), size: Number(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs) };
}

/** @returns {boolean} */
function sameIdentity(a, b) {
  return !!a && !!b && a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

/**
 * sha256Fds, and each file's identity where it can vouch for the hash later: the same before and
 * after the read, and last changed at least SETTLED_MS before the read began (otherwise undefined).
 * Each file's own sha256 comes with it, and in perFile always (a split model's shards are hashed
 * one after the other).
 * @param {number[]} fds @param {(p: { bytesDone: number, bytesTotal: number }) => void} [onProgress]
 */
function sha256FdsWithIdentity(fds, onProgress) {
  const before = fds.map(fileIdentity);
  const startedNs = BigInt(Date.now()) * 1000000n;
  const perFile = [];
  const sha256 = sha256Fds(fds, onProgress, fds.length > 1 ? perFile : undefined);
  if (fds.length === 1) perFile.push(sha256);
  const after = fds.map(fileIdentity);
  const settled = before.every((b, i) => sameIdentity(b, after[i])
    && BigInt(b.mtimeNs) <= startedNs - BigInt(SETTLED_MS) * 1000000n && BigInt(b.ctimeNs) <= startedNs - BigInt(SETTLED_MS) * 1000000n);
  return { sha256, perFile, files: settled ? before.map((b, i) => ({ ...b, sha256: perFile[i] })) : undefined };
}

module.exports = { sha256Fd, sha256Fds, sha256FdsWithIdentity, fileIdentity, sameIdentity, SETTLED_MS };
