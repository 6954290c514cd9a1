// What this machine charges for two things a command pays and the floors of the select/patch goals
// (cp, cat) do not: the first touch of fresh memory (a page fault per 4 KiB page, for any buffer,
// mask or heap a process maps anew) and starting node.
//   npm run bench -- machine [--repeats 5]
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { machine, machineLine, median, table, writeSection } from './common.ts';

export async function benchMachine(argv: string[]) {
  const { values } = parseArgs({ args: argv, options: { repeats: { type: 'string', default: '5' }, 'no-write': { type: 'boolean' } } });
  const m = machine();
  const repeats = Number(values.repeats);
  const bytes = 256 * 2 ** 20, pages = bytes / 4096;
  const first: number[] = [], again: number[] = [];
  for (let r = 0; r < repeats; r++) {
    // Buffer.alloc of this size is a fresh zeroed mapping: no page is touched until written
    const b = Buffer.alloc(bytes);
    let t0 = performance.now();
    b.fill(1);
    first.push(performance.now() - t0);
    t0 = performance.now();
    b.fill(2);
    again.push(performance.now() - t0);
  }
  const spawnMs = (cmd: string, args: string[]) => {
    const ms: number[] = [];
    for (let r = 0; r < repeats; r++) {
      const t0 = performance.now();
      const p = spawnSync(cmd, args, { stdio: 'ignore' });
      if (p.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${p.status}`);
      ms.push(performance.now() - t0);
    }
    return median(ms);
  };
  const trueMs = spawnMs('/bin/true', []);
  const nodeMs = spawnMs(process.execPath, ['-e', '0']);
  const perPage = (ms: number) => `${((ms * 1000) / pages).toFixed(2)} us per 4 KiB page`;
  const firstMs = median(first), againMs = median(again);
  const rows: (string | number)[][] = [
    ['first write to fresh memory (256 MiB, a page fault per 4 KiB)', `${firstMs.toFixed(0)} ms`, perPage(firstMs)],
    ['the same write again (pages present)', `${againMs.toFixed(0)} ms`, perPage(againMs)],
    ['start a process (/bin/true)', `${trueMs.toFixed(0)} ms`, ''],
    ['start node (node -e 0)', `${nodeMs.toFixed(0)} ms`, ''],
  ];
  const md = `## Machine: fresh memory and node's start

\`npm run bench -- machine --repeats ${repeats}\`

${machineLine(m)} Median of ${repeats}. A page fault's cost is the machine's (a virtual machine can make it many times a bare machine's); memory a process maps anew (a fresh buffer or mask, node's own heap) pays it once per 4 KiB page, while \`cp\` and \`cat\` (the select and patch floors) write into the page cache or nowhere.

${table(['what', 'time', 'per page'], rows)}`;
  if (!values['no-write']) writeSection('machine', md, { machine: m, repeats, firstMs: first, againMs: again, trueMs, nodeMs });
  process.stdout.write(md + '\n');
}
