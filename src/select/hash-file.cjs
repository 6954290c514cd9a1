// sha256 of an open file (hex), read in 8 MiB chunks. Plain CommonJS so that one piece of code
// serves both sha256File (src/select/tensor-io.ts) and the worker thread of
// src/patch/background-hash.ts, which runs without the TypeScript loader.
const { createHash } = require('node:crypto');
const { fstatSync, readSync } = require('node:fs');

/** @param {number} fd @param {(p: { bytesDone: number, bytesTotal: number }) => void} [onProgress] @returns {string} */
function sha256Fd(fd, onProgress) {
  const hash = createHash('sha256');
  const chunk = Buffer.allocUnsafe(8 << 20);
  const bytesTotal = fstatSync(fd).size;
  let position = 0;
  for (;;) {
    const n = readSync(fd, chunk, 0, chunk.length, position);
    if (n === 0) break;
    hash.update(chunk.subarray(0, n));
    position += n;
    if (onProgress) onProgress({ bytesDone: position, bytesTotal });
  }
  return hash.digest('hex');
}

module.exports = { sha256Fd };
