// NativeBinding (src/native.ts) lists every function the shim exports, and nothing it does not:
// a new export of native/*.cpp must be typed there (and a removed one removed).
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { loadNative, type NativeBinding } from '../../src/native.ts';
import { repoRoot } from '../helpers/fixtures.ts';

// `satisfies` makes the compiler check this list against the interface: every key, no other.
const typed = {
  init: true, systemInfo: true, cpuVariants: true, Model: true, loadModel: true,
  codecTypeInfo: true, dequantize: true, quantize: true, selectTopK: true, requantizeBlocks: true, patchTensor: true,
  ggufBuildHeader: true, ggufRewriteHeader: true, ggufQuantizeRows: true, copyFileRange: true,
  trainModel: true, tokenizeWithModel: true, writeF32Gguf: true, copyWithMetadataOf: true,
  klRows: true, encodeMask: true, decodeMask: true, countMaskBits: true,
} satisfies Record<keyof NativeBinding, true>;

t.test('the sources export exactly the typed names', async (t) => {
  const dir = path.join(repoRoot, 'native');
  const exported = readdirSync(dir).filter((f) => f.endsWith('.cpp'))
    .flatMap((f) => [...readFileSync(path.join(dir, f), 'utf8').matchAll(/exports\.Set\("(\w+)"/g)].map((m) => m[1]!));
  t.same([...new Set(exported)].sort(), Object.keys(typed).sort());
});

t.test('the loaded binding has them', async (t) => {
  const binding = loadNative() as unknown as Record<string, unknown>;
  const linuxOnly = ['copyFileRange'];
  const want = Object.keys(typed).filter((k) => process.platform === 'linux' || !linuxOnly.includes(k)).sort();
  t.same(Object.keys(binding).filter((k) => typeof binding[k] === 'function').sort(), want);
});
