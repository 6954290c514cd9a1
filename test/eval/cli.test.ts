// `mathneuro eval` end to end: --json shape, markdown table, one-line errors and exit codes.
import t from 'tap';
import { Writable } from 'node:stream';
import { main } from '../../src/cli/main.ts';
import { evalTestModel, tempCacheDir } from './helpers.ts';

function io() {
  const out: string[] = [], err: string[] = [];
  const sink = (into: string[]) => new Writable({ write(chunk, _enc, done) { into.push(String(chunk)); done(); } });
  return { io: { stdout: sink(out), stderr: sink(err), env: { MATHNEURO_CACHE_DIR: process.env.MATHNEURO_CACHE_DIR } as NodeJS.ProcessEnv }, out: () => out.join(''), err: () => err.join('') };
}

t.test('usage errors exit 2 with one line', async (t) => {
  for (const args of [['eval'], ['eval', 'm.gguf'], ['eval', 'm.gguf', '--task', 'nope'], ['eval', 'm.gguf', '--task', 'kl'], ['eval', 'm.gguf', '--task', 'gsm8k', '--limit', '0']]) {
    const c = io();
    t.equal(await main(args, c.io), 2, args.join(' '));
    t.equal(c.err().trim().split('\n').length, 1);
  }
  const c = io();
  t.equal(await main(['eval', '/nonexistent.gguf', '--task', 'gsm8k', '--json'], c.io), 1);
  t.match(JSON.parse(c.out()), { ok: false, error: { code: 'ENOENT' } });
});

t.test('--json and markdown', async (t) => {
  const model = await evalTestModel();
  const cacheDir = tempCacheDir(t);
  const args = ['eval', model, '--task', 'gsm8k', '--shots', '1', '--limit', '2', '--max-tokens', '6', '--threads', '1', '--cache-dir', cacheDir];
  const c = io();
  t.equal(await main([...args, '--json', '--items'], c.io), 0, c.err());
  const json = JSON.parse(c.out());
  t.equal(json.ok, true);
  t.equal(json.task, 'gsm8k');
  t.equal(json.items, 2);
  t.same(json.metrics.map((m: { name: string }) => m.name), ['strict', 'flexible']);
  t.equal(json.itemResults.length, 2);
  t.match(json.model.sha256, /^[0-9a-f]{64}$/);
  const md = io();
  t.equal(await main([...args, '--vs', model], md.io), 0);
  t.match(md.out(), /\| \*\*strict\*\* \| 2 \| 0\.0% \(0\/2\)/);
  t.match(md.out(), /Δ \(model - reference\)/);
  t.match(md.out(), /model: 0 evaluated, 2 cached/);
});
