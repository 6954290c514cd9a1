// Every semantic model check (src/gguf/model-check.ts MODEL_CHECKS) prevents a real abort: for each,
// a model that fails it is refused in process (EBADGGUF), and the same model given to llama.cpp in a
// child process with the checks off (`mathneuro stats --no-model-checks`) kills that process with
// SIGABRT or SIGSEGV. What llama.cpp refuses with an error of its own is left to it, and its reason
// reaches the ELOAD message (shim and node-llama-cpp); what it loads and runs is not refused.
import t from 'tap';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { MathneuroError } from '../../src/errors.ts';
import { encodeGguf, fuzzBaseModel, type FuzzModel } from '../helpers/gguf-fuzz.ts';
import { checkModel, MODEL_CHECKS } from '../../src/gguf/model-check.ts';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { GGML_TYPE, GGUF_VALUE } from '../../src/gguf/types.ts';
import { repoRoot } from '../helpers/fixtures.ts';

const base = fuzzBaseModel(1);
const clone = (): FuzzModel => ({ ...base, metadata: base.metadata.map((e) => ({ ...e, value: Array.isArray(e.value) ? [...e.value] : e.value })), tensors: base.tensors.map((x) => ({ ...x })) });
const entry = (m: FuzzModel, key: string) => m.metadata.find((e) => e.key === key)!;
const tensor = (m: FuzzModel, name: string) => m.tensors.find((x) => x.name === name)!;
const retype = (m: FuzzModel, name: string, type: number, bytesPerValue: number) => {
  const x = tensor(m, name);
  x.type = type;
  x.data = Buffer.alloc(Number(x.shape.reduce((a, b) => a * b, 1n)) * bytesPerValue);
};

type CheckId = (typeof MODEL_CHECKS)[number]['id'];
interface AbortCase { check: CheckId; name: string; mutate: (m: FuzzModel) => void; refused: RegExp; text?: string }

