// Imported into every test process (package.json, tap's node-arg): the CLI's caches (the hash memo
// file-hashes.json, statistics, eval results) go to a temporary folder of this process instead of
// the user's ~/.cache/mathneuro, unless the environment already names one. Child processes a test
// spawns inherit it; a test that wants a cache of its own still passes MATHNEURO_CACHE_DIR or cacheDir.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

if (!process.env.MATHNEURO_CACHE_DIR) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mathneuro-test-cache-'));
  process.env.MATHNEURO_CACHE_DIR = dir;
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
}
