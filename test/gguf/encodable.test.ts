// Texts against a vocabulary with no byte fallback: the TS check (src/gguf/encodable.ts) says which
// characters llama.cpp's tokenizer cannot encode, and agrees with the real tokenizer run in a child
// process (it aborts on exactly those texts). Calibration, evaluation and KL texts are checked before
// the first forward pass: an error naming the sample and the characters, or --skip-unencodable.
import t from 'tap';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { command as statsCommand } from '../../src/cli/stats.ts';
import { evaluate } from '../../src/eval/index.ts';
import { encodabilityCheck, screenTexts } from '../../src/gguf/encodable.ts';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { calibrationStats } from '../../src/pipeline.ts';
import { repoRoot } from '../helpers/fixtures.ts';
import { noByteVocabCopy, sharedModel } from '../helpers/real-models.ts';

const stories = sharedModel('stories260K.gguf');
if (!stories) {
  t.comment('skipped: ../shared/models/stories260K.gguf is absent (see ../shared/models/README.md)');
  t.pass('no shared models');
} else {
  const dir = t.testdir();
  const noByte = noByteVocabCopy(stories, path.join(dir, 'stories-nobyte.gguf'));
  const info = readGgufSync(noByte);

  t.test('the check from the vocabulary', async (t) => {
    t.equal(encodabilityCheck(readGgufSync(stories)), undefined, 'all 256 byte tokens: every text can be encoded');
    const check = encodabilityCheck(info)!;
    t.ok(check, 'no byte tokens: texts are checked');
    t.same(check('Once upon a time, é 7 “x” € ™'), [], 'characters that are tokens of their own');
    t.same(check('a=b\nc#d=e'), ['=', '\n', '#'], 'each character once, in order');
  });

  t.test('the real tokenizer aborts on exactly the texts the check rejects', async (t) => {
    const texts = ['Once upon a time, é 7 “x” € ™', 'Lily said: "Hi!" and ran.', 'a=b', 'line\ntwo', 'ü', 'x#'];
    const run = (text: string) => new Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, ['--import=tsx', path.join(repoRoot, 'test', 'helpers', 'tokenize-child.ts'), noByte, text], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d) => { out += d; });
      child.stderr.on('data', (d) => { out += d; });
      child.on('close', (code, signal) => resolve({ code, signal, out }));
    });
    const check = encodabilityCheck(info)!;
    for (let i = 0; i < texts.length; i += 2) {
      const results = await Promise.all(texts.slice(i, i + 2).map(run));
      results.forEach((r, k) => {
        const text = texts[i + k];
        const rejected = check(text).length > 0;
        if (rejected) t.ok(r.signal === 'SIGABRT' || r.code === 134, `${JSON.stringify(text)}: rejected, and the tokenizer aborts (${r.signal ?? r.code}; ${/_Map_base::at|out_of_range/.test(r.out) ? 'std::out_of_range' : r.out.trim().slice(-80)})`);
        else t.match(r.out, /^ok \d+/m, `${JSON.stringify(text)}: accepted, and the tokenizer encodes it`);
      });
    }
  });

  t.test('errors name the sample and the characters; --skip-unencodable says how many', async (t) => {
    const samples = [{ text: 'The cat sat.', source: 'a.txt:1' }, { text: 'x = 3', source: 'a.txt:3' }, { text: 'The dog ran.', source: 'a.txt:5' }];
    t.throws(() => screenTexts(info, samples), { code: 'EDATA', message: /1 of 3 samples use characters this model's vocabulary cannot encode.*"=" \(U\+003D\): a\.txt:3 \("=" \(U\+003D\)\)\. Use --skip-unencodable/ });
    const r = screenTexts(info, samples, { skip: true });
    t.same(r.keep, [0, 2]);
    t.same(r.skipped.map((s) => s.source), ['a.txt:3']);

    const data = path.join(dir, 'mixed.txt');
    writeFileSync(data, 'Once upon a time there was a cat.\n\nTom said a=b.\n\nThe dog ran to the park.\n');
    const io = { stdout: sink(), stderr: sink(), env: { MATHNEURO_CACHE_DIR: process.env.MATHNEURO_CACHE_DIR } };
    await t.rejects(statsCommand.run([noByte, '--data', data, '-o', path.join(dir, 'x.stats.gguf'), '--threads', '1'], io), { code: 'EDATA', message: /mixed\.txt:3 \("=" \(U\+003D\)\)/ }, 'stats: the file and line, before any forward pass');
    const err = sink();
    t.equal(await statsCommand.run([noByte, '--data', data, '-o', path.join(dir, 'x.stats.gguf'), '--threads', '1', '--skip-unencodable'], { stdout: sink(), stderr: err, env: { MATHNEURO_CACHE_DIR: process.env.MATHNEURO_CACHE_DIR } }), 0);
    t.match(err.text, /note: 1 samples with characters the vocabulary cannot encode were skipped \(--skip-unencodable\), e\.g\. .*mixed\.txt:3/);
  });

  t.test('built-in sets: most of the math set cannot be encoded here, and the error says what to do', async (t) => {
    await t.rejects(calibrationStats(info, 'math', { builtin: 'math' }, { samples: 20, cache: false }), { code: 'EDATA', message: /most of the built-in math set \(\d+ of 20 math calibration samples\) uses characters .*"=" \(U\+003D\).*give your own data with --math/ });
    await t.rejects(calibrationStats(info, 'general', { builtin: 'general' }, { samples: 10, cache: false }), { code: 'EDATA', message: /built-in general set.*"\\n" \(U\+000A\).*--general/ });
  });

  t.test('eval: KL prompts and perplexity lines are checked before loading', async (t) => {
    const kl = path.join(dir, 'kl.jsonl');
    writeFileSync(kl, `${JSON.stringify({ text: 'The cat sat on the mat.' })}\n${JSON.stringify({ text: 'Sam had 5 #1 hats.' })}\n`);
    await t.rejects(evaluate({ task: 'kl', model: noByte, vs: noByte, data: kl, cache: false }), { code: 'EDATA', message: /1 of 2 KL prompts .*kl\.jsonl:2 \("#" \(U\+0023\)\)/ });
    const text = path.join(dir, 'ppl.txt');
    writeFileSync(text, 'The cat sat on the mat.\nThe dog ran.\n');
    await t.rejects(evaluate({ task: 'ppl', model: noByte, data: text, cache: false }), { code: 'EDATA', message: /lines use characters .*"\\n" \(U\+000A\).*ppl\.txt:1/ });
  });
}

function sink(): NodeJS.WritableStream & { text: string } {
  const w = new Writable({ write(chunk, _enc, cb) { (w as unknown as { text: string }).text += String(chunk); cb(); } }) as unknown as NodeJS.WritableStream & { text: string };
  w.text = '';
  return w;
}