const cases: AbortCase[] = [
  { check: 'tokenizer-none', name: 'tokenizer none', mutate: (m) => { entry(m, 'tokenizer.ggml.model').value = 'none'; }, refused: /tokenizer\.ggml\.model is "none"/ },
  { check: 'tokenizer-none', name: 'tokenizer no_vocab', mutate: (m) => { entry(m, 'tokenizer.ggml.model').value = 'no_vocab'; }, refused: /"no_vocab"/ },
  { check: 'wpm-byte-token', name: 'bert vocabulary with byte tokens', mutate: (m) => { entry(m, 'tokenizer.ggml.model').value = 'bert'; }, refused: /BYTE token in a WPM/ },
  { check: 'duplicate-token', name: 'a token text twice', mutate: (m) => { (entry(m, 'tokenizer.ggml.tokens').value as string[])[270] = 'a'; }, refused: /appears twice/ },
  {
    check: 'special-token-default', name: 'add_eos_token with no eos inside a 2-token vocabulary', text: 'aaaa',
    mutate: (m) => {
      m.metadata = m.metadata.filter((e) => e.key !== 'tokenizer.ggml.eos_token_id');
      m.metadata.push({ key: 'tokenizer.ggml.add_eos_token', type: GGUF_VALUE.BOOL, value: true });
      for (const k of ['tokenizer.ggml.tokens', 'tokenizer.ggml.scores', 'tokenizer.ggml.token_type']) (entry(m, k).value as unknown[]).length = 2;
      (entry(m, 'tokenizer.ggml.tokens').value as string[])[1] = 'a';
      (entry(m, 'tokenizer.ggml.token_type').value as number[])[1] = 1;
      for (const x of m.tensors) if (x.name === 'token_embd.weight' || x.name === 'output.weight') { x.data = x.data.subarray(0, x.data.length / Number(x.shape[1]) * 2); x.shape = [x.shape[0], 2n]; }
    },
    refused: /add_eos_token is on but neither tokenizer\.ggml\.eos_token_id \(absent\) nor the default id 2/,
  },
  { check: 'block-count', name: 'block_count 0', mutate: (m) => { entry(m, 'llama.block_count').value = 0; }, refused: /block_count = 0/ },
  { check: 'block-count', name: 'block_count 513', mutate: (m) => { entry(m, 'llama.block_count').value = 513; }, refused: /block_count = 513 \(llama\.cpp asserts 1\.\.512\)/ },
  { check: 'expert-count', name: 'expert_used_count without experts', mutate: (m) => { m.metadata.push({ key: 'llama.expert_used_count', type: GGUF_VALUE.UINT32, value: 2 }); }, refused: /expert_used_count 2 is more than expert_count 0/ },
  { check: 'expert-count', name: 'experts but none used', mutate: (m) => { m.metadata.push({ key: 'llama.expert_count', type: GGUF_VALUE.UINT32, value: 4 }); }, refused: /expert_count is 4 but expert_used_count is missing/ },
  { check: 'norm-epsilon', name: 'rms epsilon NaN', mutate: (m) => { entry(m, 'llama.attention.layer_norm_rms_epsilon').value = NaN; }, refused: /epsilon = NaN/ },
  { check: 'norm-epsilon', name: 'rms epsilon -1', mutate: (m) => { entry(m, 'llama.attention.layer_norm_rms_epsilon').value = -1; }, refused: /epsilon = -1/ },
  { check: 'weight-type', name: 'I32 weight', mutate: (m) => retype(m, 'blk.0.attn_v.weight', GGML_TYPE.I32, 4), refused: /is I32: llama\.cpp cannot compute/ },
  { check: 'weight-type', name: 'F64 weight', mutate: (m) => retype(m, 'blk.0.attn_v.weight', GGML_TYPE.F64, 8), refused: /is F64/ },
  { check: 'weight-type', name: 'Q8_1 weight', mutate: (m) => { const x = tensor(m, 'blk.0.attn_q.weight'); x.type = GGML_TYPE.Q8_1; x.data = Buffer.alloc(x.data.length / 34 * 36); }, refused: /is Q8_1/ },
  { check: 'norm-type', name: 'F16 output_norm', mutate: (m) => { const x = tensor(m, 'output_norm.weight'); x.type = GGML_TYPE.F16; x.data = x.data.subarray(0, x.data.length / 2); }, refused: /output_norm\.weight" \(norm or vector\) is F16/ },
  { check: 'norm-type', name: 'Q4_0 output_norm', mutate: (m) => { const x = tensor(m, 'output_norm.weight'); x.type = GGML_TYPE.Q4_0; x.data = Buffer.alloc(x.data.length / 4 / 32 * 18); }, refused: /is Q4_0; llama\.cpp needs F32/ },
];

interface ChildResult { code: number | null; signal: NodeJS.Signals | null; output: string }

function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ChildResult> {
  return runChild([path.join(repoRoot, 'scripts', 'mathneuro.mjs'), ...args], [], env);
}

function runChild(args: string[], nodeArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<ChildResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...nodeArgs, ...args], {
      cwd: repoRoot, env: { ...process.env, OMP_WAIT_POLICY: 'passive', ...env }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d) => { output += d; });
    child.stderr.on('data', (d) => { output += d; });
    child.on('close', (code, signal) => resolve({ code, signal, output }));
  });
}

/** Runs jobs two at a time (the machine has few cores). */
async function pooled<T>(jobs: (() => Promise<T>)[], width = 2): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => { while (next < jobs.length) { const i = next++; out[i] = await jobs[i](); } }));
  return out;
}

const aborted = (r: ChildResult) => r.signal === 'SIGABRT' || r.signal === 'SIGSEGV' || r.code === 134 || r.code === 139;

t.test('every check has a case', async (t) => {
  for (const c of MODEL_CHECKS) {
    if (c.id === 'split-no-type') continue; // the 'split' test below
    t.ok(cases.some((x) => x.check === c.id), `${c.id} (${c.protects.split(':')[0]}) has an abort case`);
  }
});

