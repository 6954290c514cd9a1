// Model-level checks: each metadata or tensor problem that made llama.cpp abort the process in the
// fuzzer (scripts/fuzz.ts) is refused with EBADGGUF before loading; valid models pass.
import t from 'tap';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { MathneuroError } from '../../src/errors.ts';
import { encodeGguf, fuzzBaseModel, type FuzzModel } from '../../src/gguf/fuzz.ts';
import { checkModel } from '../../src/gguf/model-check.ts';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { GGML_TYPE, GGUF_VALUE } from '../../src/gguf/types.ts';
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

t.test('what made llama.cpp abort is refused', async (t) => {
  const dir = t.testdir();
  const cases: [string, (m: FuzzModel) => void, RegExp][] = [
    ['tokenizer-none', (m) => { entry(m, 'tokenizer.ggml.model').value = 'none'; }, /tokenizer\.ggml\.model "none" is not supported/],
    ['tokenizer-no-vocab', (m) => { entry(m, 'tokenizer.ggml.model').value = 'no_vocab'; }, /not supported/],
    ['tokenizer-bert', (m) => { entry(m, 'tokenizer.ggml.model').value = 'bert'; }, /not supported/],
    ['no-tokenizer', (m) => { m.metadata = m.metadata.filter((e) => e.key !== 'tokenizer.ggml.model'); }, /tokenizer\.ggml\.model is missing/],
    ['duplicate-token', (m) => { (entry(m, 'tokenizer.ggml.tokens').value as string[])[270] = 'a'; }, /appears twice/],
    ['bad-byte-token', (m) => { (entry(m, 'tokenizer.ggml.tokens').value as string[])[10] = '<0xZZ>'; }, /byte token 10/],
    ['missing-byte-token', (m) => { (entry(m, 'tokenizer.ggml.token_type').value as number[])[10] = 1; (entry(m, 'tokenizer.ggml.tokens').value as string[])[10] = 'qq'; }, /no byte token <0x07>/],
    ['short-scores', (m) => { (entry(m, 'tokenizer.ggml.scores').value as number[]).length = 5; }, /scores must be/],
    ['short-types', (m) => { (entry(m, 'tokenizer.ggml.token_type').value as number[]).length = 5; }, /token_type must be/],
    ['bos-out-of-range', (m) => { entry(m, 'tokenizer.ggml.bos_token_id').value = 300; }, /bos_token_id = 300 is not a token id/],
    ['block-count-0', (m) => { entry(m, 'llama.block_count').value = 0; }, /block_count = 0/],
    ['eps-nan', (m) => { entry(m, 'llama.attention.layer_norm_rms_epsilon').value = NaN; }, /epsilon = NaN/],
    ['eps-0', (m) => { entry(m, 'llama.attention.layer_norm_rms_epsilon').value = 0; }, /must be > 0/],
    ['heads', (m) => { entry(m, 'llama.attention.head_count_kv').value = 3; }, /not a multiple of head_count_kv/],
    ['unknown-arch', (m) => { entry(m, 'general.architecture').value = 'llama2'; }, /architecture "llama2"/],
    ['i32-weight', (m) => { const x = m.tensors.find((y) => y.name === 'blk.0.attn_v.weight')!; x.type = GGML_TYPE.I32; }, /I32 weights/],
    ['q8_1-weight', (m) => { const x = m.tensors.find((y) => y.name === 'blk.0.attn_q.weight')!; x.type = GGML_TYPE.Q8_1; x.data = Buffer.alloc(x.data.length / 34 * 36); }, /Q8_1 weights/],
    ['f16-norm', (m) => { const x = m.tensors.find((y) => y.name === 'output_norm.weight')!; x.type = GGML_TYPE.F16; x.data = x.data.subarray(0, x.data.length / 2); }, /needs F32/],
    ['no-tensors', (m) => { m.tensors = []; }, /no tensors/],
  ];
  for (const [name, mutate, re] of cases) {
    const m = clone();
    mutate(m);
    const v = verdict(dir, name, m);
    t.match(v, /^EBADGGUF: /, name);
    t.match(v, re, name);
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
