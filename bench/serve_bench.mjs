// Load measurements of a running `bmojo serve` with clients bmojo did not write (autocannon, Node's fetch),
// for docs/serving.md:
//   node bench/serve_bench.mjs --port P --model NAME [--concurrency 1,4,16,64] [--duration 10]
//        [--max-tokens 32] [--prompt-tokens 64] [--vocab 256] [--ttft] [--overload CONNECTIONS]
// Per concurrency: completions/s, aggregate output tokens/s (from the server's own counter), latency p50 and
// p99 of whole requests, non-2xx answers, and the server's peak resident memory (sampled from /metrics).
// --ttft: time to first token of a 4,096-token prompt sharing a 4,000-token prefix with an earlier one
// (cached) against a 4,096-token prompt sharing nothing (cold). --overload N: N connections at once against
// a server started with small --max-batch/--max-queue: how many got 200, 429 or nothing, and memory.
import { createRequire } from "node:module";

const require = createRequire(new URL("../tests/serve/clients/package.json", import.meta.url));
const autocannon = require("autocannon");

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1] && !all[i + 1].startsWith("--") ? all[i + 1] : true]] : acc), []));
const port = Number(args.port ?? 8080), model = args.model ?? "model";
const base = `http://127.0.0.1:${port}`;
const vocab = Number(args.vocab ?? 256), maxTokens = Number(args["max-tokens"] ?? 32);
const promptTokens = Number(args["prompt-tokens"] ?? 64), duration = Number(args.duration ?? 10);
let seed = 12345;
const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
const tokens = (n) => Array.from({ length: n }, () => Math.floor(random() * vocab));

async function metric(name) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, "m"));
  return m ? Number(m[1]) : NaN;
}

// Runs autocannon while sampling the server's resident memory; returns the result and the peak.
async function load(connections, seconds, body) {
  let peak = await metric("bmojo_resident_memory_bytes"), sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, await metric("bmojo_resident_memory_bytes").catch(() => 0));
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  const generated0 = await metric("bmojo_generated_tokens_total");
  const t0 = Date.now();
  const result = await autocannon({
    url: `${base}/v1/completions`, connections, duration: seconds, timeout: 120,
    method: "POST", headers: { "content-type": "application/json" },
    requests: [{ setupRequest: (req) => ({ ...req, body: JSON.stringify(body()) }) }],
  });
  const elapsed = (Date.now() - t0) / 1000;
  sampling = false;
  await sampler;
  const generated = (await metric("bmojo_generated_tokens_total")) - generated0;
  return { result, peak, elapsed, generated };
}

const report = [];
if (args.concurrency !== undefined || (!args.ttft && !args.overload)) {
  const levels = String(args.concurrency ?? "1,4,16,64").split(",").map(Number);
  console.log(`| clients | completions/s | output tokens/s | p50 latency ms | p99 latency ms | non-2xx | peak RSS MiB |`);
  console.log(`|---:|---:|---:|---:|---:|---:|---:|`);
  for (const c of levels) {
    const body = () => ({ model, prompt: tokens(promptTokens), max_tokens: maxTokens, temperature: 0.8 });
    const { result, peak, elapsed, generated } = await load(c, duration, body);
    const row = { clients: c, completions_per_s: result.requests.total / elapsed, output_tokens_per_s: generated / elapsed,
                  p50_ms: result.latency.p50, p99_ms: result.latency.p99, non2xx: result.non2xx + result.errors,
                  peak_rss_mib: peak / 1048576 };
    report.push(row);
    console.log(`| ${c} | ${row.completions_per_s.toFixed(1)} | ${row.output_tokens_per_s.toFixed(0)} | ${row.p50_ms} | ${row.p99_ms} | ${row.non2xx} | ${row.peak_rss_mib.toFixed(0)} |`);
  }
}

if (args.ttft) {
  // Time to the first streamed token (the first data event after the request is sent).
  const ttft = async (prompt) => {
    const t0 = performance.now();
    const res = await fetch(`${base}/v1/completions`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ model, prompt, max_tokens: 4, temperature: 0, stream: true, stream_options: { include_usage: true } }),
    });
    const reader = res.body.getReader();
    let first = null, text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (first === null) first = performance.now() - t0;
      text += new TextDecoder().decode(value);
    }
    const usage = JSON.parse(text.split("\n\n").filter((e) => e.includes('"usage"'))[0].slice(6)).usage;
    return { ms: first, cached: usage.prompt_tokens_details.cached_tokens };
  };
  const earlier = tokens(4096);
  await ttft(earlier);                                    // leaves its states in the cache
  const cached = await ttft([...earlier.slice(0, 4000), ...tokens(96)]);
  const cold = await ttft(tokens(4096));                  // shares nothing
  const row = { ttft_cold_ms: cold.ms, ttft_cached_ms: cached.ms, speedup: cold.ms / cached.ms,
                cached_tokens: cached.cached, cold_cached_tokens: cold.cached };
  report.push(row);
  console.log(`time to first token, 4,096-token prompt: cold ${cold.ms.toFixed(1)} ms, sharing a 4,000-token prefix ` +
              `${cached.ms.toFixed(1)} ms (${cached.cached} tokens from the cache): ${row.speedup.toFixed(1)}x`);
}

if (args.overload) {
  const connections = Number(args.overload);
  const body = () => ({ model, prompt: tokens(promptTokens), max_tokens: maxTokens, temperature: 0.8 });
  const { result, peak } = await load(connections, duration, body);
  const codes = Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([k, v]) => [k, v.count]));
  const health = (await fetch(`${base}/health`)).status;
  const row = { overload_connections: connections, status_codes: codes, errors: result.errors, timeouts: result.timeouts,
                peak_rss_mib: peak / 1048576, health_after: health };
  report.push(row);
  console.log(`overload, ${connections} connections for ${duration} s: status codes ${JSON.stringify(codes)}, ` +
              `${result.errors} connection errors (${result.timeouts} timeouts), peak RSS ${(peak / 1048576).toFixed(0)} MiB, ` +
              `/health afterwards: ${health}`);
}
console.log(JSON.stringify(report));
