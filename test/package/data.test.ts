// The evaluation data the package ships (data/, gzip'd): the files data/README.md describes, with
// the row counts and checksums of their sources, read by the loaders through the default path.
import t from 'tap';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { dataFile, defaultDataDir, loadGsm8k, loadMath500, loadMmlu, packageDataDir } from '../../src/eval/data.ts';
import { readSamples } from '../../src/stats/data.ts';
import { repoRoot } from '../helpers/fixtures.ts';

const dir = path.join(repoRoot, 'data');
const gunzip = (f: string) => gunzipSync(readFileSync(path.join(dir, f)));
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('the checksums of data/README.md', async (t) => {
  const readme = readFileSync(path.join(dir, 'README.md'), 'utf8');
  const files: Record<string, string> = {
    'gsm8k_test.jsonl.gz': '3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14',
    'gsm8k_train.jsonl.gz': '17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465',
    'math500_test.jsonl.gz': '35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132',
  };
  for (const [f, sum] of Object.entries(files)) {
    t.equal(sha256(gunzip(f)), sum, f);
    t.match(readme, sum, `${f}'s checksum is in the README`);
  }
  for (const [split, sum] of [['test', 'fa58faff5210aee66e8791f191a56016fa3d33be6b7f484a1463ae5984b834e0'], ['dev', 'b27648cd4b1d389de3362e154cc52fe0b62c0533af585420446dc5583ac8272f']]) {
    const names = readdirSync(path.join(dir, 'mmlu', split)).filter((f) => f.endsWith('.csv.gz')).sort();
    t.equal(names.length, 57, `57 MMLU ${split} subjects`);
    t.equal(sha256(Buffer.concat(names.map((f) => gunzip(path.join('mmlu', split, f))))), sum, `mmlu/${split}, concatenated in name order`);
    t.match(readme, sum);
  }
  t.match(readFileSync(path.join(dir, 'LICENSE'), 'utf8'), /Copyright \(c\) 2021 OpenAI[\s\S]*Copyright \(c\) 2020 Dan Hendrycks[\s\S]*Permission is hereby granted/);
});

t.test('the default data folder is the package\'s own, read through the .gz files', async (t) => {
  t.equal(packageDataDir, dir);
  t.equal(defaultDataDir({}), dir);
  t.equal(defaultDataDir({ MATHNEURO_DATA_DIR: '/elsewhere' }), '/elsewhere', 'MATHNEURO_DATA_DIR overrides it');
  t.equal(dataFile(path.join(dir, 'gsm8k_test.jsonl')), path.join(dir, 'gsm8k_test.jsonl.gz'), 'x.jsonl finds x.jsonl.gz');
  t.equal(loadGsm8k(path.join(dir, 'gsm8k_test.jsonl')).length, 1319);
  t.equal(loadGsm8k(path.join(dir, 'gsm8k_train.jsonl.gz')).length, 7473);
  t.equal(loadMath500(path.join(dir, 'math500_test.jsonl')).length, 500);
  t.equal(loadMmlu(path.join(dir, 'mmlu')).length, 14042, 'MMLU test (mmlu/ picks test/)');
  t.equal(loadMmlu(path.join(dir, 'mmlu', 'dev')).length, 285, 'MMLU dev');
  t.equal(loadMmlu(path.join(dir, 'mmlu'), ['abstract_algebra'])[0]!.subject, 'abstract_algebra', 'subjects from .csv.gz names');
  t.throws(() => loadGsm8k(path.join(dir, 'nope.jsonl')), { code: 'ENOENT', message: /--data.*MATHNEURO_DATA_DIR/ }, 'a missing file says how to fix it');
});

t.test('calibration files may be gzip\'d too (stats --data, boost --math/--general)', async (t) => {
  t.equal(readSamples(path.join(dir, 'gsm8k_train.jsonl.gz')).length, 7473);
  t.equal(readSamples(path.join(dir, 'gsm8k_train.jsonl')).length, 7473, 'x.jsonl finds x.jsonl.gz');
  const general = readSamples(path.join(dir, 'mmlu', 'test'), { excludeSubjects: ['abstract_algebra', 'college_mathematics', 'elementary_mathematics', 'high_school_mathematics', 'high_school_statistics'] });
  t.equal(general.length, 14042 - 1064, 'an MMLU folder of .csv.gz without the math subjects');
});
