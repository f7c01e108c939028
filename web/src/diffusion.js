// The page's diffusion maths: the samplers of diffusion_core (samplers/updates.py), written a second time in
// JavaScript and held to the package step by step by web/test/parity.mjs (fixtures the package writes when the
// test runs). Pure functions over Float32Arrays; no DOM and no onnxruntime here, so Node and the browser share it.
// Notation as in the package: alpha_bar (ab) per integer timestep t in 0..T-1, ab(-1) = 1 (the clean image);
// x_t = sqrt(ab) x0 + sqrt(1 - ab) eps (DDPM eq. 4).

/** Round half to even, as torch.round does (the grids are exact ratios that can land on .5). */
export function roundHalfEven(v) {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** The trailing grid (Lin et al. 2024, Table 2): round(T (K - i) / K) - 1 for i = 0..K-1, then -1. */
export function trailingTimesteps(T, K) {
  if (!(K >= 1 && K <= T)) throw new Error(`steps must be in [1, ${T}], got ${K}`);
  const ts = [];
  for (let i = 0; i < K; i++) ts.push(roundHalfEven(((K - i) * T) / K) - 1);
  const unique = [...new Set(ts)].sort((a, b) => b - a);
  return [...unique, -1];
}

export const alphaBar = (m, t) => (t < 0 ? 1 : m.alpha_bar[t]);
const lam = (ab) => 0.5 * Math.log(ab / (1 - ab));     // lambda = log(alpha / sigma), half the log-SNR

const f = Math.fround;      // float32 rounding: the package computes these in float32 (fp32 runs)

/** (sqrt(ab), sqrt(1 - ab)) as the package's float32 tensors hold them. */
function alphaSigma32(ab) {
  const a32 = f(ab);
  return [f(Math.sqrt(a32)), f(Math.sqrt(f(1 - a32)))];
}

/** Network output -> {x0, eps} (the package's prediction_from_output): eps, x0 or v (Salimans & Ho 2022), in
 *  float32 operation by operation: at t = T-1 sqrt(ab) ~ 5e-5, so x0 from eps is a difference of large numbers. */
export function toPrediction(out, x, ab, prediction) {
  const [a, s] = alphaSigma32(ab), n = x.length;
  const x0 = new Float32Array(n), eps = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (prediction === 'eps') { eps[i] = out[i]; x0[i] = f(x[i] - f(s * out[i])) / a; }
    else if (prediction === 'x0') { x0[i] = out[i]; eps[i] = f(x[i] - f(a * out[i])) / s; }
    else if (prediction === 'v') { x0[i] = f(a * x[i]) - f(s * out[i]); eps[i] = f(s * x[i]) + f(a * out[i]); }
    else throw new Error(`unknown prediction type ${prediction}`);
  }
  return { x0, eps };
}

/** x0_hat clipped to [-1, 1] and eps_hat recomputed from x_t (the package's ClipX0, mode "clip"), float32. */
export function clipX0(p, x, ab) {
  const [a, s] = alphaSigma32(ab);
  const x0 = p.x0.map((v) => Math.min(1, Math.max(-1, v)));
  const eps = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) eps[i] = f(x[i] - f(a * x0[i])) / s;
  return { x0, eps };
}

/** Classifier-free guidance (Ho & Salimans 2022, eq. 6): u + w (c - u), on x0 and eps alike, float32. */
export function guide(c, u, w) {
  const mix = (cv, uv) => uv.map((v, i) => v + f(w * f(cv[i] - v)));
  return { x0: mix(c.x0, u.x0), eps: mix(c.eps, u.eps) };
}

// ---- the update rules (samplers/updates.py), each x_next from x_t, t, t_next and the prediction ----

/** DDIM (Song et al. 2021, eq. 12 with sigma of eq. 16): sqrt(ab') x0 + sqrt(1 - ab' - sigma^2) eps + sigma z. */
export function ddimStep(m, x, t, tNext, p, noise, eta = 0) {
  const ab = alphaBar(m, t), abN = alphaBar(m, tNext);
  const sigma = eta * Math.sqrt((1 - abN) / (1 - ab)) * Math.sqrt(1 - ab / abN);
  const c0 = Math.sqrt(abN), c1 = Math.sqrt(Math.max(1 - abN - sigma * sigma, 0));
  return p.x0.map((v, i) => c0 * v + c1 * p.eps[i] + (sigma > 0 ? sigma * noise[i] : 0));
}

/** Ancestral DDPM (Ho et al. 2020, eqs. 6-7, respaced): beta = 1 - ab / ab', the posterior mean and variance. */
export function ddpmStep(m, x, t, tNext, p, noise) {
  const ab = alphaBar(m, t), abN = alphaBar(m, tNext);
  const beta = 1 - ab / abN, variance = ((1 - abN) / (1 - ab)) * beta;
  const c0 = (Math.sqrt(abN) * beta) / (1 - ab), c1 = (Math.sqrt(1 - beta) * (1 - abN)) / (1 - ab);
  const sd = tNext < 0 ? 0 : Math.sqrt(variance);
  return p.x0.map((v, i) => c0 * v + c1 * x[i] + (sd > 0 ? sd * noise[i] : 0));
}

/** DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in data prediction: x' = (sigma'/sigma) x - alpha' (e^-h - 1) D,
 *  D = x0 on the first step, (1 + 1/2r) x0 - 1/2r x0_prev after it; the step into t = -1 returns x0. */
export function dpmpp2mStep(m, x, t, tNext, p, prev) {
  if (tNext < 0) return p.x0;
  const ab = alphaBar(m, t), abN = alphaBar(m, tNext);
  const h = lam(abN) - lam(ab);
  const cx = Math.sqrt(1 - abN) / Math.sqrt(1 - ab), cd = -Math.sqrt(abN) * Math.expm1(-h);
  if (!prev) return x.map((v, i) => cx * v + cd * p.x0[i]);
  const r = (lam(ab) - lam(alphaBar(m, prev.t))) / h;
  const a = 1 + 1 / (2 * r), b = 1 / (2 * r);
  return x.map((v, i) => cx * v + cd * (a * p.x0[i] - b * prev.x0[i]));
}

/** A progressively distilled student's step (Salimans & Ho 2022, Alg. 2): z_s = alpha_s x + (sigma_s/sigma_t)
 *  (z_t - alpha_t x), deterministic DDIM in x-prediction form; into t = -1 it returns x. */
export function progressiveStep(m, x, t, tNext, p) {
  const ab = alphaBar(m, t), abN = alphaBar(m, tNext);
  const aT = Math.sqrt(ab), sT = Math.sqrt(1 - ab), aS = Math.sqrt(abN), sS = Math.sqrt(1 - abN);
  return p.x0.map((v, i) => aS * v + (sS / sT) * (x[i] - aT * v));
}

export const SAMPLERS = {
  ddim: { label: 'DDIM', stochastic: false },
  'dpm++': { label: 'DPM-Solver++(2M)', stochastic: false },
  ddpm: { label: 'DDPM (ancestral)', stochastic: true },
  progressive: { label: "the student's own rule", stochastic: false },
};

// ---- conditions: the rows the network sees, as the package's Stage.condition and guidance build them ----

/** The fields of n rows: labels picked (indices), every row the same, as picks_condition builds them. */
export function conditionRows(m, n, picks, image) {
  const L = m.label_names.length, rows = { uncond: new Uint8Array(n) };
  if (L) {
    rows.labels = new Float32Array(n * L);
    for (let r = 0; r < n; r++) for (const k of picks) rows.labels[r * L + k] = 1;
    rows.known = m.label_mask ? rows.labels.slice() : new Float32Array(n * L).fill(1);
    if (!picks.length) rows.uncond.fill(1);            // no pick: the null condition (unconditional)
  }
  if (m.cond_channels) {
    const size = m.cond_channels * m.image_size * m.image_size;
    rows.image = new Float32Array(n * size);
    for (let r = 0; r < n; r++) rows.image.set(image, r * size);
  }
  return rows;
}

/** Whether classifier-free guidance applies (the package's Condition.has_guidable): labels picked, or a drawing
 *  (a super-resolution model's image comes with its augmentation level and is not guided). */
export const guidable = (m, picks) => (m.label_names.length && picks.length > 0)
  || (m.cond_channels > 0 && !m.inputs.includes('aug_level'));

/** The second pass of guidance: the null condition, or, for a model whose config holds some attributes
 *  (sampling.held_labels), per row those picks alone, guided at weight 1 (ClassifierFreeGuidance.negative). */
export function negativeRows(m, rows, n) {
  const L = m.label_names.length;
  const neg = { ...rows, uncond: new Uint8Array(n).fill(1) };
  if (!L || !m.label_mask || !m.held_labels.length) return neg;
  const held = m.label_names.map((name) => (m.held_labels.includes(name) ? 1 : 0));
  neg.labels = rows.labels.slice();
  neg.known = rows.known.slice();
  for (let r = 0; r < n; r++) {
    let has = false;
    for (let k = 0; k < L; k++) if (rows.labels[r * L + k] * rows.known[r * L + k] * held[k] > 0) has = true;
    if (!has) continue;
    neg.uncond[r] = rows.uncond[r];
    for (let k = 0; k < L; k++) {
      const keep = rows.labels[r * L + k] * rows.known[r * L + k] * held[k];
      neg.labels[r * L + k] = keep;
      neg.known[r * L + k] = keep;
    }
  }
  return neg;
}

