// `iris serve` on a Qwen2-VL model (a created qwen2-vl-tiny with a real Qwen tokenizer): images of any size become
// as many tokens as the processor makes of them, the pixel budget is set per request (top-level min_pixels /
// max_pixels or vLLM's mm_processor_kwargs), the image cache keys on the bytes and the budget, and images the
// processor refuses, impossible budgets and prompts longer than the context are 400 errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { IRIS, SHARED, tempDir, startServer, timeLimit, fixture, dataUrl, post } from './lib/harness.mjs';

timeLimit(100);
let server, small;

before(async () => {
  const dir = join(tempDir(), 'qwen2-vl-tiny');
  execFileSync(IRIS, ['init-model', '--preset', 'qwen2-vl-tiny', '--seed', '1', '--tokenizer',
    join(SHARED, 'tokenizers', 'qwen2'), '--out', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  server = await startServer(dir, ['--parallel', '2', '-c', '600']);
  small = await startServer(dir, ['-c', '60'], { name: 'small' });
});
after(async () => {
  if (server) await server.stop();
  if (small) await small.stop();
});

const cat = dataUrl(fixture('photo_cat_451x300.png'));
const ask = (extra = {}, url = cat) => ({
  model: 'tiny', max_tokens: 2, temperature: 0,
  messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url } }, { type: 'text', text: 'What is it?' }] }],
  ...extra,
});

async function promptTokens(srv, body) {
  const r = await post(srv, body);
  assert.equal(r.status, 200, r.text);
  return r.json.usage.prompt_tokens;
}

test('the pixel budget per request sets the image tokens; both spellings; the cache keys on it', async () => {
  // 451x300 within max_pixels 12544 -> 84x112 px -> 3x4 merged tokens = 12; within 3136 -> 28x56 px -> 1x2 = 2.
  const base = await promptTokens(server, ask({ max_pixels: 12544 }));
  const fewer = await promptTokens(server, ask({ mm_processor_kwargs: { max_pixels: 3136 } }));
  assert.equal(base - fewer, 12 - 2);
  // The same bytes with the first budget again: the same count (not the cached embedding of the other budget).
  assert.equal(await promptTokens(server, ask({ max_pixels: 12544 })), base);
  const more = await promptTokens(server, ask({ min_pixels: 200000 }));
  assert.ok(more > base, `${more} > ${base}`);
});

test('bad budgets, refused images and over-long prompts are 400 errors', async () => {
  let r = await post(server, ask({ min_pixels: 5000, max_pixels: 4000 }));
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error.param, 'min_pixels');
  r = await post(server, ask({ mm_processor_kwargs: { max_pixels: 'many' } }));
  assert.equal(r.status, 400, r.text);
  r = await post(server, ask({ mm_processor_kwargs: { size: 3 } }));
  assert.equal(r.status, 400, r.text);
  // A 1x1 image is smaller than a patch block.
  r = await post(server, ask({}, dataUrl(fixture('synth_1x1.png'))));
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error.code, 'invalid_image');
  assert.match(r.json.error.message, /too small/);
  // A budget under one merge block (28x28) cannot be met.
  r = await post(server, ask({ max_pixels: 100 }));
  assert.equal(r.status, 400, r.text);
  // More image tokens than the 60-token context.
  r = await post(small, ask({ min_pixels: 100000 }));
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error.code, 'context_length_exceeded');
});
