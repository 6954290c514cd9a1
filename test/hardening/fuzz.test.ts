// Bounded fuzz run (the full one: npm run fuzz -- --count 10000, numbers in the README): mutated
// GGUFs through the validator in this process, and through inspect, stats, select and patch in a
// crash-isolated worker. Every file must end in a typed error or a clean success: no abort (signal),
// no hang, no untyped exception, no file written that the command was not asked to write.
import t from 'tap';
import path from 'node:path';
import { runFuzz, MUTATION_KINDS } from '../helpers/gguf-fuzz.ts';

t.test('500 mutants through the validator, 30 through every command (15 models, 15 statistics files)', async (t) => {
  const dir = path.join(t.testdirName, 'fuzz');
  const summary = await runFuzz({ count: 500, cliCount: 30, seed: 20241016, dir, timeoutMs: 60_000 });
  t.equal(summary.files, 500);
  t.same(Object.keys(summary.byKind).filter((k) => !k.startsWith('stats-file:')).sort(), [...MUTATION_KINDS].sort(), 'every mutation kind was drawn for models');
  t.ok(Object.keys(summary.byKind).filter((k) => k.startsWith('stats-file:')).length > 10, 'statistics files were mutated too');
  const validatorOutcomes = Object.keys(summary.validator);
  t.ok(validatorOutcomes.every((k) => k === 'EBADGGUF' || k.startsWith('ok (model check ')), `validator outcomes: ${JSON.stringify(summary.validator)}`);
  t.ok((summary.validator.EBADGGUF ?? 0) > 100, 'many structural mutants refused');
  t.ok((summary.validator['ok (model check ok)'] ?? 0) > 20, 'some mutants stay valid');
  t.ok((summary.validator['ok (model check EBADGGUF)'] ?? 0) > 5, 'some valid GGUFs refused by the model check');
  t.same(summary.untyped.map((r) => `${r.index} ${r.kind} ${r.detail}`), [], 'no untyped errors');
  t.same(summary.aborts.map((r) => `${r.index} ${r.kind} ${r.detail}`), [], 'no aborts');
  t.same(summary.hangs.map((r) => `${r.index} ${r.kind} ${r.detail}`), [], 'no hangs');
  t.same(summary.strayWrites.map((r) => `${r.index} ${r.kind}: ${r.strayWrites.join(', ')}`), [], 'no stray writes');
  for (const [command, outcomes] of Object.entries(summary.commands)) {
    t.equal(outcomes.ok + outcomes.typed, 15, `${command}: ${JSON.stringify(outcomes)}`);
  }
  t.ok(summary.commands['select:stats-file'].typed > 0, 'mutated statistics files refused by select');
  t.ok(summary.commands.stats.typed > 0 && summary.commands.stats.ok > 0, 'stats both refused and ran');
});
