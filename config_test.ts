import assert from "node:assert/strict";
import { ConfigError, DEFAULT_MODEL, HELP_TEXT, parseConfig, startupQuant } from "./config.ts";
import { requestToJson, withAdapterBudget } from "./inference/quantize/mod.ts";
import { artifactName } from "./inference/jobs/mod.ts";

Deno.test("parseConfig() fills the documented defaults", () => {
  const config = parseConfig(["--model", "../shared/models/lq-49m/"], { HOME: "/home/u" });
  assert.deepEqual(config, {
    help: false,
    model: "../shared/models/lq-49m/",
    servedModelName: "lq-49m",
    chatTemplate: null,
    generationConfig: "auto",
    host: "127.0.0.1",
    port: 8000,
    maxTokensDefault: null,
    splitReasoning: true,
    dtype: "auto",
    decodeActivations: "q8",
    quant: null,
    artifactsDir: "artifacts",
    calibDirs: [],
    calibGpuMemory: 1.75 * 2 ** 30,
    serving: {
      maxNumSeqs: 64,
      maxNumBatchedTokens: 2048,
      decodingPrefillTokens: 2048,
      maxModelLen: null,
      kvCacheMemory: null,
      kvCacheDtype: "f16",
      maxQueuedRequests: 1024,
      batchInvariant: false,
      prefixCaching: true,
      schedulingPolicy: "fcfs",
    },
    hub: {
      cacheDir: "/home/u/.cache/huggingface/hub",
      token: null,
      tokenFile: "/home/u/.cache/huggingface/token",
      offline: false,
      endpoint: "https://huggingface.co",
    },
    auth: { apiKeys: [], adminKeys: [], metricsRequireKey: false },
    limits: { maxBodyBytes: 4 * 1024 * 1024, maxPromptTokens: null },
    logRequests: true,
    allowedOrigins: ["*"],
    tls: null,
    shutdownGraceSeconds: 10,
  });
  assert.ok(Object.isFrozen(config));
  assert.ok(Object.isFrozen(config.hub));
  assert.ok(Object.isFrozen(config.auth) && Object.isFrozen(config.auth.apiKeys));
});

