/**
 * A small safetensors reader and writer (format: https://huggingface.co/docs/safetensors).
 *
 * File layout: u64 LE header length N, N bytes of UTF-8 JSON, then the data section. The JSON maps each tensor
 * name to `{ dtype, shape, data_offsets: [begin, end] }` (offsets relative to the data section) plus an optional
 * `__metadata__` string map. Tensors are read lazily with positional reads: checkpoints run to many GB and must
 * never be read whole into memory.
 */

import { basename, join } from "node:path";

/** Element types we accept; others (F64, BOOL, F8_*) are rejected when the file is opened. */
export type Dtype = "F32" | "F16" | "BF16" | "I32" | "U8" | "I8" | "I64" | "U32";

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Readonly<Record<Dtype, number>> = Object.freeze({
  F32: 4,
  F16: 2,
  BF16: 2,
  I32: 4,
  U8: 1,
  I8: 1,
  I64: 8,
  U32: 4,
});

/** One tensor's header entry, already validated against the file. */
export interface TensorEntry {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  /** Absolute byte offset of the first byte in the file (8 + header length + data_offsets[0]). */
  readonly start: number;
  readonly byteLength: number;
}

/** Safety cap on the JSON header, as the reference implementation has: a bigger one means a corrupt file. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** An open safetensors file: the validated header plus lazy positional reads of tensor bytes. */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly tensors: ReadonlyMap<string, TensorEntry>;
  #file: Deno.FsFile;
  // FsFile has one cursor: seek + read pairs must not interleave, so reads run one after another.
  #queue: Promise<unknown> = Promise.resolve();

  constructor(
    path: string,
    file: Deno.FsFile,
    metadata: Record<string, string>,
    tensors: Map<string, TensorEntry>,
  ) {
    this.path = path;
    this.#file = file;
    this.metadata = Object.freeze(metadata);
    this.tensors = tensors;
  }

  /** Returns the entry for `name` or throws an error naming the tensor and file. */
  entry(name: string): TensorEntry {
    const e = this.tensors.get(name);
    if (!e) throw new Error(`Cannot load tensor "${name}" from "${this.path}": not found in the file`);
    return e;
  }

  /** Reads one tensor's raw little-endian bytes into a fresh, 8-byte-aligned buffer. */
  async readTensor(name: string): Promise<Uint8Array> {
    const e = this.entry(name);
    const run = this.#queue.then(() => readAt(this.#file, e.start, e.byteLength, this.path, name));
    this.#queue = run.catch(() => {});
    return await run;
  }

  /** Closes the file handle. */
  close(): void {
    this.#file.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

async function readAt(file: Deno.FsFile, start: number, length: number, path: string, name: string) {
  const out = new Uint8Array(length);
  await file.seek(start, Deno.SeekMode.Start);
  // read() may return fewer bytes than asked, so keep going until the buffer is full.
  for (let got = 0; got < length;) {
    const n = await file.read(out.subarray(got));
    if (n === null || n === 0) {
      throw new Error(
        `Cannot load tensor "${name}" from "${path}": file ended after ${got} of ${length} bytes`,
      );
    }
    got += n;
  }
  return out;
}

/**
 * Opens a safetensors file and validates its whole header (dtypes, shapes, offsets) without reading tensor data.
 *
 * @param path the `.safetensors` file
 * @returns the open file; call `close()` (or `using`) when done
 * @example
 * ```ts ignore
 * using st = await openSafetensors("model.safetensors");
 * const bytes = await st.readTensor("model.norm.weight");
 * ```
 */
export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  const file = await Deno.open(path, { read: true });
  try {
    const fileSize = (await file.stat()).size;
    const where = `"${path}"`;
    if (fileSize < 8) throw new Error(`Cannot open safetensors file ${where}: only ${fileSize} bytes`);
    const lenBytes = await readAt(file, 0, 8, path, "<header length>");
    const headerLen = new DataView(lenBytes.buffer).getBigUint64(0, true);
    if (headerLen > BigInt(Math.min(fileSize - 8, MAX_HEADER_BYTES)) || headerLen < 2n) {
      throw new Error(
        `Cannot open safetensors file ${where}: header length ${headerLen} does not fit the file size ${fileSize}`,
      );
    }
    const n = Number(headerLen);
    const json = parseHeaderJson(await readAt(file, 8, n, path, "<header>"), path);
    const { metadata, tensors } = parseHeader(json, path, 8 + n, fileSize);
    return new SafetensorsFile(path, file, metadata, tensors);
  } catch (err) {
    file.close();
    throw err;
  }
}

