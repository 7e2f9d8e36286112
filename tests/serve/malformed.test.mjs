// A battery of malformed requests against `iris serve`: bad JSON, wrong types, unknown fields, huge bodies and
// images, non-image bytes, truncated and absurd images, bad HTTP. Each must get a 4xx answer with an OpenAI error
// object (never a 500, never a crash), and the server must still answer a good request afterwards.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { deflateSync } from 'node:zlib';
import { makeModel, startServer, timeLimit, scenePng, fixture, dataUrl, post, health } from './lib/harness.mjs';

timeLimit(100);
let server;
before(async () => {
  server = await startServer(makeModel(), ['--max-body-mb', '2', '--max-image-mb', '1', '--max-images', '4',
    '--max-tokens', '64', '--quiet']);
});
after(async () => { if (server) await server.stop(); });

const msg = (content) => ({ model: 'tiny', messages: [{ role: 'user', content }], max_tokens: 2 });
const img = (url) => msg([{ type: 'image_url', image_url: { url } }, { type: 'text', text: 'hi' }]);
const png = scenePng();

// A PNG whose header claims width x height (correct CRCs), and no pixel data worth decoding.
function crc32(buf) {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
function pngClaiming(width, height) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = 2;  // 8-bit RGB
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.alloc(64))), chunk('IEND', Buffer.alloc(0))]);
}

// [name, body (object, or string/bytes sent as they are), expected status (default 400), extra headers]
const cases = [
  // bad JSON
  ['empty body', ''],
  ['truncated JSON', '{"model": "tiny", "messages": ['],
  ['not JSON', 'hello'],
  ['trailing garbage', JSON.stringify(msg('hi')) + ' x'],
  ['JSON null', 'null'],
  ['JSON array', '[]'],
  ['JSON string', '"messages"'],
  ['NaN literal', '{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'],
  ['invalid UTF-8 in a string', Buffer.concat([Buffer.from('{"messages":[{"role":"user","content":"'),
    Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}]}')])],
  ['deep nesting', '['.repeat(100000) + ']'.repeat(100000)],
  ['deep nesting inside a field', `{"messages": [{"role": "user", "content": ${'['.repeat(50000)}${']'.repeat(50000)}}]}`],
  // wrong types and values
  ['no messages', { model: 'tiny' }],
  ['messages is a string', { messages: 'hi' }],
  ['messages is an object', { messages: { role: 'user', content: 'hi' } }],
  ['messages is empty', { messages: [] }],
  ['message is a number', { messages: [5] }],
  ['message without role', { messages: [{ content: 'hi' }] }],
  ['role is a number', { messages: [{ role: 1, content: 'hi' }] }],
  ['unknown role', { messages: [{ role: 'wizard', content: 'hi' }] }],
  ['tool role', { messages: [{ role: 'tool', content: 'hi', tool_call_id: 'x' }] }],
  ['content missing', { messages: [{ role: 'user' }] }],
  ['content is a number', msg(42)],
  ['content part is a string', msg(['hi'])],
  ['content part without type', msg([{ text: 'hi' }])],
  ['content part of unknown type', msg([{ type: 'video', video: 'x' }])],
  ['audio part', msg([{ type: 'input_audio', input_audio: { data: '', format: 'wav' } }])],
  ['text part without text', msg([{ type: 'text' }])],
  ['text is a number', msg([{ type: 'text', text: 7 }])],
  ['image_url is a number', msg([{ type: 'image_url', image_url: 7 }])],
  ['image_url without url', msg([{ type: 'image_url', image_url: {} }])],
  ['image url is empty', img('')],
  ['bad detail', msg([{ type: 'image_url', image_url: { url: dataUrl(png), detail: 'ultra' } }])],
  ['model is a number', { ...msg('hi'), model: 5 }],
  ['temperature is a string', { ...msg('hi'), temperature: 'hot' }],
  ['temperature negative', { ...msg('hi'), temperature: -1 }],
  ['temperature too high', { ...msg('hi'), temperature: 3 }],
  ['temperature is a boolean', { ...msg('hi'), temperature: true }],
  ['top_p above 1', { ...msg('hi'), top_p: 1.5 }],
  ['max_tokens zero', { ...msg('hi'), max_tokens: 0 }],
  ['max_tokens negative', { ...msg('hi'), max_tokens: -5 }],
  ['max_tokens fractional', { ...msg('hi'), max_tokens: 1.5 }],
  ['max_tokens is a string', { ...msg('hi'), max_tokens: '10' }],
  ['max_tokens huge', { ...msg('hi'), max_tokens: 1e30 }],
  ['max_tokens over the server limit', { ...msg('hi'), max_tokens: 65 }],
  ['max_completion_tokens is an array', { ...msg('hi'), max_completion_tokens: [1] }],
  ['stream is a string', { ...msg('hi'), stream: 'yes' }],
  ['stream_options without stream', { ...msg('hi'), stream_options: { include_usage: true } }],
  ['stream_options unknown key', { ...msg('hi'), stream: true, stream_options: { everything: true } }],
  ['stop is a number', { ...msg('hi'), stop: 5 }],
  ['stop holds a number', { ...msg('hi'), stop: [1] }],
  ['stop is empty', { ...msg('hi'), stop: '' }],
  ['too many stops', { ...msg('hi'), stop: ['a', 'b', 'c', 'd', 'e'] }],
  ['seed is a string', { ...msg('hi'), seed: 'x' }],
  ['seed fractional', { ...msg('hi'), seed: 1.5 }],
  ['n = 2', { ...msg('hi'), n: 2 }],
  ['logprobs', { ...msg('hi'), logprobs: true }],
  ['tools', { ...msg('hi'), tools: [{ type: 'function', function: { name: 'f' } }] }],
  ['response_format json', { ...msg('hi'), response_format: { type: 'json_object' } }],
  ['frequency_penalty', { ...msg('hi'), frequency_penalty: 1 }],
  // unknown fields
  ['unknown top-level field', { ...msg('hi'), foo: 1 }],
  ['unknown message field', { messages: [{ role: 'user', content: 'hi', mood: 'happy' }] }],
  ['unknown part field', msg([{ type: 'text', text: 'hi', bold: true }])],
  ['unknown image_url field', msg([{ type: 'image_url', image_url: { url: dataUrl(png), zoom: 2 } }])],
  // images
  ['non-image bytes', img(dataUrl(Buffer.from('hello, this is text and not an image')))],
  ['text/plain data URL', img('data:text/plain;base64,aGVsbG8=')],
  ['data URL without base64', img('data:image/png,abc')],
  ['data URL without comma', img('data:image/png;base64')],
  ['invalid base64', img('data:image/png;base64,@@@@not*base64!!')],
  ['base64 cut mid-byte', img('data:image/png;base64,iVBORw0KG')],
  ['empty image', img('data:image/png;base64,')],
  ['truncated PNG', img(dataUrl(png.subarray(0, Math.floor(png.length / 2))))],
  ['PNG signature only', img(dataUrl(png.subarray(0, 8)))],
  ['truncated JPEG', img(dataUrl(fixture('photo_rocket_640x427_444.jpg').subarray(0, 3000), 'image/jpeg'))],
  ['corrupted PNG', img(dataUrl(Buffer.concat([png.subarray(0, 40), Buffer.alloc(200, 0x55), png.subarray(240)])))],
  ['PNG claiming 100000 x 100000 pixels', img(dataUrl(pngClaiming(100000, 100000)))],
  ['PNG claiming 0 x 0 pixels', img(dataUrl(pngClaiming(0, 0)))],
  ['remote URL', img('https://example.com/cat.png')],
  ['ftp URL', img('ftp://example.com/cat.png')],
  ['local path without --allow-local-images', img('/etc/passwd')],
  ['image over --max-image-mb', img(dataUrl(Buffer.alloc(1200000, 1))), 413],
  ['too many images', msg([1, 2, 3, 4, 5].map(() => ({ type: 'image_url', image_url: { url: dataUrl(png) } })))],
  ['image in a system message', { messages: [{ role: 'system', content: [{ type: 'image_url', image_url: { url: dataUrl(png) } }] }, { role: 'user', content: 'hi' }] }],
  ['image in an assistant message', { messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: [{ type: 'image_url', image_url: { url: dataUrl(png) } }] }, { role: 'user', content: 'hi' }] }],
  ['forged <image> token in text', msg('look: <image> here')],
  ['prompt longer than the context', msg('word '.repeat(6000))],
  // size and HTTP
  ['huge base64 body', img(dataUrl(Buffer.alloc(3 * 1024 * 1024, 7))), 413],
  ['huge text body', msg('x'.repeat(3 * 1024 * 1024)), 413],
  ['text/plain content type', JSON.stringify(msg('hi')), 415, { 'Content-Type': 'text/plain' }],
  ['form content type', 'messages=hi', 415, { 'Content-Type': 'application/x-www-form-urlencoded' }],
];

