// select -> patch (new file) through the CLI on a generated model with every tensor type, checked
// byte by byte against the source and a brute-force reference selection; then the patched model
// loads and generates in node-llama-cpp.
import t from 'tap';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { getLlama, LlamaCompletion } from 'node-llama-cpp';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { topKCount } from '../../src/select/select.ts';
import { fixtureModel } from '../helpers/fixtures.ts';
import { cli, dequantizedTensor, referenceMathNeuro, sha256, syntheticStats, syntheticStatsFile, tensorBytes, workDir } from './helpers.ts';

const jsonable = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x));

t.test('new-file patch changes only the blocks of selected weights', async (t) => {
  const model = await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 1 });
  const dir = path.join(workDir, 'newfile');
  rmSync(dir, { recursive: true, force: true });
  (await import('node:fs')).mkdirSync(dir, { recursive: true });
  const mathFile = await syntheticStatsFile(model, 11, path.join(dir, 'math.stats.gguf'));
  const generalFile = await syntheticStatsFile(model, 12, path.join(dir, 'general.stats.gguf'));
  const selection = path.join(dir, 'sel.mnsel');
  const out = path.join(dir, 'out.gguf');
  const K = 0.05;

  const sel = await cli(['select', model, '--math', mathFile, '--general', generalFile, '--top-k', '1%,5%', '-o', selection, '--json']);
  t.equal(sel.code, 0, sel.stderr);
  const selJson = JSON.parse(sel.stdout);
  t.equal(selJson.totals.length, 2);

  const patched = await cli(['patch', model, '-o', out, '--selection', selection, '--top-k', '5%', '--json']);
  t.equal(patched.code, 0, patched.stderr);
  const result = JSON.parse(patched.stdout);
  t.equal(result.selectedWeights, selJson.totals[1].selected, 'patch applies the selection file\'s K');

  const src = readGgufSync(model), dst = readGgufSync(out);
  const math = syntheticStats(src, 11), general = syntheticStats(src, 12);
  // metadata: every source key unchanged, plus provenance
  for (const e of src.metadataEntries) t.equal(jsonable(dst.metadata.get(e.key)), jsonable(e.value), `metadata ${e.key} kept`);
  t.equal(dst.metadata.get('mathneuro.method'), 'mathneuro');
  t.equal(dst.metadata.get('mathneuro.top_k'), K);
  t.equal(dst.metadata.get('mathneuro.scale'), 1.1);
  t.equal(dst.metadata.get('mathneuro.source.sha256'), sha256(model));
  t.match(String(dst.metadata.get('mathneuro.statistics.math')), /^math\.stats\.gguf sha256:[0-9a-f]{64}$/);
  t.equal(dst.tensors.length, src.tensors.length);

  let scoredTensors = 0;
  for (const ts of src.tensors) {
    const td = dst.tensorByName.get(ts.name)!;
    t.same([td.type, td.shape, td.offset], [ts.type, ts.shape, ts.offset], `${ts.name} info kept`);
    const a = tensorBytes(src, ts), b = tensorBytes(dst, td);
    const scored = ts.name.startsWith('blk.') && ts.shape.length === 2;
    if (!scored) { t.ok(a.equals(b), `${ts.name} byte-identical (not scored)`); continue; }
    scoredTensors++;
    const values = dequantizedTensor(src, ts);
    const expected = referenceMathNeuro(values, ts.shape[0], math.weights.get(ts.name)!.normSum, general.weights.get(ts.name)!.normSum, topKCount(ts.numel, K));
    const selectedBlocks = new Set([...expected].map((i) => Math.floor(i / ts.blockSize)));
    let outside = 0, changedBlocks = new Set<number>();
    for (let x = 0; x < a.length; x++) {
      if (a[x] === b[x]) continue;
      const block = Math.floor(x / ts.typeSize);
      changedBlocks.add(block);
      if (!selectedBlocks.has(block)) outside++;
    }
    t.equal(outside, 0, `${ts.name} (${ts.typeName}): no byte changed outside the ${selectedBlocks.size} blocks of selected weights (${changedBlocks.size} changed)`);
    t.ok(changedBlocks.size > 0, `${ts.name}: something changed`);
    if (ts.typeName === 'F32') {
      const after = dequantizedTensor(dst, td);
      let wrong = 0;
      for (let i = 0; i < values.length; i++) {
        const want = expected.has(i) ? Math.fround(values[i] * 1.1) : values[i];
        if (!Object.is(after[i], want)) wrong++;
      }
      t.equal(wrong, 0, `${ts.name}: F32 selected weights are exactly x1.1, the others unchanged`);
    }
  }
  t.equal(scoredTensors, 14);
  // the bytes outside the tensors (padding, tail) are the source's too
  const realizedTypes = result.realized.map((r: { type: string }) => r.type);
  t.ok(realizedTypes.includes('all') && realizedTypes.includes('q4_K'), 'realized-scale rows per type');
  t.notOk(readdirSync(dir).some((f) => f.includes('mathneuro-tmp')), 'no temporary left behind');

  // patched twice by accident: refused
  const again = await cli(['patch', out, '-o', path.join(dir, 'again.gguf'), '--selection', selection, '--top-k', '5%']);
  t.equal(again.code, 1);
  t.match(again.stderr, /already patched/);

  // inspect knows all three files
  for (const f of [out, selection, mathFile]) {
    const r = await cli(['inspect', f, '--json']);
    t.equal(r.code, 0, r.stderr);
  }
  t.equal(JSON.parse((await cli(['inspect', out, '--json'])).stdout).patched.newFile['mathneuro.method'], 'mathneuro');

  // the patched model loads and generates
  const llama = await getLlama({ gpu: false, build: 'never' });
  const m = await llama.loadModel({ modelPath: out, gpuLayers: 0 });
  const ctx = await m.createContext({ contextSize: 128 });
  const completion = new LlamaCompletion({ contextSequence: ctx.getSequence() });
  const text = await completion.generateCompletion('The answer is', { maxTokens: 6 });
  t.type(text, 'string', `generated: ${JSON.stringify(text)}`);
  await ctx.dispose(); await m.dispose();
  t.ok(existsSync(out));
});

