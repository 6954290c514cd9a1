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

module.exports = { sha256Fd, sha256Fds };
