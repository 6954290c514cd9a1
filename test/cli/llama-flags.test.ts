// Issue 16: llama.cpp's spellings, one hardware option set on every model-running command, the
// checks that run before any forward pass, the empty-selection warning, inspect's hyperparameters.
// "Before any forward pass" is asserted with MATHNEURO_TEST_REFUSE_LOAD=1: every model load
// (statistics collector, evaluator) then fails with ELOAD, so an error other than ELOAD came first.
import t from 'tap';
import { copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { run } from '../helpers/cli.ts';
import { defaultThreads, gpuDevices, normalizeArgv, parseHardware, physicalCores } from '../../src/cli/common.ts';
import { fixtureModel, repoRoot } from '../helpers/fixtures.ts';
import { noByteVocabCopy } from '../helpers/real-models.ts';

const stories = path.resolve(repoRoot, '..', 'shared', 'models', 'stories260K.gguf');
const hasGpu = gpuDevices().gpus.length > 0;

/** Run with every model load refused: whatever fails first is not a forward pass. */
async function refused(argv: string[], env: NodeJS.ProcessEnv = {}) {
  process.env.MATHNEURO_TEST_REFUSE_LOAD = '1';
  try { return await run([...argv, '--json'], env); } finally { delete process.env.MATHNEURO_TEST_REFUSE_LOAD; }
}

t.test('argv: -ngl and -ub become long options; hardware parsing and defaults', async (t) => {
  t.same(normalizeArgv(['-ngl', '99', '-ngl=3', '-ub', '8', '--', '-ngl']), ['--n-gpu-layers', '99', '--n-gpu-layers=3', '--ubatch-size', '8', '--', '-ngl']);
  const io = { env: {} };
  t.same(parseHardware({}, io), { nThreads: physicalCores(), nCtx: undefined, nBatch: undefined, nGpuLayers: 0 }, 'defaults: physical cores, CPU only');
  t.equal(defaultThreads({ MATHNEURO_THREADS: '3' }), 3, '$MATHNEURO_THREADS');
  t.same(parseHardware({ threads: '2', 'ctx-size': '128', 'batch-size': '64', 'n-gpu-layers': '0' }, io), { nThreads: 2, nCtx: 128, nBatch: 64, nGpuLayers: 0 });
  t.same(parseHardware({ ctx: '96', 'gpu-layers': '0' }, io), { nThreads: physicalCores(), nCtx: 96, nBatch: undefined, nGpuLayers: 0 }, 'the older spellings');
  t.throws(() => parseHardware({ ctx: '96', 'ctx-size': '128' }, io), /same option with different values/);
  t.throws(() => parseHardware({ threads: '0' }, io), /--threads must be >= 1/);
  t.equal(parseHardware({ 'n-gpu-layers': 'auto' }, io).nGpuLayers, hasGpu ? -1 : 0, '-ngl auto: the GPU when there is one, else none, never an error');
  if (!hasGpu) {
    for (const v of [{ 'n-gpu-layers': '99' }, { 'n-gpu-layers': 'all' }, { 'gpu-layers': '1' }, { gpu: true }]) {
      t.throws(() => parseHardware(v, io), { code: 'ENOBACKEND', message: /no GPU backend; mathneuro doctor found .*CPU/ }, JSON.stringify(v));
    }
  } else t.equal(parseHardware({ 'n-gpu-layers': 'all' }, io).nGpuLayers, -1);
});

t.test('every model-running command takes the same hardware options; a GPU option without a GPU names what doctor found', async (t) => {
  const dir = t.testdir({ 'math.txt': 'What is 2 + 3? It is 5.\n\nHalf of 10 is 5.\n', 'ppl.txt': 'one two three four five six seven eight nine ten. '.repeat(40) });
  const data = path.join(dir, 'math.txt');
  const env = { MATHNEURO_CACHE_DIR: path.join(dir, 'cache') };
  const hw = ['-t', '1', '-c', '64', '-b', '32', '-ngl', '0'];
  const commands: Record<string, string[]> = {
    stats: ['stats', '-m', stories, '-f', data, '-o', path.join(dir, 'x.stats.gguf')],
    boost: ['boost', '-m', stories, '-o', path.join(dir, 'b.gguf'), '--samples', '2', '--no-check'],
    ablate: ['ablate', '-m', stories, '-o', path.join(dir, 'a.gguf'), '--samples', '2', '--no-check'],
    eval: ['eval', '-m', stories, '--task', 'ppl', '-f', path.join(dir, 'ppl.txt'), '--chunk', '32', '--chunks', '1', '--no-cache'],
    overlap: ['overlap', '-m', stories, '--sizes', '1', '--no-cache'],
  };
  for (const [name, argv] of Object.entries(commands)) {
    const ok = await refused([...argv, ...hw, '--gpu-layers', '0', '--ctx-size', '64', '--threads', '1', '--batch-size', '32', '--n-gpu-layers', '0'], env);
    t.equal(ok.json?.error?.code, 'ELOAD', `${name}: every hardware spelling accepted; it got as far as loading the model (${ok.stderr.trim()})`);
    if (!hasGpu) {
      for (const gpu of [['-ngl', '99'], ['--gpu'], ['--n-gpu-layers', 'all']]) {
        const r = await refused([...argv, ...gpu], env);
        t.equal(r.code, 1, `${name} ${gpu.join(' ')}: exit 1`);
        t.equal(r.json.error.code, 'ENOBACKEND', `${name} ${gpu.join(' ')}: before any load`);
        t.match(r.stderr, /doctor found CPU/);
      }
    }
    t.match((await run([name, '--help'])).stdout, /-t, --threads N[\s\S]*-c, --ctx-size N[\s\S]*-b, --batch-size N[\s\S]*-ngl, --n-gpu-layers N/, `${name} --help lists the shared options`);
  }
  // report runs no forward pass, but takes (and checks) the same options
  const rep = await run(['report', '-m', stories, '--math', 'nothere', '--general', 'nothere', ...hw, '--json']);
  t.equal(rep.json.error.code, 'ENOENT', 'report: options accepted, then the missing statistics file');
  if (!hasGpu) t.equal((await run(['report', stories, '--math', 'a', '--general', 'b', '-ngl', '99', '--json'])).json.error.code, 'ENOBACKEND');
  t.match((await run(['report', '--help'])).stdout, /-ngl, --n-gpu-layers/);
  t.equal((await run(['report', '--help'])).stdout.match(/^\s+--json\b/gm)?.length, 1, 'report --help lists --json once');
});

t.test('aliases end to end on a real model: -m, -f, -o, -t, -c, -b, --chunks', async (t) => {
  // samples of ~400 tokens: llama.cpp rounds a context up to a multiple of 256, so -c 256 cuts them
  const dir = t.testdir({ 'math.txt': Array.from({ length: 6 }, (_, i) => `Tom has ${i + 3} apples and gives away ${i}. He has 3 apples left, because ${i + 3} - ${i} = 3. `.repeat(16)).join('\n\n') + '\n' });
  const data = path.join(dir, 'math.txt');
  const a = await run(['stats', '-m', stories, '-f', data, '-o', path.join(dir, 'a.stats.gguf'), '-t', '1', '-c', '256', '-b', '64', '--chunks', '4', '--json']);
  t.equal(a.code, 0, a.stderr);
  t.match(a.json, { ok: true, samples: 4, truncatedSamples: 4 }, '--chunks 4: the first 4 samples; -c 256 truncates them');
  const b = await run(['stats', stories, '--data', data, '--output-file', path.join(dir, 'b.stats.gguf'), '--threads', '1', '--ctx', '256', '--json']);
  t.match(b.json, { ok: true, samples: 6, truncatedSamples: 6 }, 'the older spellings and --output-file');
  // -m and the positional together; -f's old meaning
  t.equal((await run(['stats', stories, '-m', stories, '-f', data, '-o', path.join(dir, 'c.gguf')])).code, 2, 'the model twice');
  const oldF = await run(['stats', stories, '--data', data, '-o', path.join(dir, 'a.stats.gguf'), '-f']);
  t.equal(oldF.code, 2);
  t.match(oldF.stderr, /-f takes a data file, as in llama\.cpp \(it is no longer --force: use --force/);
  for (const name of ['patch', 'select', 'boost', 'ablate', 'report', 'overlap', 'quantize', 'unpatch']) {
    const r = await run([name, stories, '-f', '--json']);
    t.equal(r.code, 2, `${name} -f: usage error`);
    t.match(r.json.error.message, /-f is not --force any more/, `${name}: the message says what -f is now`);
  }
  const missing = await run(['stats', stories, '-f', path.join(dir, 'nothere.txt'), '-o', path.join(dir, 'd.gguf'), '--json']);
  t.equal(missing.json.error.code, 'ENOENT');
  t.match(missing.json.error.message, /-f\/--file is the data file/);
  t.equal((await run(['stats', stories, '-f', data, '-o', path.join(dir, 'e.gguf'), '--chunks', '2', '--samples', '2'])).code, 2, '--chunks and --samples exclude each other');
  t.equal((await run(['eval', stories, '--task', 'gsm8k', '--chunks', '2'])).code, 2, '--chunks is for ppl');
});

t.test('errors found before any forward pass', async (t) => {
  const dir = t.testdir({ 'math.txt': 'What is 2 + 3? It is 5.\n' });
  const data = path.join(dir, 'math.txt');
  const model = path.join(dir, 'm.gguf');
  copyFileSync(stories, model);
  const env = { MATHNEURO_CACHE_DIR: path.join(dir, 'cache') };
  const cases: [string, string[], NodeJS.ProcessEnv, string, RegExp][] = [
    ['stats: output folder missing', ['stats', model, '-f', data, '-o', path.join(dir, 'no', 'dir', 's.gguf')], {}, 'ENOENT', /folder .* does not exist/],
    ['stats: output is the model', ['stats', model, '-f', data, '-o', model, '--force'], {}, 'EUSAGE', /overwrite the model/],
    ['stats: output is the data', ['stats', model, '-f', data, '-o', data, '--force'], {}, 'EUSAGE', /overwrite the data file/],
    ['stats: output exists', ['stats', model, '-f', data, '-o', data.replace('math.txt', 'm.gguf.copy')], {}, 'EEXIST', /exists/],
    ['stats: no disk space', ['stats', model, '-f', data, '-o', path.join(dir, 's.gguf')], { MATHNEURO_TEST_FREE_BYTES: '1000' }, 'EIO', /not enough disk space .* needs .* free/],
    ['boost: output folder missing', ['boost', model, '-o', path.join(dir, 'no', 'b.gguf'), '--samples', '1'], env, 'ENOENT', /does not exist/],
    ['boost: no disk space for the output', ['boost', model, '--samples', '1'], { ...env, MATHNEURO_TEST_FREE_BYTES: '4096' }, 'EIO', /not enough disk space for the output/],
    ['boost: calibration file missing', ['boost', model, '--math', path.join(dir, 'nothere.jsonl'), '--samples', '1'], env, 'ENOENT', /calibration file/],
    ['ablate: output is a folder', ['ablate', model, '-o', dir, '--samples', '1', '--force'], env, 'EUSAGE', /is a folder/],
    ['eval: data missing', ['eval', model, '--task', 'ppl', '-f', path.join(dir, 'nothere.txt')], {}, 'ENOENT', /no such/],
    ['eval: reference missing', ['eval', model, '--task', 'kl', '--vs', path.join(dir, 'nothere.gguf')], {}, 'ENOENT', /no such model/],
    ['overlap: output folder missing', ['overlap', model, '--sizes', '1', '-o', path.join(dir, 'no', 'o.json')], env, 'ENOENT', /does not exist/],
  ];
  writeFileSync(data.replace('math.txt', 'm.gguf.copy'), 'x');
  for (const [what, argv, e, code, message] of cases) {
    const r = await refused(argv, e);
    t.equal(r.code, code === 'EUSAGE' ? 2 : 1, `${what}: exit code`);
    t.equal(r.json?.error?.code, code, `${what}: ${r.json?.error?.message}`);
    t.match(r.json?.error?.message, message, what);
    t.equal(r.stderr.trim().split('\n').filter((l) => !l.startsWith('mathneuro: warning')).length, 1, `${what}: one line`);
  }
  // a sample the vocabulary cannot encode (a copy of the model without byte tokens): EDATA, before the load
  const noByte = noByteVocabCopy(stories, path.join(dir, 'nobyte.gguf'));
  writeFileSync(path.join(dir, 'emoji.txt'), 'Two apples 🍎🍎 and one pear.\n');
  const enc = await refused(['stats', noByte, '-f', path.join(dir, 'emoji.txt'), '-o', path.join(dir, 'e.gguf')]);
  t.equal(enc.json.error.code, 'EDATA', `unencodable data: ${enc.json.error.message}`);
  const encBoost = await refused(['boost', noByte, '--math', path.join(dir, 'math.txt'), '--general', path.join(dir, 'emoji.txt'), '--samples', '1'], env);
  t.equal(encBoost.json.error.code, 'EDATA', 'boost: the general set is screened before the math statistics run');
  t.match(encBoost.json.error.message, /general calibration samples/, encBoost.json.error.message);
  // the control: without the early error, the same runs reach the (refused) model load
  t.equal((await refused(['stats', model, '-f', data, '-o', path.join(dir, 's.gguf')])).json.error.code, 'ELOAD', 'control: stats reaches the load');
  t.equal((await refused(['boost', model, '--samples', '1'], env)).json.error.code, 'ELOAD', 'control: boost reaches the load');
  // a pending undo journal and an already patched input (boost), before the statistics
  writeFileSync(`${model}.mathneuro-undo`, 'MNUNDO');
  const pending = await refused(['boost', model, '--samples', '1'], env);
  t.equal(pending.json.error.code, 'EEXIST');
  t.match(pending.json.error.message, /patched in place .* run mathneuro unpatch/);
  t.equal((await refused(['patch', model, '-o', path.join(dir, 'p.gguf'), '--selection', data])).json.error.code, 'EEXIST', 'patch: the journal before the selection is read');
  t.same(readdirSync(dir).filter((f) => /\.(boosted|ablated)\.gguf|^[spe]\.gguf/.test(f)), [], 'nothing written by any of them');
});

t.test('an empty selection warns with the smallest K that selects anything; --strict fails', async (t) => {
  const dir = t.testdir({ 'math.txt': 'What is 2 + 3? It is 5.\n\nHalf of 10 is 5.\n', 'general.txt': 'The cat sat on the mat.\n\nA tree grows in the park.\n' });
  const model = await fixtureModel({ shape: { nEmbd: 32, nFf: 64, nHead: 4, nHeadKv: 2, nLayer: 1 }, type: 'q8_0', seed: 16 });
  const stats = async (which: string) => {
    const r = await run(['stats', model, '-f', path.join(dir, `${which}.txt`), '-o', path.join(dir, `${which}.stats.gguf`), '-t', '1', '--json']);
    t.equal(r.code, 0, r.stderr);
    return path.join(dir, `${which}.stats.gguf`);
  };
  const math = await stats('math'), general = await stats('general');
  const sel = await run(['select', model, '--math', math, '--general', general, '--top-k', '0.01%', '--json']);
  t.equal(sel.code, 0);
  t.match(sel.json.warnings.join('\n'), /selection is empty: K=0\.0001 .* smallest K that selects a weight in some matrix is 0\.000488 = 0\.0488%/, 'select: the warning with the minimum K (1 / 2048 weights)');
  t.equal((await run(['select', model, '--math', math, '--general', general, '--top-k', '0.01%', '--strict', '--quiet'])).code, 1, 'select --strict: exit 1');
  const out = path.join(dir, 'p.gguf');
  const p = await run(['patch', model, '-o', out, '--math', math, '--general', general, '--top-k', '0.01%']);
  t.equal(p.code, 0);
  t.match(p.stderr, /warning: the selection is empty.*smallest K.*0\.0488%.*is an unchanged copy/);
  const strict = await run(['patch', model, '-o', path.join(dir, 'q.gguf'), '--math', math, '--general', general, '--top-k', '0.01%', '--strict', '--json']);
  t.equal(strict.code, 1, 'patch --strict: exit 1');
  t.match(strict.json.warnings.join('\n'), /empty/);
  const fine = await run(['select', model, '--math', math, '--general', general, '--top-k', '10%', '--json']);
  t.same(fine.json.warnings.filter((w: string) => /empty/.test(w)), [], 'no warning when something is selected');
  const env = { MATHNEURO_CACHE_DIR: path.join(dir, 'cache') };
  const b = await run(['boost', model, '-o', path.join(dir, 'b.gguf'), '--samples', '2', '--no-check', '--top-k', '0.01%', '-t', '1', '--json'], env);
  t.equal(b.code, 0, 'boost: a warning, exit 0');
  t.match(b.json.warnings?.join('\n'), /selection is empty.*0\.0488%/);
  const bs = await run(['ablate', model, '-o', path.join(dir, 'a.gguf'), '--samples', '2', '--no-check', '--top-k', '0.01%', '-t', '1', '--strict'], env);
  t.equal(bs.code, 1, 'ablate --strict: exit 1');
  t.match(bs.stderr, /warning: the selection is empty/);
  // a patched file is an input boost refuses before any forward pass
  const patched = path.join(dir, 'patched.gguf');
  t.equal((await run(['patch', model, '-o', patched, '--math', math, '--general', general, '--top-k', '10%', '--quiet'])).code, 0);
  const again = await refused(['boost', patched, '--samples', '1'], { MATHNEURO_CACHE_DIR: path.join(dir, 'cache') });
  t.equal(again.json.error.code, 'EEXIST');
  t.match(again.json.error.message, /already patched by mathneuro/);
});

t.test('inspect shows the hyperparameters llama.cpp reads', async (t) => {
  const j = await run(['inspect', stories, '--json']);
  t.match(j.json.hyperparameters, { contextLength: 2048, layers: 5, embedding: 64, heads: 8, headsKv: 4, vocabulary: 512, tokenizer: 'llama', chatTemplate: false, rope: { dimensions: 8 } });
  const text = await run(['inspect', stories]);
  t.match(text.stdout, /context 2048, 5 layers, embedding 64, feed-forward 172, heads 8 \(KV 4\)/);
  t.match(text.stdout, /vocabulary 512 tokens, tokenizer llama; chat template none/);
  const moe = await run(['inspect', await fixtureModel({ shape: 'moe-tiny', type: 'q8_0', seed: 1 }), '--json']);
  t.match(moe.json.hyperparameters, { experts: 4, expertsUsed: 2, layers: 2 });
});

void existsSync; void mkdirSync;
