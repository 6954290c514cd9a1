// ggml tensor types of the llama.cpp release this project builds against (v0.4.0, 80fb11a):
// id -> [name, block size in weights, block size in bytes, quantized]. Checked against
// ggml_get_type_traits in test/gguf/types.test.ts. Removed/deprecated ids are absent.
export const ggmlTypeTable: Record<number, readonly [string, number, number, boolean]> = {
  0: ['F32', 1, 4, false],
  1: ['F16', 1, 2, false],
  2: ['Q4_0', 32, 18, true],
  3: ['Q4_1', 32, 20, true],
  6: ['Q5_0', 32, 22, true],
  7: ['Q5_1', 32, 24, true],
  8: ['Q8_0', 32, 34, true],
  9: ['Q8_1', 32, 36, true],
  10: ['Q2_K', 256, 84, true],
  11: ['Q3_K', 256, 110, true],
  12: ['Q4_K', 256, 144, true],
  13: ['Q5_K', 256, 176, true],
  14: ['Q6_K', 256, 210, true],
  15: ['Q8_K', 256, 292, true],
  16: ['IQ2_XXS', 256, 66, true],
  17: ['IQ2_XS', 256, 74, true],
  18: ['IQ3_XXS', 256, 98, true],
  19: ['IQ1_S', 256, 50, true],
  20: ['IQ4_NL', 32, 18, true],
  21: ['IQ3_S', 256, 110, true],
  22: ['IQ2_S', 256, 82, true],
  23: ['IQ4_XS', 256, 136, true],
  24: ['I8', 1, 1, false],
  25: ['I16', 1, 2, false],
  26: ['I32', 1, 4, false],
  27: ['I64', 1, 8, false],
  28: ['F64', 1, 8, false],
  29: ['IQ1_M', 256, 56, true],
  30: ['BF16', 1, 2, false],
  34: ['TQ1_0', 256, 54, true],
  35: ['TQ2_0', 256, 66, true],
  39: ['MXFP4', 32, 17, true],
  40: ['NVFP4', 64, 36, true],
  41: ['Q1_0', 128, 18, true],
  42: ['Q2_0', 64, 18, true],
};

export const GGML_TYPE = {
  F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q8_1: 9, Q2_K: 10, Q3_K: 11, Q4_K: 12,
  Q5_K: 13, Q6_K: 14, Q8_K: 15, IQ2_XXS: 16, IQ2_XS: 17, IQ3_XXS: 18, IQ1_S: 19, IQ4_NL: 20, IQ3_S: 21,
  IQ2_S: 22, IQ4_XS: 23, I8: 24, I16: 25, I32: 26, I64: 27, F64: 28, IQ1_M: 29, BF16: 30, TQ1_0: 34,
  TQ2_0: 35, MXFP4: 39, NVFP4: 40, Q1_0: 41, Q2_0: 42,
} as const;

export interface GgmlTypeInfo { id: number; name: string; blockSize: number; typeSize: number; quantized: boolean }

export function ggmlType(id: number): GgmlTypeInfo | undefined {
  const row = ggmlTypeTable[id];
  if (!row) return undefined;
  return { id, name: row[0], blockSize: row[1], typeSize: row[2], quantized: row[3] };
}

export function ggmlTypeByName(name: string): GgmlTypeInfo | undefined {
  const upper = name.toUpperCase();
  for (const [id, row] of Object.entries(ggmlTypeTable)) if (row[0] === upper) return ggmlType(Number(id));
  return undefined;
}

/** GGUF metadata value types (gguf.h enum gguf_type). */
export const GGUF_VALUE = {
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8,
  ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12,
} as const;
