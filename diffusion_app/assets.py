"""The page's texts, CSS and script."""
from __future__ import annotations




CSS = """
.dc-status {font-size: 0.95em; min-height: 1.4em; font-variant-numeric: tabular-nums;}
.dc-bar {height: 8px; background: var(--neutral-200, #e5e7eb); border-radius: 4px; margin-top: 6px; overflow: hidden;}
.dc-fill {height: 100%; background: var(--color-accent, #f97316); transition: width 0.15s;}
.dc-small-btn {align-self: end;}
/* a number typed past its box's bounds, set to the bound (NUMBER_BOUNDS_JS) */
.dc-clamped {display: block; font-size: 12px; color: #b45309; white-space: nowrap;}
.dc-pixel img {image-rendering: pixelated;}
#fwd-image img, #card-img img {width: 100%; height: 100%; object-fit: contain;}
/* Upscale's before/after slider: both halves fit its box (they overflowed it at their natural 500 px and the
   "before" half was centred 100 px higher, so the halves did not line up) */
#up-slider img {width: 100% !important; height: 100% !important; max-height: 100% !important;
  object-fit: contain !important; top: 0 !important; transform: none !important;}
#fwd-strip img {max-width: 100%; height: auto; object-fit: contain;}
/* result images (class dc-result) start below their label and toolbar, whole in their box: the "Evenly spaced
   steps" label covered the Trajectory strip's first frames (on a phone the whole strip); on a phone the "Comparison
   grid" label and the toolbar covered the Compare grid's first and last cells, the toolbar the Branch row's last
   image (issue 35) */
.dc-result .image-container, #fwd-image .image-container, #up-input .image-container {padding-top: 40px;
  box-sizing: border-box;}
/* the Upscale slider's halves below its "before (nearest) / after" label (it covered a small result's top) */
#up-slider .slider-wrap, #up-slider .image-container {padding-top: 40px; box-sizing: border-box;}
/* a formula wider than a phone scrolls in its own box instead of being cut at the screen's edge */
.katex-display {overflow-x: auto; overflow-y: hidden; max-width: 100%;}
.dc-result img {max-width: 100%; max-height: 100%; object-fit: contain;}
/* uploaded inputs fill their box, pixels kept sharp (a 32 px image showed as a 32 px thumbnail, issue 35) */
#init-image img, #stick-upload img, #up-input img {width: 100% !important; height: 100% !important;
  object-fit: contain !important; image-rendering: pixelated;}
/* the result gallery: whole thumbnails with their "seed N" caption below, not over them (pose figures lost
   their heads under the label and their feet under the caption); 2 columns on a phone instead of 4 tiles of 98 px */
#gallery .grid-container {grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)) !important;
  grid-auto-rows: auto !important; padding-top: 34px !important;}
#gallery .thumbnail-item {aspect-ratio: auto !important; height: auto !important; display: flex !important;
  flex-direction: column !important; align-items: stretch !important;}
#gallery .thumbnail-item img {width: 100% !important; height: auto !important; aspect-ratio: 1 / 1;}
#gallery .caption-label {position: static !important; transform: none !important; margin: 2px auto !important;
  max-width: 100% !important; white-space: normal !important; overflow-wrap: anywhere; text-align: center;}
@media (max-width: 640px) {
  #gallery .grid-container {grid-template-columns: repeat(2, minmax(0, 1fr)) !important;}
}
#run-row {position: sticky; bottom: 0; z-index: 100; padding: 8px 0;
  background: var(--background-fill-primary, #fff);}
/* "Loading emoji-cascade-128…" on one line: wrapped, it made the sticky bar taller and covered a slider */
#generate-btn {display: block; white-space: nowrap; overflow: hidden; text-overflow: ellipsis;}
/* while a picked model loads (LOCK_JS), the model being left keeps no live controls or card (issue 35 item 2) */
body.dc-loading #gen-controls > :not(#model-row):not(#run-row), body.dc-loading #model-card,
body.dc-loading #card-img {opacity: 0.4; pointer-events: none; transition: opacity 0.15s;}
/* what the keyboard or a script scrolls to stops above that bar, never under it ("Make GIF" was covered) */
html {scroll-padding-bottom: 80px;}
/* phones: the Model box takes the whole width, "rescan" a small button under it (it floated beside a narrowed box) */
@media (max-width: 640px) {
  #model-row {flex-wrap: wrap !important;}
  #model-row > :has(#model) {flex: 1 1 100% !important; min-width: 100% !important;}
  #model-row > .dc-small-btn {flex: 0 0 auto !important; min-width: 0 !important; margin-top: -4px;}
}
/* Gradio's container clips with overflow: hidden, which makes it a scroll container and disables sticky; clip
   cuts the same overflow without being one */
.gradio-container {overflow: clip !important;}
/* phones: Gradio moves the tabs that do not fit into a "..." menu (it measures the same buttons in a hidden copy);
   tighter tabs keep all four main tabs and the Learn tabs in view at 390 px */
@media (max-width: 640px) {
  .tab-container button {padding-left: 6px !important; padding-right: 6px !important; font-size: 0.9em !important;}
}
"""


