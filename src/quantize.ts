// Whole-model requantization: a GGUF's weight matrices rewritten in another ggml type with ggml's own
// quantizer (the native codec), one tensor at a time. Used to make quantized copies of an F32 model
// (the trained fixture) that the rest of the project then treats like any downloaded quantized GGUF.
//
// What is quantized (like `llama-quantize --pure`, one type for every matrix):
// - every 2-D or 3-D weight of the blocks (attention, MLP, experts) and output.weight;
// - kept as stored: 1-D tensors (norms, biases), token_embd.weight (llama-quantize quantizes it to
//   the base type; it is kept here so the copies differ from the source only in the matrices the
//   surgery selects from; the embedding lookup does not need a quantized type to be fast), and the
//   MoE router (ffn_gate_inp), which llama-quantize also keeps.
// - a row length that is not a multiple of the type's block falls back as llama-quantize's
//   tensor_type_fallback does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0,
//   IQ* -> IQ4_NL), then to F16 when the fallback does not fit either.
// An importance matrix (the statistics' sums of squares divided by the token count, what llama.cpp's
// imatrix tool stores) weights the rounding of types that use one.
import { closeSync, existsSync, openSync } from 'node:fs';
import path from 'node:path';
import { MathneuroError } from './errors.ts';
import { readGgufSync, type GgufInfo, type GgufMetadataEntry, type GgufTensorInfo } from './gguf/reader.ts';
import { splitCount } from './gguf/model.ts';
import { GGML_TYPE, GGUF_VALUE, ggmlType, ggmlTypeByName } from './gguf/types.ts';
import { loadNative } from './native.ts';
import { codecTypeInfo, dequantize, quantize } from './core/codec.ts';
import { meanSquares, type StatisticsSource } from './select/select.ts';
import { readTensorBytes } from './core/tensor-io.ts';
import { writeGgufFile } from './gguf/writer.ts';

export const REQUANTIZE_TYPES = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k', 'iq4_nl', 'iq4_xs'] as const;
export type RequantizeTypeName = typeof REQUANTIZE_TYPES[number];

/** llama_ftype written as general.file_type (llama.h): the "pure" variant of each type. */
const FILE_TYPE: Record<RequantizeTypeName, number> = {
  f32: 0, f16: 1, q4_0: 2, q4_1: 3, q8_0: 7, q5_0: 8, q5_1: 9, q2_k: 10, q3_k: 11 /* Q3_K_S */, q4_k: 14 /* Q4_K_S */,
  q5_k: 16 /* Q5_K_S */, q6_k: 18, iq4_nl: 25, iq4_xs: 30, bf16: 32,
};

export interface RequantizeOptions {
  /** the GGUF to read */
  source: string;
  /** output path (must differ from source); written to `<out>.<pid>.tmp` and renamed */
  out: string;
  /** the type of the weight matrices */
  type: RequantizeTypeName | string;
  /** statistics whose sums of squares serve as importance matrix (llama.cpp imatrix) */
  imatrix?: StatisticsSource;
  /** overwrite an existing output (default false) */
  force?: boolean;
  onProgress?: (p: { tensorsDone: number; tensorCount: number; name: string }) => void;
}

export interface RequantizedTensor {
  name: string;
  shape: number[];
  from: string;
  to: string;
  /** the requested type did not fit the row length; `to` is llama-quantize's fallback */
  fallback: boolean;
  /** quantized with an importance matrix */
  imatrix: boolean;
}

export interface RequantizeResult {
  path: string;
  bytes: number;
  sourceBytes: number;
  type: string;
  fileType: number;
  tensors: RequantizedTensor[];
  /** tensor count per stored type, e.g. { Q4_K: 4, Q5_0: 24, F32: 10 } */
  typeCounts: Record<string, number>;
}

