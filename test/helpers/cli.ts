// The CLI run in process for tests: main() with string sinks for stdout and stderr, NO_COLOR set,
// and the --json result parsed when stdout holds one. The cache folder is the test process's
// (test/helpers/isolate-env.ts) unless env names another.
import { Writable } from 'node:stream';
import { main } from '../../src/cli/main.ts';

export function sink() {
  let text = '';
  const stream = new Writable({ write(chunk, _enc, cb) { text += chunk.toString(); cb(); } }) as Writable & { isTTY?: boolean };
  return { stream, get text() { return text; } };
}

export async function run(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const out = sink(), err = sink();
  const code = await main(argv, { stdout: out.stream, stderr: err.stream, env: { MATHNEURO_CACHE_DIR: process.env.MATHNEURO_CACHE_DIR, ...env, NO_COLOR: '1' } });
  let json: any;
  try { json = JSON.parse(out.text); } catch { /* not --json */ }
  return { code, stdout: out.text, stderr: err.text, json };
}