function parseHeaderJson(bytes: Uint8Array, path: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    throw new Error(
      `Cannot open safetensors file "${path}": header is not valid JSON: ${(err as Error).message}`,
    );
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error(`Cannot open safetensors file "${path}": header is not a JSON object`);
  }
  return json as Record<string, unknown>;
}

function parseHeader(json: Record<string, unknown>, path: string, dataStart: number, fileSize: number) {
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorEntry>();
  for (const [name, raw] of Object.entries(json)) {
    if (name === "__metadata__") {
      for (const [k, v] of Object.entries((raw ?? {}) as Record<string, unknown>)) {
        if (typeof v !== "string") {
          throw new Error(
            `Cannot open safetensors file "${path}": __metadata__ value "${k}" is not a string`,
          );
        }
        metadata[k] = v;
      }
      continue;
    }
    const e = parseEntry(name, raw, `Cannot load tensor "${name}" from "${path}"`, dataStart, fileSize);
    tensors.set(name, e);
  }
  // Overlapping ranges would alias two tensors' bytes: a corrupt or hostile file. Gaps are harmless.
  const sorted = [...tensors.values()].sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    if (sorted[i].start < prev.start + prev.byteLength) {
      throw new Error(
        `Cannot load tensor "${sorted[i].name}" from "${path}": data_offsets overlap tensor "${prev.name}"`,
      );
    }
  }
  return { metadata, tensors };
}

