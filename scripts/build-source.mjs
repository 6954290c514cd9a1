#!/usr/bin/env node
// `npm run build:source`: build the bundled llama.cpp from source (static, symbols hidden) and the same
// shim as the prebuilt build into build-source/Release/mathneuro.node, with cmake-js (CMakeLists.txt).
// The source is a patched copy of deps/llama.cpp (deps/llama.cpp-patched): node-llama-cpp's own patches,
// then ours from native/patches/ (the K/V-gradient fix that training needs).
//
//   npm run build:source [-- --cuda | --metal | --vulkan] [--native] [--imatrix] [--jobs N] [--debug] [-DNAME=VALUE ...]
//
// --cuda is opt-in and not part of CI: ggml's CUDA backend is ~140 .cu files (on 2 shared cores,
// hours; see the README). It builds for one GPU architecture (the GPU nvidia-smi reports, else
// --cuda-arch's default) and checks for cuBLAS and the driver library before configuring.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { ensureLlamaSource } from './install.mjs';

const require = createRequire(import.meta.url);
const paths = require('./paths.cjs');
const log = (m) => console.error(`mathneuro: ${m}`);

export const DEFAULT_CUDA_ARCH = '90';

const usage = `usage: npm run build:source -- [--cuda] [--metal] [--vulkan] [--native] [--imatrix] [--jobs N] [--debug] [--clean] [-DNAME=VALUE ...]
  --cuda / --metal / --vulkan  enable that ggml backend (GGML_CUDA / GGML_METAL / GGML_VULKAN); the others are OFF
  --cuda-arch LIST             CMAKE_CUDA_ARCHITECTURES for --cuda (default: this machine's GPU from nvidia-smi,
                               else ${DEFAULT_CUDA_ARCH}; one architecture keeps the build to one pass over ggml's kernels)
  --cublas DIR                 a cuBLAS outside the CUDA toolkit: DIR/include/cublas_v2.h and DIR/lib/libcublas.so*
                               (e.g. the nvidia-cublas wheel's nvidia/cu13); linked with an rpath to DIR/lib
  --native                     optimize for this CPU (GGML_NATIVE=ON; the result may not run elsewhere)
  --imatrix                    also build llama-imatrix (benchmarks only) into build-source/imatrix/
  --jobs N                     parallel compile jobs (default: MATHNEURO_BUILD_JOBS or the CPU count)
  --clean                      remove build-source/ first
  --configure-only             run CMake's configure step only (checks the toolchain; compiles nothing)
  --out DIR                    build folder (default build-source/, the only one mathneuro loads)
  -DNAME=VALUE                 passed to CMake as is`;

export function parseArgs(argv) {
  const options = { defines: {}, jobs: Number(process.env.MATHNEURO_BUILD_JOBS) || os.availableParallelism(), imatrix: false, debug: false, clean: false };
  options.defines.GGML_NATIVE = 'OFF';
  // explicit OFF: a build folder configured with --cuda once must not stay a CUDA build without it
  // (Metal is left to ggml's default: ON on Apple)
  for (const backend of ['GGML_CUDA', 'GGML_VULKAN']) options.defines[backend] = 'OFF';
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--cuda') options.defines.GGML_CUDA = 'ON';
    else if (arg === '--cuda-arch') options.cudaArch = argv[++i];
    else if (arg === '--cublas') options.cublas = argv[++i];
    else if (arg === '--metal') options.defines.GGML_METAL = 'ON';
    else if (arg === '--vulkan') options.defines.GGML_VULKAN = 'ON';
    else if (arg === '--native') options.defines.GGML_NATIVE = 'ON';
    else if (arg === '--imatrix') options.imatrix = true;
    else if (arg === '--debug') options.debug = true;
    else if (arg === '--clean') options.clean = true;
    else if (arg === '--configure-only') options.configureOnly = true;
    else if (arg === '--out') options.out = argv[++i];
    else if (arg === '--jobs' || arg === '-j') options.jobs = Number(argv[++i]);
    else if (arg.startsWith('-D') && arg.includes('=')) {
      const [name, ...rest] = arg.slice(2).split('=');
      options.defines[name] = rest.join('=');
    } else if (arg === '--help' || arg === '-h') { console.log(usage); process.exit(0); }
    else throw new Error(`unknown option ${arg}\n${usage}`);
  }
  if (!Number.isInteger(options.jobs) || options.jobs < 1) throw new Error('--jobs needs a positive integer');
  if ((options.cudaArch !== undefined || options.cublas !== undefined) && options.defines.GGML_CUDA !== 'ON') throw new Error('--cuda-arch and --cublas go with --cuda');
  if (options.cudaArch !== undefined && !/^[0-9a-z;_-]+$/i.test(options.cudaArch)) throw new Error(`--cuda-arch needs CMake's CMAKE_CUDA_ARCHITECTURES syntax (e.g. 90 or 89;90), not "${options.cudaArch}"`);
  if (options.imatrix) options.defines.MATHNEURO_IMATRIX = 'ON';
  return options;
}

