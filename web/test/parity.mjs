// Per-step parity of the page's samplers with the Python package: `node web/test/parity.mjs FIXTURE.json MODEL_DIR`.
// The fixture (diffusion_core.webexport.web_fixture, written when the test runs) holds the package's x_T and, for
// each step, t, t_next, the network's raw output rows, the noise it drew and its x_next. Two runs of
// web/src/diffusion.js on the same x_T and noise:
//   replay: the network is the package's (its recorded outputs): every step's x_t must match within TOL;
//   onnx:   the exported network under onnxruntime-node: its first call must match the package's output within
//           TOL; the steps are reported (an eps model at t = T-1 divides by sqrt(alpha_bar) ~ 5e-5, so kernel
//           rounding of 1e-6 shows as ~1e-3 in x_t there, in any two implementations).
// Prints one JSON line; exit 1 when the replay or the network check fails.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { sampleStream, srStream, trailingTimesteps } from '../src/diffusion.js';
import { ortNet } from '../src/ortnet.js';

const [fixturePath, modelDir, tolArg] = process.argv.slice(2);
const tol = Number(tolArg ?? 1e-4);
const fx = JSON.parse(readFileSync(fixturePath, 'utf8'));
const m = JSON.parse(readFileSync(join(modelDir, 'model.json'), 'utf8'));
const session = await ort.InferenceSession.create(join(modelDir, m.onnx));
const onnx = ortNet(ort, session, m);
const maxDiff = (a, b) => a.reduce((d, v, k) => Math.max(d, Math.abs(v - b[k])), 0);

async function run(net) {
  const picks = fx.labels.map((name) => m.label_names.indexOf(name));
  const diffs = [];
  let i = 0;
  const opts = {
    n: fx.n, sampler: fx.sampler, steps: fx.steps, guidance: fx.guidance, picks,
    image: fx.cond_image ? Float32Array.from(fx.cond_image) : null,
    xT: Float32Array.from(fx.x_T), noise: (k) => Float32Array.from(fx.steps_run[k].noise),
  };
  const low = fx.low_res ? Float32Array.from(fx.low_res) : null;
  const side = low ? Math.round(Math.sqrt(low.length / fx.n / m.channels)) : 0;
  const stream = low ? srStream(net, m, low, fx.n, side, side, opts) : sampleStream(net, m, opts);
  for await (const step of stream) {
    diffs.push(maxDiff(step.x, fx.steps_run[i].x_next));
    i++;
  }
  return diffs;
}

let call = 0, networkDiff = null;
const replay = await run(async (feeds, b) => {
  const out = Float32Array.from(fx.steps_run[call].out);
  if (out.length !== feeds.x.length) throw new Error(`step ${call}: ${b} rows asked, the package ran ${out.length / (feeds.x.length / b)}`);
  if (call === 0) networkDiff = maxDiff(await onnx(feeds, b), out);
  call++;
  return out;
});
const viaOnnx = await run(onnx);
const grid = trailingTimesteps(m.T, fx.steps);
const packageGrid = [...fx.steps_run.map((s) => s.t), -1];
const sameGrid = JSON.stringify(grid) === JSON.stringify(packageGrid);
const worst = Math.max(...replay);
const ok = worst <= tol && networkDiff <= tol && sameGrid && replay.length === fx.steps_run.length;
console.log(JSON.stringify({ model: m.name, sampler: fx.sampler, steps: replay.length, grid, same_grid: sameGrid,
  replay_worst: worst, replay, network_first_call: networkDiff, onnx_steps: viaOnnx, ok }));
process.exit(ok ? 0 : 1);