Deno.test("parseConfig() reads every flag, in both spellings", () => {
  const config = parseConfig([
    "--model=m",
    "--host",
    "0.0.0.0",
    "--port=9001",
    "--served-model-name",
    "tiny",
    "--chat-template=chat.jinja",
    "--generation-config",
    "vllm",
    "--max-tokens-default",
    "256",
    "--dtype",
    "f16",
    "--decode-activations=f32",
    "--quantize",
    "leanquant-aff",
    "--bits",
    "3",
    "--group-size=0",
    "--calib",
    "calib.txt",
    "--nsamples",
    "16",
    "--seed",
    "7",
    "--max-num-seqs=8",
    "--max-num-batched-tokens",
    "64",
    "--decoding-prefill-tokens=16",
    "--max-model-len",
    "2048",
    "--kv-cache-memory",
    "1.5GiB",
    "--kv-cache-dtype=f32",
    "--max-queued-requests",
    "3",
    "--batch-invariant",
    "--no-enable-prefix-caching",
    "--scheduling-policy=priority",
    "--reasoning-parser",
    "none",
    "--seqlen=64",
    "--no-act-order",
    "--percdamp",
    "0.1",
    "--exponent=3",
    "--aff-t",
    "256",
    "--artifacts-dir",
    "/srv/artifacts",
    "--calib-dir",
    "/data/a",
    "--calib-dir=/data/b",
    "--hf-cache",
    "/cache",
    "--api-key",
    "k1",
    "--api-key=k2",
    "--admin-key",
    "root-key",
    "--metrics-require-key",
    "--max-body-bytes",
    "1024",
    "--max-prompt-tokens=100",
    "--disable-log-requests",
    "--shutdown-grace-seconds",
    "0",
    "--calib-gpu-memory",
    "all",
    "--allowed-origins=https://app.example.com",
    "--ssl-certfile",
    "cert.pem",
    "--ssl-keyfile=key.pem",
  ], { PORT: "1234", HOST: "10.0.0.1", HF_HUB_CACHE: "/ignored", LEANSERVE_API_KEY: "from-env" });
  assert.deepEqual(config, {
    help: false,
    model: "m",
    servedModelName: "tiny",
    chatTemplate: "chat.jinja",
    generationConfig: "vllm",
    host: "0.0.0.0",
    port: 9001, // the flag beats $PORT
    maxTokensDefault: 256,
    splitReasoning: false,
    dtype: "f16",
    decodeActivations: "f32",
    quant: {
      quantize: {
        method: "leanquant-aff",
        bits: 3,
        groupSize: 0,
        actOrder: false,
        percdamp: 0.1,
        blockSize: 128,
        exponent: 3,
        affT: 256,
        lmHeadBits: 0,
      },
      calibration: {
        source: { kind: "file", path: "calib.txt" },
        nsamples: 16,
        seqlen: 64,
        seed: 7,
        storage: "auto",
      },
      eval: null,
      activate: true,
      name: null,
      budgetDefaulted: { nsamples: false, seqlen: false },
    },
    artifactsDir: "/srv/artifacts",
    calibDirs: ["/data/a", "/data/b"],
    calibGpuMemory: Infinity,
    serving: {
      maxNumSeqs: 8,
      maxNumBatchedTokens: 64,
      decodingPrefillTokens: 16,
      maxModelLen: 2048,
      kvCacheMemory: { bytes: 1.5 * 2 ** 30 },
      kvCacheDtype: "f32",
      maxQueuedRequests: 3,
      batchInvariant: true,
      prefixCaching: false,
      schedulingPolicy: "priority",
    },
    hub: {
      cacheDir: "/cache",
      token: null,
      tokenFile: ".cache/huggingface/token",
      offline: false,
      endpoint: "https://huggingface.co",
    },
    auth: { apiKeys: ["k1", "k2"], adminKeys: ["root-key"], metricsRequireKey: true }, // flags beat the env
    limits: { maxBodyBytes: 1024, maxPromptTokens: 100 },
    logRequests: false,
    allowedOrigins: ["https://app.example.com"],
    tls: { certFile: "cert.pem", keyFile: "key.pem" },
    shutdownGraceSeconds: 0,
  });
  assert.ok(Object.isFrozen(config.quant));
  assert.ok(Object.isFrozen(config.serving));
  const memory = (text: string) =>
    parseConfig(["--model", "m", "--kv-cache-memory", text], {}).serving.kvCacheMemory;
  assert.deepEqual(memory("0.25"), { fraction: 0.25 });
  assert.deepEqual(memory("2e9"), { bytes: 2e9 });
  assert.deepEqual(memory("512MiB"), { bytes: 512 * 2 ** 20 });
  assert.throws(() => memory("lots"), ConfigError);
  assert.throws(() => memory("-1"), ConfigError);
  const kvType = (text: string) =>
    parseConfig(["--model", "m", "--kv-cache-dtype", text], {}).serving.kvCacheDtype;
  assert.equal(kvType("int8"), "int8");
  assert.throws(() => kvType("fp8"), /--kv-cache-dtype/);
  assert.throws(
    () => parseConfig(["--model", "m", "--max-num-seqs", "64", "--max-num-batched-tokens", "32"], {}),
    /a row of each/,
  );
  assert.throws(
    () => parseConfig(["--model", "m", "--decoding-prefill-tokens", "4096"], {}),
    /--decoding-prefill-tokens 4096: a forward holds at most --max-num-batched-tokens 2048/,
  );
});

Deno.test("parseConfig() takes PORT from the environment and quantization defaults", () => {
  const config = parseConfig(["--model", "m", "--quantize", "rtn"], { PORT: "8080" });
  assert.equal(config.port, 8080);
  assert.deepEqual(config.quant?.quantize, {
    method: "rtn",
    bits: 4,
    groupSize: 128,
    actOrder: false,
    percdamp: 0.01,
    blockSize: 128,
    exponent: 4,
    affT: 2048,
    lmHeadBits: 0,
  });
  assert.deepEqual(config.quant?.calibration, {
    source: null,
    nsamples: 128,
    seqlen: null,
    seed: 0,
    storage: "auto",
  });
  const gptq = parseConfig(["--model", "m", "--quantize", "gptq"], {}).quant;
  assert.deepEqual(gptq?.calibration.source, { kind: "dataset", name: "builtin" });
  const calib = parseConfig(["--model", "m", "--quantize", "gptq", "--calib", "c"], {}).quant;
  assert.deepEqual(calib?.calibration.source, { kind: "file", path: "c" });
  assert.equal(
    parseConfig(["--model", "m", "--quantize", "gptq", "--quantize-lm-head", "8"], {}).quant?.quantize
      .lmHeadBits,
    8,
  );
});