const FALLBACK: Record<number, number> = {
  [GGML_TYPE.Q4_K]: GGML_TYPE.Q5_0, [GGML_TYPE.Q5_K]: GGML_TYPE.Q5_1, [GGML_TYPE.Q6_K]: GGML_TYPE.Q8_0,
  [GGML_TYPE.Q2_K]: GGML_TYPE.Q4_0, [GGML_TYPE.Q3_K]: GGML_TYPE.Q4_0, [GGML_TYPE.IQ4_XS]: GGML_TYPE.IQ4_NL,
};

/** The type a row of `rowLength` values gets when `type` is asked for (llama-quantize's tensor_type_fallback). */
export function fallbackType(type: number, rowLength: number): number {
  const block = ggmlType(type)!.blockSize;
  if (rowLength % block === 0) return type;
  const f = FALLBACK[type] ?? type;
  return rowLength % ggmlType(f)!.blockSize === 0 ? f : GGML_TYPE.F16;
}

/** Whether requantizeModel rewrites this tensor (see the file comment). */
export function isRequantizedTensor(t: GgufTensorInfo): boolean {
  if (t.shape.length < 2) return false;
  if (t.name === 'output.weight') return true;
  if (!t.name.startsWith('blk.') || !t.name.endsWith('.weight')) return false;
  return !/(^|\.)(ffn_gate_inp|ffn_gate_inp_shexp)\.weight$|_norm\.weight$/.test(t.name);
}

function importanceRow(stats: StatisticsSource | undefined, t: GgufTensorInfo, matrix: number): Float32Array | undefined {
  const s = stats?.weights.get(t.name);
  if (!s) return undefined;
  const nMat = t.shape[2] ?? 1;
  if (s.nIn !== t.shape[0] || s.nMat !== nMat) throw new MathneuroError('ESTATS', `importance matrix of ${t.name} is for ${s.nIn} inputs x ${s.nMat} matrices, the model has ${t.shape[0]} x ${nMat}`);
  const out = Float32Array.from(meanSquares(s, matrix));
  // an expert that saw no tokens: no information, quantize it unweighted
  return out.some((v) => v > 0) ? out : undefined;
}

function toFloat(t: GgufTensorInfo, bytes: Uint8Array): Float32Array {
  if (t.type === GGML_TYPE.F32) return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const info = codecTypeInfo(t.type);
  if (!info?.canDequantize) throw new MathneuroError('EQUANT', `${t.name}: ggml cannot dequantize ${t.typeName}`);
  return dequantize(t.type, bytes, t.numel);
}

/**
 * Writes a copy of `source` whose weight matrices are stored in `type`, quantized by ggml from the
 * source's (dequantized) values; metadata is the source's with general.file_type and
 * general.quantization_version set. The output is validated by the GGUF reader before it is renamed.
 */
