// The page: load onnxruntime-web and a model, read the settings, stream the denoising onto canvases.
// The maths is in diffusion.js (checked against the Python package); this file is only the page.
import * as ortWasm from '../ort/ort.wasm.bundle.min.mjs';
import { noiseStreams, qSample, sampleStream, SAMPLERS, slerp, srStream } from './diffusion.js';
import { ortNet } from './ortnet.js';

const $ = (id) => document.getElementById(id);
const CACHE = 'diffusion-web-v1';          // the service worker's cache (sw.js): the page works offline once loaded
const SHELL = ['./', 'index.html', 'style.css', 'src/app.js', 'src/diffusion.js', 'src/ortnet.js',
  'ort/ort.wasm.bundle.min.mjs', 'models/index.json', 'site.webmanifest'];

/** Keep what this first visit fetched (before the service worker controlled the page) for offline use. */
async function keep(url, bytes) {
  if (!self.caches) return;
  try { await (await caches.open(CACHE)).put(new URL(url, location.href), new Response(bytes)); } catch { /* private mode */ }
}
const state = { models: [], m: null, net: null, running: false, stop: false, last: null, fwdEps: null, pending: false, runs: 0,
  ort: ortWasm, ep: 'wasm', bytes: null, lastAll: null, lastN: 0, upscalers: {} };

// ---- loading, with progress ----

async function fetchWithProgress(url, onBytes) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  const total = Number(res.headers.get('content-length')) || 0;
  if (!res.body || !total) {
    const b = new Uint8Array(await res.arrayBuffer());
    onBytes(b.length, b.length);
    keep(url, b);
    return b;
  }
  const reader = res.body.getReader(), parts = [];
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    got += value.length;
    onBytes(got, total);
  }
  const out = new Uint8Array(got);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  keep(url, out);
  return out;
}

function progress(label, got, total) {
  $('loading').classList.remove('done');
  $('loading-fill').style.width = `${total ? Math.round((100 * got) / total) : 100}%`;
  $('loading-text').textContent = `${label}: ${(got / 1e6).toFixed(1)} of ${(total / 1e6).toFixed(1)} MB`;
}

/** The service worker (sw.js): the page offline, and cross-origin isolated so that WebAssembly gets threads (the
 *  worker adds the headers; on 2 cores a student's 4 images went from 593 to 371 ms). A first visit is served before
 *  the worker controls the page, so the page reloads once when the worker takes over, unless the visitor has
 *  generated already. A page in a frame (a Space shown on huggingface.co) cannot be isolated by its own headers, so
 *  it is not reloaded; opened directly (its *.hf.space address), it is. */
function serveIsolated() {
  if (!('serviceWorker' in navigator) || location.protocol === 'file:') return;
  if (!self.crossOriginIsolated && !sessionStorage.getItem('isolating') && window.top === window) {
    navigator.serviceWorker.addEventListener('controllerchange', () => {
      if (!state.generated) { sessionStorage.setItem('isolating', '1'); location.reload(); }
    }, { once: true });
  }
  navigator.serviceWorker.register('sw.js').catch(() => {});
}

/** The browser's WebGPU adapter, or null when it has none or does not answer within ``ms``. */
function gpuAdapter(ms) {
  if (!navigator.gpu) return Promise.resolve(null);
  const late = new Promise((resolve) => setTimeout(() => resolve(null), ms));
  return Promise.race([navigator.gpu.requestAdapter().catch(() => null), late]);
}

/** Where the networks run, as the status line says it: WebGPU, or WebAssembly and its threads. */
function where() {
  const threads = ortWasm.env.wasm.numThreads;
  return state.ep === 'webgpu' ? 'WebGPU' : `WebAssembly (${threads} thread${threads > 1 ? 's' : ''})`;
}

async function loadRuntime() {
  const wasm = await fetchWithProgress('ort/ort-wasm-simd-threaded.wasm', (g, t) => progress('Runtime (WebAssembly)', g, t));
  ortWasm.env.wasm.wasmBinary = wasm.buffer;
  ortWasm.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ortWasm.env.wasm.wasmPaths = new URL('../ort/', import.meta.url).href;
}

/** WebGPU where the browser has an adapter, on request: its runtime is another 27 MB, so WebAssembly stays the
 *  default (the page's weight). Falls back to WebAssembly if the GPU session cannot be made. */
