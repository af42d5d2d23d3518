import assert from "node:assert/strict";
import {
  MAX_INLINE_TEXT_BYTES,
  parseQuantizeRequest,
  QuantizeOptionsError,
  requestToJson,
} from "./options.ts";

/** The field a bad body is refused for, and its message. */
function refusal(body: unknown): { field: string; message: string } {
  try {
    parseQuantizeRequest(body);
  } catch (err) {
    assert.ok(err instanceof QuantizeOptionsError, String(err));
    return { field: err.field, message: err.message };
  }
  throw new Error(`accepted ${JSON.stringify(body)}`);
}

Deno.test("parseQuantizeRequest() fills the defaults of a JSON body", () => {
  const r = parseQuantizeRequest({ method: "leanquant-aff" });
  assert.deepEqual(requestToJson(r), {
    method: "leanquant-aff",
    bits: 4,
    group_size: 128,
    act_order: true,
    percdamp: 0.01,
    exponent: 4,
    aff_t: 2048,
    lm_head_bits: 0,
    calibration: { dataset: "builtin", nsamples: 128, seqlen: null, seed: 0, storage: "auto" },
  });
  assert.equal(r.eval, null);
  assert.equal(r.activate, false);
  assert.equal(r.name, null);
});

Deno.test("parseQuantizeRequest() reads calibration, eval, activate and name", () => {
  const r = parseQuantizeRequest({
    method: "gptq",
    bits: 3,
    group_size: 0,
    act_order: false,
    lm_head_bits: 8,
    calibration: { text: "Once upon a time", nsamples: 4, seqlen: 64, seed: 3, storage: "f16" },
    eval: { file: "val.txt", ctx: 64, max_windows: 2 },
    activate: true,
    name: "tiny-gptq3",
  });
  assert.deepEqual(r.calibration, {
    source: { kind: "text", text: "Once upon a time" },
    nsamples: 4,
    seqlen: 64,
    seed: 3,
    storage: "f16",
  });
  assert.equal(r.quantize.lmHeadBits, 8);
  assert.deepEqual(r.eval, { source: { kind: "file", path: "val.txt" }, ctx: 64, maxWindows: 2 });
  assert.equal(r.activate, true);
  assert.equal(r.name, "tiny-gptq3");
  assert.deepEqual(requestToJson(r).calibration, {
    text_chars: 16,
    nsamples: 4,
    seqlen: 64,
    seed: 3,
    storage: "f16",
  });
});

Deno.test("parseQuantizeRequest() refuses bad fields with the field's JSON path", () => {
  const cases: [unknown, string, RegExp][] = [
    [[], "", /expected a JSON object/],
    [{}, "method", /Missing method: expected one of leanquant-aff/],
    [{ method: "awq" }, "method", /Cannot use method "awq"/],
    [{ method: "gptq", bits: "4" }, "bits", /Cannot use bits "4": expected an integer from 2 to 4/],
    [{ method: "gptq", bits: 5 }, "bits", /bits 5/],
    [{ method: "gptq", group_size: 100 }, "group_size", /expected 0 or a multiple of 32/],
    [{ method: "leanquant-nu", group_size: 128 }, "group_size", /with method leanquant-nu/],
    [{ method: "gptq", act_order: "yes" }, "act_order", /expected true or false/],
    [{ method: "gptq", percdamp: -1 }, "percdamp", /a number ≥ 0/],
    [{ method: "gptq", groupsize: 64 }, "groupsize", /unknown field "groupsize"/],
    [{ method: "gptq", calibration: { nsamples: 0 } }, "calibration.nsamples", /nsamples 0/],
    [{ method: "gptq", lm_head_bits: 5 }, "lm_head_bits", /lm_head_bits 5: expected one of 0, 4, 6, 8/],
    [{ method: "gptq", calibration: { storage: "bf16" } }, "calibration.storage", /expected one of auto/],
    [{ method: "gptq", calibration: { seqlen: 1 } }, "calibration.seqlen", /seqlen 1/],
    [{ method: "gptq", calibration: { text: "a", file: "b" } }, "calibration.file", /give one source/],
    [{ method: "gptq", calibration: { file: "" } }, "calibration.file", /non-empty string/],
    [{ method: "gptq", calibration: { dataset: "../x" } }, "calibration.dataset", /dataset name/],
    [{ method: "gptq", calibration: "x" }, "calibration", /expected an object/],
    [{ method: "rtn", calibration: { nsamples: 8 } }, "calibration.nsamples", /with method rtn/],
    [{ method: "gptq", eval: {} }, "eval", /Missing eval.text, eval.file or eval.dataset/],
    [{ method: "gptq", eval: { text: "a", ctx: 1 } }, "eval.ctx", /eval.ctx 1/],
    [{ method: "gptq", eval: { text: "a", windows: 3 } }, "eval.windows", /unknown field "eval.windows"/],
    [{ method: "gptq", activate: 1 }, "activate", /expected true or false/],
    [{ method: "gptq", name: "../up" }, "name", /Cannot use name "..\/up"/],
  ];
  for (const [body, field, message] of cases) {
    const got = refusal(body);
    assert.equal(got.field, field, JSON.stringify(body));
    assert.match(got.message, message, JSON.stringify(body));
  }
  const big = "x".repeat(MAX_INLINE_TEXT_BYTES + 1);
  assert.match(refusal({ method: "gptq", calibration: { text: big } }).message, /over the limit/);
});

Deno.test("parseQuantizeRequest() takes rtn with act-order and its calibration", () => {
  const r = parseQuantizeRequest({ method: "rtn", act_order: true, calibration: { nsamples: 8 } });
  assert.deepEqual(r.calibration.source, { kind: "dataset", name: "builtin" });
  assert.equal(r.calibration.nsamples, 8);
});