LEARN_INTRO = """Why does each step do what it does? **Explain** and **Trajectory** look at the last Generate
run of this session (its first image; a cascade's base stage). **Compare** and **Interpolate** sample anew with the
model, class and guidance chosen on the Generate tab."""

DISTILL_LESSON = """A teacher takes many small steps because each step can only follow the curved path from noise to
image a little way. Progressive distillation (Salimans & Ho 2022) trains a student to land in one step where two of
its teacher's steps land, halving the steps round after round; with the guidance scale as an input of the student
(Meng et al. 2023) one pass also replaces the two that classifier-free guidance needs. The rows below compare them on
the same starting noise x_T (model and class: the Generate tab's; the model must be a student or have one)."""


ABOUT = """
## What is this?

A from-scratch diffusion package (`diffusion_core`) with a small demo. A diffusion model learns to undo a
**forward process** that gradually destroys images:
q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (Ho et al. 2020, eq. 4). Generation runs the
reverse process from pure noise x_T down to x_0; at every step the network predicts the clean image
**x0_hat**, shown beside the current state **x_t** while it streams.

**Samplers.** *DDPM* (ancestral, stochastic), *DDIM* (Song et al. 2021; eta = 0 deterministic, eta = 1
DDPM-like), *DPM-Solver++ (2M)* (Lu et al. 2022; good images in 15-25 steps), *DPM-Solver++ (3M)* (its
third-order multistep form, same paper), *UniPC* (Zhao et al. 2023; a predictor-corrector that reuses each
step's network call), *Cold* (Bansal et al. 2022) for models trained on deterministic degradations (blur,
pixelate, mask), and *Student's own steps (progressive distillation)* (Salimans & Ho 2022) or
*Student's own steps (consistency distillation)* (Song et al. 2023; x0_hat noised afresh to each next time) for a
student distilled to a few steps. **Spacing** chooses the timesteps of a short run: *trailing* / *leading* /
*linspace* (Lin et al. 2024, Table 2) are even in t; *logsnr* is even in log signal-to-noise ratio (Lu et al.
2022) and *karras* follows Karras et al. 2022 (rho = 7), both grids in noise level for Gaussian models. A
grid with fewer distinct timesteps than asked runs the ones it has, and the status line says so.

**Conditioning.** Class labels or multi-label attributes enter through the time embedding; a
**guidance scale** w > 1 applies classifier-free guidance (Ho & Salimans 2022); 1 is plain conditional
sampling, 0 unconditional. Pose models take a stickman drawing (black strokes on white) as an extra
input image. **img2img** (SDEdit, Meng et al. 2022) starts from a noised version of your image; strength 1
means start from pure noise.

**Ensembles and cascades.** An *ensemble* routes each timestep to the expert trained on that noise range
(the status line shows which one is active). A *cascade* runs a base model and then super-resolution
stages conditioned on the upsampled low-resolution image (Ho et al. 2021); *Upscale* runs such a stage on a
gallery image.

**Reproducibility.** Image i of a run with seed s uses its own random stream seeded s + i, so a seed gives
the same image at any batch size. Every PNG carries its settings as JSON in the `parameters` text chunk.

**API.** `from gradio_client import Client; c = Client(URL)` with this page's address as URL (on a Space, its name,
`"user/space"`), then
`c.predict("fashion", api_name="/model_card")`, `c.submit(model="fashion", steps=20, api_name="/generate")`
(streams previews), `/forward`, `/schedule_plot`, `/upscale`; the Learn tab's `/explain_step` and `/trajectory`
(about the session's last `/generate` run), `/compare`, `/compare_guidance` and `/interpolate`.

**Learn.** *Explain* writes the sampler's update out with the numbers of the chosen step (t, alpha_bar,
sigma, DPM-Solver++'s lambda and h, cold diffusion's D(x0_hat, t)) and checks that they reproduce x_t'.
*Compare* puts samplers, step counts, guidance scales or noise schedules side by side for one seed.
*Interpolate* slerps between two seeds' starting noise. *Trajectory* shows how x0_hat sharpens step by step.
"""

