// A bounded load test on loopback: 16 concurrent clients (the official openai client) for 30 s (IRIS_LOAD_SECONDS
// overrides) send a mix of plain, streamed, image and multi-turn requests, and some hang up mid-stream. Every
// answer must be well formed, the server must not crash, and it must end idle.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import OpenAI from 'openai';
import { makeModel, startServer, timeLimit, scenePng, fixture, dataUrl, health, waitFor } from './lib/harness.mjs';

const SECONDS = Number(process.env.IRIS_LOAD_SECONDS || 30);
const CLIENTS = 16;
timeLimit(SECONDS + 60);
let server;
before(async () => { server = await startServer(makeModel(), ['--parallel', '4', '--queue', '64', '--quiet']); });
after(async () => { if (server) await server.stop(); });

const images = [dataUrl(scenePng()), dataUrl(fixture('photo_hopper_512x600_420.jpg'), 'image/jpeg'),
  dataUrl(fixture('synth_gray_160x120.jpg'), 'image/jpeg')];
const questions = ['What is this?', 'Describe the picture.', 'Hello!', 'Count to five.', 'Why is the sky blue?'];

// An error with its chain of causes (the openai client's "Connection error." wraps fetch's, which wraps the socket's).
function describe(e) {
  const parts = [];
  for (let c = e; c && parts.length < 5; c = c.cause) parts.push(`${c.message}${c.code ? ` (${c.code})` : ''}`);
  return parts.join(' <- ');
}

function checkPlain(r, maxTokens) {
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  const c = r.choices[0];
  assert.equal(c.message.role, 'assistant');
  assert.equal(typeof c.message.content, 'string');
  assert.ok(['stop', 'length'].includes(c.finish_reason));
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.ok(r.usage.completion_tokens <= maxTokens);
}

// The kernel completes handshakes on its own, up to the listen backlog, while the accept loop is busy. The
// server is stopped (SIGSTOP) so that nothing is accepted; every one of a burst of connections must still connect.
// With cpp-httplib's own backlog of 5, six did, and the rest waited for SYN retransmits (or got reset).
test('a burst of 64 connections is taken by the kernel while the server accepts nothing', async () => {
  const url = new URL(server.url);
  const BURST = 64;
  server.proc.kill('SIGSTOP');
  const sockets = [];
  try {
    let connected = 0;
    for (let i = 0; i < BURST; i++) {
      const s = connect({ host: url.hostname, port: Number(url.port) });
      s.on('connect', () => connected++);
      s.on('error', () => {});
      sockets.push(s);
    }
    await waitFor(async () => connected === BURST, 3000);
    assert.equal(connected, BURST, 'connections completed while the server was stopped');
  } finally {
    for (const s of sockets) s.destroy();
    server.proc.kill('SIGCONT');
  }
  const h = await health(server);
  assert.equal(h.active, 0);
});

test(`${CLIENTS} clients for ${SECONDS} s: every response well formed`, async () => {
  const client = new OpenAI({ baseURL: server.baseURL, apiKey: 'none', maxRetries: 0, timeout: 60000 });
  const end = Date.now() + SECONDS * 1000;
  const counts = { plain: 0, stream: 0, image: 0, multi: 0, aborted: 0 };
  const errors = [];
  let ttftSum = 0, ttftN = 0;

  async function one(i, k) {
    const q = questions[(i + k) % questions.length];
    const kind = ['plain', 'stream', 'image', 'multi', 'stream'][(i + k) % 5];
    const maxTokens = 8 + ((i * 7 + k) % 17);
    const temperature = k % 2 ? 0.8 : 0;
    let messages = [{ role: 'user', content: q }];
    if (kind === 'image') {
      messages = [{ role: 'user', content: [{ type: 'image_url', image_url: { url: images[(i + k) % images.length] } },
        { type: 'text', text: q }] }];
    } else if (kind === 'multi') {
      messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: q },
        { role: 'assistant', content: 'Sure.' }, { role: 'user', content: 'Say more.' }];
    }
    const params = { model: 'tiny', messages, max_tokens: maxTokens, temperature, seed: i * 1000 + k };
    if (kind !== 'stream') {
      checkPlain(await client.chat.completions.create(params), maxTokens);
      counts[kind]++;
      return;
    }
    // Streaming; every 7th hangs up after the first content chunk (the server must cancel it and carry on).
    const abort = k % 7 === 3;
    const t0 = performance.now();
    const stream = await client.chat.completions.create({ ...params, stream: true,
      stream_options: { include_usage: true } });
    let text = '', finish = null, usage = null, n = 0, first = true;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      n++;
      if (chunk.usage) usage = chunk.usage;
      for (const ch of chunk.choices) {
        if (ch.delta.content) {
          if (first) {
            ttftSum += performance.now() - t0;
            ttftN++;
            first = false;
          }
          text += ch.delta.content;
        }
        if (ch.finish_reason) finish = ch.finish_reason;
      }
      if (abort && text) {
        stream.controller.abort();
        counts.aborted++;
        return;
      }
    }
    assert.ok(['stop', 'length'].includes(finish), String(finish));
    assert.ok(usage && usage.completion_tokens <= maxTokens && n >= 2);
    counts.stream++;
  }

  async function worker(i) {
    for (let k = 0; Date.now() < end; k++) {
      try {
        await one(i, k);
      } catch (e) {
        if (e.name === 'AbortError' || e.constructor.name === 'APIUserAbortError') continue;
        errors.push(`client ${i} request ${k}: ${e.status ?? ''} ${describe(e)}`);
        if (errors.length > 20) return;
      }
    }
  }

  const t0 = Date.now();
  await Promise.all(Array.from({ length: CLIENTS }, (_, i) => worker(i)));
  const secs = (Date.now() - t0) / 1000;
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  console.log(`load: ${total} requests in ${secs.toFixed(1)} s (${(total / secs).toFixed(1)} req/s), ` +
    `${JSON.stringify(counts)}, mean time to first token ${(ttftSum / Math.max(ttftN, 1)).toFixed(0)} ms`);
  assert.deepEqual(errors, []);
  assert.ok(server.alive(), 'the server died');
  assert.ok(total >= CLIENTS, `only ${total} requests completed`);
  // Everything finished or was cancelled: nothing left running or queued.
  const idle = await waitFor(async () => {
    const h = await health(server);
    return h.active === 0 && h.queued === 0 ? h : null;
  }, 5000);
  assert.ok(idle, 'the server did not go idle');
  assert.ok(idle.image_cache.hits > 0, 'repeated images should hit the cache');
});