test('every malformed request gets a 4xx OpenAI error, never a 500', async () => {
  const failures = [];
  for (const [name, body, want = 400, headers = {}] of cases) {
    let r;
    try {
      r = await post(server, body, { headers });
    } catch (e) {
      failures.push(`${name}: request failed: ${e.message}`);
      continue;
    }
    const ok = r.status === want && r.json && r.json.error && typeof r.json.error.message === 'string' &&
      typeof r.json.error.type === 'string' && 'param' in r.json.error && 'code' in r.json.error &&
      /^application\/json/.test(r.headers.get('content-type'));
    if (!ok) failures.push(`${name}: got ${r.status} ${r.text.slice(0, 200)} (wanted ${want})`);
  }
  assert.deepEqual(failures, []);
  assert.ok(server.alive(), 'the server died');
});

test('HTTP-level errors are OpenAI errors too', async () => {
  const get = await fetch(server.url + '/v1/chat/completions');
  assert.equal(get.status, 404);
  assert.equal((await get.json()).error.code, 'unknown_url');
  const unknown = await post(server, msg('hi'), { path: '/v1/completions/nope' });
  assert.equal(unknown.status, 404);
  assert.ok(unknown.json.error.message);
  // A chunked upload (no Content-Length) over the body limit is cut off with a 413 as well.
  const big = new Uint8Array(3 * 1024 * 1024).fill(0x20);
  const stream = new ReadableStream({
    start(c) {
      for (let i = 0; i < big.length; i += 65536) c.enqueue(big.subarray(i, i + 65536));
      c.close();
    },
  });
  const res = await fetch(server.url + '/v1/chat/completions', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: stream, duplex: 'half',
  }).catch((e) => e);
  if (!(res instanceof Error)) {  // the server may also close the connection while the client is still sending
    assert.equal(res.status, 413);
    assert.equal((await res.json()).error.code, 'request_too_large');
  }
});

test('after the battery the server still answers', async () => {
  assert.ok(server.alive());
  const r = await post(server, img(dataUrl(png)));
  assert.equal(r.status, 200);
  assert.equal(r.json.object, 'chat.completion');
  const h = await health(server);
  assert.equal(h.status, 'ok');
  assert.equal(h.active, 0);
});