Deno.test("parseConfig() --calib-gpu-memory: sizes, all, and a clear error", () => {
  const bytes = (text: string) =>
    parseConfig(["--model", "m", "--calib-gpu-memory", text], {}).calibGpuMemory;
  assert.equal(bytes("4GiB"), 4 * 2 ** 30);
  assert.equal(bytes("1792MiB"), 1792 * 2 ** 20);
  assert.equal(bytes("2e9"), 2e9);
  assert.equal(bytes("0"), 0, "every window streams from host memory");
  assert.equal(bytes("ALL"), Infinity);
  for (const bad of ["-1GiB", "lots", "4 parsecs", "constructor", ""]) {
    assert.throws(
      () => bytes(bad),
      (e: Error) => e instanceof ConfigError && e.message.includes(`--calib-gpu-memory "${bad}"`),
      bad,
    );
  }
});

Deno.test("parseConfig() serves DEFAULT_MODEL, a small Llama repo, when --model is absent", () => {
  const config = parseConfig([], {});
  assert.equal(config.model, DEFAULT_MODEL);
  assert.equal(DEFAULT_MODEL, "HuggingFaceTB/SmolLM2-360M-Instruct");
  assert.equal(config.servedModelName, "SmolLM2-360M-Instruct");
  assert.equal(parseConfig(["--model", "org/name@v1.0"], {}).servedModelName, "name");
  assert.equal(parseConfig(["--model", "/models/a@b"], {}).servedModelName, "a@b", "a folder keeps its name");
});

Deno.test("parseConfig() reads the Hugging Face variables as huggingface_hub does", () => {
  const hub = (env: Record<string, string>) => parseConfig([], env).hub;
  assert.deepEqual(
    hub({ HF_HOME: "/hf", HF_TOKEN: "hf_x", HF_HUB_OFFLINE: "1", HF_ENDPOINT: "http://mirror:8080/" }),
    {
      cacheDir: "/hf/hub",
      token: "hf_x",
      tokenFile: "/hf/token",
      offline: true,
      endpoint: "http://mirror:8080",
    },
  );
  assert.equal(hub({ HF_HOME: "/hf", HF_HUB_CACHE: "/c" }).cacheDir, "/c");
  assert.equal(hub({ XDG_CACHE_HOME: "/x" }).cacheDir, "/x/huggingface/hub");
  assert.equal(hub({ HF_HUB_OFFLINE: "true" }).offline, true);
  assert.equal(hub({ HF_HUB_OFFLINE: "0" }).offline, false);
  assert.equal(hub({ HF_TOKEN: "" }).token, null);
  assert.equal(hub({ HF_TOKEN_PATH: "/t" }).tokenFile, "/t");
  assert.equal(parseConfig([], { HOST: "0.0.0.0" }).host, "0.0.0.0");
  assert.equal(parseConfig(["--host", "::1"], { HOST: "0.0.0.0" }).host, "::1", "the flag beats $HOST");
});

Deno.test("parseConfig() keeps prefix caching on unless told otherwise, and refuses both switches", () => {
  assert.equal(parseConfig(["--enable-prefix-caching"], {}).serving.prefixCaching, true);
  assert.equal(parseConfig(["--no-enable-prefix-caching"], {}).serving.prefixCaching, false);
  assert.throws(
    () => parseConfig(["--enable-prefix-caching", "--no-enable-prefix-caching"], {}),
    /both --enable-prefix-caching and --no-enable-prefix-caching/,
  );
});

Deno.test("parseConfig() reads API and admin keys from the environment, comma-separated", () => {
  const config = parseConfig(["--model", "m"], {
    LEANSERVE_API_KEY: " a1, a2,,a1 ",
    LEANSERVE_ADMIN_KEY: "root",
  });
  assert.deepEqual(config.auth, { apiKeys: ["a1", "a2"], adminKeys: ["root"], metricsRequireKey: false });
  assert.deepEqual(parseConfig(["--model", "m"], { LEANSERVE_API_KEY: "" }).auth.apiKeys, []);
});

Deno.test("parseConfig() never echoes a rejected key", () => {
  for (
    const [args, env] of [[["--api-key", "sec ret"], {}], [[], { LEANSERVE_ADMIN_KEY: "sécret" }]] as const
  ) {
    assert.throws(() => parseConfig(["--model", "m", ...args], env), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /--api-key|LEANSERVE_ADMIN_KEY/);
      assert.doesNotMatch(err.message, /sec ret|sécret/);
      return true;
    });
  }
});

