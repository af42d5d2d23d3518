/**
 * A Hugging Face checkpoint folder as one name → tensor view: a single `model.safetensors`, or shards listed
 * in `model.safetensors.index.json`.
 */
import { basename, join } from "node:path";
import { openSafetensors, type SafetensorsFile, type TensorEntry } from "./safetensors.ts";

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
