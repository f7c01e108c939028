"""The command line as a new user meets it: a help that prints at once with every option explained, a per-step
progress bar, one-line errors, super-resolution from a given low-resolution image, outputs in a git-ignored folder.

The help and the one-line errors are checked on the process (``python -m diffusion_core``); what a command does is
checked by running its ``main`` in this process (conftest.run_main: a new interpreter importing torch costs
seconds; test_readme.py runs ``sample`` and ``train`` as processes too)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from diffusion_core import save_cascade

ROOT = Path(__file__).resolve().parents[2]


def cli(*args, cwd=ROOT, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "diffusion_core", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_help_does_not_import_torch_and_explains_every_option():
    """``--help`` of every command prints without torch (it took ~6 s when the package imported it), and every
    option has a help text."""
    code = ("import sys; sys.modules['torch'] = None\n"      # any import of torch now fails
            "from diffusion_core.__main__ import _parser, main\n"
            "import argparse\n"
            "p = _parser()\n"
            "sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))\n"
            "for name, sp in sub.choices.items():\n"
            "    for a in sp._actions:\n"
            "        if name != 'bench' and a.option_strings and a.dest != 'help' and not a.help:\n"
            "            print('no help:', name, a.option_strings)\n"
            "main(['sample', '--help'])\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "no help:" not in r.stdout, r.stdout
    assert "(default: 50)" in r.stdout and "(default: 2.0)" in r.stdout and "(default: 16)" in r.stdout
    assert "--low-res" in r.stdout and "(default: 0)" in r.stdout


def test_sample_progress_counts_steps_and_writes_to_outputs(tmp_path, make_model, run_main, monkeypatch):
    make_model(tmp_path / "m", unet=dict(num_labels=2), label_names=("a", "b"))
    monkeypatch.chdir(tmp_path)
    r = run_main("sample", "--model", str(tmp_path / "m"), "--n", "3", "--batch", "2", "--steps", "4", "--label", "a")
    assert r.returncode == 0, r.stderr
    assert "8/8" in r.stderr and "step" in r.stderr           # 2 batches x 4 steps, counted per step
    assert sorted(p.name for p in (tmp_path / "outputs" / "m").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    ignored = subprocess.run(["git", "check-ignore", "-q", "outputs/m/00000.png"], cwd=ROOT).returncode
    assert ignored == 0                                          # the default output folder is git-ignored


def test_errors_are_one_line_without_an_empty_progress_bar(tmp_path):
    for args in (["sample", "--model", str(tmp_path / "nowhere")],
                 ["sample", "--model", "checkpoints/fashion", "--label", "Purple", "--out", str(tmp_path / "o")]):
        r = cli(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "%|" not in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_low_res_input_for_super_resolution_and_cascades(tmp_path, make_model, run_main):
    make_model(tmp_path / "base", seed=20, unet=dict(in_channels=3, out_channels=3))
    make_model(tmp_path / "sr", seed=21, task="super_resolution", low_res=8, high_res=16,
               unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True, image_size=16))
    save_cascade(tmp_path / "casc", [{"path": "../base"}, {"path": "../sr", "aug_level": 0.1}])
    lows = tmp_path / "lows"
    lows.mkdir()
    for i, name in enumerate(("cat.png", "dog.png")):
        Image.fromarray((np.random.default_rng(i).random((8, 8, 3)) * 255).astype(np.uint8)).save(lows / name)
    for model, src, expect in (("sr", lows, ["cat.png", "dog.png"]), ("casc", lows / "dog.png", ["dog.png"])):
        out = tmp_path / f"out-{model}"
        r = run_main("sample", "--model", str(tmp_path / model), "--low-res", str(src), "--steps", "2", "--sr-steps",
                     "2", "--out", str(out))
        assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in out.iterdir()) == expect
        assert Image.open(out / expect[0]).size == (16, 16)
    r = run_main("sample", "--model", str(tmp_path / "base"), "--low-res", str(lows), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "neither a super-resolution model nor a cascade" in r.stderr, r.stderr


def test_evaluate_a_super_resolution_model_at_its_own_defaults(tmp_path, make_model, run_main):
    """`evaluate` without --steps / --sampler scores an SR model at its own sampling defaults (SR_SAMPLING: the
    range check once compared None with 1 and failed with a TypeError)."""
    import json
    make_model(tmp_path / "sr", seed=21, task="super_resolution", low_res=8, high_res=16,
               unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True, image_size=16))
    r = run_main("evaluate", "--model", str(tmp_path / "sr"), "--n", "2", "--batch", "2", "--out",
                 str(tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert (m["sampler"], m["steps"]) == ("ddpm", 10)
    r = run_main("evaluate", "--model", str(tmp_path / "sr"), "--n", "2", "--steps", "0")
    assert r.returncode == 2 and "--steps must be in" in r.stderr, r.stderr


def test_evaluate_at_its_default_batch_runs_more_images_than_one_batch(tmp_path, make_model, run_main):
    """`evaluate`'s default --batch was 100, above the pipeline's batch limit (64): any run of more than 64
    images failed at its first batch. The default is the limit now, and the command line refuses a larger batch
    before loading anything."""
    make_model(tmp_path / "m", unet=dict(num_labels=3), label_names=("a", "b", "c"))
    cache = tmp_path / "cache"
    r = run_main("evaluate", "--model", str(tmp_path / "m"), "--n", "70", "--steps", "1", "--samples-only",
                 "--cache-dir", str(cache), "--no-progress")
    assert r.returncode == 0, r.stderr
    import json
    out = json.loads(r.stdout[:r.stdout.rindex("}") + 1])
    assert out["samples"] == 70 and out["timed_batches"] == 1       # one full batch of 64, then the 6 left
    r = run_main("evaluate", "--model", str(tmp_path / "m"), "--n", "70", "--batch", "65")
    assert r.returncode == 2 and "--batch must be in [1, 64]" in r.stderr, r.stderr


def test_a_cascades_progress_bar_counts_every_stage_from_the_start(tmp_path, make_model, run_main):
    """The bar's total was the base's steps (0/3), then grew to the real count at the end of the first batch; now
    it counts the super-resolution stages from the first step: 3 base steps + 2 SR steps, and only the SR steps
    when a low-resolution input skips the base."""
    make_model(tmp_path / "base", seed=20, unet=dict(in_channels=3, out_channels=3))
    make_model(tmp_path / "sr", seed=21, task="super_resolution", low_res=8, high_res=16,
               unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True, image_size=16))
    save_cascade(tmp_path / "casc", [{"path": "../base"}, {"path": "../sr", "aug_level": 0.1}])
    r = run_main("sample", "--model", str(tmp_path / "casc"), "--n", "1", "--steps", "3", "--sr-steps", "2",
                 "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "0/5" in r.stderr and "/3 " not in r.stderr and "5/5" in r.stderr, r.stderr
    Image.fromarray((np.random.default_rng(0).random((8, 8, 3)) * 255).astype(np.uint8)).save(tmp_path / "low.png")
    r = run_main("sample", "--model", str(tmp_path / "casc"), "--low-res", str(tmp_path / "low.png"), "--sr-steps",
                 "2", "--out", str(tmp_path / "o2"))
    assert r.returncode == 0, r.stderr
    assert "0/2" in r.stderr and "2/2" in r.stderr, r.stderr
