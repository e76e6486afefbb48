/**
 * qkd's typed API. Everything the CLI does is one call of these exports.
 */
export const VERSION = '0.1.0';

export { QkdError, type QkdErrorCode } from './errors.js';
export * from './tensor/index.js';
export { Module, type ForwardHook, type ForwardHookEvent } from './nn/module.js';
export { Linear, Embedding, RMSNorm, type WeightTransform } from './nn/layers.js';
export { LlamaModel, LlamaAttention, LlamaMlp, LlamaDecoderLayer, createLlama, initLlamaParameters, type ForwardOptions } from './models/llama.js';
export { llamaConfig, llamaParameterSpecs, headDim, LLAMA_DEFAULTS, type LlamaConfig } from './models/llama-config.js';
export { AdamW, clipGradNorm, gradNorm, type AdamWOptions, type AdamWState } from './optim/adamw.js';
export { loadDefaultCorpus, byteTokens, splitTokens, sampleBatch, sequentialBatches, DEFAULT_CORPUS_NAME } from './data/corpus.js';
export { runDemo, DEMO_CONFIG, type DemoOptions, type DemoResult, type DemoProgress } from './train/demo.js';
export { openSafetensors, writeSafetensors, SafetensorsFile, type SafetensorsEntry, type TensorToWrite, type TensorData } from './io/safetensors.js';
export { writeFileAtomic, writeBytesAtomic } from './io/atomic.js';
export { saveLlama, loadLlama, llamaConfigJson } from './models/llama-io.js';
export { loadCorpus } from './data/corpus.js';
export { ByteTokenizer, byteToUnicode, type Tokenizer, type EncodeOptions } from './data/tokenizer.js';
export { loadTokenizer } from './data/tokenizer-io.js';
export { train, validationLoss, type TrainOptions, type TrainResult, type StepProgress } from './train/trainer.js';
export { PRESETS, presetConfig, loadTrainConfig, parseTrainConfig, learningRate, trainConfigSchema, type TrainConfig, type TrainConfigInput } from './train/config.js';
export { evaluatePerplexity, type EvalResult } from './eval/perplexity.js';
export { generate, sampleToken, type GenerateOptions } from './models/generate.js';
export { trainBpe, BpeTokenizer, loadTokenizerJson, saveTokenizerJson, preTokenize, type TrainBpeOptions } from './data/bpe.js';
export { readLlama2cCheckpoint, readLlama2cHeader, streamLlama2cCheckpoint, writeLlama2cTensors, type Llama2cModelShape } from './io/llama2c.js';
export { loadLlama2c, writeLlama2cCheckpoint } from './models/llama2c-io.js';
export { Llama2cTokenizer, readLlama2cTokenizer, writeLlama2cTokenizer } from './data/llama2c-tokenizer.js';
export { openTensorSource, type TensorSource, type SourceTensor, type TensorSourceFormat } from './io/tensor-source.js';
export { openGguf, writeGguf, ggufToHfName } from './io/gguf.js';
export { auditModel } from './swan/audit.js';
export { profileModel, profileTensor, profileSettings, tensorLayerAndKind, DEFAULT_PROFILE_SETTINGS, type ProfileSource, type ProfileOptions, type ProfileProgress } from './swan/profile.js';
export { excessKurtosis, frobeniusSquared, reconstructionError, noiseAmplification, rowSteps, metricScores, compositeScore } from './swan/metrics.js';
export { spectralSummary, topSingularValues, type SpectrumSummary } from './swan/spectrum.js';
export { allocateBits, planCost, uniformPlan, parsePlanJson, type Allocation, type AllocationTensor, type AllocationOptions } from './swan/allocate.js';
export { auditAndPlan, planFromProfile, errorCollector, type PlanRequest, type PlannedAudit } from './swan/plan.js';
export type { AuditReport, TensorProfile, MetricScores, ProfileSettings } from './swan/types.js';
export { PLAN_BITS, packedBytes, groupsPerRow, type PlanBits, type QuantPlan, type QuantScheme } from './quant/scheme.js';
export { rtnQuantize, dequantize, quantizationError, type QuantizedTensor } from './quant/rtn.js';
export { gptqQuantize, HessianAccumulator, type GptqOptions } from './quant/gptq.js';
export { packCodes, unpackCodes } from './quant/packed.js';
export { quantizeLlama, QuantizedLlama, type QuantMethod, type QuantizeLlamaOptions } from './models/quantize-model.js';
export { saveQuantizedLlama, quantizedCheckpointBytes } from './models/quantized-io.js';
export { loadModelAny, modelDirectory } from './models/load-any.js';
export { quantizeModelFile, type QuantizeFileOptions, type QuantizeFileResult } from './compress/quantize.js';
export { renderAuditHtml, type AuditHtmlOptions } from './report/audit-html.js';