t.test('the kernel-copy path and the streaming path write the same file', async (t) => {
  const model = await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 1 });
  const dir = path.join(workDir, 'newfile');
  const { patchModel } = await import('../../src/patch/patch.ts');
  const math = syntheticStats(readGgufSync(model), 11), general = syntheticStats(readGgufSync(model), 12);
  for (const [topK, prune] of [[0.05, false], [0.2, true]] as const) {
    const outs: string[] = [];
    for (const streamCopy of [false, true]) {
      const out = path.join(dir, `io-${streamCopy ? 'stream' : 'kernel'}-${topK}.gguf`);
      const r = await patchModel({ model, out, math, general, topK, prune, force: true, streamCopy });
      t.ok(r.selectedWeights > 0);
      outs.push(out);
    }
    // the header carries the patch time: compare everything but that value
    const [a, b] = outs.map((f) => readFileSync(f));
    const info = readGgufSync(outs[0]);
    t.equal(a.length, b.length, `K=${topK}: same size`);
    t.ok(a.subarray(info.dataOffset).equals(b.subarray(info.dataOffset)), `K=${topK}${prune ? ' prune' : ''}: same tensor data byte for byte`);
    t.equal(readGgufSync(outs[1]).metadata.get('mathneuro.source.sha256'), sha256(model));
  }
});

