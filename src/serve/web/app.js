// The chat page's logic: attach images (pick, paste or drop), send the conversation to /v1/chat/completions with
// stream: true, and show the answer as its server-sent events arrive. Plain browser JavaScript, no build step.
'use strict';

const $ = (id) => document.getElementById(id);
const els = {
  log: $('log'), hint: $('empty-hint'), model: $('model'), form: $('composer'), prompt: $('prompt'),
  imageInput: $('image-input'), attachments: $('attachments'), send: $('send'), stop: $('stop'),
  status: $('status'), apiKey: $('api-key'), temperature: $('temperature'), maxTokens: $('max-tokens'),
  system: $('system'), newChat: $('new-chat'),
};

const state = {
  model: 'iris',
  history: [],   // OpenAI messages of the conversation so far (without the system message)
  pending: [],   // images attached to the next message: {dataUrl, name}
  controller: null,
};

// Settings persist in this browser only.
for (const [key, el] of [['iris.apiKey', els.apiKey], ['iris.temperature', els.temperature],
                         ['iris.maxTokens', els.maxTokens], ['iris.system', els.system]]) {
  const saved = localStorage.getItem(key);
  if (saved !== null) el.value = saved;
  el.addEventListener('change', () => localStorage.setItem(key, el.value));
}

function headers() {
  const h = { 'Content-Type': 'application/json' };
  const key = els.apiKey.value.trim();
  if (key) h.Authorization = 'Bearer ' + key;
  return h;
}

function setStatus(text) { els.status.textContent = text; }

async function loadModel() {
  try {
    const res = await fetch('/v1/models', { headers: headers() });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error ? body.error.message : res.statusText);
    state.model = body.data[0].id;
    els.model.textContent = state.model;
  } catch (err) {
    els.model.textContent = 'model unknown';
    setStatus('Could not list models: ' + err.message + (els.apiKey.value ? '' : ' (set the API key in Settings?)'));
  }
}
els.apiKey.addEventListener('change', loadModel);

// ---- images ----------------------------------------------------------------------------------------------

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

async function addFiles(files) {
  for (const file of files) {
    if (!/^image\/(png|jpeg)$/.test(file.type)) {
      setStatus(`${file.name || 'that file'} is not a PNG or JPEG image`);
      continue;
    }
    state.pending.push({ dataUrl: await readAsDataUrl(file), name: file.name || 'pasted image' });
  }
  renderAttachments();
}

function renderAttachments() {
  els.attachments.replaceChildren();
  state.pending.forEach((img, i) => {
    const box = document.createElement('div');
    box.className = 'thumb';
    const pic = document.createElement('img');
    pic.src = img.dataUrl;
    pic.alt = img.name;
    pic.title = img.name;
    const rm = document.createElement('button');
    rm.type = 'button';
    rm.textContent = '×';
    rm.title = 'remove';
    rm.addEventListener('click', () => { state.pending.splice(i, 1); renderAttachments(); });
    box.append(pic, rm);
    els.attachments.append(box);
  });
}

els.imageInput.addEventListener('change', async () => {
  await addFiles([...els.imageInput.files]);
  els.imageInput.value = '';
});
document.addEventListener('paste', (e) => {
  const files = [...(e.clipboardData ? e.clipboardData.files : [])].filter((f) => f.type.startsWith('image/'));
  if (files.length) {
    e.preventDefault();
    addFiles(files);
  }
});
document.addEventListener('dragover', (e) => { e.preventDefault(); document.body.classList.add('dragging'); });
document.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
document.addEventListener('drop', (e) => {
  e.preventDefault();
  document.body.classList.remove('dragging');
  addFiles([...e.dataTransfer.files]);
});

// ---- conversation ----------------------------------------------------------------------------------------

function addBubble(cls) {
  els.hint.hidden = true;
  const div = document.createElement('div');
  div.className = 'msg ' + cls;
  els.log.append(div);
  return div;
}

function scrollDown() { els.log.scrollTop = els.log.scrollHeight; }

function showUser(text, images) {
  const div = addBubble('user');
  for (const img of images) {
    const pic = document.createElement('img');
    pic.src = img.dataUrl;
    pic.alt = img.name;
    div.append(pic);
  }
  div.append(document.createTextNode(text));
  scrollDown();
}

function showError(message) {
  addBubble('error').textContent = message;
  scrollDown();
}

function busy(on) {
  els.send.disabled = on;
  els.stop.hidden = !on;
  els.prompt.disabled = on;
}

// Server-sent events: blocks separated by a blank line; each "data:" line carries one JSON chunk or [DONE].
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      if (data) yield data;
    }
  }
}

async function send() {
  const text = els.prompt.value.trim();
  if (!text && state.pending.length === 0) return;
  const images = state.pending;
  const content = images.map((img) => ({ type: 'image_url', image_url: { url: img.dataUrl } }));
  if (text) content.push({ type: 'text', text });
  const userMsg = { role: 'user', content };
  showUser(text, images);
  state.pending = [];
  renderAttachments();
  els.prompt.value = '';

  const messages = [];
  if (els.system.value.trim()) messages.push({ role: 'system', content: els.system.value.trim() });
  messages.push(...state.history, userMsg);
  const body = {
    model: state.model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number(els.temperature.value) || 0,
    max_tokens: Math.max(1, parseInt(els.maxTokens.value, 10) || 256),
  };

  const bubble = addBubble('assistant');
  bubble.dataset.state = 'streaming';
  const answer = document.createTextNode('');
  bubble.append(answer);
  state.controller = new AbortController();
  busy(true);
  setStatus('waiting for the first token…');
  const t0 = performance.now();
  let finish = null, usage = null, firstAt = null;
  try {
    const res = await fetch('/v1/chat/completions', {
      method: 'POST', headers: headers(), body: JSON.stringify(body), signal: state.controller.signal,
    });
    if (!res.ok) {
      let msg = res.status + ' ' + res.statusText;
      try { msg = (await res.json()).error.message; } catch (_) { /* not JSON: keep the status line */ }
      throw new Error(msg);
    }
    for await (const data of sseEvents(res.body)) {
      if (data === '[DONE]') break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) {
          if (firstAt === null) {
            firstAt = performance.now();
            setStatus('answering…');
          }
          answer.appendData(choice.delta.content);
          scrollDown();
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    state.history.push(userMsg, { role: 'assistant', content: answer.data });
    bubble.dataset.state = 'done';
    bubble.dataset.finish = finish || '';
    const meta = document.createElement('span');
    meta.className = 'meta';
    const parts = [`finish: ${finish}`];
    if (usage) parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
    if (firstAt !== null) parts.push(`first token ${Math.round(firstAt - t0)} ms, total ${Math.round(performance.now() - t0)} ms`);
    meta.textContent = parts.join(' · ');
    bubble.append(meta);
    setStatus('');
  } catch (err) {
    bubble.dataset.state = 'error';
    if (err.name === 'AbortError') {
      setStatus('stopped');
      bubble.dataset.state = 'stopped';
    } else {
      showError(err.message);
      setStatus('');
    }
  } finally {
    state.controller = null;
    busy(false);
    els.prompt.focus();
  }
}

els.form.addEventListener('submit', (e) => { e.preventDefault(); send(); });
els.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
els.stop.addEventListener('click', () => { if (state.controller) state.controller.abort(); });
els.newChat.addEventListener('click', () => {
  if (state.controller) state.controller.abort();
  state.history = [];
  state.pending = [];
  renderAttachments();
  els.log.replaceChildren(els.hint);
  els.hint.hidden = false;
  setStatus('');
});

loadModel();