Deno.test("parseConfig() with --help needs no model", () => {
  const config = parseConfig(["-h"], {});
  assert.equal(config.help, true);
  assert.equal(config.model, DEFAULT_MODEL);
  assert.equal(parseConfig(["--model", "m", "--help"], {}).help, true);
  for (
    const flag of [
      "--model",
      "--quantize",
      "--calib",
      "--dtype",
      "--group-size",
      "--max-tokens-default",
      "--api-key",
      "--admin-key",
      "--metrics-require-key",
      "--max-body-bytes",
      "--max-prompt-tokens",
      "--disable-log-requests",
      "--shutdown-grace-seconds",
      "--chat-template",
      "--generation-config",
    ]
  ) {
    assert.ok(HELP_TEXT.includes(flag), flag);
  }
});

Deno.test("parseConfig() rejects bad values with a message naming the flag", () => {
  const cases: [string[], Record<string, string>, RegExp][] = [
    [["--model="], {}, /Cannot use --model "": expected a folder or a repo id/],
    [[], { HF_ENDPOINT: "ftp://x" }, /Cannot use HF_ENDPOINT "ftp:\/\/x": expected an http\(s\) URL/],
    [["--hf-cache="], {}, /Cannot use --hf-cache ""/],
    [["--model"], {}, /Missing value for --model/],
    [["--model", "--port", "1"], {}, /Missing value for --model/],
    [["--model", "m", "extra"], {}, /Cannot use argument "extra"/],
    [["--model", "m", "--verbose"], {}, /unknown option --verbose/],
    [["--model", "m", "--port", "0"], {}, /--port "0": expected an integer from 1 to 65535/],
    [["--model", "m", "--port", "80.5"], {}, /--port "80.5"/],
    [["--model", "m"], { PORT: "http" }, /PORT "http"/],
    [["--model", "m", "--host="], {}, /--host ""/],
    [["--model", "m", "--chat-template="], {}, /--chat-template "": expected a template file or a template/],
    [["--model", "m", "--generation-config="], {}, /--generation-config "": expected auto, vllm or a folder/],
    [["--model", "m", "--max-tokens-default", "0"], {}, /--max-tokens-default "0"/],
    [["--model", "m", "--dtype", "bf16"], {}, /--dtype "bf16": expected one of auto, f32, f16/],
    [
      ["--model", "m", "--decode-activations", "q4"],
      {},
      /--decode-activations "q4": expected one of q8, f32/,
    ],
    [["--model", "m", "--quantize", "awq"], {}, /--quantize "awq"/],
    [["--model", "m", "--bits", "4"], {}, /Cannot use --bits without --quantize/],
    [["--model", "m", "--quantize", "rtn", "--bits", "8"], {}, /--bits "8": expected an integer from 2 to 4/],
    [["--model", "m", "--quantize", "rtn", "--group-size", "-1"], {}, /--group-size "-1"/],
    [["--model", "m", "--quantize", "gptq", "--quantize-lm-head", "5"], {}, /--quantize-lm-head "5"/],
    [["--model", "m", "--no-act-order"], {}, /Cannot use --no-act-order without --quantize/],
    [["--model", "m", "--quantize", "gptq", "--no-act-order=1"], {}, /--no-act-order a value/],
    [["--model", "m", "--quantize", "gptq", "--group-size", "40"], {}, /--group-size "40": expected 0 or a/],
    [["--model", "m", "--calib-dir="], {}, /--calib-dir ""/],
    [["--model", "m", "--quantize", "rtn", "--calib", "c"], {}, /--calib with --quantize rtn/],
    [
      ["--model", "m", "--quantize", "leanquant-nu", "--calib", "c", "--group-size", "64"],
      {},
      /--group-size/,
    ],
    [["--model", "m", "--quantize", "gptq", "--calib", "c", "--nsamples", "0"], {}, /--nsamples "0"/],
    [["--model", "m", "--quantize", "gptq", "--calib", "c", "--seed", "-3"], {}, /--seed "-3"/],
    [["--model", "m", "--api-key"], {}, /Missing value for --api-key/],
    [["--model", "m", "--api-key", "a,b"], {}, /key of --api-key: expected printable ASCII/],
    [["--model", "m", "--metrics-require-key"], {}, /--metrics-require-key without --api-key/],
    [["--model", "m", "--metrics-require-key=yes"], {}, /Cannot give --metrics-require-key a value/],
    [["--model", "m", "--max-body-bytes", "0"], {}, /--max-body-bytes "0"/],
    [["--model", "m", "--max-body-bytes", "4MiB"], {}, /--max-body-bytes "4MiB"/],
    [["--model", "m", "--max-prompt-tokens", "-5"], {}, /--max-prompt-tokens "-5"/],
    [["--model", "m", "--shutdown-grace-seconds", "3601"], {}, /--shutdown-grace-seconds "3601"/],
  ];
  for (const [args, env, message] of cases) {
    assert.throws(() => parseConfig(args, env), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.match(err.message, message, args.join(" "));
      return true;
    });
  }
});