# Gradio's sketch pad starts with no tool: the first stroke only selected the hint "select the draw tool to start"
# (issue 18). Whenever the stickman pad is shown without a tool, pick its brush (checked once per animation frame).
ARM_SKETCH_JS = """
() => {
  let queued = false;
  const arm = () => {
    queued = false;
    const pad = document.querySelector('#stick-sketch');
    if (!pad || pad.offsetParent === null) return;
    const hint = [...pad.querySelectorAll('*')].some(
      (e) => e.childElementCount === 0 && /select the draw tool/i.test(e.textContent || ''));
    const brush = pad.querySelector('button[aria-label="Brush"]');
    if (hint && brush) brush.click();
  };
  new MutationObserver(() => { if (!queued) { queued = true; requestAnimationFrame(arm); } })
    .observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['style', 'class']});
}
"""

# A number typed past a slider's or box's bounds (batch 99 where 16 is the most): Gradio sent the bound and left the
# typed number in the box, without a word (issue 35 item 9). When the box is committed (Enter or leaving it), the
# page sets it to the bound itself, so the box shows what runs, and says so under it for a few seconds.
NUMBER_BOUNDS_JS = """
() => {
  document.addEventListener('change', (e) => {
    const box = e.target;
    if (!(box instanceof HTMLInputElement) || box.type !== 'number' || box.value === '') return;
    const v = Number(box.value);
    const lo = box.min === '' ? -Infinity : Number(box.min), hi = box.max === '' ? Infinity : Number(box.max);
    if (Number.isNaN(v) || (v >= lo && v <= hi)) return;
    const bound = v > hi ? hi : lo;
    box.value = String(bound);
    box.dispatchEvent(new Event('input', {bubbles: true}));
    const head = box.closest('.head') || box.parentElement;      // right under the box: a slider's head row
    let note = head.parentElement.querySelector(':scope > .dc-clamped');
    if (!note) {
      note = document.createElement('span');
      note.className = 'dc-clamped';
      head.insertAdjacentElement('afterend', note);
    }
    note.textContent = `${v} typed: ${v > hi ? 'at most' : 'at least'} ${bound}`;
    clearTimeout(note.dcTimer);
    note.dcTimer = setTimeout(() => note.remove(), 8000);
  }, true);
}
"""

# the page's script: each part above, once the page has loaded
PAGE_JS = f"() => {{ ({ARM_SKETCH_JS.strip()})(); ({NUMBER_BOUNDS_JS.strip()})(); }}"