async function useWebGPU(on) {
  if (on && state.ep !== 'webgpu') {
    setBusy(true, 'Loading the WebGPU runtime…');
    const gpu = await import('../ort/ort.webgpu.bundle.min.mjs');
    const bin = await fetchWithProgress('ort/ort-wasm-simd-threaded.asyncify.wasm', (g, t) => progress('Runtime (WebGPU)', g, t));
    gpu.env.wasm.wasmBinary = bin.buffer;
    gpu.env.wasm.numThreads = 1;
    state.ort = gpu;
    state.ep = 'webgpu';
  } else if (!on) {
    state.ort = ortWasm;
    state.ep = 'wasm';
  }
  state.upscalers = {};                  // their sessions belong to the runtime they were made with
  if (state.bytes) await makeSession(state.m, state.bytes);
}

async function makeSession(m, bytes) {
  let session;
  try {
    session = await state.ort.InferenceSession.create(bytes, { executionProviders: [state.ep], graphOptimizationLevel: 'all' });
  } catch (err) {
    if (state.ep === 'wasm') throw err;
    state.ort = ortWasm;                 // no GPU session here: WebAssembly, and say so
    state.ep = 'wasm';
    $('gpu').checked = false;
    session = await ortWasm.InferenceSession.create(bytes, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    $('status').textContent = `WebGPU failed (${err.message}); running on WebAssembly.`;
  }
  state.net = ortNet(state.ort, session, m);
  $('loading').classList.add('done');
  setBusy(false, `${m.name} ready on ${where()}: press Generate.`);
}

/** A model's JSON and network bytes (with progress), both kept for offline use. */
async function fetchModel(name) {
  const m = await (await fetch(`models/${name}/model.json`)).json();
  if (self.caches) caches.open(CACHE).then((c) => c.add(`models/${name}/model.json`)).catch(() => {});
  const bytes = await fetchWithProgress(`models/${name}/${m.onnx}`, (g, t) => progress(`Model ${name}`, g, t));
  return { m, bytes };
}

async function loadModel(name) {
  setBusy(true, `Loading ${name}…`);
  const { m, bytes } = await fetchModel(name);
  state.m = m;
  state.bytes = bytes;
  showControls(m);
  state.lastAll = null;
  showUpscale();
  await makeSession(m, bytes);
}

// ---- controls ----

function option(select, value, text) {
  const o = document.createElement('option');
  o.value = value;
  o.textContent = text;
  select.append(o);
}

function showControls(m) {
  $('card').textContent = [m.description, m.headline, m.weights === 'int8' ? 'weights: int8 per channel' : '']
    .filter(Boolean).join(' · ');
  const sampler = $('sampler');
  sampler.replaceChildren();
  for (const s of m.samplers) option(sampler, s, m.sampler_labels?.[s] ?? SAMPLERS[s].label);
  sampler.value = m.defaults.sampler;
  $('steps').value = m.defaults.steps;
  $('guidance').value = m.defaults.guidance;
  $('guidance-value').textContent = m.defaults.guidance;
  $('guidance').max = m.guidance_input ? 4 : 8;
  const multi = m.label_names.length && m.label_mask;
  $('class-box').hidden = !m.label_names.length || multi;
  $('picks-box').hidden = !multi;
  $('draw-box').hidden = !m.cond_channels;
  if (m.label_names.length && !multi) {
    $('class').replaceChildren();
    option($('class'), '', '(any: unconditional)');
    m.label_names.forEach((n, i) => option($('class'), i, n));
    $('class').value = 0;
  }
  if (multi) {
    $('picks').replaceChildren(...m.label_names.map((n, i) => {
      const l = document.createElement('label');
      const c = document.createElement('input');
      c.type = 'checkbox';
      c.value = i;
      l.append(c, n);
      return l;
    }));
  }
  $('steps').disabled = m.guidance_input;      // a student samples on the grid it was distilled on
  $('live-box').hidden = !m.guidance_input;    // few steps: fast enough to follow a slider as it moves
}

function picks() {
  const m = state.m;
  if (!m.label_names.length) return [];
  if (m.label_mask) return [...$('picks').querySelectorAll('input:checked')].map((c) => Number(c.value));
  return $('class').value === '' ? [] : [Number($('class').value)];
}

function setBusy(busy, text, error = false) {
  state.running = busy;
  $('generate').disabled = busy || !state.net;
  $('stop').disabled = !busy;
  $('model').disabled = busy;
  $('upscale').disabled = busy;
  if (text !== undefined) { $('status').textContent = text; $('status').classList.toggle('error', error); }
}

// ---- the drawing (pose models): white paper, dark strokes, as the bundled stickmen ----

const draw = $('draw'), pen = draw.getContext('2d');
function clearDrawing() { pen.fillStyle = '#fff'; pen.fillRect(0, 0, draw.width, draw.height); }
function drawImageOn(img) { clearDrawing(); pen.drawImage(img, 0, 0, draw.width, draw.height); }
function setupDrawing() {
  clearDrawing();
  let last = null;
  const at = (e) => { const r = draw.getBoundingClientRect(); return [(e.clientX - r.left) * draw.width / r.width, (e.clientY - r.top) * draw.height / r.height]; };
  draw.addEventListener('pointerdown', (e) => { last = at(e); draw.setPointerCapture(e.pointerId); });
  draw.addEventListener('pointermove', (e) => {
    if (!last) return;
    const p = at(e);
    pen.strokeStyle = '#1c1c1c'; pen.lineWidth = 9; pen.lineCap = 'round';
    pen.beginPath(); pen.moveTo(...last); pen.lineTo(...p); pen.stroke();
    last = p;
  });
  const end = () => { last = null; };
  draw.addEventListener('pointerup', end);
  draw.addEventListener('pointercancel', end);
  $('clear').onclick = clearDrawing;
  $('upload').onchange = async () => {
    const f = $('upload').files[0];
    if (!f) return;
    try { drawImageOn(await createImageBitmap(f)); $('status').textContent = `Using ${f.name}.`; }
    catch { setBusy(false, `${f.name} is not an image this browser can read.`, true); }
  };
  for (let i = 1; i <= 8; i++) {
    const img = new Image();
    img.src = `examples/stickmen/pose_0${i}.png`;
    img.alt = `stickman ${i}`;
    img.onclick = () => drawImageOn(img);
    $('stickmen').append(img);
    if (i === 1) img.onload = () => drawImageOn(img);
  }
}

/** The drawing as the network reads it: grey, size x size (area average), in [-1, 1]. */
function drawingTensor(size) {
  const c = new OffscreenCanvas(size, size), g = c.getContext('2d');
  g.imageSmoothingQuality = 'high';
  g.drawImage(draw, 0, 0, size, size);
  const px = g.getImageData(0, 0, size, size).data, out = new Float32Array(size * size);
  for (let i = 0; i < out.length; i++) out[i] = (0.299 * px[4 * i] + 0.587 * px[4 * i + 1] + 0.114 * px[4 * i + 2]) / 127.5 - 1;
  return out;
}

// ---- pictures ----

/** n images (n x C x S x S in [-1, 1]) side by side on a canvas. */
function paint(canvas, x, n, m) {
  const S = m.image_size, C = m.channels, cols = n;
  canvas.width = cols * S + (cols - 1) * 2;
  canvas.height = S;
  const g = canvas.getContext('2d'), img = g.createImageData(S, S);
  for (let r = 0; r < n; r++) {
    for (let p = 0; p < S * S; p++) {
      for (let k = 0; k < 3; k++) {
        const v = x[r * C * S * S + (C === 1 ? 0 : k) * S * S + p];
        img.data[4 * p + k] = Math.round((Math.min(1, Math.max(-1, v)) + 1) * 127.5);
      }
      img.data[4 * p + 3] = 255;
    }
    g.putImageData(img, r * (S + 2), 0);
  }
}

function paintForward() {
  const m = state.m, x0 = state.last;
  if (!m || !x0) return;
  const t = Number($('fwd-slider').value), size = x0.length;
  $('fwd-t').textContent = t;
  state.fwdEps ??= noiseStreams(12345, 1, size)();
  paint($('fwd'), qSample(m, x0, t, state.fwdEps.length === size ? state.fwdEps : (state.fwdEps = noiseStreams(12345, 1, size)())), 1, m);
}

// ---- settings link ----

function settings() {
  return { model: $('model').value, sampler: $('sampler').value, steps: $('steps').value, n: $('count').value,
    seed: $('seed').value, guidance: $('guidance').value, mix: $('mix').value, ep: state.ep, picks: picks().map((k) => state.m.label_names[k]).join('|') };
}

function updateLink() {
  if (!state.m) return;
  $('link').href = `#${new URLSearchParams(settings())}`;
}

function applyLink(p) {
  if (p.has('sampler') && state.m.samplers.includes(p.get('sampler'))) $('sampler').value = p.get('sampler');
  for (const k of ['steps', 'seed', 'guidance', 'mix']) if (p.has(k)) $(k).value = p.get(k);
  $('mix-value').textContent = $('mix').value;
  if (p.has('n')) $('count').value = p.get('n');
  $('guidance-value').textContent = $('guidance').value;
  const names = (p.get('picks') || '').split('|').filter(Boolean);
  const idx = names.map((n) => state.m.label_names.indexOf(n)).filter((k) => k >= 0);
  if (state.m.label_mask) $('picks').querySelectorAll('input').forEach((c) => { c.checked = idx.includes(Number(c.value)); });
  else if (state.m.label_names.length && p.has('picks')) $('class').value = idx.length ? idx[0] : '';
}

// ---- a run ----

async function generate() {
  state.generated = true;                 // from now on the page is not reloaded to isolate it (serveIsolated)
  const m = state.m, n = Math.min(8, Math.max(1, Number($('count').value) || 1));
  const steps = Math.min(200, Math.max(1, Number($('steps').value) || 1)), seed = Math.max(0, Number($('seed').value) || 0);
  const sampler = $('sampler').value, guidance = Number($('guidance').value);
  const size = m.channels * m.image_size * m.image_size;
  const draws = noiseStreams(seed, n, size), mix = m.guidance_input ? Number($('mix').value) : 0;
  let xT = draws();
  if (mix > 0) {           // each image between its seed's x_T and the x_T of the seed n further on
    const other = noiseStreams(seed + n, n, size)();
    const mixed = new Float32Array(xT.length);
    for (let r = 0; r < n; r++) mixed.set(slerp(xT.subarray(r * size, (r + 1) * size), other.subarray(r * size, (r + 1) * size), mix), r * size);
    xT = mixed;
  }
  const opts = { n, sampler, steps, guidance, picks: picks(), xT, noise: () => draws(),
    image: m.cond_channels ? drawingTensor(m.image_size) : null };
  setBusy(true, 'Sampling…');
  state.stop = false;
  updateLink();
  const t0 = performance.now();
  let first = null, last = null;
  try {
    for await (const s of sampleStream(state.net, m, opts)) {
      const now = performance.now();
      first ??= now - t0;
      paint($('xt'), s.x, n, m);
      paint($('x0'), s.x0, n, m);
      $('stepinfo').textContent = `step ${s.index + 1}/${s.steps} · t = ${s.t} → ${s.tNext} · ${(now - t0).toFixed(0)} ms`;
      last = s;
      await new Promise(requestAnimationFrame);       // let the canvases show this step
      if (state.stop) break;
    }
    const ms = performance.now() - t0;
    state.last = last.x.slice(0, size);
    state.lastAll = last.x;
    state.lastN = n;
    showUpscale();
    paintForward();
    document.body.dataset.firstPreviewMs = first.toFixed(0);
    document.body.dataset.finishedMs = ms.toFixed(0);
    setBusy(false, `${state.stop ? 'Stopped' : 'Done'}: ${n} image${n > 1 ? 's' : ''}, ${$('sampler').selectedOptions[0].textContent}, ${last.index + 1} of ${last.steps} steps, `
      + `guidance ${guidance}, seed ${seed}, ${where()} · first preview ${first.toFixed(0)} ms, finished ${ms.toFixed(0)} ms`);
    document.body.dataset.runs = String(++state.runs);
  } catch (err) {
    setBusy(false, `Error: ${err.message}`, true);
  }
  if (state.pending) { state.pending = false; generate(); }      // Live: the settings moved during this run
}

function upscalerOf(name) {
  return state.models.find((mm) => mm.name === name)?.upscaler;
}

function showUpscale() {
  const up = upscalerOf(state.m?.name);
  $('upscale').hidden = !up || !state.lastAll || state.lastAll.length !== state.lastN * state.m.channels * state.m.image_size ** 2;
  if (up) $('upscale').textContent = `Upscale ×2 (${up})`;
}

/** The last result through the model's super-resolution stage (its own sampler and steps), streamed like a run. */
async function upscale() {
  const base = state.m, name = upscalerOf(base.name), n = state.lastN, low = state.lastAll;
  setBusy(true, `Loading ${name}…`);
  if (!state.upscalers[name]) {
    const { m, bytes } = await fetchModel(name);
    const session = await state.ort.InferenceSession.create(bytes, { executionProviders: [state.ep], graphOptimizationLevel: 'all' });
    state.upscalers[name] = { m, net: ortNet(state.ort, session, m) };
    $('loading').classList.add('done');
  }
  const { m, net } = state.upscalers[name];
  const h = base.image_size, H = h * m.sr_factor, size = m.channels * H * H;
  const draws = noiseStreams(Math.max(0, Number($('seed').value) || 0), n, size);
  const sm = { ...m, image_size: H };
  setBusy(true, `Upscaling with ${name}…`);
  const t0 = performance.now();
  let last = null;
  for await (const s of srStream(net, m, low, n, h, h, { sampler: m.defaults.sampler, steps: m.defaults.steps,
    xT: draws(), noise: () => draws() })) {
    paint($('xt'), s.x, n, sm);
    paint($('x0'), s.x0, n, sm);
    $('stepinfo').textContent = `${name} · step ${s.index + 1}/${s.steps} · t = ${s.t} → ${s.tNext} · ${(performance.now() - t0).toFixed(0)} ms`;
    last = s;
    await new Promise(requestAnimationFrame);
  }
  state.lastAll = null;                      // the pictures are 64 px now: upscale again after a new run
  showUpscale();
  document.body.dataset.upscaledMs = (performance.now() - t0).toFixed(0);
  setBusy(false, `Upscaled ${n} image${n > 1 ? 's' : ''} ×2 with ${name}: ${m.sampler_labels[m.defaults.sampler]} ${last.steps} steps, `
    + `back-projected onto the ${h} px images · ${(performance.now() - t0).toFixed(0)} ms`);
}

/** Live mode (students): a run for the newest settings as soon as the current one ends. */
function live() {
  if ($('live-box').hidden || !$('live').checked || !state.net) return;
  if (state.running) state.pending = true;
  else generate();
}

// ---- start ----

async function start() {
  const hash = new URLSearchParams(location.hash.slice(1));
  state.models = await (await fetch('models/index.json')).json();
  const pickable = state.models.filter((mm) => mm.task !== 'super_resolution');
  for (const mm of pickable) option($('model'), mm.name, mm.name);
  $('model').value = pickable.some((mm) => mm.name === hash.get('model')) ? hash.get('model') : pickable[0].name;
  $('upscale').onclick = () => upscale().catch((err) => setBusy(false, `Error: ${err.message}`, true));
  setupDrawing();
  $('guidance').oninput = () => { $('guidance-value').textContent = $('guidance').value; updateLink(); live(); };
  $('mix').oninput = () => { $('mix-value').textContent = $('mix').value; live(); };
  $('seed').addEventListener('change', live);
  $('class').addEventListener('change', live);
  $('picks').addEventListener('change', live);
  $('dice').onclick = () => { $('seed').value = Math.floor(Math.random() * 1e6); updateLink(); live(); };
  $('generate').onclick = generate;
  $('stop').onclick = () => { state.stop = true; };
  $('fwd-slider').oninput = paintForward;
  document.querySelectorAll('#controls select, #controls input').forEach((e) => e.addEventListener('change', updateLink));
  $('model').onchange = async () => {
    try { await loadModel($('model').value); updateLink(); } catch (err) { setBusy(false, `Error: ${err.message}`, true); }
  };
  serveIsolated();
  await loadRuntime();
  // the GPU probe runs beside the first load, never before it: the page's first model does not wait on a GPU process
  // (a CI page once stayed "Loading" for 2 minutes); the box shows when an adapter answers, within 10 s
  const adapter = gpuAdapter(10_000).then((a) => { $('gpu-box').hidden = !a; $('gpu-box').dataset.probed = '1'; return a; });
  $('gpu').onchange = () => useWebGPU($('gpu').checked).catch((err) => setBusy(false, `Error: ${err.message}`, true));
  await loadModel($('model').value);
  if (hash.get('ep') === 'webgpu' && await adapter) { $('gpu').checked = true; await useWebGPU(true); }
  applyLink(hash);
  updateLink();
  if (self.caches) caches.open(CACHE).then((c) => c.addAll([...SHELL, ...[...$('stickmen').children].map((i) => i.src)])).catch(() => {});
}

start().catch((err) => setBusy(false, `Error: ${err.message}`, true));
