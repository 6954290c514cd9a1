// `mathneuro synth --arch` writes each architecture; `inspect` names its scored and excluded tensors.
import t from 'tap';
import path from 'node:path';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { tensorRoles } from '../../src/gguf/tensor-roles.ts';
import { archTables } from '../../src/synth.ts';
import { run } from '../helpers/cli.ts';

t.test('synth --arch: usage errors', async (t) => {
  const dir = t.testdir();
  t.equal((await run(['synth', path.join(dir, 'x.gguf'), '--arch', 'nope'])).code, 2, 'unknown architecture');
  t.equal((await run(['synth', path.join(dir, 'x.gguf'), '--arch', 'qwen3', '--shape', 'llama-1b'])).code, 2, 'a shape of another architecture');
  const help = await run(['synth', '--help']);
  for (const arch of Object.keys(archTables)) t.match(help.stdout, new RegExp(`\\b${arch}:`), `--help lists ${arch}`);
});

for (const arch of ['qwen2moe', 'deepseek2', 'granitehybrid', 'gemma3']) {
  t.test(`synth --arch ${arch} + inspect`, async (t) => {
    const dir = t.testdir();
    const file = path.join(dir, `${arch}.gguf`);
    const s = await run(['synth', file, '--arch', arch, '--type', 'q8_0', '--json']);
    t.equal(s.code, 0, s.stderr);
    t.equal(JSON.parse(s.stdout).arch, arch);
    const info = readGgufSync(file);
    t.equal(info.metadata.get('general.architecture'), arch);
    const roles = tensorRoles(info);
    const j = await run(['inspect', file, '--json']);
    t.equal(j.code, 0, j.stderr);
    const r = JSON.parse(j.stdout);
    const patterns = (scored: boolean) => new Set(roles.filter((x) => x.scored === scored).map((x) => x.name.replace(/^blk\.\d+\./, 'blk.*.')));
    t.same(new Set(r.roles.filter((x: { scored: boolean }) => x.scored).map((x: { pattern: string }) => x.pattern)), patterns(true), 'JSON: scored kinds');
    t.same(new Set(r.roles.filter((x: { scored: boolean }) => !x.scored).map((x: { pattern: string }) => x.pattern)), patterns(false), 'JSON: excluded kinds');
    const text = (await run(['inspect', file])).stdout;
    t.match(text, /^scored by the selection \(\d+ tensors\): /m, 'text: the scored line');
    for (const p of patterns(false)) t.ok(text.includes(`  ${p}`), `text names excluded ${p}`);
    if (arch === 'qwen2moe') t.match(text, /blk\.\*\.ffn_gate_inp\.weight \(2\) \[statistics collected\]: MoE router/, 'the router, with its reason');
    if (arch === 'granitehybrid') t.match(text, /blk\.\*\.ssm_conv1d\.weight: Mamba depthwise causal convolution/, 'the SSM convolution, with its reason');
  });
}
