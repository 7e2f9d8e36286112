// `iris serve` through the official openai npm client: plain and streamed completions, images, multi-turn,
// sampling fields, usage and finish_reason, and the errors a client sees (auth, bad input, unknown model, full
// queue), plus cancellation on disconnect, the per-request time limit, local images and the image cache.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import {
  makeModel, makeTextModel, startServer, timeLimit, scenePng, fixture, dataUrl, health, waitFor, post, sseData,
  IMAGES_DIR,
} from './lib/harness.mjs';

timeLimit(110);
const KEY = 'sk-test-0123456789';
let model, server, client;

before(async () => {
  model = makeModel();
  server = await startServer(model, ['--api-key', KEY, '--parallel', '4']);
  client = new OpenAI({ baseURL: server.baseURL, apiKey: KEY, maxRetries: 0, timeout: 60000 });
});
after(async () => { if (server) await server.stop(); });

const user = (text) => ({ role: 'user', content: text });
const withImages = (text, ...urls) => ({
  role: 'user',
  content: [...urls.map((url) => ({ type: 'image_url', image_url: { url } })), { type: 'text', text }],
});
const IMAGE_TOKENS = 576;  // (336 / 14)^2 for the tiny LLaVA's CLIP

function checkCompletion(r, maxTokens) {
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-[A-Za-z0-9]{24}$/);
  assert.equal(r.model, 'tiny');
  assert.equal(typeof r.created, 'number');
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.index, 0);
  assert.equal(c.message.role, 'assistant');
  assert.equal(typeof c.message.content, 'string');
  assert.ok(['stop', 'length'].includes(c.finish_reason), c.finish_reason);
  assert.ok(r.usage.prompt_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.ok(r.usage.completion_tokens <= maxTokens);
  if (c.finish_reason === 'length') assert.equal(r.usage.completion_tokens, maxTokens);
  return c.message.content;
}

async function streamed(params) {
  const chunks = [];
  const stream = await client.chat.completions.create({ ...params, stream: true,
    stream_options: { include_usage: true } });
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

test('GET /v1/models lists the model; retrieve by id; unknown id is a 404', async () => {
  const list = await client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), ['tiny']);
  assert.equal(list.data[0].object, 'model');
  const m = await client.models.retrieve('tiny');
  assert.equal(m.id, 'tiny');
  await assert.rejects(client.models.retrieve('gpt-9'), (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
});

test('GET /health answers without a key', async () => {
  const h = await health(server);
  assert.equal(h.status, 'ok');
  assert.equal(h.model, 'tiny');
});

test('plain completion: shape, usage, finish_reason, determinism at temperature 0', async () => {
  const params = { model: 'tiny', messages: [user('Hello, who are you?')], max_tokens: 12, temperature: 0 };
  const a = await client.chat.completions.create(params);
  const text = checkCompletion(a, 12);
  const b = await client.chat.completions.create(params);
  assert.equal(checkCompletion(b, 12), text);
  assert.notEqual(a.id, b.id);
  assert.deepEqual(a.usage, b.usage);
  // max_completion_tokens is the newer name of max_tokens
  const c = await client.chat.completions.create({ model: 'tiny', messages: params.messages,
    max_completion_tokens: 12, temperature: 0 });
  assert.equal(checkCompletion(c, 12), text);
});

test('streaming: OpenAI chunks that concatenate to the plain answer, usage last, then [DONE]', async () => {
  const params = { model: 'tiny', messages: [user('Describe a sunny day.')], max_tokens: 16, temperature: 0 };
  const plain = await client.chat.completions.create(params);
  const chunks = await streamed(params);
  assert.ok(chunks.length >= 3);
  const id = chunks[0].id;
  for (const c of chunks) {
    assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(c.id, id);
    assert.equal(c.model, 'tiny');
  }
  assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
  const withChoices = chunks.filter((c) => c.choices.length);
  const last = withChoices[withChoices.length - 1];
  assert.equal(last.choices[0].finish_reason, plain.choices[0].finish_reason);
  for (const c of withChoices.slice(0, -1)) assert.equal(c.choices[0].finish_reason, null);
  const text = withChoices.map((c) => c.choices[0].delta.content ?? '').join('');
  assert.equal(text, plain.choices[0].message.content);
  const usageChunk = chunks[chunks.length - 1];
  assert.deepEqual(usageChunk.choices, []);
  assert.deepEqual(usageChunk.usage, plain.usage);
  for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);

  // The raw wire format: "data: {...}\n\n" events ending with "data: [DONE]\n\n".
  const raw = await post(server, { ...params, stream: true }, { headers: { Authorization: `Bearer ${KEY}` } });
  assert.equal(raw.status, 200);
  assert.match(raw.headers.get('content-type'), /^text\/event-stream/);
  assert.ok(raw.text.endsWith('data: [DONE]\n\n'));
  const events = sseData(raw.text);
  assert.equal(events[events.length - 1], '[DONE]');
  const rawText = events.slice(0, -1).map((e) => JSON.parse(e).choices[0].delta.content ?? '').join('');
  assert.equal(rawText, plain.choices[0].message.content);
});

