// Child process for tests: tokenize one text with llama.cpp's tokenizer through the shim, with no
// check in front. Prints "ok <n tokens>"; a text the tokenizer cannot encode kills the process.
import { loadNative } from '../../src/native.ts';

const [model, text] = process.argv.slice(2);
const m = await loadNative().loadModel(model, { nCtx: 64, nBatch: 64, nThreads: 1, nGpuLayers: 0, nSeqMax: 1, flashAttn: 'auto', kvType: 'f16' });
process.stdout.write(`ok ${m.tokenize(text, true).length}\n`);
m.dispose();
