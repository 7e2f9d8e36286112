// Shared pieces of the `iris serve` tests: a tiny random LLaVA made with `iris init-model`, servers started on a
// free loopback port and always killed (on exit, on a signal, on the file's time limit; and --watch-stdin stops
// a server whose test process was killed outright), and image fixtures.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const IRIS = process.env.IRIS_BINARY;
export const SHARED = process.env.IRIS_SHARED_DIR;
if (!IRIS || !SHARED) throw new Error('set IRIS_BINARY (the iris executable) and IRIS_SHARED_DIR (../shared)');
export const SOURCE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const IMAGES_DIR = join(SHARED, 'refcases', 'preprocess', 'images');

const servers = new Set();
const tempDirs = [];
function cleanup() {
  for (const p of servers) {
    try { p.kill('SIGKILL'); } catch { /* already gone */ }
  }
  servers.clear();
  for (const d of tempDirs.splice(0)) rmSync(d, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { cleanup(); process.exit(1); });
}

// Ends the whole file (servers included) if it runs past its limit.
export function timeLimit(seconds) {
  setTimeout(() => {
    console.error(`time limit of ${seconds} s reached: killing the servers`);
    process.exit(1);
  }, seconds * 1000).unref();
}

export function tempDir() {
  const d = mkdtempSync(join(tmpdir(), 'iris-serve-test-'));
  tempDirs.push(d);
  return d;
}

// A tiny LLaVA-shaped model with random weights: answers are noise, but deterministic with temperature 0.
export function makeModel() {
  const dir = join(tempDir(), 'tiny-llava');
  execFileSync(IRIS, ['init-model', '--preset', 'tiny-llava', '--seed', '1', '--tokenizer',
    join(SHARED, 'tokenizers', 'mistral'), '--out', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  return dir;
}

// A text-only Llama (the tiny LLaVA's language model alone), to check that images are refused.
export function makeTextModel(llavaDir) {
  const cfg = JSON.parse(readFileSync(join(llavaDir, 'config.json'), 'utf8')).text_config;
  const dir = join(tempDir(), 'tiny-llama');
  const cfgPath = join(dirname(dir), 'llama-config.json');
  writeFileSync(cfgPath, JSON.stringify({ ...cfg, architectures: ['LlamaForCausalLM'], model_type: 'llama' }));
  execFileSync(IRIS, ['init-model', '--config', cfgPath, '--seed', '1', '--tokenizer',
    join(SHARED, 'tokenizers', 'mistral'), '--out', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  return dir;
}

// Starts `iris serve` on a free port; resolves once it listens. model null: no -m (the built-in model) and no
// --model-name (the id is the folder's name).
export function startServer(model, args = [], { name = 'tiny' } = {}) {
  const modelArgs = model === null ? [] : ['-m', model, '--model-name', name];
  const env = { ...process.env };
  delete env.IRIS_MODEL;
  const proc = spawn(IRIS, ['serve', ...modelArgs, '--port', '0', '--watch-stdin', '-t', '1', ...args],
    { stdio: ['pipe', 'pipe', 'pipe'], env });
  servers.add(proc);
  let out = '', err = '';
  proc.stderr.on('data', (d) => {
    err += d;
    if (err.length > 200000) err = err.slice(-100000);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start in 60 s:\n' + err)), 60000);
    proc.on('exit', (code, sig) => {
      servers.delete(proc);
      clearTimeout(timer);
      reject(new Error(`server exited (${code ?? sig}) before listening:\n${err}`));
    });
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/[^\s]+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        const url = m[1];
        resolve({
          url, baseURL: url + '/v1', proc, name,
          log: () => err,
          alive: () => proc.exitCode === null && proc.signalCode === null,
          // A clean stop exits 0; anything else (a sanitizer report, a crash) shows the server's log.
          stop: async () => {
            const code = await stopServer(proc);
            if (code !== 0) console.error(`iris serve exited with ${code}; its log ends with:\n${err.slice(-4000)}`);
            return code;
          },
        });
      }
    });
  });
}

function stopServer(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) {
    servers.delete(proc);
    return Promise.resolve(proc.exitCode);
  }
  return new Promise((resolve) => {
    const kill = setTimeout(() => proc.kill('SIGKILL'), 5000);
    proc.on('exit', (code, signal) => {
      clearTimeout(kill);
      servers.delete(proc);
      resolve(code ?? signal);
    });
    proc.kill('SIGTERM');
  });
}

export function fixture(name) { return readFileSync(join(IMAGES_DIR, name)); }
export const scenePng = () => readFileSync(join(SOURCE_DIR, 'examples', 'scene1.png'));
export const dataUrl = (bytes, type = 'image/png') => `data:${type};base64,${Buffer.from(bytes).toString('base64')}`;

export async function health(server) {
  const res = await fetch(server.url + '/health');
  return res.json();
}

export async function waitFor(pred, ms = 5000, step = 50) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, step));
  }
}

// A raw POST to /v1/chat/completions; returns {status, headers, text, json}.
export async function post(server, body, { headers = {}, path = '/v1/chat/completions', signal } = {}) {
  const res = await fetch(server.url + path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body),
    signal,
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, text, json };
}

// Parses a server-sent event stream's text into its data payloads.
export function sseData(text) {
  return text.split('\n\n').filter((b) => b.length).map((b) => {
    if (!b.startsWith('data: ')) throw new Error('not an SSE data event: ' + JSON.stringify(b.slice(0, 80)));
    return b.slice(6);
  });
}
