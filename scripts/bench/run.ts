// `npm run bench -- <name> [options]`: runs one benchmark (or all) and writes its section of
// BENCHMARKS.md and BENCHMARKS.json. Names: collect, patch, boost, imatrix, tune, kl, kernels, machine, all.
const [name = 'all', ...rest] = process.argv.slice(2);
const benches: Record<string, () => Promise<void>> = {
  collect: async () => (await import('./collect.ts')).benchCollect(rest),
  patch: async () => (await import('./patch.ts')).benchPatch(rest),
  boost: async () => (await import('./boost.ts')).benchBoost(rest),
  imatrix: async () => (await import('./imatrix.ts')).benchImatrix(rest),
  tune: async () => (await import('./tune.ts')).benchTune(rest),
  kl: async () => (await import('./kl.ts')).benchKl(rest),
  kernels: async () => (await import('./kernels.ts')).benchKernels(rest),
  machine: async () => (await import('./machine.ts')).benchMachine(rest),
};
async function main() {
  const names = name === 'all' ? Object.keys(benches) : [name];
  for (const n of names) {
    if (!benches[n]) { console.error(`unknown benchmark "${n}" (${Object.keys(benches).join(', ')}, all)`); process.exit(2); }
    await benches[n]();
  }
}
await main();
