#!/usr/bin/env node
// The `mathneuro` bin: runs the TypeScript CLI through tsx.
import { register } from 'tsx/esm/api';
// A file-size limit (ulimit -f) must give the one-line EFBIG/EIO error of the writer, not kill the process.
process.on('SIGXFSZ', () => {});
register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
