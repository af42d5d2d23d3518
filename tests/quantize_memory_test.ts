/**
 * `--calib-gpu-memory` end to end through the quantize task: it moves calibration windows between the GPU and
 * host memory (the pipeline reports how many stayed on the GPU) and changes no byte of the artifact's
 * weights, since every window is summed in the same order wherever it lives (hidden_windows.ts).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { withGpuFixtures } from "./_gpu.ts";
import { runQuantize } from "../cli/quantize.ts";
import { parseQuantizeRequest } from "../inference/quantize/options.ts";

Deno.test("--calib-gpu-memory moves calibration windows to host memory and changes no weight byte", () =>
  withGpuFixtures({
    model: "models/stories260K",
    calib: "data/calib/tinystories_calib_second_half.txt",
  }, async (gpu, { model, calib }, tmp) => {
    const request = parseQuantizeRequest({
      method: "leanquant-aff",
      bits: 3,
      calibration: { file: calib, nsamples: 6, seqlen: 64 },
    });
    const windowBytes = 64 * 64 * 4; // seqlen × stories260K's dim × f32
    const run = (name: string, calibGpuMemory?: number) =>
      runQuantize(
        {
          model,
          out: join(tmp, name),
          quantizer: "gpu",
          calibDirs: [],
          request,
          ...(calibGpuMemory === undefined ? {} : { calibGpuMemory }),
        },
        { gpu, quiet: true },
      );
    const resident = await run("resident");
    const some = await run("some", 2 * windowBytes);
    const none = await run("none", 0);
    assert.equal(resident.pipeline.gpuWindows, 6, "the default holds every window of a small model");
    assert.equal(some.pipeline.gpuWindows, 2);
    assert.equal(none.pipeline.gpuWindows, 0);
    const weights = async (name: string) => {
      const files = [...Deno.readDirSync(join(tmp, name))].map((e) => e.name).filter((f) =>
        f.endsWith(".safetensors")
      ).sort();
      return await Promise.all(files.map(async (f) => [f, await Deno.readFile(join(tmp, name, f))] as const));
    };
    const want = await weights("resident");
    assert.ok(want.length > 0, "safetensors written");
    for (const name of ["some", "none"]) {
      const got = await weights(name);
      assert.deepEqual(got.map(([f]) => f), want.map(([f]) => f), `${name}: the same files`);
      got.forEach(([f, bytes], i) => assert.ok(bytes.every((b, j) => b === want[i][1][j]), `${name}: ${f}`));
    }
  }));
