#!/usr/bin/env node
// @ts-check
// The `mathneuro` bin. The published package runs the compiled CLI (dist/) with plain Node. In a
// checkout of the repository (src/ is there; the package does not ship it) it runs the TypeScript
// sources through tsx, a dev dependency, so tests and `npx mathneuro` need no build step;
// MATHNEURO_DIST=1 runs the checkout's dist/ instead (npm run build:dist first).
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

// A file-size limit (ulimit -f) must give the one-line EFBIG/EIO error of the writer, not kill the process.
process.on('SIGXFSZ', () => {});
const source = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const built = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
let entry = built;
if (existsSync(source) && process.env.MATHNEURO_DIST !== '1') {
  const { register } = await import('tsx/esm/api');
  register();
  entry = source;
} else if (!existsSync(built)) {
  console.error(`mathneuro: ${built} is missing: the package was not built (in a checkout: npm run build:dist)`);
  process.exit(1);
}
/** @type {{ main(argv: string[]): Promise<number> }} */
const cli = await import(pathToFileURL(entry).href);
process.exitCode = await cli.main(process.argv.slice(2));
