// The typed API of mathneuro, in the order data flows: calibration text -> statistics (collect) ->
// selection -> patch -> eval -> report, plus the one-call pipeline (boost, ablate, overlap) and the
// Ollama input/output helpers. Everything public is exported here; deep imports are not stable.

export { MathneuroError, asMathneuroError, type ErrorCode } from './errors.ts';
import { readGgufSync as readHeader, withMetadataDecoded, type GgufInfo, type ReadGgufOptions } from './gguf/reader.ts';
import { openModelSync as openModel, type GgufModel } from './gguf/model.ts';

// models and GGUF files
export { metaString, metaNumber, withMetadataDecoded, type GgufInfo, type GgufTensorInfo, type GgufMetadataEntry, type GgufValue, type GgufScalar, type ReadGgufOptions } from './gguf/reader.ts';
/** Parses and validates a GGUF header (see GgufInfo); every metadata value is decoded. */
export function readGgufSync(path: string, options: ReadGgufOptions = {}): GgufInfo { return withMetadataDecoded(readHeader(path, options)); }
export async function readGguf(path: string, options: ReadGgufOptions = {}): Promise<GgufInfo> { return readGgufSync(path, options); }
/** Opens a model: one file, or every shard of a split model, as one view; every metadata value is decoded. */
export function openModelSync(path: string): GgufModel { return withMetadataDecoded(openModel(path)); }
export { ggmlType, ggmlTypeByName, GGML_TYPE, type GgmlTypeInfo } from './gguf/types.ts';
export { splitPath, splitPrefix, modelFiles, type GgufModel } from './gguf/model.ts';
export { checkModel, validateModelFile, MODEL_CHECKS, type ModelCheckOptions } from './gguf/model-check.ts';
export { encodabilityCheck, screenTexts, type NamedText, type Unencodable } from './gguf/encodable.ts';
export { synthModel, synthShapes, type SynthOptions, type SynthResult, type SynthShape, type SynthShapeName, type SynthTypeName } from './synth.ts';
export { requantizeModel, fallbackType, isRequantizedTensor, REQUANTIZE_TYPES, type RequantizeOptions, type RequantizeResult, type RequantizedTensor, type RequantizeTypeName } from './quantize.ts';
// architectures: synth's tables, and what MathNeuro does with each tensor
export { resolveShape, archTables, ARCHITECTURES, type ArchTable, type ResolvedShape, type TensorRule, type TensorRole } from './synth.ts';
export { tensorRole, tensorRoles, tensorRoleSummary, tensorPattern, EXCLUSION_RULES, type TensorRoleInfo } from './gguf/tensor-roles.ts';

// calibration text
export {
  builtinSamples, builtinDatasetName, mathText, mathProblem, generalPassage, generalText, evaluateArithmetic,
  CALIBRATION_VERSION, CALIBRATION_VERSIONS, MATH_PROBLEM_KINDS, GENERAL_TOPICS,
  type BuiltinSetName, type BuiltinSetOptions, type BuiltinSample, type MathProblem, type MathProblemKind, type GeneralPassage, type GeneralTopicName,
} from './calibration/index.ts';

// stage 1: statistics (collect, merge, save, load)
export * from './stats/index.ts';

// stage 2: selection
export {
  planTensors, selectTensor, selectTensors, topKCount, validateTopK, layerOf, wandaColumnWeights, SelectionSummaryBuilder,
  SELECTION_METHODS, MIN_TOP_K, MAX_TOP_K,
  type SelectionMethod, type SelectOptions, type TensorSelection, type TensorPlan, type ScoredTensor, type SkippedTensor,
  type ColumnStatistics, type StatisticsSource, type SelectionSummary, type SelectionSummaryTensor,
} from './select/select.ts';
export { SelectionFile, SelectionFileWriter, isSelectionFile, SELECTION_FORMAT, SELECTION_VERSION, SELECTION_VERSIONS_READ, type SelectionFileIndex, type SelectionFileTensor, type SelectionSource } from './select/file.ts';
export { countBits, getBit, andNot } from './select/bits.ts';

// stage 3: patch
export { patchModel, unpatchModel, patchState, DEFAULT_SCALE, PATCH_VERSION, type PatchOptions, type PatchResult, type PatchProgress, type PatchedTensor, type UnpatchResult } from './patch/patch.ts';
export { realizedScaleMarkdown, type RealizedScaleRow } from './patch/realized.ts';

// stage 4: evaluation
export * from './eval/index.ts';

// stage 5: report
export * from './report/index.ts';

// the one-call pipeline
export {
  boost, overlapStudy, calibrationStats, checkPatched, resolveModel, modelFingerprint, statsCacheDir,
  DEFAULT_BOOST_TOP_K, DEFAULT_ABLATE_TOP_K, DEFAULT_BOOST_SCALE, DEFAULT_SAMPLES, DEFAULT_KL_PROMPTS, DEFAULT_KL_TOKENS,
  type BoostOptions, type BoostResult, type CalibrationChoice, type CalibrationOptions, type CalibratedStats, type CheckOptions, type CheckResult,
  type Intervention, type PipelineStage, type PipelineProgress, type OverlapStudy, type OverlapStudyOptions, type ResolvedModel, type StatsCacheOptions,
} from './pipeline.ts';

// Ollama
export {
  resolveOllamaModel, parseOllamaRef, ollamaModelsDir, isOllamaSpec, isInsideOllamaStore, assertOutsideOllamaStore, OLLAMA_MEDIA_TYPES,
  type OllamaModel, type OllamaModelRef, type OllamaLayer, type ResolveOllamaOptions,
} from './ollama.ts';
export { writeModelfile, modelfileText, modelfilePathFor, chatTemplateFamily, type ModelfileOptions, type ModelfileResult, type ChatTemplateFamily } from './modelfile.ts';
// tune: K and scale searched per model (src/tune)
export { tune, paretoFront, refinementPoints, TUNE_TOP_K, TUNE_SCALES, DEFAULT_KL_BUDGET, DEFAULT_NLL_MARGIN, type TuneOptions, type TuneResult, type TuneProgress, type ScoredCandidate } from './tune/tune.ts';
export { gsm8kTask, arithFixtureTask, withObjectiveFile, objectiveFromFile, registerTuneTask, tuneTask, tuneTaskNames, type TuneTask, type TuneData, type ObjectiveSample, type ConfirmResult } from './tune/tasks.ts';
export { TuneModel, InMemoryPatcher, Scorer, type Measurement } from './tune/model.ts';