t.test('refused in process; with --no-model-checks, llama.cpp aborts in a child process', async (t) => {
  const dir = t.testdir();
  const results = await pooled(cases.map((c, i) => async () => {
    const m = clone();
    c.mutate(m);
    const file = path.join(dir, `case${i}.gguf`);
    writeFileSync(file, encodeGguf(m).bytes);
    let verdict = 'ok';
    try { checkModel(readGgufSync(file)); } catch (e) { verdict = e instanceof MathneuroError ? `${e.code}: ${e.message}` : String(e); }
    const data = path.join(dir, `case${i}.txt`);
    writeFileSync(data, `${c.text ?? 'Tom has 3 apples.\n\nThe river flows north.'}\n`);
    const child = await runCli(['stats', file, '--data', data, '-o', path.join(dir, `case${i}.stats.gguf`), '--no-model-checks', '--threads', '1']);
    return { c, verdict, child };
  }));
  for (const { c, verdict, child } of results) {
    t.match(verdict, /^EBADGGUF: /, `${c.name}: refused`);
    t.match(verdict, c.refused, `${c.name}: the message names the problem`);
    t.ok(aborted(child), `${c.name}: llama.cpp aborts without the check (${c.check}); got code ${child.code} signal ${child.signal}: ${child.output.trim().split('\n').slice(-1)[0]?.slice(0, 200)}`);
  }
});

t.test('split: a further shard\'s split.no of another type makes llama.cpp abort', async (t) => {
  const dir = t.testdir();
  const u16 = (key: string, value: number) => ({ key, type: GGUF_VALUE.UINT16, value });
  const first = clone();
  const second: FuzzModel = { version: 3, alignment: 32, metadata: [{ key: 'split.no', type: GGUF_VALUE.UINT32, value: 1 }, u16('split.count', 2)], tensors: first.tensors.splice(6) };
  first.metadata.push(u16('split.no', 0), u16('split.count', 2), { key: 'split.tensors.count', type: GGUF_VALUE.INT32, value: base.tensors.length }); // i32, as llama.cpp reads it
  writeFileSync(path.join(dir, 'm-00001-of-00002.gguf'), encodeGguf(first).bytes);
  writeFileSync(path.join(dir, 'm-00002-of-00002.gguf'), encodeGguf(second).bytes);
  writeFileSync(path.join(dir, 't.txt'), 'Tom has 3 apples.\n');
  const model = path.join(dir, 'm-00001-of-00002.gguf');
  t.throws(() => checkModel(readGgufSync(model)), /split\.no = 1 \(u16\)/);
  // mathneuro's own model view needs each shard's split.no to place its tensors, so this one is refused
  // even with --no-model-checks; the abort it prevents is shown by llama.cpp's loader alone in a child
  const r = await runChild([path.join(repoRoot, 'test', 'helpers', 'tokenize-child.ts'), model, 'Tom'], ['--import', 'tsx']);
  t.ok(aborted(r), `aborts: code ${r.code} signal ${r.signal}: ${r.output.trim().split('\n').slice(-1)[0]?.slice(0, 200)}`);
  const cli = await runCli(['stats', model, '--data', path.join(dir, 't.txt'), '-o', path.join(dir, 'o.gguf'), '--no-model-checks', '--threads', '1']);
  t.equal(cli.code, 1, 'mathneuro stats refuses it cleanly, checks or not');
});

