// `iris serve` on a SmolVLM model (a created smolvlm-tiny with the Llama-3 tokenizer plus Idefics3's added tokens):
// each image is expanded into its tiles' markers as `iris forward -p` expands it (the same prompt tokens), images
// of other sizes give other tile grids, parallel requests give the same answers as one at a time, and a prompt
// longer than the context is a 400 error.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { IRIS, SHARED, tempDir, startServer, timeLimit, fixture, dataUrl, post } from './lib/harness.mjs';

timeLimit(100);
let server, small, dir;

before(async () => {
  dir = join(tempDir(), 'smolvlm-tiny');
  execFileSync(IRIS, ['init-model', '--preset', 'smolvlm-tiny', '--seed', '1', '--tokenizer',
    join(SHARED, 'tokenizers', 'llama3'), '--out', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  // The processor's chat template (Llama-3's knows no images) and Idefics3's added tokens after the vocabulary.
  const tcPath = join(dir, 'tokenizer_config.json');
  const tc = JSON.parse(readFileSync(tcPath, 'utf8'));
  delete tc.chat_template;
  writeFileSync(tcPath, JSON.stringify(tc));
  const tjPath = join(dir, 'tokenizer.json');
  const tj = JSON.parse(readFileSync(tjPath, 'utf8'));
  const added = ['<fake_token_around_image>', '<image>', '<global-img>'];
  for (let r = 1; r <= 6; ++r) for (let c = 1; c <= 6; ++c) added.push(`<row_${r}_col_${c}>`);
  added.push('<end_of_utterance>');
  added.forEach((content, i) => tj.added_tokens.push({ id: 128256 + i, content, single_word: false, lstrip: false,
    rstrip: false, normalized: false, special: true }));
  writeFileSync(tjPath, JSON.stringify(tj));
  server = await startServer(dir, ['--parallel', '2', '-c', '1024']);
  small = await startServer(dir, ['-c', '40'], { name: 'small' });
});
after(async () => {
  if (server) await server.stop();
  if (small) await small.stop();
});

const photo = readFileSync(join(SHARED, 'refcases', 'idefics3_s', 'photo_cat_451x300.png'));
const ask = (bytes = photo, type = 'image/png') => ({
  model: 'tiny', max_tokens: 3, temperature: 0,
  messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: dataUrl(bytes, type) } },
    { type: 'text', text: 'What is it?' }] }],
});

test('the image prompt is expanded as iris forward -p expands it, per image size', async () => {
  const r = await post(server, ask());
  assert.equal(r.status, 200, r.text);
  const out = join(dir, 'forward-out');
  const photoPath = join(SHARED, 'refcases', 'idefics3_s', 'photo_cat_451x300.png');
  execFileSync(IRIS, ['forward', '-m', dir, '--image', photoPath, '-p', 'What is it?', '--save-processor-outputs',
    out, '-t', '1'], { stdio: ['ignore', 'ignore', 'inherit'] });
  // input_ids.npy: int64 (1, S); the header says the shape.
  const npy = readFileSync(join(out, 'input_ids.npy'));
  const shape = /'shape': \(1, (\d+)\)/.exec(npy.toString('latin1'))[1];
  assert.equal(r.json.usage.prompt_tokens, Number(shape));
  // A 512x600 portrait: 256x218 -> 256x256, 4 x 4 tiles + the global view (17 frames) instead of 3 x 4 + 1
  // (13 frames): 4 tiles more, each with its marker and 4 image tokens.
  const sq = await post(server, ask(fixture('photo_hopper_512x600_420.jpg'), 'image/jpeg'));
  assert.equal(sq.status, 200, sq.text);
  assert.ok(sq.json.usage.prompt_tokens > r.json.usage.prompt_tokens + 4 * 5,
    `${sq.json.usage.prompt_tokens} vs ${r.json.usage.prompt_tokens}`);
});

test('max_tiles per request bounds the tile grid (top level or in mm_processor_kwargs)', async () => {
  const full = (await post(server, ask())).json.usage.prompt_tokens;          // 3 x 4 tiles + global
  const four = await post(server, { ...ask(), max_tiles: 4 });               // 2 x 2 + global
  const one = await post(server, { ...ask(), mm_processor_kwargs: { max_tiles: 1 } });  // the global view only
  assert.equal(four.status, 200, four.text);
  assert.equal(one.status, 200, one.text);
  assert.ok(one.json.usage.prompt_tokens < four.json.usage.prompt_tokens, four.text);
  assert.ok(four.json.usage.prompt_tokens < full, four.text);
  const bad = await post(server, { ...ask(), max_tiles: 0 });
  assert.equal(bad.status, 400, bad.text);
});

test('parallel requests answer as one at a time; a prompt longer than the context is a 400', async () => {
  const one = await post(server, ask());
  const [a, b] = await Promise.all([post(server, ask()), post(server, ask())]);
  assert.equal(a.json.choices[0].message.content, one.json.choices[0].message.content);
  assert.equal(b.json.choices[0].message.content, one.json.choices[0].message.content);
  const r = await post(small, ask());
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error.code, 'context_length_exceeded');
});