t.test('prune, upcast and errors', async (t) => {
  const model = await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 1 });
  const dir = path.join(workDir, 'newfile');
  const mathFile = path.join(dir, 'math.stats.gguf'), generalFile = path.join(dir, 'general.stats.gguf');
  const src = readGgufSync(model);
  const math = syntheticStats(src, 11), general = syntheticStats(src, 12);

  const pruned = path.join(dir, 'pruned.gguf');
  const r = await cli(['patch', model, '-o', pruned, '--math', mathFile, '--general', generalFile, '--top-k', '2%', '--prune', '--force', '--json']);
  t.equal(r.code, 0, r.stderr);
  const dst = readGgufSync(pruned);
  for (const name of ['blk.1.attn_q.weight', 'blk.0.attn_output.weight', 'blk.0.ffn_down.weight']) {   // F32, F16, Q4_0: zero is exact
    const ts = src.tensorByName.get(name)!;
    const before = dequantizedTensor(src, ts), after = dequantizedTensor(dst, dst.tensorByName.get(name)!);
    const expected = referenceMathNeuro(before, ts.shape[0], math.weights.get(name)!.normSum, general.weights.get(name)!.normSum, topKCount(ts.numel, 0.02));
    let nonZero = 0;
    for (const i of expected) if (after[i] !== 0) nonZero++;
    t.equal(nonZero, 0, `${name} (${ts.typeName}): every selected weight is zero`);
  }

  const up = path.join(dir, 'upcast.gguf');
  const u = await cli(['patch', model, '-o', up, '--math', mathFile, '--general', generalFile, '--top-k', '2%', '--upcast', 'q8_0', '--force', '--json']);
  t.equal(u.code, 0, u.stderr);
  const uj = JSON.parse(u.stdout);
  t.ok(uj.upcast.tensors > 0 && uj.upcast.extraBytes !== 0, `upcast size cost reported: ${uj.upcast.extraBytes} bytes`);
  const upInfo = readGgufSync(up);
  t.equal(upInfo.tensorByName.get('blk.0.attn_q.weight')!.typeName, 'Q8_0', 'a Q4_K tensor with selected weights is stored as Q8_0');
  t.equal(upInfo.tensorByName.get('token_embd.weight')!.type, src.tensorByName.get('token_embd.weight')!.type);
  t.ok(tensorBytes(src, src.tensorByName.get('token_embd.weight')!).equals(tensorBytes(upInfo, upInfo.tensorByName.get('token_embd.weight')!)), 'untouched tensors copied byte for byte');

  t.equal((await cli(['patch', model, '-o', model, '--selection', path.join(dir, 'sel.mnsel'), '--top-k', '1%'])).code, 2, 'output = source is a usage error');
  t.equal((await cli(['patch', model, '-o', up, '--selection', path.join(dir, 'sel.mnsel'), '--top-k', '1%'])).code, 1, 'existing output needs --force');
  const noK = await cli(['patch', model, '-o', path.join(dir, 'x.gguf'), '--selection', path.join(dir, 'sel.mnsel')]);
  t.match(noK.stderr, /several K/);
  const wrongK = await cli(['patch', model, '-o', path.join(dir, 'x.gguf'), '--selection', path.join(dir, 'sel.mnsel'), '--top-k', '3%']);
  t.match(wrongK.stderr, /no selection for K=0.03/);
  t.equal((await cli(['select', model, '--math', mathFile, '--top-k', '0.9'])).code, 2, 'K out of range');

  // a selection made on another file of the same shapes: refused after the copy is written, nothing left
  const other = await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 2 });
  const elsewhere = path.join(dir, 'elsewhere.gguf');
  const refused = await cli(['patch', other, '-o', elsewhere, '--selection', path.join(dir, 'sel.mnsel'), '--top-k', '1%']);
  t.equal(refused.code, 1);
  t.match(refused.stderr, /was made on another file/);
  t.notOk(existsSync(elsewhere), 'no output');
  t.notOk(readdirSync(dir).some((f) => f.includes('mathneuro-tmp')), 'no temporary left behind');
  const forced = await cli(['patch', other, '-o', elsewhere, '--selection', path.join(dir, 'sel.mnsel'), '--top-k', '1%', '--force', '--json']);
  t.equal(forced.code, 0, forced.stderr);
  t.equal(readGgufSync(elsewhere).metadata.get('mathneuro.source.sha256'), sha256(other), '--force applies it; the header names the file really patched');
});

t.test('--threads 1 patches one tensor at a time on one thread; more threads write the same file', async (t) => {
  const model = await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 1 });
  const dir = path.join(workDir, 'newfile');
  const { patchModel } = await import('../../src/patch/patch.ts');
  const { loadNative } = await import('../../src/native.ts');
  const native = loadNative();
  const original = native.patchTensor;
  // every patchTensor call watched: how many run at once, and on how many threads each
  let running = 0, most = 0;
  const threadsSeen = new Set<number | undefined>();
  native.patchTensor = (request) => {
    threadsSeen.add(request.threads);
    most = Math.max(most, ++running);
    return original.call(native, request).finally(() => { running--; });
  };
  t.teardown(() => { native.patchTensor = original; });
  const src = readGgufSync(model);
  const math = syntheticStats(src, 11), general = syntheticStats(src, 12);
  const outs: Buffer[] = [];
  const reports: string[] = [];
  for (const threads of [1, 2, 3]) {
    running = 0; most = 0; threadsSeen.clear();
    const out = path.join(dir, `threads-${threads}.gguf`);
    const r = await patchModel({ model, out, math, general, topK: 0.05, force: true, threads });
    t.ok(r.tensors.length > 2, `threads=${threads}: ${r.tensors.length} tensors patched`);
    t.same([...threadsSeen], [threads], `threads=${threads}: each tensor's patch is given ${threads} thread(s)`);
    t.equal(most, threads === 1 ? 1 : 2, `threads=${threads}: ${threads === 1 ? 'one tensor' : 'two tensors'} in flight at most`);
    outs.push(readFileSync(out).subarray(readGgufSync(out).dataOffset));
    reports.push(JSON.stringify({ realized: r.realized, tensors: r.tensors, selected: r.selectedWeights }));
  }
  t.ok(outs[1].equals(outs[0]) && outs[2].equals(outs[0]), 'the same tensor data byte for byte on 1, 2 and 3 threads');
  t.equal(reports[1], reports[0], 'the same report on 1 and 2 threads');
  t.equal(reports[2], reports[0], 'the same report on 1 and 3 threads');
});
