"""Interrupted and hostile training runs: debris from killed writes, resumed logs, file modes, resumes that change
the model, corrupt states, NaN weights, two trainings in one folder, and out-of-range options."""
from __future__ import annotations

import csv
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusion_core.config import ConfigError
from diffusion_core.training import PREV_STATE, STATE, Trainer, load_train_config

from cli_process import CliProcess
from test_train import TINY, write_idx

ROOT = Path(__file__).resolve().parents[2]


def cfg(tmp_path, *sets):
    folder = write_idx(tmp_path / "idx")
    return load_train_config(None, TINY + ["data.source=idx", f"data.path={folder}", f"out_dir={tmp_path / 'run'}",
                                           *sets])


def log_steps(out: Path) -> list[int]:
    return [int(r["step"]) for r in csv.DictReader(open(out / "log.csv"))]


@pytest.mark.slow
def test_resume_cleans_debris_and_cuts_the_log_back(tmp_path):
    """A kill during a checkpoint write leaves a full-size temporary file, and the steps logged after the last
    checkpoint are trained again: a resume removes the first and cuts log.csv back to the resumed step."""
    Trainer(cfg(tmp_path, "steps=2"), progress=False).run()
    out = tmp_path / "run"
    (out / f".{STATE}.x1y2z3.tmp").write_bytes(b"\0" * 1000)             # a write killed before its rename
    with open(out / "log.csv", "a") as f:                                 # steps 3, 4 logged, never checkpointed
        f.write("3,0.5,1e-4,10,1\n4,0.5,1e-4,10,1\n")
    Trainer(cfg(tmp_path, "steps=5"), resume=True, progress=False).run()
    assert not list(out.glob(".*.tmp"))
    assert log_steps(out) == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_written_files_have_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        Trainer(cfg(tmp_path, "steps=2"), progress=False).run()
    finally:
        os.umask(old)
    for name in (STATE, "model/model.safetensors", "model/config.json", "model/training.json"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name


@pytest.mark.parametrize("change, field", [("unet.base_channels=16", "unet.base_channels"),
                                           ("diffusion.schedule=linear", "diffusion.schedule"),
                                           ("diffusion.prediction=v", "diffusion.prediction"),
                                           ("data.image_size=16", "data.image_size")])
@pytest.mark.slow
def test_resume_refuses_a_changed_model(tmp_path, change, field):
    Trainer(cfg(tmp_path, "steps=2"), progress=False).run()
    with pytest.raises(ConfigError) as err:
        Trainer(cfg(tmp_path, "steps=4", change), resume=True, progress=False)
    msg = str(err.value)
    assert f"cannot resume with {field} = " in msg and "\n" not in msg, msg
    # what may change on a resume (the length of the run, how often it logs) still resumes
    assert Trainer(cfg(tmp_path, "steps=4", "log_every=2", "lr=1e-4"), resume=True, progress=False).step == 2


@pytest.mark.slow
def test_a_state_written_before_a_config_field_existed_resumes(tmp_path):
    """A state whose stored config predates a field (here ``diffusion.x0_range``, added after the emoji fine-tune
    started) resumes with the field's default; the sampling default itself may change on a resume."""
    import json
    from safetensors import safe_open
    Trainer(cfg(tmp_path, "steps=2"), progress=False).run()
    path = tmp_path / "run" / STATE
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    old = json.loads(meta["config"])
    del old["diffusion"]["x0_range"]
    save_file(load_file(str(path)), str(path), metadata={**meta, "config": json.dumps(old)})
    assert Trainer(cfg(tmp_path, "steps=4"), resume=True, progress=False).step == 2
    assert Trainer(cfg(tmp_path, "steps=4", "diffusion.x0_range=dynamic"), resume=True, progress=False).step == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no rng"])
@pytest.mark.slow
def test_corrupt_state_is_named_with_the_previous_good_one(tmp_path, damage):
    Trainer(cfg(tmp_path, "steps=4", "checkpoint_every=2"), progress=False).run()
    out = tmp_path / "run"
    assert (out / PREV_STATE).is_file() and (out / STATE).is_file()
    path = out / STATE
    if damage == "garbage":
        path.write_bytes(b"not a safetensors file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    else:
        from safetensors import safe_open
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        save_file({k: v for k, v in load_file(str(path)).items() if not k.startswith("rng.")}, str(path), metadata=meta)
    with pytest.raises(ConfigError) as err:
        Trainer(cfg(tmp_path, "steps=6"), resume=True, progress=False)
    msg = str(err.value)
    assert str(path) in msg and str(out / PREV_STATE) in msg and "\n" not in msg, msg
    (out / PREV_STATE).replace(path)                  # the hint works: the previous state resumes
    assert Trainer(cfg(tmp_path, "steps=6"), resume=True, progress=False).step == 2


@pytest.mark.slow
def test_nan_weights_are_never_saved(tmp_path):
    tr = Trainer(cfg(tmp_path, "steps=2"), progress=False)
    tr.run()
    before = (tmp_path / "run" / STATE).read_bytes()
    with torch.no_grad():
        next(tr.net.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="not saved; the last good checkpoint, step 2, is kept"):
        tr.save_state()
    assert (tmp_path / "run" / STATE).read_bytes() == before


@pytest.mark.slow
def test_resume_past_the_last_step_says_so(tmp_path, capsys):
    Trainer(cfg(tmp_path, "steps=3"), progress=False).run()
    capsys.readouterr()
    tr = Trainer(cfg(tmp_path, "steps=2"), resume=True, progress=False)
    tr.run()
    assert "at step 3, at or past steps = 2: nothing to train; exporting step 3" in capsys.readouterr().err


@pytest.mark.slow
def test_two_trainings_cannot_write_one_folder(tmp_path, run_main):
    folder = write_idx(tmp_path / "idx")
    args = ["train", "--no-progress", "--set", "steps=100000", "--set", "data.source=idx", "--set", f"data.path={folder}",
            "--set", f"out_dir={tmp_path / 'run'}"] + [x for s in TINY for x in ("--set", s)]
    first = CliProcess(args, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        for _ in range(600):            # until the first one is training (it logs every step)
            if (tmp_path / "run" / "log.csv").is_file() and len((tmp_path / "run" / "log.csv").read_text().splitlines()) > 2:
                break
            time.sleep(0.1)
        second = run_main(*args[:-2], "--set", "steps=3")      # the first is another process
        assert second.returncode != 0, second.stderr
        assert "another training is writing this folder" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)


@pytest.mark.parametrize("args, message", [
    (["sample", "--model", "checkpoints/fashion", "--out", "{tmp}", "--batch", "0"], "--batch must be in [1, 64]"),
    (["sample", "--model", "checkpoints/fashion", "--out", "{tmp}", "--batch", "-1"], "--batch must be in [1, 64]"),
    (["sample", "--model", "checkpoints/fashion", "--out", "{tmp}", "--n", "0"], "--n must be in [1,"),
    (["sample", "--model", "checkpoints/fashion", "--out", "{tmp}", "--seed", str(2 ** 64)], "--seed must be in [0,"),
    (["sample", "--model", "checkpoints/fashion", "--out", "{tmp}", "--seed", "-3"], "--seed must be in [0,"),
    (["sample", "--model", "checkpoints/fashion", "--out", "{tmp}", "--steps", "0"], "--steps must be in [1, 1000]"),
    (["evaluate", "--model", "checkpoints/fashion", "--batch", "0"], "--batch must be in [1,"),
    (["evaluate", "--model", "checkpoints/fashion", "--n", "0"], "--n must be in [1,"),
    (["train", "--set", "checkpoint_every=0"], "checkpoint_every must be in [1,"),
    (["train", "--set", "log_every=0"], "log_every must be in [1,"),
    (["train", "--set", "batch_size=-4"], "batch_size must be in [1,"),
])
def test_numeric_options_out_of_range_are_one_line_errors(tmp_path, run_main, args, message):
    r = run_main(*[a.replace("{tmp}", str(tmp_path / "o")) for a in args])
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
