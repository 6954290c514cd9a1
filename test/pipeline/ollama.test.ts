// Ollama input (a fake store in a temp dir, laid out as Ollama writes it) and the Modelfile writer.
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { MathneuroError } from '../../src/errors.ts';
import {
  assertOutsideOllamaStore, isInsideOllamaStore, ollamaModelsDir, parseOllamaRef, resolveOllamaModel,
} from '../../src/ollama.ts';
import { chatTemplateFamily, modelfilePathFor, modelfileText, writeModelfile } from '../../src/modelfile.ts';
import type { GgufInfo } from '../../src/gguf/reader.ts';
import { fakeStore, LLAMA3_TEMPLATE } from './fake-ollama.ts';

function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(`${path.relative(dir, p)} ${statSync(p).mtimeMs} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`);
    }
  };
  walk(dir);
  return out;
}

function code(t: Test, fn: () => unknown, expected: string, pattern?: RegExp) {
  try { fn(); t.fail(`expected ${expected}`); } catch (e) {
    t.ok(e instanceof MathneuroError, (e as Error).message);
    t.equal((e as MathneuroError).code, expected);
    if (pattern) t.match((e as Error).message, pattern);
  }
}

t.test('model names', async (t) => {
  t.same(parseOllamaRef('ollama:llama3.2:1b'), { host: 'registry.ollama.ai', namespace: 'library', name: 'llama3.2', tag: '1b' });
  t.same(parseOllamaRef('ollama:qwen2.5'), { host: 'registry.ollama.ai', namespace: 'library', name: 'qwen2.5', tag: 'latest' });
  t.same(parseOllamaRef('ollama:someone/phi-mini:q4_K_M'), { host: 'registry.ollama.ai', namespace: 'someone', name: 'phi-mini', tag: 'q4_K_M' });
  t.same(parseOllamaRef('ollama:hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M'), { host: 'hf.co', namespace: 'bartowski', name: 'Llama-3.2-1B-Instruct-GGUF', tag: 'Q4_K_M' });
  t.same(parseOllamaRef('ollama:localhost:5000/me/m:v1'), { host: 'localhost:5000', namespace: 'me', name: 'm', tag: 'v1' });
  for (const bad of ['ollama:', 'ollama:../etc:x', 'ollama:a:..', 'ollama:a/b/c/d:e', 'ollama:na me', 'ollama:x:']) code(t, () => parseOllamaRef(bad), 'EUSAGE');
  t.equal(ollamaModelsDir({ OLLAMA_MODELS: '/srv/ollama', HOME: '/home/u' }), '/srv/ollama');
  t.equal(ollamaModelsDir({ HOME: '/home/u' }), '/home/u/.ollama/models');
});

t.test('resolves the GGUF blob and the Modelfile layers, reading only', async (t) => {
  const dir = t.testdir();
  const { store, modelBlob } = fakeStore(dir);
  const before = snapshot(store);
  const m = resolveOllamaModel('ollama:llama3.2:1b', { env: { OLLAMA_MODELS: store } });
  t.equal(m.modelPath, modelBlob);
  t.equal(m.modelBytes, 64);
  t.equal(m.template, LLAMA3_TEMPLATE);
  t.equal(m.system, 'You are a careful math tutor.');
  t.same(m.parameters, { stop: ['<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'], temperature: 0.6 });
  t.same(m.license, ['LLAMA 3.2 COMMUNITY LICENSE AGREEMENT\nBe nice.']);
  t.same(m.adapters, []);
  // HOME fallback
  const home = path.join(dir, 'home');
  mkdirSync(path.join(home, '.ollama'), { recursive: true });
  symlinkSync(store, path.join(home, '.ollama', 'models'));
  t.equal(resolveOllamaModel('ollama:llama3.2:1b', { env: { HOME: home } }).modelPath, path.join(home, '.ollama', 'models', path.relative(store, modelBlob)));
  t.same(snapshot(store), before, 'the store is unchanged (names, mtimes, contents)');

  // writing into the store is refused, also through a symlink to it
  code(t, () => assertOutsideOllamaStore(path.join(store, 'blobs', 'x.gguf'), store), 'EUSAGE', /Ollama store/);
  code(t, () => assertOutsideOllamaStore(path.join(home, '.ollama', 'models', 'new', 'y.gguf'), store), 'EUSAGE');
  t.notOk(isInsideOllamaStore(path.join(dir, 'out.gguf'), store));
  t.notOk(isInsideOllamaStore(path.join(dir, 'models-other', 'out.gguf'), store));
});

