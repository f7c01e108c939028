"""Mutation check of the test suite: plant one realistic bug at a time in a copy of the checkout, run the
tests that guard that code, and expect them to fail.

    python scripts/mutation_check.py            # every mutant (about 2 minutes on 2 cores)
    python scripts/mutation_check.py EMA dropout   # only mutants whose name contains one of the words

Each mutant is (name, file, exact original text, replacement, pytest selection). The copy lives in the system
temp folder; the checkout is never modified. Exits 1 if any mutant survives (its tests all pass), and 2 if a
mutant's original text is no longer in its file (the code moved: update the mutant).
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
SRC = Path(__file__).resolve().parents[1]
DST = Path(tempfile.gettempdir()) / "diffusion_core_mutants" / "repo"

MUTANTS = [
 ("a request's guidance unchecked", "diffusion_core/pipeline/request.py", "        if not lo <= self.guidance <= hi:",
  "        if False:", "tests/test_pipeline.py -k request_is_frozen"),
 ("ChunkedNet ignores its worker count", "diffusion_core/runtime/chunked.py",
  "in_parallel = parallel.usable(x_t, self.workers)", "in_parallel = parallel.usable(x_t)",
  "tests/test_parallel.py -k arguments"),
 ("every model padded to 8 rows", "diffusion_core/pipeline/loading.py",
  "chunk=eval_chunk(cfg.output_size),", "chunk=EVAL_CHUNK,", "tests/test_pipeline.py -k large_model"),
 ("dropout ignores its workers' generators", "diffusion_core/unet.py",
  "return x * dropout_mask(x, self.p, DROPOUT_GENERATOR.get())", "return x * dropout_mask(x, self.p, None)",
  "tests/test_parallel.py -k dropout_is_reproducible"),
 ("large networks timed on full rows", "diffusion_core/runtime/backends.py",
  "return max(2, round(rows * (TIMING_SIDE / side) ** 2))", "return rows", "tests/test_backends.py -k large_network"),
 ("SR models keep the general sampling default", "diffusion_core/config.py",
  'object.__setattr__(self, "sampling", SR_SAMPLING)', "pass", "tests/test_checkpoint.py -k 'own_sampling or cascade_loads'"),
 ("cascade stage ignores its model's sampler", "diffusion_core/pipeline/stage.py",
  'return sr_sampler or self.cascade.sampler or self.config.sampling.sampler',
  'return sr_sampler or self.cascade.sampler or "dpm++"',
  "tests/test_checkpoint.py -k 'own_sampling or cascade_loads'"),
 ("cascade evaluated through its last stage only", "diffusion_core/evaluation/super_resolution.py",
  "high.append(pipe.sample(b, low_res=x, seed=seed + start))",
  "high.append(pipe.upscale(x, seed=seed + start))",
  "tests/test_checkpoint.py -k evaluate_cascade"),
 ("SR result not back-projected", "diffusion_core/pipeline/stage.py",
  "rec = replace(rec, x_next=back_project(rec.x_next, low_res.to(device), scale))", "pass",
  "tests/test_pipeline.py -k downsamples_back"),
 ("SR result downsamples to its input only approximately", "diffusion_core/conditioning.py",
  "EXACT_ROUNDS = 4 ", "EXACT_ROUNDS = 0 ", "tests/test_pipeline.py -k downsamples_back"),
 ("held picks not passed to guidance", "diffusion_core/pipeline/stage.py",
  "den = ClassifierFreeGuidance(den, guidance, self.held_mask() if hold else None)",
  "den = ClassifierFreeGuidance(den, guidance)",
  "tests/test_partial_labels.py -k held_guidance"),
 ("held guidance's second pass is the null condition", "diffusion_core/denoisers.py",
  "        if self.held is None or cond.labels is None or cond.known is None:\n            return cond.null()",
  "        return cond.null()", "tests/test_partial_labels.py -k held_guidance"),
 ("a row without held picks guided against itself", "diffusion_core/denoisers.py",
  "uncond = ~has if cond.uncond is None else cond.uncond | ~has", "uncond = cond.uncond",
  "tests/test_partial_labels.py -k held_guidance"),
 ("held guidance applied to full label vectors", "diffusion_core/denoisers.py",
  "if self.held is None or cond.labels is None or cond.known is None:",
  "if self.held is None or cond.labels is None:\n            return cond.null()\n        if cond.known is None:\n            cond = replace(cond, known=torch.ones_like(cond.labels))\n        if False:",
  "tests/test_partial_labels.py -k held_guidance"),
 ("a request's hold=False ignored", "diffusion_core/pipeline/stage.py",
  "den = self.denoiser(r.guidance, r.clip, r.hold)", "den = self.denoiser(r.guidance, r.clip)",
  "tests/test_partial_labels.py -k held_guidance"),
 ("sample --plain-guidance ignored", "diffusion_core/__main__.py",
  "seed=args.seed + start, hold=not args.plain_guidance,", "seed=args.seed + start,",
  "tests/test_partial_labels.py -k plain_guidance"),
 ("augmented SR input matched pixel for pixel", "diffusion_core/conditioning.py",
  "return match_scale or (AUGMENTED_INPUT_SCALE if aug_level > 0 else 1)", "return match_scale or 1",
  "tests/test_pipeline.py -k downsamples_back"),
 ("a cascade stage's match_scale ignored", "diffusion_core/pipeline/model.py",
  "match_scale=st.cascade.match_scale or None)", "match_scale=None)", "tests/test_checkpoint.py -k match_its_result"),
 ("a stage's match_scale ignored by the SR model", "diffusion_core/conditioning.py",
  "return match_scale or (AUGMENTED_INPUT_SCALE", "return (AUGMENTED_INPUT_SCALE",
  "tests/test_checkpoint.py -k match_its_result"),
 ("v target swapped", "diffusion_core/denoisers.py",
  "return ab.sqrt() * eps - (1 - ab).sqrt() * x0", "return ab.sqrt() * x0 - (1 - ab).sqrt() * eps",
  "tests/test_training_math.py -k 'zero_loss or x0_error'"),
 ("forward process without sqrt", "diffusion_core/schedules.py",
  "+ (1 - ab).sqrt().to(x0) * eps", "+ (1 - ab).to(x0) * eps",
  "tests/test_training_math.py -k 'zero_loss'"),
 ("dropout with 1-p (train)", "diffusion_core/training/objective.py", "cfg.p_uncond, g)", "1 - cfg.p_uncond, g)",
  "tests/test_training_math.py -k dropout"),
 ("dropout with 1-p (conditioning)", "diffusion_core/conditioning.py", "drop = torch.rand(b, generator=generator) < p",
  "drop = torch.rand(b, generator=generator) < 1 - p", "tests/test_training_math.py -k dropout"),
 ("dropped image not zeroed", "diffusion_core/unet.py", "img = img * (~cond.uncond)", "img = img * (cond.uncond | True)",
  "tests/test_training_math.py -k null_condition"),
 ("EMA decay swapped", "diffusion_core/training/optim.py", "torch._foreach_lerp_(ema_params, params, 1.0 - d)",
  "torch._foreach_lerp_(ema_params, params, d)", "tests/test_training_math.py -k ema"),
 ("EMA warm-up off", "diffusion_core/training/optim.py", "d = min(decay, (1.0 + float(num_averaged)) / (10.0 + float(num_averaged)))",
  "d = decay", "tests/test_training_math.py -k ema"),
 ("min-SNR weight for v", "diffusion_core/denoisers.py", '"v": clipped / (snr + 1)', '"v": clipped / snr',
  "tests/test_training_math.py -k x0_error"),
 ("min-SNR weight for eps", "diffusion_core/denoisers.py", '"eps": clipped / snr,', '"eps": clipped,',
  "tests/test_training_math.py -k x0_error"),
 ("t = T-1 never drawn", "diffusion_core/training/objective.py", "t = torch.randint(t_lo, t_hi, (b,), generator=g)",
  "t = torch.randint(t_lo, t_hi - 1, (b,), generator=g)", "tests/test_training_math.py -k timesteps"),
 ("t_lo never drawn", "diffusion_core/training/objective.py", "t = torch.randint(t_lo, t_hi, (b,), generator=g)",
  "t = torch.randint(t_lo + 1, t_hi, (b,), generator=g)", "tests/test_training_math.py -k timesteps"),
 ("DDIM sigma with eta^2", "diffusion_core/samplers/updates.py", "return eta * math.sqrt((1 - ab_next)",
  "return eta ** 2 * math.sqrt((1 - ab_next)", "tests/test_samplers.py -k ddim_step_matches"),
 ("explained weights read off non-unit inputs", "diffusion_core/samplers/loop.py",
  "torch.full((1,), 1.0 if k == name else 0.0", "torch.full((1,), 1.0 if k == name else 0.01",
  "tests/test_samplers.py -k explained_step"),
 ("DDPM beta variance read as posterior", "diffusion_core/samplers/updates.py",
  'else beta)\n', 'else beta * (1 - ab_next))\n', "tests/test_samplers.py -k explained_step"),
 ("img2img noised to t_start, not the grid's first t", "diffusion_core/samplers/loop.py",
  "t_vec = torch.full((x0.shape[0],), int(ts[0]), dtype=torch.long)",
  "t_vec = torch.full((x0.shape[0],), t_start, dtype=torch.long)", "tests/test_pipeline.py -k noise_level"),
 ("attention scale 1", "diffusion_core/unet.py", "out = F.scaled_dot_product_attention(q, k, v)",
  "out = F.scaled_dot_product_attention(q, k, v, scale=1.0)", "tests/test_unet.py -k attention"),
 ("attention q/k swapped", "diffusion_core/unet.py", "out = F.scaled_dot_product_attention(q, k, v)",
  "out = F.scaled_dot_product_attention(k, q, v)", "tests/test_unet.py -k attention"),
 ("embedding sin/cos swapped", "diffusion_core/unet.py", "torch.cat([torch.cos(args), torch.sin(args)], dim=1)",
  "torch.cat([torch.sin(args), torch.cos(args)], dim=1)", "tests/test_unet.py -k embedding"),
 ("embedding period", "diffusion_core/unet.py", "max_period: float = 10000.0", "max_period: float = 1000.0",
  "tests/test_unet.py -k embedding"),
 ("labels ignored in training", "diffusion_core/unet.py", "emb = self.label_proj(labels)\n",
  "emb = 0 * self.label_proj(labels)\n", "tests/test_training_math.py -k known_answer"),
 ("x0 target in an eps model", "diffusion_core/denoisers.py", '    if prediction == "eps":\n        return eps\n',
  '    if prediction == "eps":\n        return x0\n',
  "tests/test_training_math.py -k 'zero_loss'"),
 ("x0 target in an eps model (end to end)", "diffusion_core/denoisers.py", '    if prediction == "eps":\n        return eps\n',
  '    if prediction == "eps":\n        return x0\n',
  "tests/test_training_math.py -k 'known_answer'"),
 ("3M: D1 extrapolation weight", "diffusion_core/samplers/updates.py", "d1 = d1_0 + (r_0 / (r_0 + r_1)) * (d1_0 - d1_1)",
  "d1 = d1_0 + (r_1 / (r_0 + r_1)) * (d1_0 - d1_1)", "tests/test_samplers.py -k 'multistep'"),
 ("3M: no lower order near the end", "diffusion_core/samplers/steps.py", "    few = 15\n", "    few = 0\n", "tests/test_samplers.py -k 'multistep_solvers'"),
 ("UniPC: bh1 instead of bh2", "diffusion_core/samplers/updates.py", "big_b = phi_1                       # B(h) = e^{hh} - 1",
  "big_b = hh", "tests/test_samplers.py -k 'multistep'"),
 ("UniPC: corrector weight at order 1", "diffusion_core/samplers/updates.py", "if p == 1:      # UniC-1\n            return phi_1, big_b, [0.5]",
  "if p == 1:      # UniC-1\n            return phi_1, big_b, [0.4]", "tests/test_samplers.py -k 'multistep or local_error'"),
 ("UniPC: corrector off", "diffusion_core/samplers/steps.py", "        if self.last is None:\n            return x_t\n        x_s, s, used",
  "        if True:\n            return x_t\n        x_s, s, used", "tests/test_samplers.py -k 'multistep'"),
 ("Karras rho 5", "diffusion_core/schedules.py", 'KARRAS_RHO = 7.0', 'KARRAS_RHO = 5.0', "tests/test_samplers.py -k noise_level"),
 ("noise-level grids uncapped", "diffusion_core/schedules.py", "s_max, s_min = min(float(sigma[t_max]), SIGMA_MAX_GRID), float(sigma[0])",
  "s_max, s_min = float(sigma[t_max]), float(sigma[0])", "tests/test_samplers.py -k noise_level"),
 ("JSON depth unchecked", "diffusion_core/checkpoint.py", "    if json_depth(data) > MAX_JSON_DEPTH:",
  "    if False:", "tests/test_checkpoint.py -k deep_and_huge"),
 ("parameter count unchecked", "diffusion_core/checkpoint.py", "    if n_params > MAX_PARAMETERS:", "    if False:",
  "tests/test_checkpoint.py -k hostile_config"),
 ("num_labels unbounded", "diffusion_core/config.py", '("num_labels", 0, 10_000)', '("num_labels", 0, 10 ** 9)',
  "tests/test_checkpoint.py -k hostile_config"),
 ("weights dtype unchecked", "diffusion_core/checkpoint.py", 'if dtypes[k] not in ("F16", "BF16", "F32"):', "if False:",
  "tests/test_checkpoint.py -k dtypes"),
 ("cascade stage kind checked after loading", "diffusion_core/pipeline/loading.py", '        if kind == "cascade":\n            raise',
  '        if False:\n            raise', "tests/test_checkpoint.py -k cycles"),
 ("cascade written before it is checked", "diffusion_core/__main__.py", "            load_cascade(out, manifest)",
  "            write_manifest(out, manifest); load_cascade(out, manifest)", "tests/test_checkpoint.py -k cascade_command"),
 ("killed writes' temp files kept", "diffusion_core/training/state.py", "        tmp.unlink(missing_ok=True)\n    log = ",
  "        pass\n    log = ", "tests/test_training_hostile.py -k debris"),
 ("log.csv not cut back on resume", "diffusion_core/training/state.py", "        if len(keep) != len(rows):", "        if False:",
  "tests/test_training_hostile.py -k debris"),
 ("temp files keep mkstemp's 0600", "diffusion_core/checkpoint.py", "        os.fchmod(fd, 0o666 & ~UMASK)", "        pass",
  "tests/test_training_hostile.py -k permissions"),
 ("resume accepts a changed model", "diffusion_core/training/state.py", "        new, old = _resume_view(to_dict(self.cfg)), _resume_view(old)\n", "        return\n",
  "tests/test_training_hostile.py -k changed_model"),
 ("output folder not locked", "diffusion_core/training/state.py", "        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)", "        pass",
  "tests/test_training_hostile.py -k two_trainings"),
 ("NaN weights saved", "diffusion_core/training/state.py", "        if bad is not None:\n            kept", "        if False:\n            kept",
  "tests/test_training_hostile.py -k nan_weights"),
 ("SR without the padded canvas", "diffusion_core/pipeline/stage.py", "        canvas = (-(-out_hw[0] // m) * m, -(-out_hw[1] // m) * m)",
  "        canvas = out_hw", "tests/test_pipeline.py -k any_input_size"),
 ("conditioning image resized square", "diffusion_core/unet.py", "resize_cond_image(cond.image.to(x.dtype), x.shape[-2:])",
  "resize_cond_image(cond.image.to(x.dtype), x.shape[-1])", "tests/test_pipeline.py -k any_input_size"),
 ("backend chosen despite a mismatch", "diffusion_core/runtime/backends.py", "if errors[cand] > MATCH_TOLERANCE:",
  "if False:", "tests/test_backends.py -k auto_picks"),
 ("backend choice on a busy machine remembered", "diffusion_core/runtime/backends.py",
  "    if busy is None:\n        _write_choice(cache, key, choice)", "    _write_choice(cache, key, choice)",
  "tests/test_backends.py -k busy"),
 ("exported net: no labels read as a condition", "diffusion_core/runtime/openvino_net.py",
  "                uncond = torch.ones(b, dtype=torch.bool)       # no labels: the null embedding", "                pass",
  "tests/test_backends.py -k flat_inputs_give"),
 ("app imports a submodule", "diffusion_app/generate.py", "from diffusion_core import ",
  "from diffusion_core.images import to_mode  # noqa: F401\nfrom diffusion_core import ",
  "tests/test_import_rules.py"),
 ("samplers import the network", "diffusion_core/samplers/spec.py", "from ..options import SAMPLERS\n",
  "from ..options import SAMPLERS\nfrom ..unet import UNet  # noqa: F401\n", "tests/test_import_rules.py"),
 ("SIGTERM kills the app without cleanup", "app.py", "    signal.signal(signal.SIGTERM, exit_on_sigterm)\n", "",
  "tests/test_app_signals.py"),
 ("sketch decoded by Gradio, not the guarded decoder", "diffusion_app/inputs.py",
  "    def convert_and_format_image(self, file, flatten_on_white=False):\n        src = _file_source(file)",
  "    def _unused(self, file, flatten_on_white=False):\n        src = _file_source(file)",
  "tests/test_bad_inputs.py -k stick_sketch"),
 ("wrong-shape image payloads reach pydantic", "diffusion_app/inputs.py", "            except ValidationError:\n",
  "            except ZeroDivisionError:\n", "tests/test_bad_inputs.py -k stick_sketch"),
 ("pixel limit checked after decoding", "diffusion_core/images.py", "            if w * h > max_pixels:                  #",
  "            if False:                  #", "tests/test_bad_inputs.py -k before_decoding"),
 ("numeric inputs left to Gradio's check", "diffusion_app/inputs.py",
  "            v = number(payload, name, self.minimum, self.maximum, whole=whole)", "            v = payload",
  "tests/test_bad_inputs.py -k 'many or None or lots or raw_http'"),
 ("one string read letter by letter", "diffusion_app/inputs.py",
  "    return list(value) if isinstance(value, (list, tuple, set)) else [value]", "    return list(value)",
  "tests/test_bad_inputs.py -k 'woman or one_value'"),
 ("compare ignores a cascade's SR steps", "diffusion_app/compare.py", "        work = sum(p.run_steps(st) for", "        work = sum(st for",
  "tests/test_bad_inputs.py -k super_resolution_steps"),
 ("kept runs never dropped", "diffusion_app/runs.py", "            while self._total > self.max_bytes:", "            while False:",
  "tests/test_app_memory.py"),
 ("broken folders listed as fine", "diffusion_app/models.py", '            out.append((f"{n} (broken: {why})" if why else n, n))',
  "            out.append((n, n))", "tests/test_bad_inputs.py -k broken"),
 ("a broken SR folder fails the others' cards", "diffusion_app/base.py",
  "            except USER_ERRORS:         # a broken SR folder is skipped", "            except KeyError:         #",
  "tests/test_bad_inputs.py -k broken"),
 ("explained weights from the kept steps' grid", "diffusion_app/explain.py", "torch.tensor(run[\"grid\"] + [run[\"grid_end\"]]) if run.get(\"grid\")",
  "torch.tensor(run[\"grid\"] + [run[\"grid_end\"]]) if False", "tests/test_app_memory.py -k first_steps"),
 ("a run over the budget keeps every step", "diffusion_app/generate.py", "            run[\"capped\"] = True\n            return",
  "            pass", "tests/test_app_memory.py -k first_steps"),
 ("a link's values taken unchecked", "diffusion_app/presets.py", "    return check(raw)\n",
  "    return raw, []\n", "tests/test_app.py -k round_trips"),
 ("branch continues from the next step's state", "diffusion_app/branch.py", "x_start=rec.x_t.to(self.models.device)",
  "x_start=recs[step].x_t.to(self.models.device)", "tests/test_app.py -k branch_from"),
 ("upscaler ignores the cascades' pairing", "diffusion_app/models.py",
  "        return sorted(out, key=lambda n: n not in paired)", "        return out", "tests/test_app.py -k upscaler_offered"),
 ("model cards re-read per request", "diffusion_app/cards.py", "        if hit is None or hit[0] != key:\n            hit = (key, self._model_card",
  "        if True:\n            hit = (key, self._model_card", "tests/test_bad_inputs.py -k cached"),
]


def run(sel):
    cmd = f"cd {DST} && OMP_NUM_THREADS=1 python -m pytest -q -x -p no:cacheprovider {sel}"
    return subprocess.run(cmd, shell=True, capture_output=True, text=True)


def main(only: list[str]) -> int:
    if DST.exists():
        shutil.rmtree(DST)
    shutil.copytree(SRC, DST, ignore=shutil.ignore_patterns(".git", "checkpoints", "runs", "logs", "__pycache__"))
    os.symlink(SRC / "checkpoints", DST / "checkpoints")
    missed = 0
    for name, f, old, new, sel in MUTANTS:
        if only and not any(o in name for o in only):
            continue
        p = DST / f
        orig = p.read_text()
        if orig.count(old) != 1:
            print(f"{name}: the original text occurs {orig.count(old)} times in {f}; update this mutant")
            return 2
        p.write_text(orig.replace(old, new))
        r = run(sel)
        p.write_text(orig)
        last = (r.stdout.strip().splitlines() or ["?"])[-1]
        missed += r.returncode in (0, 5)        # 5: the selection ran no test, so it caught nothing
        verdict = {0: "MISSED", 5: "NO TEST"}.get(r.returncode, "caught")
        print(f"{verdict:7s} {name:50s} {last}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
