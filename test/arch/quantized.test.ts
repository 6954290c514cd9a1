// Every architecture with quantized weights: synth --type cycle gives each weight matrix another
// ggml type (Q4_K, Q6_K, Q8_0, F16, Q5_K, BF16, Q4_0, F32, with llama-quantize's fallbacks where a
// row does not hold a whole block: Q5_0, Q8_0, F16). Statistics, a new-file boost that loads and
// evaluates, and an in-place zeroing + unpatch, with every excluded tensor unchanged byte for byte.
import t from 'tap';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { tensorRoles } from '../../src/gguf/tensor-roles.ts';
import { patchModel, unpatchModel } from '../../src/patch/patch.ts';
import { StatsModel } from '../../src/stats/index.ts';
import { sha256, tensorBytes } from '../patch/helpers.ts';
import { repoRoot } from '../helpers/fixtures.ts';
import { ARCHS, archModel } from './arch-lib.ts';

const work = path.join(repoRoot, '.cache', 'test-arch');
mkdirSync(work, { recursive: true });
const math = ['Tom has 3 apples and buys 5 more, so 3 + 5 = 8 apples.', 'A train travels 60 km in 1.5 hours: 60 / 1.5 = 40 km per hour.'];
const general = ['The river flows north through the quiet valley.', 'She painted the old fence a bright shade of green.'];

for (const arch of ARCHS) {
  t.test(`${arch}, quantized (cycle)`, async (t) => {
    const modelPath = await archModel(arch, 'cycle');
    const info = readGgufSync(modelPath);
    const types = new Set(info.tensors.filter((x) => x.shape.length >= 2).map((x) => x.typeName));
    t.ok(types.size >= 3, `weight types: ${[...types].join(', ')}`);
    const excluded = tensorRoles(info).filter((r) => !r.scored);
    const bytesOf = (file: string) => { const i = readGgufSync(file); return excluded.map((r) => tensorBytes(i, i.tensorByName.get(r.name)!)); };
    const before = bytesOf(modelPath);
    const unchanged = (file: string) => bytesOf(file).every((b, i) => b.equals(before[i]));

    const model = await StatsModel.open(modelPath, { nCtx: 128, nThreads: 1 });
    let m, g;
    try {
      m = (await model.collect(math)).stats;
      g = (await model.collect(general)).stats;
    } finally { model.dispose(); }

    const out = path.join(work, `${arch}.cycle.boosted.gguf`);
    const r = await patchModel({ model: modelPath, out, math: m, general: g, topK: 0.1, scale: 1.1, force: true });
    t.ok(r.selectedWeights > 0 && r.tensorsPatched > 0, `boost: ${r.selectedWeights} weights in ${r.tensorsPatched} tensors`);
    t.ok(unchanged(out), 'new file: excluded tensors unchanged');
    const patched = await StatsModel.open(out, { nCtx: 128, nThreads: 1 });
    try {
      const { logits } = await patched.logits(patched.tokenize('Once upon a time'));
      t.ok(logits.every(Number.isFinite), 'the boosted model evaluates to finite logits');
    } finally { patched.dispose(); rmSync(out, { force: true }); }

    const copy = path.join(work, `${arch}.cycle.inplace.gguf`);
    rmSync(`${copy}.mathneuro-undo`, { force: true });
    copyFileSync(modelPath, copy);
    const original = sha256(copy);
    const p = await patchModel({ model: copy, inPlace: true, math: m, general: g, topK: 0.05, prune: true });
    t.ok(p.bytesChanged > 0, `in place: ${p.bytesChanged} bytes changed`);
    t.ok(unchanged(copy), 'in place: excluded tensors unchanged');
    await unpatchModel(copy);
    t.equal(sha256(copy), original, 'unpatch restores the original bit for bit');
    rmSync(copy, { force: true });
  });
}
