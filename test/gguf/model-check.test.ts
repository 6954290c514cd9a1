// Model-level checks: valid models pass; statistics files and split models. Each check, the abort it
// prevents and what is no longer refused: test/gguf/model-check-aborts.test.ts.
import t from 'tap';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { MathneuroError } from '../../src/errors.ts';
import { encodeGguf, fuzzBaseModel, type FuzzModel } from '../helpers/gguf-fuzz.ts';
import { checkModel } from '../../src/gguf/model-check.ts';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { GGUF_VALUE } from '../../src/gguf/types.ts';
import { fixtureModel } from '../helpers/fixtures.ts';

const base = fuzzBaseModel(1);
const clone = (): FuzzModel => ({ ...base, metadata: base.metadata.map((e) => ({ ...e, value: Array.isArray(e.value) ? [...e.value] : e.value })), tensors: base.tensors.map((x) => ({ ...x })) });
const entry = (m: FuzzModel, key: string) => m.metadata.find((e) => e.key === key)!;

function verdict(dir: string, name: string, m: FuzzModel): string {
  const file = path.join(dir, `${name}.gguf`);
  writeFileSync(file, encodeGguf(m).bytes);
  try { checkModel(readGgufSync(file)); return 'ok'; } catch (e) {
    if (!(e instanceof MathneuroError)) throw e;
    return `${e.code}: ${e.message}`;
  }
}

t.test('valid models pass', async (t) => {
  const dir = t.testdir();
  t.equal(verdict(dir, 'base', base), 'ok', 'the fuzz base model');
  for (const opts of [{ shape: 'tiny', type: 'q8_0', seed: 4 }, { shape: 'moe-tiny', type: 'q8_0', seed: 5 }] as const) {
    const file = await fixtureModel(opts);
    t.doesNotThrow(() => checkModel(readGgufSync(file)), `${path.basename(file)} (llama-spm vocab, 32k tokens)`);
  }
});

t.test('statistics files are not models and pass untouched', async (t) => {
  const dir = t.testdir();
  const m: FuzzModel = { version: 3, alignment: 32, tensors: [], metadata: [{ key: 'general.type', type: GGUF_VALUE.STRING, value: 'imatrix' }] };
  t.equal(verdict(dir, 'imatrix', m), 'ok');
});

t.test('split models: every shard is validated before llama.cpp opens it', async (t) => {
  const dir = t.testdir();
  const u16 = (key: string, value: number) => ({ key, type: GGUF_VALUE.UINT16, value });
  const first = clone();
  const second: FuzzModel = { version: 3, alignment: 32, metadata: [u16('split.no', 1), u16('split.count', 2)], tensors: first.tensors.splice(6) };
  first.metadata.push(u16('split.no', 0), u16('split.count', 2), { key: 'split.tensors.count', type: GGUF_VALUE.INT32, value: base.tensors.length });
  const write = (name: string, m: FuzzModel | Buffer) => writeFileSync(path.join(dir, name), Buffer.isBuffer(m) ? m : encodeGguf(m).bytes);
  write('m-00001-of-00002.gguf', first);
  write('m-00002-of-00002.gguf', second);
  const check = (name: string) => { try { checkModel(readGgufSync(path.join(dir, name))); return 'ok'; } catch (e) { return (e as Error).message; } };
  t.equal(check('m-00001-of-00002.gguf'), 'ok', 'two good shards');
  write('m-00002-of-00002.gguf', encodeGguf(second).bytes.subarray(0, 200));
  t.match(check('m-00001-of-00002.gguf'), /m-00002-of-00002\.gguf: .*(end of file|cannot fit)/, 'a truncated second shard is caught');
  write('m-00002-of-00002.gguf', { ...second, metadata: [{ key: 'split.no', type: GGUF_VALUE.UINT32, value: 1 }, u16('split.count', 2)] });
  t.match(check('m-00001-of-00002.gguf'), /split\.no = 1 \(u16\)/, 'split.no of another type (llama.cpp asserts) is caught');
  write('renamed.gguf', first);
  t.match(check('renamed.gguf'), /must be named <name>-00001-of-00002\.gguf/);
  write('m-00002-of-00002.gguf', { ...second, tensors: [first.tensors[0], ...second.tensors] });
  t.match(check('m-00001-of-00002.gguf'), /in two shards/);
});