function parseEntry(
  name: string,
  raw: unknown,
  what: string,
  dataStart: number,
  fileSize: number,
): TensorEntry {
  const r = (raw ?? {}) as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof r.dtype !== "string" || !Object.hasOwn(DTYPE_BYTES, r.dtype)) {
    throw new Error(`${what}: unsupported dtype ${JSON.stringify(r.dtype)} (expected one of ${dtypeList()})`);
  }
  const shape = r.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new Error(`${what}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  }
  const offs = r.data_offsets;
  if (
    !Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0) ||
    offs[0] > offs[1]
  ) {
    throw new Error(`${what}: data_offsets ${JSON.stringify(offs)} are not a range [begin, end]`);
  }
  const [begin, end] = offs as [number, number];
  if (dataStart + end > fileSize) {
    throw new Error(
      `${what}: data_offsets [${begin}, ${end}] exceed the file size ${fileSize} ` +
        `(data section is ${fileSize - dataStart} bytes)`,
    );
  }
  const dtype = r.dtype as Dtype;
  const expected = shape.reduce((a: number, d: number) => a * d, 1) * DTYPE_BYTES[dtype];
  if (end - begin !== expected) {
    throw new Error(
      `${what}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes, ` +
        `but shape [${shape.join(", ")}] of ${dtype} needs ${expected}`,
    );
  }
  const start = dataStart + begin;
  return Object.freeze({ name, dtype, shape: Object.freeze([...shape]), start, byteLength: expected });
}

function dtypeList(): string {
  return Object.keys(DTYPE_BYTES).join(", ");
}

/**
 * Decodes F32, F16 or BF16 little-endian bytes into a fresh Float32Array (hosts are little-endian).
 *
 * @param bytes the raw tensor bytes, as `readTensor` returns them
 * @param dtype their element type
 * @returns the values as f32; BF16 and F16 widen exactly
 */
export function toFloat32(bytes: Uint8Array, dtype: Dtype): Float32Array {
  const size = DTYPE_BYTES[dtype];
  if (bytes.byteLength % size !== 0) {
    throw new Error(`Cannot convert ${dtype} bytes to f32: length ${bytes.byteLength}`);
  }
  const out = new Float32Array(bytes.byteLength / size);
  if (dtype === "F32") {
    new Uint8Array(out.buffer).set(bytes); // a byte copy works at any alignment
    return out;
  }
  if (dtype !== "F16" && dtype !== "BF16") {
    throw new Error(`Cannot convert ${dtype} to f32: not a float dtype`);
  }
  const halves = bytes.byteOffset % 2 === 0
    ? new Uint16Array(bytes.buffer, bytes.byteOffset, out.length)
    : new Uint16Array(bytes.slice().buffer);
  const bits = new Uint32Array(out.buffer);
  if (dtype === "BF16") {
    // BF16 is the top half of an f32.
    for (let i = 0; i < out.length; i++) bits[i] = halves[i] << 16;
  } else {
    const table = f16Table();
    for (let i = 0; i < out.length; i++) bits[i] = table[halves[i]];
  }
  return out;
}

/**
 * Encodes f32 values as F32, F16 or BF16 little-endian bytes, rounding to nearest, ties to even (as PyTorch's
 * `.to(torch.bfloat16)` does).
 *
 * @param values the values
 * @param dtype the target float type
 * @returns a fresh byte array ready for `writeSafetensors`
 */
export function fromFloat32(values: Float32Array, dtype: "F32" | "F16" | "BF16"): Uint8Array {
  if (dtype === "F32") return new Uint8Array(values.slice().buffer);
  // The engine's Float16Array conversion is IEEE roundTiesToEven, overflow to ±inf included.
  if (dtype === "F16") return new Uint8Array(new Float16Array(values).buffer);
  const bits = new Uint32Array(values.slice().buffer);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < out.length; i++) {
    const u = bits[i];
    // NaN keeps its sign and stays quiet; others add 0x7fff plus the kept LSB so that ties go to even.
    out[i] = (u & 0x7fffffff) > 0x7f800000 ? (u >>> 16) | 0x40 : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  }
  return new Uint8Array(out.buffer);
}

/**
 * Maps an IEEE binary16 bit pattern to the bit pattern of the equal f32, subnormals, ±inf and NaN payloads
 * included.
 *
 * @param h a 16-bit pattern
 * @returns the f32 bit pattern as an unsigned 32-bit integer
 */
export function halfBitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  let exp = (h >> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp === 0) {
    if (mant === 0) return sign >>> 0;
    // Subnormal: shift until the leading 1 reaches the implicit bit, lowering the exponent each step.
    exp = 1;
    while ((mant & 0x400) === 0) {
      mant <<= 1;
      exp--;
    }
    mant &= 0x3ff;
  }
  // Rebias the exponent from 15 to 127.
  return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
}

let f16Bits: Uint32Array | null = null;

/** 256 KiB table of all 65536 conversions, built on first use (not at import). */
function f16Table(): Uint32Array {
  if (!f16Bits) {
    f16Bits = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Bits[h] = halfBitsToF32Bits(h);
  }
  return f16Bits;
}

/** One tensor to write: `data` holds its little-endian bytes, row-major. */
export interface TensorToWrite {
  name: string;
  dtype: Dtype;
  shape: readonly number[];
  data: Uint8Array;
}

/**
 * Writes a safetensors file: tensors are laid out in the given order, and the JSON header is padded with spaces
 * so the data section starts on an 8-byte boundary, as the format requires.
 *
 * @param path the file to create or overwrite
 * @param tensors the tensors, each with bytes matching product(shape) × dtype size
 * @param metadata optional `__metadata__` string map
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): Promise<void> {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const what = `Cannot write tensor "${t.name}" to "${path}"`;
    if (t.name in header) throw new Error(`${what}: duplicate name`);
    if (!Object.hasOwn(DTYPE_BYTES, t.dtype)) throw new Error(`${what}: unsupported dtype "${t.dtype}"`);
    const need = t.shape.reduce((a, d) => a * d, 1) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== need) {
      throw new Error(
        `${what}: shape [${t.shape.join(", ")}] of ${t.dtype} needs ${need} bytes, got ${t.data.byteLength}`,
      );
    }
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + need] };
    offset += need;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = new Uint8Array(Math.ceil(json.length / 8) * 8).fill(0x20);
  padded.set(json);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(padded.length), true);
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  for (const chunk of [prefix, padded, ...tensors.map((t) => t.data)]) await writeAll(file, chunk);
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
}

/** A checkpoint's tensors across one or more safetensors files, looked up by name. */
export interface SafetensorsModel {
  readonly dir: string;
  /** The open files: one, or one per shard. */
  readonly files: readonly SafetensorsFile[];
  /** Every tensor name → the file that holds it and its entry. */
  readonly tensors: ReadonlyMap<string, { file: SafetensorsFile; entry: TensorEntry }>;
  /** Reads one tensor's raw bytes; throws naming the tensor when absent. */
  readTensor(name: string): Promise<Uint8Array>;
  close(): void;
}

/**
 * Opens the weights of a Hugging Face model folder: `model.safetensors`, or the shards listed in
 * `model.safetensors.index.json` (`weight_map`: tensor name → shard file).
 *
 * @param dir the model folder
 * @returns one name → (file, entry) view over all shards; call `close()` when done
 * @example
 * ```ts ignore
 * const model = await openSafetensorsModel("../shared/models/stories260K");
 * const norm = toFloat32(await model.readTensor("model.norm.weight"), "F32");
 * model.close();
 * ```
 */
export async function openSafetensorsModel(dir: string): Promise<SafetensorsModel> {
  const files: SafetensorsFile[] = [];
  const tensors = new Map<string, { file: SafetensorsFile; entry: TensorEntry }>();
  try {
    if (await isFile(join(dir, "model.safetensors"))) {
      const f = await openSafetensors(join(dir, "model.safetensors"));
      files.push(f);
      for (const entry of f.tensors.values()) tensors.set(entry.name, { file: f, entry });
    } else if (await isFile(join(dir, INDEX_FILE))) {
      const byShard = new Map<string, SafetensorsFile>();
      for (const [name, shard] of await readWeightMap(join(dir, INDEX_FILE))) {
        let f = byShard.get(shard);
        if (!f) {
          f = await openSafetensors(join(dir, shard));
          files.push(f);
          byShard.set(shard, f);
        }
        const entry = f.tensors.get(name);
        if (!entry) {
          throw new Error(`Cannot load tensor "${name}" from "${f.path}": ${INDEX_FILE} lists it there`);
        }
        tensors.set(name, { file: f, entry });
      }
    } else {
      throw new Error(`Cannot find weights in "${dir}": expected model.safetensors or ${INDEX_FILE}`);
    }
  } catch (err) {
    for (const f of files) f.close();
    throw err;
  }
  return {
    dir,
    files,
    tensors,
    readTensor(name) {
      const hit = tensors.get(name);
      if (!hit) {
        return Promise.reject(new Error(`Cannot load tensor "${name}" from "${dir}": not in the checkpoint`));
      }
      return hit.file.readTensor(name);
    },
    close() {
      for (const f of files) f.close();
    },
  };
}

const INDEX_FILE = "model.safetensors.index.json";

async function readWeightMap(path: string): Promise<[string, string][]> {
  let index: { weight_map?: unknown };
  try {
    index = JSON.parse(await Deno.readTextFile(path));
  } catch (err) {
    throw new Error(`Cannot read shard index "${path}": ${(err as Error).message}`);
  }
  const map = index?.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    throw new Error(`Cannot read shard index "${path}": weight_map is not an object`);
  }
  const entries = Object.entries(map as Record<string, unknown>);
  for (const [name, shard] of entries) {
    // A shard name is a plain file in the model folder; a path could read files outside it.
    if (typeof shard !== "string" || shard !== basename(shard) || shard === ".." || shard === "") {
      throw new Error(
        `Cannot read shard index "${path}": weight_map["${name}"] is not a file name in the folder`,
      );
    }
  }
  return entries as [string, string][];
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