Deno.test("the default model's startup budget follows the adapter, and the artifact name follows the budget", () => {
  const cpu = { isCpu: true }, gpu = { isCpu: false };
  const quant = parseConfig([], {}).quant;
  assert.ok(quant, "without --model the default model is quantized at startup");
  const onCpu = withAdapterBudget(quant, cpu), onGpu = withAdapterBudget(quant, gpu);
  assert.deepEqual([onCpu.calibration.nsamples, onCpu.calibration.seqlen], [32, 512]);
  assert.deepEqual([onGpu.calibration.nsamples, onGpu.calibration.seqlen], [128, null]);
  const name = (r: typeof quant) =>
    artifactName("SmolLM2-360M-Instruct", "0123456789abcdef0123", requestToJson(r));
  assert.notEqual(name(onCpu), name(onGpu), "a GPU host must not reuse a CPU-budget artifact");
  assert.equal(name(withAdapterBudget(quant, cpu)), name(onCpu), "the same budget finds the cached artifact");
  // Flags given on the command line win over the adapter's budget, field by field.
  const given = parseConfig(["--nsamples", "64"], {}).quant;
  assert.ok(given);
  assert.equal(given.quantize.method, "leanquant-aff", "--nsamples adjusts the default model's request");
  assert.deepEqual(
    [withAdapterBudget(given, cpu).calibration.nsamples, withAdapterBudget(given, cpu).calibration.seqlen],
    [64, 512],
  );
  const both =
    parseConfig(["--model", "m", "--quantize", "gptq", "--nsamples", "8", "--seqlen", "256"], {}).quant;
  assert.ok(both);
  assert.deepEqual(withAdapterBudget(both, gpu).calibration, both.calibration);
  const rtn = parseConfig(["--model", "m", "--quantize", "rtn"], {}).quant;
  assert.ok(rtn);
  assert.equal(withAdapterBudget(rtn, cpu), rtn, "rtn without act-order reads no calibration");
  const tiny = parseConfig(["--model", "m", "--quantize", "gptq"], {}).quant;
  assert.ok(tiny);
  assert.equal(withAdapterBudget(tiny, cpu, 256).calibration.seqlen, 256, "capped to a shorter context");
  assert.equal(withAdapterBudget(tiny, gpu, 256).calibration.seqlen, null, "null is min(context, 2048)");
  assert.throws(() => parseConfig(["--model", "m", "--nsamples", "8"], {}), /--nsamples without --quantize/);
});

Deno.test("startupQuant() serves the default model unquantized on a CPU adapter unless a quantize flag asks", () => {
  const plain = parseConfig([], {});
  assert.equal(startupQuant(plain, { isCpu: false }), plain.quant);
  assert.equal(startupQuant(plain, { isCpu: true }), null);
  const asked = parseConfig(["--quantize", "leanquant-aff"], {});
  assert.equal(startupQuant(asked, { isCpu: true })?.quantize.method, "leanquant-aff");
  const tuned = parseConfig(["--nsamples", "16"], {});
  assert.equal(startupQuant(tuned, { isCpu: true })?.calibration.nsamples, 16);
  const local = parseConfig(["--model", "some/folder"], {});
  assert.equal(startupQuant(local, { isCpu: true }), null);
});

Deno.test("parseConfig() --allowed-origins and --ssl-certfile/--ssl-keyfile: values, none, and clear errors", () => {
  const m = ["--model", "m"];
  const origins = (v: string) => parseConfig([...m, "--allowed-origins", v], {}).allowedOrigins;
  assert.deepEqual(origins("*"), ["*"]);
  assert.deepEqual(origins("none"), []);
  assert.deepEqual(origins("https://app.example.com, http://localhost:3000"), [
    "https://app.example.com",
    "http://localhost:3000",
  ]);
  for (const bad of ["app.example.com", "https://app.example.com/", "ftp://x.org", "https://a.org,"]) {
    assert.throws(
      () => origins(bad),
      (e: Error) => e instanceof ConfigError && /--allowed-origins/.test(e.message),
    );
  }
  const tls = parseConfig([...m, "--ssl-certfile", "c.pem", "--ssl-keyfile", "k.pem"], {}).tls;
  assert.deepEqual(tls, { certFile: "c.pem", keyFile: "k.pem" });
  assert.throws(
    () => parseConfig([...m, "--ssl-certfile", "c.pem"], {}),
    (e: Error) => e instanceof ConfigError && /both --ssl-certfile and --ssl-keyfile/.test(e.message),
  );
});
