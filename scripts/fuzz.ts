// `npm run fuzz -- --count 10000 --seed 1 [--cli-count N] [--dir D] [--json]`: mutated GGUFs through the
// validator and the CLI (inspect, stats, select, patch); prints the outcome counts. Exit 1 when any
// file aborted, hung, gave an untyped error or wrote where it should not.
import { parseArgs } from 'node:util';
import path from 'node:path';
import { tmpdir } from 'node:os';
import { fuzzWorkerMain, runFuzz } from '../test/helpers/gguf-fuzz.ts';

if (process.argv.includes('--worker')) {
  await fuzzWorkerMain();
} else {
  const { values } = parseArgs({ options: {
    count: { type: 'string', default: '500' }, seed: { type: 'string', default: '1' }, 'cli-count': { type: 'string' },
    dir: { type: 'string' }, json: { type: 'boolean' }, commands: { type: 'string' }, kinds: { type: 'string' }, timeout: { type: 'string', default: '30' },
  } });
  const count = Number(values.count);
  const started = Date.now();
  const summary = await runFuzz({
    count, seed: Number(values.seed), cliCount: values['cli-count'] ? Number(values['cli-count']) : undefined,
    dir: values.dir ?? path.join(tmpdir(), `mathneuro-fuzz-${process.pid}`), timeoutMs: Number(values.timeout) * 1000,
    commands: values.commands?.split(','), kinds: values.kinds?.split(','),
    onMutant: (r, i) => {
      const bad = Object.entries(r.commands).filter(([, j]) => j.outcome === 'abort' || j.outcome === 'hang' || j.outcome === 'untyped');
      if (bad.length || r.strayWrites.length || r.validator.startsWith('THROW')) process.stderr.write(`\n#${i} ${r.kind} ${r.detail}: ${JSON.stringify({ validator: r.validator, bad, stray: r.strayWrites })}\n`);
      if (!values.json && (i + 1) % 50 === 0) process.stderr.write(`\r${i + 1}/${count} files, ${((Date.now() - started) / 1000).toFixed(0)} s`);
    },
  });
  const brief = { ...summary, aborts: summary.aborts.length, hangs: summary.hangs.length, untyped: summary.untyped.length, strayWrites: summary.strayWrites.length };
  if (values.json) console.log(JSON.stringify(summary, null, 2));
  else console.log('\n' + JSON.stringify(brief, null, 2));
  process.exitCode = summary.aborts.length || summary.hangs.length || summary.untyped.length || summary.strayWrites.length ? 1 : 0;
}