function concatRows(a, b) {
  const out = {};
  for (const k of Object.keys(a)) {
    const v = new a[k].constructor(a[k].length + b[k].length);
    v.set(a[k]);
    v.set(b[k], a[k].length);
    out[k] = v;
  }
  return out;
}

/** The denoiser at (x, t): the network's rows (one call; two passes stacked for guidance), its output turned
 *  into (x0, eps), guidance w applied to both, x0 clipped where the model's config says so. */
async function denoise(net, m, x, t, n, rows, w, picks) {
  const ab = alphaBar(m, t), per = x.length / n;
  const guided = !m.guidance_input && w !== 1 && guidable(m, picks);
  const feed = guided ? concatRows(rows, negativeRows(m, rows, n)) : rows;
  const b = guided ? 2 * n : n;
  const xs = guided ? concatRows({ x }, { x }).x : x;
  const extra = m.guidance_input ? { guidance: new Float32Array(b).fill(w) } : {};
  const out = await net({ x: xs, t: new Float32Array(b).fill(t), ...feed, ...extra }, b);
  let p;
  if (guided) {
    const c = toPrediction(out.subarray(0, n * per), x, ab, m.prediction);
    const u = toPrediction(out.subarray(n * per), x, ab, m.prediction);
    p = guide(c, u, w);
  } else {
    p = toPrediction(out, x, ab, m.prediction);
  }
  return m.x0_range === 'clip' ? clipX0(p, x, ab) : p;
}

/**
 * The sampling loop (the package's sample_stream): yields {index, steps, t, tNext, x, x0} after every step.
 * net(feeds, batch) -> Float32Array runs the network; opts: n, sampler, steps, guidance, picks (label indices),
 * image (the drawing, cond_channels x size x size in [-1, 1]), xT (n x C x H x W), noise(i) -> Float32Array for
 * step i of a stochastic sampler, eta (DDIM).
 */
export async function* sampleStream(net, m, opts) {
  const { n, sampler, steps, guidance = 1, picks = [], image = null, xT, noise, eta = 0 } = opts;
  if (!SAMPLERS[sampler]) throw new Error(`unknown sampler ${sampler}`);
  const ts = trailingTimesteps(m.T, steps);
  const rows = opts.rows ?? conditionRows(m, n, picks, image);
  let x = xT, prev = null;
  for (let i = 0; i < ts.length - 1; i++) {
    const t = ts[i], tNext = ts[i + 1];
    const p = await denoise(net, m, x, t, n, rows, guidance, picks);
    const z = (sampler === 'ddpm' || (sampler === 'ddim' && eta > 0)) && tNext >= 0 ? noise(i) : null;
    let next;
    if (sampler === 'ddim') next = ddimStep(m, x, t, tNext, p, z, eta);
    else if (sampler === 'ddpm') next = ddpmStep(m, x, t, tNext, p, z);
    else if (sampler === 'dpm++') next = dpmpp2mStep(m, x, t, tNext, p, prev);
    else next = progressiveStep(m, x, t, tNext, p);
    prev = { t, x0: p.x0 };
    if (tNext < 0 && opts.finish) next = opts.finish(next);       // super-resolution: back-projection
    yield { index: i, steps: ts.length - 1, t, tNext, x: next, x0: p.x0 };
    x = next;
  }
}

// ---- super-resolution (the package's Stage._sr_input and conditioning.back_project) ----

/** PyTorch's bicubic kernel (a = -0.75) weights for a sample at fraction d past the left neighbour. */
function cubicWeights(d) {
  const A = -0.75;
  const near = (x) => ((A + 2) * x - (A + 3)) * x * x + 1;
  const far = (x) => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return [far(d + 1), near(d), near(1 - d), far(2 - d)];
}

/** Resize n x C planes h x w to H x W, separably (F.interpolate modes "bicubic", align_corners False, and
 *  "nearest"; edges replicated). */
function resize(x, n, C, h, w, H, W, mode) {
  const taps = (out, inn) => Array.from({ length: out }, (_, o) => {
    const src = (o + 0.5) * (inn / out) - 0.5;
    if (mode === 'nearest') return [[Math.min(inn - 1, Math.floor(o * inn / out))], [1]];
    const i0 = Math.floor(src), wts = cubicWeights(src - i0);
    return [[-1, 0, 1, 2].map((k) => Math.min(inn - 1, Math.max(0, i0 + k))), wts];
  });
  const tx = taps(W, w), ty = taps(H, h), out = new Float32Array(n * C * H * W), row = new Float64Array(h * W);
  for (let p = 0; p < n * C; p++) {
    const src = p * h * w;
    for (let y = 0; y < h; y++) {
      for (let X = 0; X < W; X++) {
        const [idx, wt] = tx[X];
        let v = 0;
        for (let k = 0; k < idx.length; k++) v += wt[k] * x[src + y * w + idx[k]];
        row[y * W + X] = v;
      }
    }
    for (let Y = 0; Y < H; Y++) {
      const [idx, wt] = ty[Y];
      for (let X = 0; X < W; X++) {
        let v = 0;
        for (let k = 0; k < idx.length; k++) v += wt[k] * row[idx[k] * W + X];
        out[p * H * W + Y * W + X] = v;
      }
    }
  }
  return out;
}

