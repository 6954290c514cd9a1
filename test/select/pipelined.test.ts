// selectTensors selects two tensors at a time on two or more threads (each call on half of them),
// one at a time on one thread: the masks are the brute-force reference's either way, in the plan's
// order, with the tensor bytes where kept; stopping early (a break, an abort) waits for the tensor
// still in flight before the file is closed.
import t from 'tap';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { planTensors, selectTensors, topKCount, type TensorSelection } from '../../src/select/select.ts';
import { fixtureModel } from '../helpers/fixtures.ts';
import { dequantizedTensor, referenceMathNeuro, syntheticStats, tensorBytes } from '../patch/helpers.ts';

t.test('two tensors at a time: the reference masks, in order, for 1, 2 and 3 threads', async (t) => {
  const model = readGgufSync(await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 1 }));
  const math = syntheticStats(model, 21), general = syntheticStats(model, 22);
  const plan = planTensors(model, math);
  t.ok(plan.scored.length >= 4, `${plan.scored.length} tensors`);
  const K = 0.03;
  const reference = new Map<string, Set<number>>();
  for (const s of plan.scored) {
    const tn = s.tensor;
    reference.set(tn.name, referenceMathNeuro(dequantizedTensor(model, tn), tn.shape[0], math.weights.get(tn.name)!.normSum, general.weights.get(tn.name)!.normSum, topKCount(tn.numel, K)));
  }
  for (const threads of [1, 2, 3]) {
    for (const keepBytes of [false, true]) {
      const got: TensorSelection[] = [];
      for await (const s of selectTensors(model, plan, { topK: [K], math, general, threads, keepBytes })) got.push(s);
      t.same(got.map((s) => s.tensor.name), plan.scored.map((s) => s.tensor.name), `threads=${threads} keepBytes=${keepBytes}: the plan's order`);
      let wrong = 0;
      for (const s of got) {
        const expected = reference.get(s.tensor.name)!;
        let n = 0;
        for (let i = 0; i < s.tensor.numel; i++) {
          const bit = (s.masks[0][i >> 3] >> (i & 7)) & 1;
          if (bit !== (expected.has(i) ? 1 : 0)) wrong++;
          n += bit;
        }
        if (n !== s.counts[0]) wrong++;
        if (keepBytes && !Buffer.from(s.bytes!).equals(tensorBytes(model, s.tensor))) wrong++;
      }
      t.equal(wrong, 0, `threads=${threads} keepBytes=${keepBytes}: every mask is the reference's${keepBytes ? ', every tensor\'s bytes the file\'s' : ''}`);
    }
  }
});

t.test('stopping early with a tensor in flight', async (t) => {
  const model = readGgufSync(await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 1 }));
  const math = syntheticStats(model, 21), general = syntheticStats(model, 22);
  const plan = planTensors(model, math);
  let seen = 0;
  for await (const s of selectTensors(model, plan, { topK: [0.05], math, general, threads: 2 })) { seen++; if (s) break; }
  t.equal(seen, 1, 'a break after the first tensor ends the selection');
  const controller = new AbortController();
  seen = 0;
  await t.rejects((async () => {
    for await (const _ of selectTensors(model, plan, { topK: [0.05], math, general, threads: 2, signal: controller.signal })) { seen++; controller.abort(); }
  })(), { code: 'EABORT' });
  t.equal(seen, 1, 'an abort after the first tensor stops before the second is handed on');
  // and a selection afterwards is whole again
  let n = 0;
  for await (const _ of selectTensors(model, plan, { topK: [0.05], math, general, threads: 2 })) n++;
  t.equal(n, plan.scored.length);
});