test('images: PNG and JPEG data URLs, several per message, the cache skips a repeated image', async () => {
  const textOnly = await client.chat.completions.create({ model: 'tiny', messages: [user('What is this?')],
    max_tokens: 4, temperature: 0 });
  const png = dataUrl(scenePng());
  const one = await client.chat.completions.create({ model: 'tiny', messages: [withImages('What is this?', png)],
    max_tokens: 4, temperature: 0 });
  checkCompletion(one, 4);
  // The image is spliced in as 576 image tokens (plus the template's newline after it).
  const extra = one.usage.prompt_tokens - textOnly.usage.prompt_tokens;
  assert.ok(extra >= IMAGE_TOKENS && extra <= IMAGE_TOKENS + 3, `image added ${extra} tokens`);

  const jpeg = dataUrl(fixture('photo_hopper_512x600_420.jpg'), 'image/jpeg');
  const two = await client.chat.completions.create({ model: 'tiny',
    messages: [withImages('Compare these.', png, jpeg)], max_tokens: 4, temperature: 0 });
  checkCompletion(two, 4);
  assert.ok(two.usage.prompt_tokens - textOnly.usage.prompt_tokens >= 2 * IMAGE_TOKENS);

  const before = (await health(server)).image_cache;
  const again = await client.chat.completions.create({ model: 'tiny', messages: [withImages('What is this?', png)],
    max_tokens: 4, temperature: 0 });
  assert.equal(again.choices[0].message.content, one.choices[0].message.content);
  const afterStats = (await health(server)).image_cache;
  assert.equal(afterStats.hits, before.hits + 1);
  assert.equal(afterStats.misses, before.misses);
});

test('multi-turn with a system message', async () => {
  const messages = [
    { role: 'system', content: 'You are terse.' },
    withImages('What is in the picture?', dataUrl(scenePng())),
    { role: 'assistant', content: 'A scene.' },
    user('And what colour is it?'),
  ];
  const r = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 6, temperature: 0 });
  checkCompletion(r, 6);
  const single = await client.chat.completions.create({ model: 'tiny', messages: [messages[3]], max_tokens: 6,
    temperature: 0 });
  assert.ok(r.usage.prompt_tokens > single.usage.prompt_tokens + IMAGE_TOKENS);
  // 'developer' is OpenAI's newer name for 'system'
  const d = await client.chat.completions.create({ model: 'tiny', max_tokens: 6, temperature: 0,
    messages: [{ role: 'developer', content: 'You are terse.' }, ...messages.slice(1)] });
  assert.equal(d.choices[0].message.content, r.choices[0].message.content);
});

