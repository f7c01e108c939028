"""Model cards and the controls that follow the chosen model."""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import gradio as gr

from diffusion_core import available

from ..base import AppBase
from ..inputs import _number, as_list, user_error
from ..outputs import Controls, filled
from ..render import fmt_duration
from ..settings import (ANY, CARD_MEASUREMENTS, DEFAULT_SAMPLER, USER_ERRORS, sampler_choices, sampler_label,
                       takes_eta)
from .presets import MAX_EXAMPLES, check, example_file, examples_for, from_query


# an absolute path on the server ("/usr/share/datasets/fashion-mnist"): its folders are the server's business
SERVER_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/()\[\],]+/)*([^\s/()\[\],]+)")


def server_paths_named(text: str) -> str:
    """``text`` with each absolute path cut to its last part ("IDX /usr/share/datasets/fashion-mnist (train...)" ->
    "IDX fashion-mnist (train...)"): the model card shows no visitor the server's folders."""
    return SERVER_PATH.sub(r"\1", text)


class Cards(AppBase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cards: dict[str, tuple[tuple, tuple]] = {}      # model -> (what it was made from, (markdown, samples))

    def model_card(self, model):
        """Markdown card for a model: description, data, schedule, prediction, training, metrics; and its
        samples.png when present."""
        # cached until the folder's files change (it read every JSON file of the folder per request)
        try:
            pipe = self.models.get(model)
        except USER_ERRORS as e:
            raise user_error(e) from None
        samples = self.models.root / model / "samples.png"
        key = (self.models.signature(model), samples.stat().st_mtime_ns if samples.is_file() else None,
               tuple(self.models.names()))      # the upscaler row names another folder
        hit = self._cards.get(model)
        if hit is None or hit[0] != key:
            hit = (key, self._model_card(model, pipe))
            self._cards[model] = hit
        return hit[1]

    def _model_card(self, model, pipe):
        folder = self.models.folder(model)
        base = pipe.base
        cfg = base.config
        d = cfg.diffusion
        rows = []
        kind = pipe.kind
        if pipe.kind == "ensemble":
            kind = f"ensemble of {len(pipe.stages[0].experts)} experts: " + ", ".join(
                f"t in [{lo}, {hi})" for lo, hi, _ in pipe.stages[0].experts)
        elif pipe.kind == "cascade":
            kind = "cascade: " + " -> ".join(
                f"{st.path.name} ({size} px)" for st, size in zip(pipe.stages, pipe.stage_sizes))
        rows.append(("kind", kind))
        task = cfg.task
        if cfg.task == "super_resolution":
            task = f"super-resolution {cfg.low_res} -> {cfg.output_size} px"
        elif cfg.task == "pose":
            task = "stickman drawing -> figure"
        rows.append(("task", task))
        rows.append(("image", f"{pipe.image_size} px, {cfg.unet.out_channels} channel(s)"
                     + (f" (the network was trained on {cfg.unet.image_size} px crops)"
                        if cfg.task == "super_resolution" and cfg.unet.image_size != pipe.image_size else "")))
        if cfg.label_names:
            what = "attributes (multi-label)" if cfg.multi_label else "classes"
            names = ", ".join(cfg.label_names[:12]) + (" ..." if len(cfg.label_names) > 12 else "")
            rows.append(("conditioning", f"{len(cfg.label_names)} {what}: {names}"))
            rows.append(("labels mean", pipe.picks_meaning))
        if d.is_cold:
            rows.append(("forward process", f"cold diffusion, degradation {d.degradation}, T={d.T}"))
        else:
            rows.append(("schedule", f"{d.schedule}, T={d.T}"))
        rows.append(("prediction", d.prediction))
        rows.append(("samplers", ", ".join(sampler_label(s) for s in pipe.samplers)))
        sd = self.sampling_defaults(pipe)
        rows.append(("default settings", f"{sampler_label(sd.sampler)}, {sd.steps} step{'s' * (sd.steps != 1)}, "
                                          f"{sd.spacing} grid, guidance {sd.guidance:g}" + (f": {sd.why}" if sd.why else "")))
        training = self._read_json(folder / "training.json")
        if not training and pipe.kind in ("cascade", "ensemble"):
            first = pipe.stages[0].path if pipe.kind == "cascade" else None
            training = self._read_json(first / "training.json") if first else {}
        if training.get("data"):
            rows.append(("data", server_paths_named(str(training["data"]))))
        if training.get("steps") is not None:
            t = f"{training['steps']} steps"
            if training.get("wall_time_s") is not None:
                t += f", {fmt_duration(training['wall_time_s'])} wall time"
            if training.get("processes"):
                t += f", {training['processes']} process(es)"
            if training.get("device"):
                t += f" on {training['device']}"
            rows.append(("training", t))
        sr_name, _ = self.upscaler_for(model, pipe)
        if sr_name and sr_name != model:
            rows.append(("upscaler", f"{sr_name}"))
        desc = pipe.description or cfg.description
        md = f"### {model}\n\n" + (f"{desc}\n\n" if desc else "")
        md += "\n".join(f"- **{k}**: {v}" for k, v in rows)
        md += self._measurements(folder, sd)
        if training.get("command"):
            md += f"\n\n<small>trained with <code>{training['command']}</code></small>"
        samples = folder / "samples.png"
        if not samples.is_file() and pipe.kind == "cascade":
            samples = pipe.stages[0].path / "samples.png"
        return md, (self.servable(samples) if samples.is_file() else None)

    def _measurements(self, folder: Path, sd) -> str:
        """The folder's metrics files as one short table, a line per measurement (its settings, its headline
        numbers): the run at the model's default settings first, then by FID; lines past CARD_MEASUREMENTS fold
        into a <details> block (fashion's 30 files made a card of ~6,900 px, issue 18)."""
        found = [(mpath, m) for mpath in sorted(folder.glob("metrics*.json")) if (m := self._read_json(mpath))]
        if not found:
            return ""

        def variant(m):         # another seed or backend of a run: the spread and the backend gate, listed last
            return bool(m.get("seed")) or m.get("backend", "fp32") != "fp32"

        def is_default(m):
            return ((m.get("sampler"), m.get("steps"), m.get("spacing", "trailing"), _number(m.get("guidance")))
                    == (sd.sampler, sd.steps, sd.spacing, sd.guidance) and not variant(m))
        found.sort(key=lambda pm: (not is_default(pm[1]), variant(pm[1]), _number(pm[1].get("fid"), float("inf"))))
        lines = list(dict.fromkeys(          # metrics.json often repeats a tagged file: one line each
            f"| {self._metric_setting(m)}{' (default)' if is_default(m) else ''} | {self._metric_result(m)} |"
            for _, m in found))
        head = "\n\n**Measured** (`evaluate`; every file in the model folder)\n\n| settings | result |\n|---|---|\n"
        md = head + "\n".join(lines[:CARD_MEASUREMENTS])
        if len(lines) > CARD_MEASUREMENTS:
            md += (f"\n\n<details><summary>{len(lines) - CARD_MEASUREMENTS} more measurements</summary>\n\n"
                   "| settings | result |\n|---|---|\n" + "\n".join(lines[CARD_MEASUREMENTS:]) + "\n\n</details>")
        return md

    @staticmethod
    def _metric_setting(m: dict) -> str:
        """How a metrics file was measured, in a few words: sampler, steps, grid, guidance, samples, seed, backend."""
        if not m.get("sampler"):
            return "-"
        out = f"{sampler_label(m['sampler'])} {m.get('steps', '?')} steps"
        if m.get("spacing", "trailing") != "trailing":
            out += f" ({m['spacing']})"
        if _number(m.get("guidance")) is not None:
            out += f", guidance {m['guidance']:g}"
        n = m.get("n") or (m.get("picks") and f"{m['picks']} picks x {m.get('per_pick')}")
        if n:
            out += f", n {n}"
        if m.get("seed"):
            out += f", seed {m['seed']}"
        if m.get("backend", "fp32") != "fp32":
            out += f", {m['backend']}"
        return out

    @staticmethod
    def _metric_result(m: dict) -> str:
        """The headline numbers of a metrics file (FID, accuracy, F1, pose adherence, PSNR / SSIM, picks)."""
        parts = []
        if _number(m.get("fid")) is not None:
            real = _number(m.get("fid_real_vs_real"))
            parts.append(f"FID {m['fid']:.2f}" + (f" (real vs real {real:.2f})" if real is not None else ""))
        if _number(m.get("accuracy")) is not None:
            parts.append(f"accuracy {m['accuracy']:.1%}")
        f1 = m.get("f1_visible")
        if isinstance(f1, dict) and _number(f1.get("mean")) is not None:
            parts.append(f"F1 {f1['mean']:.3f} (visible attributes)")
        if _number(m.get("pose_adherence")) is not None:
            parts.append(f"pose adherence {m['pose_adherence']:.3f} (real {_number(m.get('pose_adherence_real'), 0):.3f})")
        if _number(m.get("psnr_sr")) is not None:
            parts.append(f"PSNR {m['psnr_sr']:.1f} dB, SSIM {_number(m.get('ssim_sr'), 0):.3f} (bicubic "
                         f"{_number(m.get('psnr_bicubic'), 0):.1f} dB, {_number(m.get('ssim_bicubic'), 0):.3f})")
        if _number(m.get("generated_mean_judgeable")) is not None:
            parts.append(f"picks followed {m['generated_mean_judgeable']:.0%} (judgeable; real "
                         f"{_number(m.get('real_mean_judgeable'), 0):.0%}), {_number(m.get('generated_mean'), 0):.0%} "
                         f"over all")
        if _number(m.get("cascade_sharper_fraction")) is not None:
            parts.append(f"sharper than bicubic in {m['cascade_sharper_fraction']:.0%}")
        return "; ".join(parts) or ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in Cards._flatten(m)[:3])

    @staticmethod
    def _read_json(path: Path) -> dict:
        try:
            data = json.loads(Path(path).read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _flatten(d, prefix=""):
        out = []
        for k, v in d.items():
            if isinstance(v, dict):
                out += Cards._flatten(v, f"{prefix}{k}.")
            elif isinstance(v, (int, float, str)) and not isinstance(v, bool):
                out.append((f"{prefix}{k}", v))
        return out

    @staticmethod
    def sampling_defaults(pipe):
        """The model's own default settings (``sampling`` in its config; a cascade's are its base stage's),
        with a sampler the model cannot use replaced by one it can (cold models)."""
        sd = pipe.base.config.sampling
        if sd.sampler not in pipe.samplers:
            sd = replace(sd, sampler=DEFAULT_SAMPLER if DEFAULT_SAMPLER in pipe.samplers else pipe.samplers[0])
        return sd

    def on_model_change(self, model, sampler=None, class_label=ANY, attributes=None):
        """Control visibility / choices for the selected model (its card is the model_card event); the sampler,
        steps, grid and guidance move to the model's own defaults (``sampling`` in its config). The chosen class
        and attributes stay chosen where the new model has them (emoji -> emoji-cascade keeps the picks)."""
        return self.controls_for(model, class_label, attributes)

    def pick(self, model, sampler, class_label, attributes, current):
        """A model picked on the page: ``on_model_change``'s updates and the model the controls are then set for
        (``current`` before; the page's picks run one after another: generate.page.wire_generate). A model that
        cannot be loaded becomes the shown one with the controls left as they were: its card says why, and Generate
        says it cannot be used (generate.page.PICKED_JS)."""
        if model == current:
            return (gr.skip(),) * (len(Controls._fields) + 1)
        try:
            return (*self.on_model_change(model, sampler, class_label, attributes), model)
        except gr.Error:
            return (*(gr.skip(),) * len(Controls._fields), model)

    def controls_for(self, model, class_label=ANY, attributes=None, settings: dict | None = None):
        """The Generate controls for ``model``: its defaults, then ``settings`` (an example's or a link's, see
        presets) on top. Returns their updates by name; the seed, batch size, stickman source and file are skipped
        without settings."""
        if model in (None, "") and not self.models.names():
            return filled(Controls, **{name: gr.update(visible=False) for name in (
                "class_label", "attributes", "pose_group", "up_acc", *(f"example_{i}" for i in range(MAX_EXAMPLES)))})
        try:
            pipe = self.models.get(model)
            examples = examples_for(pipe, model)
        except USER_ERRORS as e:
            raise user_error(e) from None
        cfg = pipe.base.config
        samplers = list(pipe.samplers)
        choices = sampler_choices(samplers)
        sd = self.sampling_defaults(pipe)
        st = dict(settings or {})
        sampler = st["sampler"] if st.get("sampler") in samplers else sd.sampler
        single = bool(cfg.label_names) and not cfg.multi_label
        multi = bool(cfg.label_names) and cfg.multi_label
        pose = cfg.task == "pose"
        sr = cfg.task == "super_resolution"
        guidable = bool(cfg.unet.num_labels) or pose
        if "labels" in st:          # the settings' labels replace the picks (those the model has)
            picked = [x for x in st["labels"] if x in cfg.label_names]
            class_label, attributes = (picked[0] if picked else ANY), picked
        sr_name, _ = self.upscaler_for(model, pipe)
        init_label = "Low-resolution input (required)" if sr else "Init image (optional, img2img)"
        lowres = example_file("lowres", st.get("lowres")) if sr else None
        stickman = example_file("stickman", st.get("stickman")) if pose else None
        keep = gr.skip()
        backend = keep
        if "backend" in st:         # a link's images were made there: the same seed gives others elsewhere
            if st["backend"] in available(self.models.device):
                backend = gr.update(value=st["backend"])
            else:
                gr.Warning(f"the link's images were made with the {st['backend']} backend, which does not run here: "
                           f"{self.models.backend} gives other images for the same seed")
        buttons = [gr.update(value=f"▶ {ex['title']}", visible=True) for ex in examples]
        buttons += [gr.update(visible=False)] * (MAX_EXAMPLES - len(buttons))
        return Controls(
            sampler=gr.update(choices=choices, value=sampler),
            eta=gr.update(visible=takes_eta(sampler), **({"value": st["eta"]} if "eta" in st else {})),
            guidance=gr.update(visible=guidable, value=st.get("guidance", sd.guidance)),     # no effect unguided
            class_label=gr.update(visible=single, choices=[ANY] + list(cfg.label_names),
                                  value=class_label if single and class_label in cfg.label_names else ANY),
            attributes=gr.update(visible=multi, choices=list(cfg.label_names),
                                 value=[a for a in as_list(attributes) if a in cfg.label_names] if multi else [],
                                 info=pipe.picks_meaning.capitalize() if multi else None),
            pose_group=gr.update(visible=pose),
            # a hidden input never carries over to another model: the init / low-res image is the settings' or none
            init_image=gr.update(label=init_label, value=str(lowres) if lowres else None),
            init_acc=gr.update(open=sr),
            up_acc=gr.update(visible=sr_name is not None),
            steps=gr.update(value=st.get("steps", sd.steps)),
            spacing=gr.update(value=st.get("spacing", sd.spacing)),
            seed=gr.update(value=st["seed"]) if "seed" in st else keep,
            batch_size=gr.update(value=st["batch"]) if "batch" in st else keep,
            stick_source=gr.update(value="upload") if stickman else keep,
            stick_upload=gr.update(value=str(stickman), visible=True) if stickman else keep if pose else
            gr.update(value=None),
            backend=backend,
            **{f"example_{i}": b for i, b in enumerate(buttons)},
        )

    def _unknown_to_model(self, settings: dict) -> list[str]:
        """What a link's settings name that its model does not have: its sampler, each of its labels (quoted);
        presets.check cannot know them without the model."""
        if not settings:
            return []
        try:
            pipe = self.models.get(settings["model"])
        except USER_ERRORS:
            return []           # controls_for reports the model itself
        names = pipe.base.config.label_names
        out = ["sampler"] if "sampler" in settings and settings["sampler"] not in pipe.samplers else []
        return out + [f"label {x!r}" for x in settings.get("labels") or [] if x not in names]

    def on_load(self, model, class_label=ANY, attributes=None, request: gr.Request = None, shown=None):
        """Page load: the controls for the chosen model, or for the settings of a link (``?model=...&seed=...``,
        see presets.settings_link) where the page was opened with one. A value the link gets wrong is named in a
        warning and left at the model's default. Returns the model's update, then ``controls_for``'s: all left
        as they are where no link sets anything and the page already shows ``model``'s controls (``shown``), but for
        the sampler list (the page opens with every sampler listed: the API's list)."""
        params = getattr(request, "query_params", None) or {}
        settings, bad = from_query(params, self.models)
        bad += self._unknown_to_model(settings)
        if bad == ["model"]:
            gr.Warning("the link names a model this app does not have; showing the default model")
        elif bad:
            gr.Warning(f"the link's {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not valid here; "
                       "the model's defaults are used instead")
        if not settings and model == shown:     # the page's sampler list was every sampler (the API's): the model's
            return (gr.skip(),) + filled(Controls, sampler=gr.update(choices=sampler_choices(self.models.get(model).samplers)))
        if not settings:
            return (gr.skip(),) + self.controls_for(model, class_label, attributes)
        return (gr.update(value=settings["model"]),) + self.controls_for(settings["model"], class_label, attributes,
                                                                         settings)

    def opening(self, model) -> dict[str, dict]:
        """What the page opens with for ``model``, built once at start-up (issue 34: each visitor's page used to ask
        for it, 30 updates a visitor, and a class opening the page at once waited seconds for them): its controls and
        card as constructor arguments by component name. Empty where ``model`` cannot be shown (none, or broken):
        the page's load event then sets the controls as it did before."""
        if self.models.device != "cpu":     # on ZeroGPU a network is loaded inside a GPU call, not at start-up
            return {}
        try:
            if model in (None, "") or model not in self.models.names():
                return {}
            updates = dict(zip(Controls._fields, self.controls_for(model)))
            card, card_img = self.card_update(model)
        except (gr.Error, *USER_ERRORS):
            return {}
        updates.update(card=dict(value=card), card_img=card_img)
        return {name: {k: v for k, v in u.items() if k != "__type__"} for name, u in updates.items()}

    def apply_example(self, model, index: int):
        """Example ``index`` of ``model`` (its button's): the model's controls set to the example's settings, which
        the page then generates with. Returns (model update, then ``controls_for``'s)."""
        try:
            examples = examples_for(self.models.get(model), model)
        except USER_ERRORS as e:
            raise user_error(e) from None
        if not 0 <= index < len(examples):
            raise gr.Error(f"{model} has {len(examples)} examples")
        settings, _ = check(examples[index])
        return (gr.skip(),) + self.controls_for(model, ANY, [], settings)

    def card_update(self, model):
        """The model card for the UI (hides the samples image when there is none)."""
        if model in (None, "") and not self.models.names():
            return (f"### No models yet\n\nNo model folders (with config.json) in `{self.models.root.name}/`. "
                    "Train one with `python -m diffusion_core train --config configs/fashion.json`, or set "
                    "DIFFUSION_CHECKPOINTS. The Forward process tab works without a model."), gr.update(visible=False)
        if isinstance(model, str) and model in self.models.names():
            try:
                self.models.get(model)
            except USER_ERRORS:
                return (f"### {model} (broken)\n\nThis folder cannot be used: {self.models.broken(model)}",
                        gr.update(visible=False))
        md, samples = self.model_card(model)
        return md, gr.update(value=samples, visible=samples is not None)

    def refresh_models(self, current):
        names = self.models.names()
        value = current if current in names else self.models.default()
        return gr.update(choices=self.models.choices(), value=value)
