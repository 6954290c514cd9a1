// Bad input gives a typed error and the process lives: nothing reaches llama.cpp unvalidated.
import t, { type Test } from 'tap';
import { copyFileSync, readFileSync, writeFileSync, truncateSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { MathneuroError } from '../../src/errors.ts';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { collectStats, readSamples } from '../../src/stats/index.ts';
import { fixtureModel, repoRoot } from '../helpers/fixtures.ts';

async function rejectsWith(t: Test, p: Promise<unknown>, code: string, pattern?: RegExp) {
  try {
    await p;
    t.fail(`expected ${code}`);
  } catch (e) {
    t.ok(e instanceof MathneuroError, `a MathneuroError (${(e as Error).message})`);
    t.equal((e as MathneuroError).code, code);
    if (pattern) t.match((e as Error).message, pattern);
  }
}

t.test('bad model files are refused before llama.cpp sees them', async (t) => {
  const dir = t.testdir();
  const good = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 });
  await rejectsWith(t, collectStats(path.join(dir, 'missing.gguf'), ['x']), 'ENOENT');
  writeFileSync(path.join(dir, 'text.gguf'), 'this is not a model at all, just some text');
  await rejectsWith(t, collectStats(path.join(dir, 'text.gguf'), ['x']), 'EBADGGUF', /not a GGUF/);
  const trunc = path.join(dir, 'truncated.gguf');
  copyFileSync(good, trunc);
  truncateSync(trunc, Math.floor(readFileSync(good).length / 2));
  await rejectsWith(t, collectStats(trunc, ['x']), 'EBADGGUF', /past the end|end of file/);
  // move the last tensor's offset past the end of the file
  const info = readGgufSync(good);
  const last = info.tensors[info.tensors.length - 1];
  const bytes = readFileSync(good);
  const nameBytes = Buffer.from(last.name);
  const at = bytes.indexOf(Buffer.concat([Buffer.from([nameBytes.length, 0, 0, 0, 0, 0, 0, 0]), nameBytes]));
  t.ok(at > 0, 'found the tensor info');
  const offsetPos = at + 8 + nameBytes.length + 4 + 8 * last.shape.length + 4;
  t.equal(Number(bytes.readBigUInt64LE(offsetPos)), last.offset, 'located the offset field');
  bytes.writeBigUInt64LE(BigInt(info.fileSize * 4), offsetPos);
  const past = path.join(dir, 'offset.gguf');
  writeFileSync(past, bytes);
  await rejectsWith(t, collectStats(past, ['x']), 'EBADGGUF', /offset|past the end/);
});

t.test('bad data files name the problem', async (t) => {
  const dir = t.testdir({
    'empty.jsonl': '',
    'blank.txt': '\n\n  \n',
    'bad.jsonl': '{"text":"fine"}\n{"text": broken}\n',
    'fields.jsonl': '{"text":"fine"}\n{"other":1}\n',
    'cols.csv': 'q,a,b,c,d,A\nq2,a,b,c,A\n',
    'letter.csv': 'q,a,b,c,d,E\n',
    'unterminated.csv': 'q,"a,b,c,d,A\n',
    'weird.xml': '<x/>',
  });
  const cases: [string, string, RegExp][] = [
    ['empty.jsonl', 'EDATA', /no samples/],
    ['blank.txt', 'EDATA', /no samples/],
    ['bad.jsonl', 'EDATA', /bad\.jsonl:2: not valid JSON/],
    ['fields.jsonl', 'EDATA', /fields\.jsonl:2/],
    ['cols.csv', 'EDATA', /cols\.csv:2: expected 6 columns/],
    ['letter.csv', 'EDATA', /answer column/],
    ['unterminated.csv', 'EDATA', /unterminated/],
    ['weird.xml', 'EDATA', /unknown data file type/],
    ['nope.jsonl', 'ENOENT', /no such data file/],
  ];
  for (const [file, code, re] of cases) {
    try { readSamples(path.join(dir, file)); t.fail(`${file} should fail`); } catch (e) {
      t.equal((e as MathneuroError).code, code, `${file}: ${code}`);
      t.match((e as Error).message, re);
    }
  }
  writeFileSync(path.join(dir, 'utf8.txt'), Buffer.concat([Buffer.from('fine line\nbad '), Buffer.from([0xff, 0xfe]), Buffer.from(' here\n')]));
  try { readSamples(path.join(dir, 'utf8.txt')); t.fail('invalid UTF-8 should fail'); } catch (e) {
    t.match((e as Error).message, /utf8\.txt:2: invalid UTF-8/);
  }
});

