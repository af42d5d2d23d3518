/**
 * A small safetensors reader and writer (format: https://huggingface.co/docs/safetensors).
 *
 * File layout: u64 LE header length N, N bytes of UTF-8 JSON, then the data section. The JSON maps each tensor
 * name to `{ dtype, shape, data_offsets: [begin, end] }` (offsets relative to the data section) plus an optional
 * `__metadata__` string map. Tensors are read lazily with positional reads: checkpoints run to many GB and must
 * never be read whole into memory.
 */

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