/** Area averaging from H x W to h x w where the sizes divide (F.interpolate mode "area"). */
function areaDown(x, n, C, H, W, h, w) {
  const fy = H / h, fx = W / w, out = new Float32Array(n * C * h * w);
  for (let p = 0; p < n * C; p++) {
    for (let y = 0; y < h; y++) {
      for (let X = 0; X < w; X++) {
        let v = 0;
        for (let dy = 0; dy < fy; dy++) for (let dx = 0; dx < fx; dx++) v += x[p * H * W + (y * fy + dy) * W + X * fx + dx];
        out[p * h * w + y * w + X] = v / (fy * fx);
      }
    }
  }
  return out;
}

/** Iterative back-projection (Irani & Peleg 1991) onto the input, at scale 1 (the package's back_project):
 *  ``rounds`` times x += bicubic(target - area(x)), then ``exact`` rounds of x = clip(x); x += nearest(target -
 *  area(x)), after which the result area-averages to its input exactly. */
export function backProject(x, low, n, C, H, W, h, w, rounds, exact) {
  let y = x;
  const add = (a, b) => a.map((v, i) => v + b[i]);
  for (let r = 0; r < rounds; r++) {
    const down = areaDown(y, n, C, H, W, h, w);
    y = add(y, resize(low.map((v, i) => v - down[i]), n, C, h, w, H, W, 'bicubic'));
  }
  for (let r = 0; r < exact; r++) {
    y = y.map((v) => Math.min(1, Math.max(-1, v)));
    const down = areaDown(y, n, C, H, W, h, w);
    y = add(y, resize(low.map((v, i) => v - down[i]), n, C, h, w, H, W, 'nearest'));
  }
  return y;
}

/** A super-resolution model's run on n low-resolution images (n x C x h x w in [-1, 1]): the condition is their
 *  bicubic upscale, clipped, at augmentation level 0; the result is back-projected onto them. opts as sampleStream's. */
export function srStream(net, m, low, n, h, w, opts) {
  const C = m.channels, H = h * m.sr_factor, W = w * m.sr_factor;
  const image = resize(low, n, C, h, w, H, W, 'bicubic').map((v) => Math.min(1, Math.max(-1, v)));
  const rows = { uncond: new Uint8Array(n), image, aug_level: new Float32Array(n) };
  const bp = m.back_projection;
  return sampleStream(net, m, { ...opts, n, guidance: 1, rows,
    finish: (x) => backProject(x, low, n, C, H, W, h, w, bp.rounds, bp.exact_rounds) });
}

/** The forward process q(x_t | x0) (DDPM eq. 4): sqrt(ab) x0 + sqrt(1 - ab) eps. */
export function qSample(m, x0, t, eps) {
  const ab = alphaBar(m, t), a = Math.sqrt(ab), s = Math.sqrt(1 - ab);
  return x0.map((v, i) => a * v + s * eps[i]);
}

/** Spherical interpolation between two noise images (x_T of two seeds), which keeps the norm of Gaussian noise
 *  where a straight line would shrink it (Shoemake 1985; the package's interpolate in the app). */
export function slerp(a, b, alpha) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  const omega = Math.acos(Math.min(1, Math.max(-1, dot / Math.sqrt(na * nb))));
  if (omega < 1e-6) return a.map((v, i) => (1 - alpha) * v + alpha * b[i]);
  const s = Math.sin(omega), wa = Math.sin((1 - alpha) * omega) / s, wb = Math.sin(alpha * omega) / s;
  return a.map((v, i) => wa * v + wb * b[i]);
}

// ---- seeded noise: image i of seed s uses the stream seeded s + i (as the package's make_generators) ----

function splitmix32(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  };
}

/** One standard-normal stream per image (Box-Muller over a seeded uniform stream). Not torch's generator: a
 *  seed gives other images on the page than in the package (the parity test feeds the package's noise). */
export function noiseStreams(seed, n, size) {
  const streams = Array.from({ length: n }, (_, i) => splitmix32(seed + i));
  return () => {
    const out = new Float32Array(n * size);
    streams.forEach((u, r) => {
      for (let k = 0; k < size; k += 2) {
        const a = Math.max(u(), 1e-12), b = u();
        const rad = Math.sqrt(-2 * Math.log(a));
        out[r * size + k] = rad * Math.cos(2 * Math.PI * b);
        if (k + 1 < size) out[r * size + k + 1] = rad * Math.sin(2 * Math.PI * b);
      }
    });
    return out;
  };
}
