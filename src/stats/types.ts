// Statistics of the matmul inputs of every weight, as MathNeuro and llama.cpp's imatrix need them.

export interface WeightStats {
  /** GGUF tensor name of the weight, e.g. blk.0.attn_q.weight */
  name: string;
  /** input width: ne[0] of the weight */
  nIn: number;
  /** matrices in the tensor: experts for MoE weights (ne[2]), 1 for dense */
  nMat: number;
  /** sum over tokens of x_j^2; matrix m's columns at [m*nIn, (m+1)*nIn) */
  sum2: Float64Array;
  /** sum over samples of the L2 norm of column j of the sample's input matrix (MathNeuro's score factor) */
  normSum: Float64Array;
  /** tokens seen, per matrix (expert) */
  counts: Float64Array;
}

export interface ModelIdentity {
  /** base name of the model file */
  fileName: string;
  sizeBytes: number;
  /** sha256 of the GGUF header (metadata and tensor infos): identifies the model without hashing gigabytes */
  headerSha256: string;
}

export interface Stats {
  model: ModelIdentity;
  /** samples (texts) that contributed */
  samples: number;
  tokens: number;
  /** where the samples came from (file names, built-in set names), in order of merging */
  datasets: string[];
  weights: Map<string, WeightStats>;
}

export const STATS_FORMAT_VERSION = 1;
