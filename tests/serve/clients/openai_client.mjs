// Drives `bmojo serve` with the official openai npm package, as an application would: completions with
// and without streaming (the same text), token-id prompts with a seed, the model list, and the errors the
// package raises for a wrong model, a bad argument and a wrong key. Prints one JSON line; exits non-zero
// on any mismatch.  Usage: node openai_client.mjs PORT MODEL API_KEY
import OpenAI from "openai";

const [port, model, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey, maxRetries: 0, timeout: 60000 });
const failures = [];
const expect = (ok, what) => { if (!ok) failures.push(what); };

const plain = await client.completions.create({ model, prompt: "hello", max_tokens: 16, temperature: 0 });
expect(plain.choices.length === 1 && plain.choices[0].finish_reason === "length", "plain: one choice, length");
expect(plain.usage.completion_tokens === 16 && plain.usage.prompt_tokens === 5, "plain: usage");

const stream = await client.completions.create({
  model, prompt: "hello", max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true },
});
let streamed = "", chunks = 0, usage = null, finish = null;
for await (const chunk of stream) {
  chunks++;
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    streamed += c.text;
    if (c.finish_reason) finish = c.finish_reason;
  }
}
expect(streamed === plain.choices[0].text, "stream: the same text as without streaming");
expect(chunks >= 16 && finish === "length", "stream: a chunk per token and a finish reason");
expect(usage && usage.completion_tokens === 16, "stream: usage at the end");

const ids = [104, 101, 108, 108, 111];
const a = await client.completions.create({ model, prompt: ids, max_tokens: 12, temperature: 0.8, seed: 42, n: 2 });
const b = await client.completions.create({ model, prompt: ids, max_tokens: 12, temperature: 0.8, seed: 42, n: 2 });
expect(a.choices.length === 2 && a.choices[0].text === b.choices[0].text && a.choices[1].text === b.choices[1].text,
       "seeded: the same choices twice");

const models = await client.models.list();
expect(models.data.some((m) => m.id === model), "models: the served model is listed");

const errorOf = async (f) => { try { await f(); return null; } catch (e) { return e; } };
const notFound = await errorOf(() => client.completions.create({ model: "no-such-model", prompt: "x" }));
expect(notFound instanceof OpenAI.NotFoundError, "a wrong model raises NotFoundError");
const bad = await errorOf(() => client.completions.create({ model, prompt: "x", max_tokens: -5 }));
expect(bad instanceof OpenAI.BadRequestError && /max_tokens/.test(bad.message), "max_tokens -5 raises BadRequestError");
const wrongKey = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "wrong", maxRetries: 0 });
const denied = await errorOf(() => wrongKey.completions.create({ model, prompt: "x" }));
expect(denied instanceof OpenAI.AuthenticationError, "a wrong key raises AuthenticationError");

console.log(JSON.stringify({ ok: failures.length === 0, failures, text: plain.choices[0].text, chunks }));
process.exit(failures.length === 0 ? 0 : 1);