t.test('what llama.cpp loads, warns about or refuses itself is not refused here', async (t) => {
  const dir = t.testdir();
  const notRefused: [string, (m: FuzzModel) => void][] = [
    // llama.cpp warns "bad special token" and uses the default id
    ['bos id outside the vocabulary', (m) => { entry(m, 'tokenizer.ggml.bos_token_id').value = 300; }],
    ['ids 4294967295 (no token)', (m) => { m.metadata.push({ key: 'tokenizer.ggml.seperator_token_id', type: GGUF_VALUE.UINT32, value: 4294967295 }); }],
    // loads and runs
    ['a SentencePiece vocabulary without byte tokens', (m) => { const tok = entry(m, 'tokenizer.ggml.tokens').value as string[]; for (let i = 0; i < tok.length; i++) tok[i] = tok[i].replace(/^<0x([0-9A-F]{2})>$/, '{by$1}'); }],
    ['a malformed byte token', (m) => { (entry(m, 'tokenizer.ggml.tokens').value as string[])[10] = '<0xZZ>'; }],
    ['bert vocabulary without byte tokens', (m) => { entry(m, 'tokenizer.ggml.model').value = 'bert'; const ty = entry(m, 'tokenizer.ggml.token_type').value as number[]; for (let i = 0; i < ty.length; i++) if (ty[i] === 6) ty[i] = 1; }],
    ['epsilon 0', (m) => { entry(m, 'llama.attention.layer_norm_rms_epsilon').value = 0; }],
    ['rope freq_base NaN', (m) => { entry(m, 'llama.rope.freq_base').value = NaN; }],
    ['context_length 0', (m) => { entry(m, 'llama.context_length').value = 0; }],
    // llama.cpp refuses with an error of its own (shown in ELOAD)
    ['unknown architecture', (m) => { entry(m, 'general.architecture').value = 'llama2'; }],
    ['unknown tokenizer', (m) => { entry(m, 'tokenizer.ggml.model').value = 'foo'; }],
    ['no tokenizer.ggml.model', (m) => { m.metadata = m.metadata.filter((e) => e.key !== 'tokenizer.ggml.model'); }],
    ['short scores', (m) => { (entry(m, 'tokenizer.ggml.scores').value as number[]).length = 5; }],
    ['head_count_kv 3 of 4', (m) => { entry(m, 'llama.attention.head_count_kv').value = 3; }],
    ['no tensors', (m) => { m.tensors = []; }],
  ];
  for (const [name, mutate] of notRefused) {
    const m = clone();
    mutate(m);
    const file = path.join(dir, `${name.replace(/\W+/g, '-')}.gguf`);
    writeFileSync(file, encodeGguf(m).bytes);
    t.doesNotThrow(() => checkModel(readGgufSync(file)), name);
  }
  const m = clone();
  entry(m, 'tokenizer.ggml.bos_token_id').value = 300;
  m.metadata.push({ key: 'tokenizer.ggml.seperator_token_id', type: GGUF_VALUE.UINT32, value: 4294967295 });
  writeFileSync(path.join(dir, 'w.gguf'), encodeGguf(m).bytes);
  t.match(checkModel(readGgufSync(path.join(dir, 'w.gguf'))), [/bos_token_id = 300, seperator_token_id = 4294967295 \(no token\) are outside the 299-token vocabulary: llama\.cpp ignores them/], 'warned, not refused');
});

t.test('llama.cpp\'s own reason when it refuses a model (shim and node-llama-cpp)', async (t) => {
  const dir = t.testdir();
  const m = clone();
  const x = tensor(m, 'blk.0.attn_q.weight');
  x.shape = [x.shape[0], x.shape[1] / 2n];
  x.data = x.data.subarray(0, x.data.length / 2);
  const file = path.join(dir, 'wrong-shape.gguf');
  writeFileSync(file, encodeGguf(m).bytes);
  writeFileSync(path.join(dir, 't.txt'), 'Tom has 3 apples. The river flows north, and the dog runs after the ball.\n');
  const [stats, ppl] = await pooled([
    () => runCli(['stats', file, '--data', path.join(dir, 't.txt'), '-o', path.join(dir, 'o.gguf'), '--threads', '1']),
    () => runCli(['eval', file, '--task', 'ppl', '--data', path.join(dir, 't.txt'), '--chunk', '8', '--no-cache', '--threads', '1']),
  ]);
  const reason = /tensor 'blk\.0\.attn_q\.weight' has wrong shape; expected 32, 32, got 32, 16, 1, 1/;
  t.equal(stats.code, 1, 'stats: a clean failure');
  t.match(stats.output, new RegExp(`mathneuro stats: llama\\.cpp could not load the model: .*wrong-shape\\.gguf: check_tensor_dims: ${reason.source}`), 'stats (the shim): llama.cpp\'s reason');
  t.equal(ppl.code, 1, 'eval: a clean failure');
  t.match(ppl.output, new RegExp(`mathneuro eval: llama\\.cpp could not load .*wrong-shape\\.gguf: check_tensor_dims: ${reason.source}`), 'eval (node-llama-cpp): llama.cpp\'s reason');
});