test('seed and temperature: same seed, same answer; another seed, another answer', async () => {
  const p = { model: 'tiny', messages: [user('Tell me a story.')], max_tokens: 12, temperature: 1.0, top_p: 0.95 };
  const a = await client.chat.completions.create({ ...p, seed: 42 });
  const b = await client.chat.completions.create({ ...p, seed: 42 });
  const c = await client.chat.completions.create({ ...p, seed: 7 });
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  assert.notEqual(a.choices[0].message.content, c.choices[0].message.content);
});

test('stop strings end the answer before them, with finish_reason stop', async () => {
  const p = { model: 'tiny', messages: [user('Count to ten.')], max_tokens: 24, temperature: 0 };
  const full = (await client.chat.completions.create(p)).choices[0].message.content;
  const chars = Array.from(full);  // code points: a stop string must not split a surrogate pair
  assert.ok(chars.length >= 6, full);
  const cut = Math.floor(chars.length / 2);
  const stop = chars.slice(cut, cut + 2).join('');
  const expected = full.slice(0, full.indexOf(stop));
  const r = await client.chat.completions.create({ ...p, stop: [stop] });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.choices[0].message.content, expected);
  const s = await streamed({ ...p, stop });
  assert.equal(s.filter((c) => c.choices.length).map((c) => c.choices[0].delta.content ?? '').join(''), expected);
});

test('errors reach the client as OpenAI errors', async () => {
  const bad = new OpenAI({ baseURL: server.baseURL, apiKey: 'sk-wrong', maxRetries: 0 });
  await assert.rejects(bad.chat.completions.create({ model: 'tiny', messages: [user('hi')] }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === 'invalid_api_key');
  await assert.rejects(bad.models.list(), (e) => e.status === 401);
  await assert.rejects(
    client.chat.completions.create({ model: 'tiny', messages: [withImages('hi', 'https://example.com/cat.png')] }),
    (e) => e instanceof OpenAI.BadRequestError && /does not fetch remote URLs/.test(e.message) &&
      e.param === 'messages[0].content[0].image_url');
  await assert.rejects(client.chat.completions.create({ model: 'tiny', messages: [user('hi')], max_tokens: 100000 }),
    (e) => e.status === 400 && e.code === 'context_length_exceeded');
  await assert.rejects(client.chat.completions.create({ model: 'tiny', messages: [user('hi')], n: 3 }),
    (e) => e.status === 400 && e.param === 'n');
  await assert.rejects(client.chat.completions.create({ model: 'tiny', messages: [] }), (e) => e.status === 400);
  await assert.rejects(
    client.chat.completions.create({ model: 'tiny', messages: [withImages('hi', dataUrl(Buffer.from('not an image')))] }),
    (e) => e.status === 400 && /not a JPEG or PNG/.test(e.message));
  // the server is still fine
  checkCompletion(await client.chat.completions.create({ model: 'tiny', messages: [user('hi')], max_tokens: 2 }), 2);
});

test('a client that disconnects cancels its request', async () => {
  for (const stream of [true, false]) {
    const before = await health(server);
    const ctl = new AbortController();
    const pending = fetch(server.baseURL + '/chat/completions', {
      method: 'POST', signal: ctl.signal,
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ model: 'tiny', messages: [user('Write a long essay.')], max_tokens: 4000, stream }),
    }).catch((e) => e);
    if (stream) {
      const res = await pending;
      await res.body.getReader().read();  // the first chunk: the request is running
    } else {  // the answer comes in one piece at the end: watch the scheduler instead
      assert.ok(await waitFor(async () => (await health(server)).active > before.active, 5000, 10));
    }
    ctl.abort();
    await pending;
    // 4000 tokens take about 3 s even on an idle machine; a cancelled request leaves the batch within a decode step
    // or two (the server also looks for a closed connection every 100 ms while it waits).
    const gone = await waitFor(async () => {
      const h = await health(server);
      return h.active === 0 && h.completed > before.completed;
    }, 2000, 20);
    assert.ok(gone, `request still running after the client left (stream: ${stream})`);
  }
});

