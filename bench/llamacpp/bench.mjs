// The llama.cpp side of `soft-train bench --against llama.cpp`, through node-llama-cpp's prebuilt
// CPU binaries (never a source build: `build: "never"`).
//
//   node bench.mjs --check        the prebuilt binary loads (scripts/setup-bench-llamacpp.sh)
//   node bench.mjs SPEC.json      prints the results as one JSON object on stdout
//
// SPEC: {"gguf": path, "threads": n, "prompt": [token ids], "new_tokens": n, "runs": n, "warmup": n}
// Each run starts from an empty KV cache, evaluates the prompt and decodes greedily (temperature
// 0) exactly `new_tokens` tokens, EOS or not. The prompt's time is until the first new token is
// sampled (the prompt's forward pass and one LM head); the decode rate counts the other
// new_tokens - 1 tokens over the rest of the run. soft-train times its side the same way.
// Output: {"prompt_tokens_per_s": [per run], "decode_tokens_per_s": [per run], "ids": [greedy ids
// of the last run], "llama_cpp": release, "threads": n}.
import { readFileSync } from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

function fail(msg) {
    console.error(`bench.mjs: ${msg}`);
    process.exit(2);
}

const arg = process.argv[2];
if (arg == null) fail("usage: node bench.mjs --check | SPEC.json");

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
if (arg === "--check") {
    console.log(`node-llama-cpp: prebuilt llama.cpp ${llama.llamaCppRelease.release} loads on the CPU`);
    await llama.dispose();
    process.exit(0);
}

let spec;
try {
    spec = JSON.parse(readFileSync(arg, "utf8"));
} catch (e) {
    fail(`${arg}: unreadable spec (${e.message})`);
}
for (const key of ["gguf", "threads", "prompt", "new_tokens", "runs", "warmup"]) {
    if (spec[key] == null) fail(`${arg}: no "${key}"`);
}
if (!Array.isArray(spec.prompt) || spec.prompt.length === 0) fail(`${arg}: "prompt" must be a non-empty list of ids`);
if (!(spec.new_tokens >= 2)) fail(`${arg}: "new_tokens" must be at least 2`);

const model = await llama.loadModel({ modelPath: spec.gguf, gpuLayers: 0 });
const contextSize = spec.prompt.length + spec.new_tokens + 16;
// The whole prompt in one batch, as the project's prefill takes it.
const context = await model.createContext({
    contextSize,
    batchSize: contextSize,
    threads: spec.threads,
    sequences: 1,
});
const sequence = context.getSequence();

async function run() {
    await sequence.clearHistory();
    const ids = [];
    const start = performance.now();
    let first = null;
    for await (const token of sequence.evaluate(spec.prompt, { temperature: 0 })) {
        if (first == null) first = performance.now();
        ids.push(token);
        if (ids.length === spec.new_tokens) break;
    }
    const end = performance.now();
    if (ids.length !== spec.new_tokens) throw new Error(`llama.cpp wrote ${ids.length} of ${spec.new_tokens} tokens`);
    return {
        prompt: spec.prompt.length / ((first - start) / 1000),
        decode: (spec.new_tokens - 1) / ((end - first) / 1000),
        ids,
    };
}

for (let i = 0; i < spec.warmup; i++) await run();
const out = { prompt_tokens_per_s: [], decode_tokens_per_s: [], ids: [], llama_cpp: llama.llamaCppRelease.release, threads: context.currentThreads };
for (let i = 0; i < spec.runs; i++) {
    const r = await run();
    out.prompt_tokens_per_s.push(r.prompt);
    out.decode_tokens_per_s.push(r.decode);
    out.ids = r.ids;
}
console.log(JSON.stringify(out));
await context.dispose();
await model.dispose();
await llama.dispose();
