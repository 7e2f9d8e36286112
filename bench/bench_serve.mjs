#!/usr/bin/env node
// Measures `iris serve` over loopback: requests/s and time to first token (TTFT) for 1, 4 and 16 concurrent
// streaming clients, and TTFT for a repeated image with the image-embedding cache on and off. Plain Node.js (20+),
// no packages. Not a test: it prints a table.
//
// Usage: node bench/bench_serve.mjs [--iris build/bin/iris] [--model DIR | --preset tiny-llava] [--seconds 10]
//          [--clients 1,4,16] [--max-tokens 32] [--parallel 4] [--threads 0] [--repeats 5] [--dtype auto]
// Without --model it makes the preset (random weights) in a temporary folder with ../shared/tokenizers/mistral.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const IRIS = args.iris || join(root, 'build', 'bin', 'iris');
const SECONDS = Number(args.seconds || 10);
const CLIENTS = (args.clients || '1,4,16').split(',').map(Number);
const MAX_TOKENS = Number(args['max-tokens'] || 32);
const PARALLEL = String(args.parallel || 4);
const THREADS = String(args.threads || 0);
const REPEATS = Number(args.repeats || 5);
const DTYPE = args.dtype || 'auto';

const temp = mkdtempSync(join(tmpdir(), 'iris-bench-serve-'));
const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(temp, { recursive: true, force: true });
});
process.on('SIGINT', () => process.exit(130));

function makeModel() {
  if (args.model) return args.model;
  const dir = join(temp, 'model');
  const tok = join(root, '..', 'shared', 'tokenizers', 'mistral');
  execFileSync(IRIS, ['init-model', '--preset', args.preset || 'tiny-llava', '--seed', '1', '--tokenizer', tok,
    '--out', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  return dir;
}

function startServer(model, extra = []) {
  const proc = spawn(IRIS, ['serve', '-m', model, '--port', '0', '--quiet', '--watch-stdin', '--parallel', PARALLEL,
    '-t', THREADS, '--dtype', DTYPE, ...extra], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.add(proc);
  return new Promise((ok, fail) => {
    let out = '';
    proc.on('exit', (code) => fail(new Error(`iris serve exited (${code})`)));
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) ok({ url: m[1], stop: () => { proc.kill('SIGTERM'); children.delete(proc); } });
    });
  });
}

// One streamed request; returns {ttft, total, tokens} in ms.
async function streamOnce(url, messages, maxTokens = MAX_TOKENS) {
  const t0 = performance.now();
  const res = await fetch(url + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'm', messages, max_tokens: maxTokens, temperature: 0, stream: true,
      stream_options: { include_usage: true } }),
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '', ttft = null, tokens = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const data = buf.slice(6, cut);
      buf = buf.slice(cut + 2);
      if (data === '[DONE]') continue;
      const chunk = JSON.parse(data);
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      if (ttft === null && chunk.choices.length && chunk.choices[0].delta.content) ttft = performance.now() - t0;
    }
  }
  return { ttft, total: performance.now() - t0, tokens };
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : NaN;
};
const fmt = (x) => (Number.isFinite(x) ? x.toFixed(0) : '-');

async function concurrency(url, clients) {
  const end = performance.now() + SECONDS * 1000;
  const ttfts = [];
  let done = 0, tokens = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: clients }, async (_, i) => {
    for (let k = 0; performance.now() < end; k++) {
      // Distinct prompts per client, so nothing is shared between requests but the weights.
      const r = await streamOnce(url, [{ role: 'user', content: `Client ${i} asks question ${k}: tell me about the sea.` }]);
      if (r.ttft !== null) ttfts.push(r.ttft);
      done++;
      tokens += r.tokens;
    }
  }));
  const secs = (performance.now() - t0) / 1000;
  return { clients, reqs: done / secs, toks: tokens / secs, p50: pct(ttfts, 0.5), p95: pct(ttfts, 0.95),
    mean: ttfts.reduce((a, b) => a + b, 0) / Math.max(ttfts.length, 1) };
}

async function imageTtft(url, image, label) {
  const msg = (q) => [{ role: 'user', content: [{ type: 'image_url', image_url: { url: image } }, { type: 'text', text: q }] }];
  const first = await streamOnce(url, msg('What is this?'), 4);
  const again = [];
  for (let i = 0; i < REPEATS; i++) again.push((await streamOnce(url, msg(`And now? ${i}`), 4)).ttft);
  return { label, first: first.ttft, repeated: pct(again, 0.5) };
}

const model = makeModel();
console.log(`iris serve benchmark: model ${model}, --parallel ${PARALLEL}, -t ${THREADS || 'all'}, ` +
  `${SECONDS} s per level, ${MAX_TOKENS} tokens per answer, streaming, temperature 0\n`);

const server = await startServer(model);
await streamOnce(server.url, [{ role: 'user', content: 'warm up' }], 4);
console.log('| clients | requests/s | tokens/s | TTFT mean ms | TTFT p50 ms | TTFT p95 ms |');
console.log('|---|---|---|---|---|---|');
for (const c of CLIENTS) {
  const r = await concurrency(server.url, c);
  console.log(`| ${c} | ${r.reqs.toFixed(2)} | ${r.toks.toFixed(0)} | ${fmt(r.mean)} | ${fmt(r.p50)} | ${fmt(r.p95)} |`);
}
server.stop();

const png = readFileSync(existsSync(join(root, 'examples', 'scene1.png')) ? join(root, 'examples', 'scene1.png') : args.image);
const image = `data:image/png;base64,${png.toString('base64')}`;
const cached = await startServer(model);
const a = await imageTtft(cached.url, image, 'cache on (default)');
cached.stop();
const uncached = await startServer(model, ['--image-cache-mb', '0']);
const b = await imageTtft(uncached.url, image, 'cache off (--image-cache-mb 0)');
uncached.stop();
console.log('\n| image-embedding cache | TTFT first request ms | TTFT same image again, median of ' + REPEATS + ' ms |');
console.log('|---|---|---|');
for (const r of [a, b]) console.log(`| ${r.label} | ${fmt(r.first)} | ${fmt(r.repeated)} |`);
process.exit(0);