t.test('store errors name the problem', async (t) => {
  const dir = t.testdir();
  const { store } = fakeStore(dir);
  code(t, () => resolveOllamaModel('ollama:llama3.2:3b', { modelsDir: store }), 'ENOENT', /tags present: ollama:llama3\.2:1b/);
  code(t, () => resolveOllamaModel('ollama:gemma2', { modelsDir: store }), 'ENOENT', /ollama pull gemma2:latest/);
  code(t, () => resolveOllamaModel('ollama:x', { modelsDir: path.join(dir, 'nowhere') }), 'ENOENT', /no Ollama model store/);
  const legacy = fakeStore(path.join(dir, 'legacy'), { legacyNames: true, layers: 'model-only' });
  const m = resolveOllamaModel('ollama:llama3.2:1b', { modelsDir: legacy.store });
  t.equal(m.modelPath, legacy.modelBlob, 'sha256:<hex> blob names of old stores');
  t.equal(m.template, undefined);
  const notGguf = fakeStore(path.join(dir, 'ng'), { model: Buffer.from('not a model at all') });
  code(t, () => resolveOllamaModel('ollama:llama3.2:1b', { modelsDir: notGguf.store }), 'EBADGGUF');
  const short = fakeStore(path.join(dir, 'short'), { badSize: true });
  code(t, () => resolveOllamaModel('ollama:llama3.2:1b', { modelsDir: short.store }), 'EDATA', /incomplete pull/);
  const broken = fakeStore(path.join(dir, 'broken'));
  writeFileSync(path.join(broken.store, 'manifests', 'registry.ollama.ai', 'library', 'llama3.2', '1b'), '{not json');
  code(t, () => resolveOllamaModel('ollama:llama3.2:1b', { modelsDir: broken.store }), 'EDATA', /manifest/);
});

t.test('Modelfile from an Ollama source carries everything over', async (t) => {
  const dir = t.testdir();
  const { store } = fakeStore(dir, { extraLayers: [{ mediaType: 'application/vnd.ollama.image.messages', content: JSON.stringify([{ role: 'user', content: 'What is 2+2?' }, { role: 'assistant', content: '4' }]) }] });
  const source = resolveOllamaModel('ollama:llama3.2:1b', { modelsDir: store });
  const out = path.join(dir, 'out', 'llama3.2-1b.boosted.gguf');
  mkdirSync(path.dirname(out));
  writeFileSync(out, 'x');
  const r = writeModelfile({ modelPath: out, ollama: source, comments: ['mathneuro boost of ollama:llama3.2:1b'] });
  t.equal(r.path, path.join(dir, 'out', 'llama3.2-1b.boosted.Modelfile'));
  t.equal(r.templateFrom, 'ollama');
  t.equal(readFileSync(r.path, 'utf8'), [
    '# mathneuro boost of ollama:llama3.2:1b',
    'FROM ./llama3.2-1b.boosted.gguf',
    `TEMPLATE """${LLAMA3_TEMPLATE}"""`,
    'SYSTEM "You are a careful math tutor."',
    'PARAMETER stop "<|start_header_id|>"',
    'PARAMETER stop "<|end_header_id|>"',
    'PARAMETER stop "<|eot_id|>"',
    'PARAMETER temperature 0.6',
    'MESSAGE user "What is 2+2?"',
    'MESSAGE assistant "4"',
    'LICENSE """LLAMA 3.2 COMMUNITY LICENSE AGREEMENT\nBe nice."""',
    '',
  ].join('\n'));
  t.throws(() => writeModelfile({ modelPath: out, ollama: source }), /exists/);
  t.equal(modelfilePathFor('/a/b/m.GGUF'), '/a/b/m.Modelfile');
  // a model elsewhere is named by its absolute path
  const far = modelfileText({ modelPath: '/data/m.gguf', modelfilePath: path.join(dir, 'M.Modelfile') });
  t.match(far.text, /^FROM \/data\/m\.gguf$/m);
  t.throws(() => modelfileText({ modelPath: out, ollama: { ...source, template: 'a """ b' } }), /cannot quote/);
});

t.test('Modelfile from a plain GGUF: template by chat template family', async (t) => {
  const gguf = (jinja?: string) => ({ metadata: new Map(jinja ? [['tokenizer.chat_template', jinja]] : []) }) as unknown as GgufInfo;
  const llama3Jinja = "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}";
  t.equal(chatTemplateFamily(llama3Jinja), 'llama3');
  t.equal(chatTemplateFamily("{{'<|im_start|>' + message['role']}}"), 'chatml');
  t.equal(chatTemplateFamily('<start_of_turn>user'), 'gemma');
  t.equal(chatTemplateFamily('<|user|>{{ m }}<|end|>'), 'phi3');
  t.equal(chatTemplateFamily('[INST] {{ m }} [/INST]'), 'mistral');
  t.equal(chatTemplateFamily('{{ something else }}'), undefined);
  const r = modelfileText({ modelPath: '/x/m.gguf', gguf: gguf(llama3Jinja), parameters: { temperature: 0 } });
  t.equal(r.templateFrom, 'gguf:llama3');
  t.match(r.text, /^TEMPLATE """\{\{ if \.System \}\}<\|start_header_id\|>system/m);
  t.match(r.text, /^PARAMETER stop "<\|eot_id\|>"$/m);
  t.match(r.text, /^PARAMETER temperature 0$/m);
  const base = modelfileText({ modelPath: '/x/m.gguf', gguf: gguf() });
  t.equal(base.templateFrom, 'none');
  t.match(base.text, /# TEMPLATE: the source has no chat template/);
  t.notMatch(base.text, /^TEMPLATE/m);
  const other = modelfileText({ modelPath: '/x/m.gguf', gguf: gguf('{{ custom }}') });
  t.match(other.text, /Ollama derives one from tokenizer\.chat_template/);
});