export async function requantizeModel(options: RequantizeOptions): Promise<RequantizeResult> {
  const typeName = String(options.type).toLowerCase() as RequantizeTypeName;
  if (!(REQUANTIZE_TYPES as readonly string[]).includes(typeName)) throw new MathneuroError('EUSAGE', `unknown type "${options.type}" (${REQUANTIZE_TYPES.join(', ')})`);
  const target = ggmlTypeByName(typeName)!.id;
  const src = path.resolve(options.source);
  const out = path.resolve(options.out);
  if (src === out) throw new MathneuroError('EUSAGE', 'the output must differ from the source');
  if (!existsSync(src)) throw new MathneuroError('ENOENT', `model not found: ${src}`);
  if (existsSync(out) && !options.force) throw new MathneuroError('EEXIST', `${out} exists (use --force to overwrite)`);
  const info: GgufInfo = readGgufSync(src);
  if (splitCount(info) > 1) throw new MathneuroError('EUSAGE', `${src} is a model in ${splitCount(info)} shards: quantize reads single-file models (merge it first: llama-gguf-split --merge)`);

  const plan = info.tensors.map((t) => {
    const requant = isRequantizedTensor(t);
    const to = requant ? fallbackType(target, t.shape[0]) : t.type;
    const usesIm = requant && !!options.imatrix?.weights.has(t.name) && ggmlType(to)!.quantized;
    if (requant && codecTypeInfo(to)?.requiresImatrix && !usesIm) throw new MathneuroError('EQUANT', `${ggmlType(to)!.name} needs an importance matrix: ${t.name} has none (pass --imatrix statistics collected on this model)`);
    return { t, requant, to, fallback: requant && to !== target, usesIm };
  });

  const metadata: GgufMetadataEntry[] = info.metadataEntries
    .filter((e) => e.key !== 'general.file_type' && e.key !== 'general.quantization_version' && e.key !== 'general.alignment')
    .map((e) => e);
  metadata.push({ key: 'general.quantization_version', type: GGUF_VALUE.UINT32, value: 2 });
  metadata.push({ key: 'general.file_type', type: GGUF_VALUE.UINT32, value: FILE_TYPE[typeName] });
  const alignmentValue = info.metadata.get('general.alignment');
  if (alignmentValue !== undefined) metadata.push(info.metadataEntries.find((e) => e.key === 'general.alignment')!);

  const native = loadNative();
  const { header, tensors: offsets, alignment } = native.ggufBuildHeader({ metadata, tensors: plan.map((p) => ({ name: p.t.name, type: p.to, shape: p.t.shape })) });

  const sfd = openSync(src, 'r');
  try {
    await writeGgufFile(out, header, offsets, (put) => {
      for (let i = 0; i < plan.length; i++) {
        const { t, requant, to, usesIm } = plan[i];
        options.onProgress?.({ tensorsDone: i, tensorCount: plan.length, name: t.name });
        const raw = readTensorBytes(sfd, t);
        let bytes: Uint8Array;
        if (!requant || (to === t.type && !usesIm)) {
          bytes = raw;
        } else {
          const values = toFloat(t, raw);
          const nIn = t.shape[0];
          const perMatrix = nIn * t.shape[1];
          const matrices = t.shape[2] ?? 1;
          if (usesIm) {
            const parts: Uint8Array[] = [];
            for (let m = 0; m < matrices; m++) parts.push(quantize(to, values.subarray(m * perMatrix, (m + 1) * perMatrix), nIn, importanceRow(options.imatrix, t, m)));
            bytes = Buffer.concat(parts);
          } else {
            bytes = quantize(to, values, nIn);
          }
        }
        if (bytes.length !== offsets[i].byteSize) throw new MathneuroError('EQUANT', `${t.name}: ${bytes.length} bytes, the header says ${offsets[i].byteSize}`);
        put(i, bytes);
      }
    }, {
      alignment,
      // validate before the rename: the reader checks every count, offset and size against the file
      validate: (tmp) => {
        const written = readGgufSync(tmp);
        if (written.tensors.length !== plan.length) throw new MathneuroError('EBADGGUF', `${tmp}: ${written.tensors.length} tensors written, ${plan.length} planned`);
        plan.forEach((p, i) => {
          const w = written.tensors[i];
          if (w.name !== p.t.name || w.type !== p.to || w.shape.join('x') !== p.t.shape.join('x')) throw new MathneuroError('EBADGGUF', `${tmp}: tensor ${i} is ${w.name} ${w.typeName} ${w.shape.join('x')}, planned ${p.t.name} ${ggmlType(p.to)!.name} ${p.t.shape.join('x')}`);
        });
      },
    });
  } finally {
    closeSync(sfd);
  }
  const result = readGgufSync(out);
  const typeCounts: Record<string, number> = {};
  for (const t of result.tensors) typeCounts[t.typeName] = (typeCounts[t.typeName] ?? 0) + 1;
  return {
    path: out, bytes: result.fileSize, sourceBytes: info.fileSize, type: ggmlType(target)!.name, fileType: FILE_TYPE[typeName], typeCounts,
    tensors: plan.map((p) => ({ name: p.t.name, shape: p.t.shape, from: p.t.typeName, to: ggmlType(p.to)!.name, fallback: p.fallback, imatrix: p.usesIm })),
  };
}
