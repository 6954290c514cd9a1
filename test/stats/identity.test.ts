// A model's identity in statistics files (stats, select's check that statistics were collected on
// this model) is the sha256 of its header bytes, every shard's in order. It is taken from the bytes
// the header was parsed from and kept per parse: checked against a hash of the file's own bytes,
// for a single file, a split model, and a file rewritten with another header (a new parse).
import t from 'tap';
import { createHash } from 'node:crypto';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { openModelSync } from '../../src/gguf/model.ts';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { modelIdentity } from '../../src/stats/file.ts';
import { fixtureModel } from '../helpers/fixtures.ts';
import { encodeGguf, fuzzModelFromFile } from '../helpers/gguf-fuzz.ts';
import { splitGguf } from '../helpers/split.ts';

/** sha256 of each file's first `headerBytes` bytes, read here */
function reference(files: { path: string; headerBytes: number }[]): string {
  const h = createHash('sha256');
  for (const f of files) h.update(readFileSync(f.path).subarray(0, f.headerBytes));
  return h.digest('hex');
}

t.test('the sha256 of the header bytes, from the parse', async (t) => {
  const dir = t.testdir();
  const model = path.join(dir, 'm.gguf');
  copyFileSync(await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 3 }), model);
  const info = readGgufSync(model);
  const id = modelIdentity(info);
  t.equal(id.headerSha256, reference([info]), 'single file');
  t.equal(id.fileName, 'm.gguf');
  t.equal(id.sizeBytes, readFileSync(model).length);
  id.fileName = 'changed by a caller';
  t.equal(modelIdentity(info).fileName, 'm.gguf', 'a caller\'s copy');

  // another header, same path (a value changed, a key added): a new parse and a new identity
  const m = fuzzModelFromFile(model);
  m.metadata.push({ key: 'test.extra', type: 8, value: 'x' });
  writeFileSync(model, encodeGguf(m).bytes);
  const again = readGgufSync(model);
  t.not(again, info, 'a new parse');
  t.equal(modelIdentity(again).headerSha256, reference([again]), 'the rewritten file');
  t.not(modelIdentity(again).headerSha256, id.headerSha256);

  // split: every shard's header in order
  const shards = await splitGguf(model, path.join(dir, 'split'), 5);
  t.ok(shards.length > 2, `${shards.length} shards`);
  const view = openModelSync(shards[0]);
  t.equal(modelIdentity(view).headerSha256, reference(view.shards), 'split model');
});
