// Times a CLI command in-process, without node's and tsx's start-up: the command runs twice in one
// process (the first loads the modules and the native shim) and the second run's wall time is
// printed as JSON on stdout's last line. Used by `npm run bench -- patch` for its in-process rows.
// The output (-o) is removed before each run, as the bench does before each CLI row: replacing the
// first run's gigabyte would add the kernel's freeing of the old file (0.2 s in rename) to the second.
//   npx tsx scripts/bench/in-process.ts select model.gguf --math ... (any mathneuro command)
import { rmSync } from 'node:fs';
import { main } from '../../src/cli/main.ts';

const args = process.argv.slice(2);
const times: number[] = [];
const o = args.findIndex((a) => a === '-o' || a === '--output');
for (let i = 0; i < 2; i++) {
  if (o >= 0 && args[o + 1]) rmSync(args[o + 1], { force: true });
  const t0 = performance.now();
  const code = await main(args);
  times.push((performance.now() - t0) / 1000);
  if (code !== 0) { process.stderr.write(`exit code ${code}\n`); process.exit(code); }
}
process.stdout.write(`\n${JSON.stringify({ first: times[0], second: times[1] })}\n`);