test('a full queue answers 503 with an OpenAI error; the time limit ends long requests', async () => {
  // --ignore-eos: the random model could sample EOS before the limit on a fast machine; the limit must end it.
  const small = await startServer(model, ['--parallel', '1', '--queue', '1', '--timeout', '1.5', '--ignore-eos']);
  try {
    const body = { model: 'tiny', messages: [user('Go on and on.')], max_tokens: 4000 };
    const results = await Promise.all(Array.from({ length: 6 }, () => post(small, body)));
    const statuses = results.map((r) => r.status).sort();
    assert.ok(statuses.includes(503), statuses.join(','));
    assert.ok(statuses.includes(200), statuses.join(','));
    for (const r of results) {
      if (r.status === 503) {
        assert.equal(r.json.error.code, 'server_overloaded');
        assert.equal(r.headers.get('retry-after'), '1');
      } else {
        assert.equal(r.status, 200);
        // cut by the 1.5 s limit long before 4000 tokens
        assert.equal(r.json.choices[0].finish_reason, 'length');
        assert.ok(r.json.usage.completion_tokens < 4000, String(r.json.usage.completion_tokens));
      }
    }
  } finally {
    await small.stop();
  }
});

test('local images only inside --allow-local-images; a text-only model refuses images', async () => {
  const local = await startServer(model, ['--allow-local-images', IMAGES_DIR]);
  try {
    const ask = (url) => post(local, { model: 'tiny', max_tokens: 2, messages: [withImages('hi', url)] });
    assert.equal((await ask('photo_cat_451x300.png')).status, 200);
    assert.equal((await ask(`file://${IMAGES_DIR}/synth_gray_160x120.jpg`)).status, 200);
    for (const url of ['../manifest.json', '/etc/passwd', 'file:///etc/passwd', `${IMAGES_DIR}/../../llava`,
      'missing.png']) {
      const r = await ask(url);
      assert.equal(r.status, 400, url);
      assert.equal(r.json.error.code, 'invalid_image_url', url);
    }
  } finally {
    await local.stop();
  }
  // without the flag, paths are refused
  const r = await post(server, { model: 'tiny', messages: [withImages('hi', `${IMAGES_DIR}/photo_cat_451x300.png`)] },
    { headers: { Authorization: `Bearer ${KEY}` } });
  assert.equal(r.status, 400);
  assert.match(r.json.error.message, /--allow-local-images/);

  const text = await startServer(makeTextModel(model));
  try {
    const tc = new OpenAI({ baseURL: text.baseURL, apiKey: 'none', maxRetries: 0 });
    checkCompletion(await tc.chat.completions.create({ model: 'tiny', messages: [user('hi')], max_tokens: 3 }), 3);
    await assert.rejects(tc.chat.completions.create({ model: 'tiny', messages: [withImages('hi', dataUrl(scenePng()))] }),
      (e) => e.status === 400 && /no vision tower/.test(e.message));
  } finally {
    await text.stop();
  }
});

test('without -m the built-in model serves (id iris-shapes) and answers about an image', async () => {
  const builtin = await startServer(null);
  try {
    const bc = new OpenAI({ baseURL: builtin.baseURL, apiKey: 'none', maxRetries: 0 });
    const models = await bc.models.list();
    assert.deepEqual(models.data.map((m) => m.id), ['iris-shapes']);
    const r = await bc.chat.completions.create({
      model: 'iris-shapes', max_tokens: 8,
      messages: [withImages('How many red circles are there?\nAnswer the question using a single word or phrase.',
        dataUrl(scenePng()))],
    });
    assert.equal(r.model, 'iris-shapes');
    assert.equal(r.object, 'chat.completion');
    assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
    assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 8);
    assert.ok(r.choices[0].message.content.length > 0);
  } finally {
    await builtin.stop();
  }
});
