// The source build (npm run build:source): when it exists it loads, reports itself as "source",
// runs a model, and its shim sources are exactly binding.gyp's. CI builds it before npm test.
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { buildPaths, packageRoot } from '../../src/native.ts';

const require = createRequire(import.meta.url);

t.test('the patches the source build applies are present and well-formed', async (t) => {
  const { patchList } = await import('../../scripts/build-source.mjs');
  const patches: string[] = patchList();
  const ours = patches.filter((p) => p.startsWith(path.join(packageRoot, 'native', 'patches')));
  t.ok(ours.some((p) => p.endsWith('kv-gradient.diff')), 'the K/V-gradient patch is applied by the source build');
  const diff = readFileSync(path.join(packageRoot, 'native', 'patches', 'kv-gradient.diff'), 'utf8');
  t.match(diff, /^diff --git a\/src\/llama-graph\.cpp/m);
  t.match(diff, /k = k_cur;/);
});

t.test('CMakeLists.txt reads the shim sources from binding.gyp', async (t) => {
  const cmake = readFileSync(path.join(packageRoot, 'CMakeLists.txt'), 'utf8');
  t.match(cmake, /string\(JSON [^)]*targets 0 sources/);
  const gyp = JSON.parse(readFileSync(path.join(packageRoot, 'binding.gyp'), 'utf8'));
  for (const source of gyp.targets[0].sources as string[]) t.ok(existsSync(path.join(packageRoot, source)), `${source} exists`);
});

const built = existsSync(buildPaths.source);
t.test('the source build loads and runs', { skip: built ? false : 'build-source/Release/mathneuro.node is absent (npm run build:source)' }, async (t) => {
  const binding = require(buildPaths.source);
  binding.init(undefined, false);
  const info = binding.systemInfo();
  t.equal(info.buildKind, 'source');
  t.ok(info.devices.some((d: { type: string }) => d.type === 'cpu'), 'a CPU device is compiled in (no backend libraries loaded)');
  // The static llama.cpp is hidden inside the addon (-Wl,--exclude-libs,ALL): no llama_* export.
  if (process.platform === 'linux') {
    const { execFileSync } = await import('node:child_process');
    let symbols = '';
    try { symbols = execFileSync('nm', ['-D', '--defined-only', buildPaths.source], { encoding: 'utf8' }); } catch { t.skip('nm not available', () => {}); return; }
    t.notOk(/\bllama_decode\b/.test(symbols), 'llama_decode is not exported');
    t.ok(/\bnapi_register_module_v1\b/.test(symbols), 'the N-API entry point is exported');
  }
  // A forward pass through the source-built llama.cpp, on the committed fixture.
  const fixture = path.join(packageRoot, 'test', 'fixtures', 'arith', 'model.gguf');
  if (existsSync(fixture)) {
    const model = await binding.loadModel(fixture, { nCtx: 256, nThreads: 1 });
    const completion = await model.greedy(model.tokenize('12+34='), 4, ['\n']);
    model.dispose();
    t.type(completion.text, 'string');
    t.ok(completion.tokens.length >= 1 && completion.tokens.length <= 4);
  }
});

t.test('build:source options: backends explicit, --cuda checks cuBLAS and the driver before CMake runs', async (t) => {
  const { parseArgs, cudaDefines, DEFAULT_CUDA_ARCH } = await import('../../scripts/build-source.mjs');
  const { mkdtempSync, mkdirSync, writeFileSync, rmSync } = await import('node:fs');
  const os = await import('node:os');
  const plain = parseArgs([]) as { defines: Record<string, string> };
  t.match(plain.defines, { GGML_NATIVE: 'OFF', GGML_CUDA: 'OFF', GGML_VULKAN: 'OFF' }, 'a CPU build says OFF, so a folder once built with --cuda does not stay CUDA');
  t.notOk('GGML_METAL' in plain.defines, "Metal left to ggml's default (ON on Apple)");
  t.throws(() => parseArgs(['--cuda-arch', '90']), /go with --cuda/);
  t.throws(() => parseArgs(['--cuda', '--cuda-arch', '9.0;bad arch']), /CMAKE_CUDA_ARCHITECTURES syntax/);
  const cuda = parseArgs(['--cuda', '--cuda-arch', '89', '--jobs', '1']) as ReturnType<typeof parseArgs> & { defines: Record<string, string> };
  t.equal(cuda.defines.GGML_CUDA, 'ON');

  const root = mkdtempSync(path.join(os.tmpdir(), 'mathneuro-fake-cuda-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(path.join(root, 'bin'));
  mkdirSync(path.join(root, 'include'));
  mkdirSync(path.join(root, 'lib64'));
  t.throws(() => cudaDefines(cuda, root), /cuBLAS is missing from the CUDA toolkit at .*--cublas DIR/, 'no cuBLAS: a clear error before CMake');
  const cublas = path.join(root, 'cublas');
  mkdirSync(path.join(cublas, 'include'), { recursive: true });
  mkdirSync(path.join(cublas, 'lib'));
  writeFileSync(path.join(cublas, 'include', 'cublas_v2.h'), '');
  writeFileSync(path.join(cublas, 'lib', 'libcublas.so.13'), ''); // a wheel's layout: versioned names only
  const d = cudaDefines(parseArgs(['--cuda', '--cublas', cublas]), root) as Record<string, string>;
  t.equal(d.CUDA_cublas_LIBRARY, path.join(cublas, 'lib', 'libcublas.so.13'), 'the library by full path');
  t.equal(d.CMAKE_SHARED_LINKER_FLAGS, `-Wl,-rpath,${path.join(cublas, 'lib')}`);
  t.match(d.CMAKE_CUDA_ARCHITECTURES, /^\d+$/, `one architecture (${d.CMAKE_CUDA_ARCHITECTURES}; without a GPU: ${DEFAULT_CUDA_ARCH})`);
  t.equal(cudaDefines({ ...cuda, cublas }, root).CMAKE_CUDA_ARCHITECTURES, '89', '--cuda-arch wins');
  if (!existsSync('/usr/lib/x86_64-linux-gnu/libcuda.so.1') && !existsSync('/usr/lib64/libcuda.so.1')) {
    t.equal(d.GGML_CUDA_NO_VMM, 'ON', 'no driver library and no stubs: built without VMM (nothing to link)');
  }
});