t.test('data formats: GSM8K jsonl, txt blocks, MMLU csv with quotes', async (t) => {
  const dir = t.testdir({
    'g.jsonl': '{"question":"Q1?","answer":"A1\\n#### 3"}\n\n{"text":"plain"}\n',
    'b.txt': 'block one\nline two\n\n\nblock two\n',
    'm.csv': '"What is ""x""?","a, b",c,"multi\nline",d,B\n',
  });
  t.same(readSamples(path.join(dir, 'g.jsonl')).map((s) => s.text), ['Q1?\nA1\n#### 3', 'plain']);
  t.same(readSamples(path.join(dir, 'b.txt')).map((s) => s.text), ['block one\nline two', 'block two']);
  t.same(readSamples(path.join(dir, 'm.csv')).map((s) => s.text), ['What is "x"?\nA. a, b\nB. c\nC. multi\nline\nD. d\nAnswer: B']);
});

t.test('CLI: exit codes and --json', async (t) => {
  const dir = t.testdir({ 'd.txt': 'One plus one is two.\n\nThe sky is blue today.\n' });
  const model = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 });
  const cli = (...args: string[]) => spawnSync(process.execPath, [path.join(repoRoot, 'scripts', 'mathneuro.mjs'), ...args], { encoding: 'utf8' });
  const ok = cli('stats', model, '--data', path.join(dir, 'd.txt'), '-o', path.join(dir, 's.gguf'), '--json');
  t.equal(ok.status, 0, ok.stderr);
  const summary = JSON.parse(ok.stdout);
  t.equal(summary.samples, 2);
  t.ok(summary.tokens > 4);
  t.equal(summary.weights, 14, '7 per block x 2 blocks: a forward pass stops before the output head');
  const again = cli('stats', model, '--data', path.join(dir, 'd.txt'), '-o', path.join(dir, 's.gguf'));
  t.equal(again.status, 1, 'refuses to overwrite');
  t.match(again.stderr, /exists/);
  t.equal(cli('stats', model).status, 2, 'missing --data is a usage error');
  t.equal(cli('stats', model, '--data', 'x', '-o', 'y', '--bogus').status, 2, 'unknown option is a usage error');
  const bad = cli('stats', path.join(dir, 'd.txt'), '--data', path.join(dir, 'd.txt'), '-o', path.join(dir, 'z.gguf'), '--json');
  t.equal(bad.status, 1);
  t.equal(JSON.parse(bad.stdout).error.code, 'EBADGGUF');
  t.equal(bad.stderr.trim().split('\n').length, 1, 'one line on stderr');
  t.equal(cli('nonsense').status, 2);
  const synth = cli('synth', path.join(dir, 'm.gguf'), '--shape', 'tiny', '--type', 'q4_0', '--json');
  t.equal(synth.status, 0, synth.stderr);
  t.equal(JSON.parse(synth.stdout).tensorCount, 21);
  const doctor = cli('doctor', '--json');
  t.equal(doctor.status, 0, doctor.stderr);
  const d = JSON.parse(doctor.stdout);
  t.ok(['source', 'prebuilt'].includes(d.used));
  t.ok(d.devices.some((x: { type: string }) => x.type === 'cpu'), 'a CPU device');
});

// A statistics file whose values are negative, NaN or infinite is refused by name (MathNeuro's
// scores and the importance matrix assume sums of squares and of norms: finite, >= 0), in each of
// its three arrays, stored as float32 or float64.
t.test('statistics with a negative or non-finite value are refused', async (t) => {
  const { saveStats, loadStats } = await import('../../src/stats/index.ts');
  const dir = t.testdir();
  const weights = new Map([['blk.0.attn_q.weight', { name: 'blk.0.attn_q.weight', nIn: 8, nMat: 1, sum2: new Float64Array(8).fill(2), normSum: new Float64Array(8).fill(1), counts: new Float64Array([10]) }]]);
  const model = { fileName: 'm.gguf', sizeBytes: 1, headerSha256: 'x' };
  for (const float64 of [false, true]) {
    const good = path.join(dir, `good-${float64}.gguf`);
    await saveStats({ model, samples: 1, tokens: 10, datasets: ['d'], weights }, good, { float64 });
    t.same([...(await loadStats(good)).weights.get('blk.0.attn_q.weight')!.sum2], new Array(8).fill(2), `float64 ${float64}: the values as saved`);
    const info = readGgufSync(good);
    for (const suffix of ['.in_sum2', '.in_norm_sum', '.counts']) {
      const tensor = info.tensorByName.get(`blk.0.attn_q.weight${suffix}`)!;
      for (const bad of [-1, NaN, Infinity]) {
        const bytes = readFileSync(good);
        const at = tensor.absoluteOffset + (suffix === '.counts' ? 0 : 3) * (float64 ? 8 : 4);
        if (float64) bytes.writeDoubleLE(bad, at); else bytes.writeFloatLE(bad, at);
        const file = path.join(dir, 'bad.gguf');
        writeFileSync(file, bytes);
        await rejectsWith(t, loadStats(file), 'ESTATS', new RegExp(`bad\\.gguf: blk\\.0\\.attn_q\\.weight\\${suffix} holds a negative or non-finite value`));
      }
    }
  }
});
