/**
 * The paged KV cache (vLLM's PagedAttention, Kwon et al. 2023): per layer one pool of fixed-size blocks
 * of positions for K and one for V (kernels/ops/paged_kv.ts), and the host's allocator of those blocks.
 * A sequence holds a list of blocks (its block table); sequences that share a prompt share its full
 * blocks, counted by reference, and full blocks stay cached for later prompts with the same start after
 * their last holder lets go (block_pool.ts).
 *
 * The cache is sized once from a byte budget; `--max-model-len` is capped so that one sequence always
 * fits, so a Llama-3.1 config with 131,072 positions never allocates them all up front.
 */
import { createStorage, type Gpu } from "../../kernels/core/mod.ts";
import { type KvType, type PagedLayout, poolBytesPerPosition } from "../../kernels/ops/mod.ts";
import type { ModelConfig } from "../model/mod.ts";
import { BlockPool } from "./block_pool.ts";

/** Positions per block (vLLM's default). */
export const BLOCK_SIZE = 16;

/** What sizes the cache. */
export interface KvSizing {
  /** bytes, or a fraction in (0, 1] of what maxNumSeqs sequences of maxModelLen positions would need */
  memory: { bytes: number } | { fraction: number } | null;
  /** requested context per sequence; null means the model's */
  maxModelLen: number | null;
  maxNumSeqs: number;
  kvType: KvType;
}

/** The cache's resolved shape. */
export interface KvShape {
  numBlocks: number;
  blockSize: number;
  /** positions per sequence (≤ numBlocks · blockSize) */
  maxModelLen: number;
  kvType: KvType;
  /** bytes of the whole cache */
  bytes: number;
}

/** Default byte budget when none is given: GPUs do not report free memory through WebGPU. */
const DEFAULT_BYTES = { gpu: 8 * 2 ** 30, cpu: 512 * 2 ** 20 };

/** Bytes one position takes over all layers (K and V). */
export function bytesPerPosition(c: ModelConfig, kvType: KvType): number {
  return 2 * c.nLayers * poolBytesPerPosition(kvType, c.nKvHeads, c.headDim);
}

/**
 * Resolves the cache's shape: the budget (or the default: the worst case, at most 8 GiB on a GPU and
 * 512 MiB on a CPU adapter), no more than one layer's pool fits a binding, and maxModelLen capped by the
 * model's context and by the cache.
 * @param log told when maxModelLen is capped
 */
export function sizeKvCache(
  gpu: Gpu,
  c: ModelConfig,
  s: KvSizing,
  log: (msg: string) => void = () => {},
): KvShape {
  const perPos = bytesPerPosition(c, s.kvType);
  const wantLen = Math.min(s.maxModelLen ?? c.seqLen, c.seqLen);
  if (s.maxModelLen !== null && s.maxModelLen > c.seqLen) {
    log(
      `[engine] --max-model-len ${s.maxModelLen} exceeds the model's context ${c.seqLen}; using ${c.seqLen}`,
    );
  }
  const worst = perPos * s.maxNumSeqs * wantLen;
  let bytes: number;
  if (s.memory === null) bytes = Math.min(worst, gpu.isCpu ? DEFAULT_BYTES.cpu : DEFAULT_BYTES.gpu);
  else if ("bytes" in s.memory) bytes = s.memory.bytes;
  else bytes = worst * s.memory.fraction;
  const blockBytes = perPos * BLOCK_SIZE;
  const layerBlockBytes = blockBytes / (2 * c.nLayers);
  const bindingBlocks = Math.floor(gpu.maxBindingBytes / layerBlockBytes);
  const numBlocks = Math.min(Math.floor(bytes / blockBytes), bindingBlocks);
  if (numBlocks < 1) {
    throw new Error(
      `Cannot size the KV cache: ${bytes} bytes hold no block of ${BLOCK_SIZE} positions (${blockBytes} bytes)`,
    );
  }
  const maxModelLen = Math.min(wantLen, numBlocks * BLOCK_SIZE);
  if (maxModelLen < wantLen) {
    log(
      `[engine] max model length capped at ${maxModelLen} positions so one sequence fits the KV cache ` +
        `(${numBlocks} blocks of ${BLOCK_SIZE}); raise --kv-cache-memory for more`,
    );
  }
  return { numBlocks, blockSize: BLOCK_SIZE, maxModelLen, kvType: s.kvType, bytes: numBlocks * blockBytes };
}

/** The pools on the GPU, and their block allocator (block_pool.ts). */
export class KvCache extends BlockPool {
  readonly shape: KvShape;
  readonly kPool: GPUBuffer[];
  readonly vPool: GPUBuffer[];
  /** What the cache was built for: another model may share it only with the same layout. */
  readonly key: string;

  constructor(gpu: Gpu, c: ModelConfig, shape: KvShape) {
    super(shape.numBlocks);
    this.shape = shape;
    this.key = kvKey(c, shape.kvType);
    const layerBytes = shape.numBlocks * shape.blockSize *
      poolBytesPerPosition(shape.kvType, c.nKvHeads, c.headDim);
    this.kPool = Array.from({ length: c.nLayers }, (_, l) => createStorage(gpu, layerBytes, `kPool ${l}`));
    this.vPool = Array.from({ length: c.nLayers }, (_, l) => createStorage(gpu, layerBytes, `vPool ${l}`));
  }

  /** The layout the kernels bind, for sequences of up to maxModelLen positions. */
  layout(): PagedLayout {
    const { blockSize, maxModelLen, kvType } = this.shape;
    return { blockSize, maxBlocks: Math.ceil(maxModelLen / blockSize), kvType };
  }

  /** Blocks that cover `positions` positions. */
  blocksFor(positions: number): number {
    return Math.ceil(positions / this.shape.blockSize);
  }

  destroy(): void {
    [...this.kPool, ...this.vPool].forEach((b) => b.destroy());
  }
}

/** Models with equal keys can share one cache (same layers, KV width and element type). */
export function kvKey(c: ModelConfig, kvType: KvType): string {
  return `${c.nLayers}:${c.nKvHeads}:${c.headDim}:${kvType}`;
}