/** The patches the source build applies, in order: node-llama-cpp's, then the project's own. */
export function patchList() {
  const bundle = paths.bundlePath();
  const upstreamDir = path.join(path.dirname(bundle), 'patches');
  const ownDir = path.join(paths.root, 'native', 'patches');
  const list = (dir) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.diff') || f.endsWith('.patch')).sort().map((f) => path.join(dir, f)) : []);
  return [...list(upstreamDir), ...list(ownDir)];
}

export function patchedSourceDir() { return path.join(paths.root, 'deps', 'llama.cpp-patched'); }

const git = (cwd, args, opts = {}) => execFileSync('git', ['-c', 'advice.detachedHead=false', ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'], ...opts });

/**
 * A copy of deps/llama.cpp with every patch applied exactly once. A stamp of the patches' contents
 * decides whether the copy is current; when they change, the copy is reset to the pristine commit
 * and patched again (deps/llama.cpp itself stays pristine for the prebuilt build's headers).
 */
export function preparePatchedSource() {
  const pristine = ensureLlamaSource();
  const dir = patchedSourceDir();
  const patches = patchList();
  const stampPath = path.join(dir, '.mathneuro-patches');
  const hash = createHash('sha256');
  for (const p of patches) hash.update(path.basename(p)).update(readFileSync(p));
  const stamp = hash.digest('hex');
  if (!existsSync(path.join(dir, '.git'))) {
    log(`copying llama.cpp source to ${path.relative(paths.root, dir)}`);
    rmSync(dir, { recursive: true, force: true });
    execFileSync('git', ['clone', '--quiet', pristine, dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  } else if (existsSync(stampPath) && readFileSync(stampPath, 'utf8').trim() === stamp) {
    return dir;
  }
  const head = git(pristine, ['rev-parse', 'HEAD']).toString().trim();
  git(dir, ['fetch', '--quiet', pristine, head]);
  git(dir, ['checkout', '--quiet', '--force', head]);
  git(dir, ['clean', '--quiet', '-fd']);
  for (const p of patches) {
    try {
      git(dir, ['apply', '--whitespace=nowarn', p]);
    } catch (e) {
      throw new Error(`patch ${path.relative(paths.root, p)} does not apply to llama.cpp ${head.slice(0, 7)}: ${e.stderr?.toString().trim()}`);
    }
    log(`applied ${path.relative(paths.root, p)}`);
  }
  writeFileSync(stampPath, `${stamp}\n`);
  return dir;
}

function cmakeJs() {
  const pkg = require.resolve('cmake-js/package.json', { paths: [paths.root] });
  return path.join(path.dirname(pkg), 'bin', 'cmake-js');
}

/** The CUDA toolkit's root: CUDA_PATH / CUDAToolkit_ROOT, else the folder above the nvcc on PATH (links resolved). */
export function cudaToolkitRoot(env = process.env) {
  for (const v of [env.CUDAToolkit_ROOT, env.CUDA_PATH, env.CUDA_HOME]) if (v && existsSync(path.join(v, 'bin'))) return v;
  const r = spawnSync('sh', ['-c', 'command -v nvcc'], { encoding: 'utf8' });
  const nvcc = r.status === 0 ? r.stdout.trim() : '';
  if (!nvcc) return undefined;
  // /usr/local/bin/nvcc may be a wrapper script that execs the real one
  let real = realpathSync(nvcc);
  try {
    const m = /exec\s+(\S*\/nvcc)\b/.exec(readFileSync(real, 'utf8').slice(0, 4096));
    if (m && existsSync(m[1])) real = realpathSync(m[1]);
  } catch {}
  return path.dirname(path.dirname(real));
}

/** The GPU architecture to build for: nvidia-smi's compute capability of GPU 0 (9.0 -> 90), else the default. */
export function detectCudaArch() {
  const r = spawnSync('nvidia-smi', ['--query-gpu=compute_cap', '--format=csv,noheader'], { encoding: 'utf8' });
  const cap = r.status === 0 ? /^(\d+)\.(\d+)/.exec(r.stdout.trim()) : null;
  return cap ? { arch: `${cap[1]}${cap[2]}`, from: 'nvidia-smi' } : { arch: DEFAULT_CUDA_ARCH, from: 'default (no GPU seen by nvidia-smi)' };
}

/**
 * What ggml's CUDA backend needs before CMake runs, as defines: cuBLAS (headers and library; ggml's
 * CMakeLists links CUDA::cublas and fails at generate time without it) and the driver library libcuda
 * (CUDA::cuda_driver, only for its VMM pool: without libcuda or the toolkit's stubs, GGML_CUDA_NO_VMM=ON
 * builds without it; the runtime finds the driver on a GPU machine either way). Throws with what to install.
 */
export function cudaDefines(options, root = cudaToolkitRoot()) {
  if (!root) throw new Error('--cuda: no CUDA toolkit found (nvcc not on PATH; set CUDA_PATH)');
  const defines = { CMAKE_CUDA_ARCHITECTURES: options.cudaArch ?? detectCudaArch().arch, CMAKE_CUDA_COMPILER: path.join(root, 'bin', 'nvcc') };
  const libDirs = [path.join(root, 'lib64'), path.join(root, 'lib'), path.join(root, 'targets', `${process.arch === 'arm64' ? 'sbsa' : 'x86_64'}-linux`, 'lib')];
  const incDirs = [path.join(root, 'include'), path.join(root, 'targets', `${process.arch === 'arm64' ? 'sbsa' : 'x86_64'}-linux`, 'include')];
  const findLib = (dirs, name) => {
    for (const d of dirs) {
      if (!existsSync(d)) continue;
      const hit = readdirSync(d).filter((f) => f === `${name}.so` || f.startsWith(`${name}.so.`)).sort((a, b) => a.length - b.length)[0];
      if (hit) return path.join(d, hit);
    }
    return undefined;
  };
  if (options.cublas) {
    const dir = path.resolve(options.cublas);
    const lib = findLib([path.join(dir, 'lib'), path.join(dir, 'lib64')], 'libcublas');
    const libLt = findLib([path.join(dir, 'lib'), path.join(dir, 'lib64')], 'libcublasLt');
    if (!existsSync(path.join(dir, 'include', 'cublas_v2.h')) || !lib) throw new Error(`--cublas ${options.cublas}: needs include/cublas_v2.h and lib/libcublas.so*`);
    // the library by full path (a wheel has only libcublas.so.13, which find_library would not take)
    defines.CUDA_cublas_LIBRARY = lib;
    if (libLt) defines.CUDA_cublasLt_LIBRARY = libLt;
    defines.CMAKE_CUDA_FLAGS = `-I${path.join(dir, 'include')}`;
    defines.CMAKE_CXX_FLAGS = `-I${path.join(dir, 'include')}`;
    defines.CMAKE_SHARED_LINKER_FLAGS = `-Wl,-rpath,${path.dirname(lib)}`;
  } else if (!incDirs.some((d) => existsSync(path.join(d, 'cublas_v2.h'))) || !findLib(libDirs, 'libcublas')) {
    throw new Error(`--cuda: cuBLAS is missing from the CUDA toolkit at ${root} (no cublas_v2.h / libcublas.so): ggml's CUDA backend links it. ` +
      'Install the toolkit\'s cuBLAS (NVIDIA\'s libcublas-dev-<version> package), or pass --cublas DIR with a cuBLAS of the same major version (DIR/include, DIR/lib)');
  }
  const driver = findLib([...libDirs.map((d) => path.join(d, 'stubs')), '/usr/lib/x86_64-linux-gnu', '/usr/lib64', '/usr/lib/aarch64-linux-gnu'], 'libcuda');
  if (!driver && !('GGML_CUDA_NO_VMM' in options.defines)) defines.GGML_CUDA_NO_VMM = 'ON';
  return defines;
}

export function buildSource(options) {
  if (options.defines.GGML_CUDA === 'ON') {
    const extra = cudaDefines(options);
    for (const [k, v] of Object.entries(extra)) if (!(k in options.defines)) options.defines[k] = v;
    log(`CUDA: CMAKE_CUDA_ARCHITECTURES=${options.defines.CMAKE_CUDA_ARCHITECTURES}${options.defines.GGML_CUDA_NO_VMM === 'ON' ? ', GGML_CUDA_NO_VMM=ON (no libcuda.so or stubs here)' : ''}; ~140 .cu files: expect a long build (nice it, --jobs to taste)`);
  }
  const llamaDir = preparePatchedSource();
  const out = options.out ? path.resolve(options.out) : path.join(paths.root, 'build-source');
  if (options.clean) rmSync(out, { recursive: true, force: true });
  const defines = { ...options.defines, MATHNEURO_LLAMA_DIR: llamaDir };
  const args = [cmakeJs(), 'build', '--out', out, '--parallel', String(options.jobs), '--directory', paths.root];
  if (options.debug) args.push('--debug');
  for (const [name, value] of Object.entries(defines)) args.push(`--CD${name}=${value}`);
  const started = Date.now();
  if (options.configureOnly) {
    const c = spawnSync(process.execPath, [args[0], 'configure', ...args.slice(2).filter((a, i, all) => a !== '--parallel' && all[i - 1] !== '--parallel')], { cwd: paths.root, stdio: 'inherit' });
    if (c.status !== 0) throw new Error(`cmake-js configure failed with exit code ${c.status}`);
    log(`configured ${path.relative(paths.root, out) || out} in ${((Date.now() - started) / 1000).toFixed(1)} s (nothing compiled)`);
    return undefined;
  }
  log(`building llama.cpp and the shim from source (${options.jobs} jobs; ${Object.entries(options.defines).map(([k, v]) => `${k}=${v}`).join(' ')})`);
  let r = spawnSync(process.execPath, [...args, '--target', 'mathneuro'], { cwd: paths.root, stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`cmake-js failed with exit code ${r.status}`);
  if (options.imatrix) {
    r = spawnSync(process.execPath, [...args, '--target', 'llama-imatrix'], { cwd: paths.root, stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`building llama-imatrix failed with exit code ${r.status}`);
  }
  const addon = path.join(out, options.debug ? 'Debug' : 'Release', 'mathneuro.node');
  if (!existsSync(addon)) throw new Error(`the build finished but ${addon} is missing`);
  log(`built ${path.relative(paths.root, addon)} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return addon;
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname);
if (isMain) {
  try {
    buildSource(parseArgs(process.argv.slice(2)));
  } catch (e) {
    console.error(`mathneuro: source build failed: ${e.message}`);
    process.exit(1);
  }
}
