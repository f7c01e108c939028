"""Training, datasets, CLI and evaluation end to end with tiny configs (a few steps each)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cli_process import CliProcess
from diffusion_core import load
from diffusion_core.data import DataConfig, load_data, read_idx
from diffusion_core.training import STATE, TrainConfig, Trainer, load_train_config

ROOT = Path(__file__).resolve().parents[2]
TINY = ["unet.base_channels=8", "unet.channel_mults=[1,2]", "unet.num_res_blocks=1", "unet.attention_resolutions=[8]",
        "batch_size=4", "checkpoint_every=2", "sample_every=0", "log_every=1", "sample_steps=2", "sample_images=4",
        "threads=1"]
HAS_FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists()


def write_idx(folder: Path, n: int = 40) -> Path:
    """A tiny IDX dataset (MNIST layout) as a fixture: class k is a bright square at a class-dependent place."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    imgs = np.zeros((n, 28, 28), np.uint8)
    for i, k in enumerate(labels):
        imgs[i, 2 + 2 * k: 8 + 2 * k, 4:20] = 200
    for name, arr in (("train-images-idx3-ubyte", imgs), ("t10k-images-idx3-ubyte", imgs)):
        (folder / name).write_bytes(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.tobytes())
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes())
    return folder


def tiny_cfg(tmp_path, *sets) -> TrainConfig:
    return load_train_config(None, TINY + [f"out_dir={tmp_path / 'run'}", *sets])


def test_idx_reader_and_padding(tmp_path):
    folder = write_idx(tmp_path / "idx")
    assert read_idx(folder / "train-images-idx3-ubyte").shape == (40, 28, 28)
    d = load_data(DataConfig(source="idx", path=str(folder), image_size=32))
    assert d.images.shape == (40, 32, 32, 1) and d.labels.shape == (40, 10)
    assert (d.labels.sum(1) == 1).all()
    x = d.batch(torch.arange(4))["image"]
    assert x.min() >= -1 and x.max() <= 1 and x[:, :, :2].eq(-1).all()   # padding is background


@pytest.mark.skipif(not HAS_FASHION, reason="dataset-fashion-mnist not installed")
def test_fashion_from_debian_package():
    d = load_data(DataConfig(source="fashion", split="test", limit=100))
    assert d.images.shape == (100, 32, 32, 1) and d.label_names[7] == "Sneaker"


def test_folder_source_skips_unreadable_and_reads_labels(tmp_path):
    root = tmp_path / "imgs"
    for cls, colour in (("cats", 40), ("dogs", 200)):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (50 + i, 40), (colour, colour, 0)).save(root / cls / f"{cls}{i}.png")
    (root / "cats" / "broken.png").write_bytes(b"not an image")
    Image.new("P", (20, 20)).save(root / "dogs" / "palette.png")
    d = load_data(DataConfig(source="folder", path=str(root), image_size=16, channels=3))
    assert d.skipped == 1 and len(d) == 7 and d.label_names == ("cats", "dogs")
    assert d.images.shape == (7, 16, 16, 3)
    csv = tmp_path / "attrs.csv"
    csv.write_text("filename,smiling,hat\ncats0.png,1,0\ncats1.png,0,1\ndogs0.png,1,1\n")
    d2 = load_data(DataConfig(source="folder", path=str(root), image_size=16, channels=3, labels_file=str(csv)))
    assert d2.multi_label and d2.label_names == ("smiling", "hat") and len(d2) == 3
    celeba = tmp_path / "list_attr_celeba.txt"
    celeba.write_text("2\nSmiling Eyeglasses\ncats0.png 1 -1\ndogs1.png -1 1\n")
    d3 = load_data(DataConfig(source="folder", path=str(root), image_size=16, channels=3, labels_file=str(celeba)))
    assert d3.label_names == ("Smiling", "Eyeglasses") and sorted(map(tuple, d3.labels.tolist())) == [(0, 1), (1, 0)]


@pytest.mark.slow
def test_train_export_sample_roundtrip(tmp_path):
    folder = write_idx(tmp_path / "idx")
    cfg = tiny_cfg(tmp_path, "data.source=idx", f"data.path={folder}", "steps=3", "diffusion.prediction=v",
                   "min_snr_gamma=5")
    out = Trainer(cfg, "test", progress=False).run()
    pipe = load(out)
    assert pipe.config.unet.num_labels == 10 and pipe.config.diffusion.prediction == "v"
    rec = json.loads((out / "training.json").read_text())
    assert rec["steps"] == 3 and rec["images_seen"] == 12 and rec["wall_time_s"] > 0
    assert (out / "samples.png").exists() and (out / "loss.png").exists()
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 4
    a = pipe.sample(2, steps=3, labels=["3"], seed=1)
    assert a.shape == (2, 1, 32, 32) and torch.equal(a, pipe.sample(2, steps=3, labels=["3"], seed=1))


@pytest.mark.slow
def test_resume_is_exact(tmp_path):
    """Stopping at step 2 and resuming to 4 gives bit-identical weights to running 4 steps straight."""
    folder = write_idx(tmp_path / "idx")
    base = ["data.source=idx", f"data.path={folder}", "unet.dropout=0.0"]
    straight = Trainer(load_train_config(None, TINY + base + [f"out_dir={tmp_path / 'a'}", "steps=4"]), progress=False)
    straight.run()
    first = Trainer(load_train_config(None, TINY + base + [f"out_dir={tmp_path / 'b'}", "steps=2"]), progress=False)
    first.run()
    resumed = Trainer(load_train_config(None, TINY + base + [f"out_dir={tmp_path / 'b'}", "steps=4"]), resume=True,
                      progress=False)
    assert resumed.step == 2
    # the fused AdamW kernel walks parameter and moments as flat memory: restored moments (saved contiguous)
    # must take their channels_last parameter's layout, or the resumed steps are wrong
    moments = [(p, st["exp_avg"]) for p, st in resumed.opt.state.items()]
    assert any(p.dim() == 4 and not p.is_contiguous() for p, _ in moments)
    assert all(m.stride() == p.stride() for p, m in moments)
    resumed.run()
    for (k, v), (_, w) in zip(straight.net.state_dict().items(), resumed.net.state_dict().items()):
        assert torch.equal(v, w), k
    for (k, v), (_, w) in zip(straight.ema.module.state_dict().items(), resumed.ema.module.state_dict().items()):
        assert torch.equal(v, w), k


@pytest.mark.slow
def test_training_owns_its_randomness(tmp_path):
    """Issue 19: training seeds only its own generators (the network's initialisation in a forked RNG, the data /
    noise stream, the dropout masks' stream). torch's global generator is the same after a run as before it,
    its state does not change the run, and with dropout on, stopping and resuming is still exact (the dropout
    stream is saved in the checkpoint)."""
    folder = write_idx(tmp_path / "idx")
    base = ["data.source=idx", f"data.path={folder}", "unet.dropout=0.3"]

    def cfg(name, steps):
        return load_train_config(None, TINY + base + [f"out_dir={tmp_path / name}", f"steps={steps}"])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    straight = Trainer(cfg("a", 4), progress=False)
    straight.run()
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)                                  # another global state: the same run
    other = Trainer(cfg("b", 4), progress=False)
    other.run()
    first = Trainer(cfg("c", 2), progress=False)
    first.run()
    # a checkpoint from before the trainer had its own dropout stream holds it as "rng.torch": still resumable
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(tmp_path / "c" / STATE), "pt") as f:
        meta = f.metadata()
    state = load_file(str(tmp_path / "c" / STATE))
    state["rng.torch"] = state.pop("rng.dropout")
    save_file(state, str(tmp_path / "c" / STATE), metadata=meta)
    resumed = Trainer(cfg("c", 4), resume=True, progress=False)
    resumed.run()
    for run in (other, resumed):
        for (k, v), (_, w) in zip(straight.net.state_dict().items(), run.net.state_dict().items()):
            assert torch.equal(v, w), k
    unseeded = Trainer(load_train_config(None, TINY + base + [f"out_dir={tmp_path / 'd'}", "steps=4", "seed=1"]),
                       progress=False)
    unseeded.run()
    assert not all(torch.equal(v, w) for v, w in zip(straight.net.state_dict().values(),
                                                    unseeded.net.state_dict().values()))


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_checkpoint(tmp_path, monkeypatch):
    folder = write_idx(tmp_path / "idx")
    cfg = tiny_cfg(tmp_path, "data.source=idx", f"data.path={folder}", "steps=10")
    tr = Trainer(cfg, progress=False)
    real = tr.loss
    calls = {"n": 0}

    def loss(*a):
        calls["n"] += 1
        value = real(*a)
        return value * float("nan") if calls["n"] == 5 else value
    monkeypatch.setattr(tr, "loss", loss)
    with pytest.raises(FloatingPointError, match="step 4"):
        tr.run()
    state = load_file(str(tmp_path / "run" / STATE))
    assert all(torch.isfinite(v).all() for k, v in state.items() if v.is_floating_point())
    assert Trainer(cfg, resume=True, progress=False).step == 4


@pytest.mark.slow
def test_kill_during_checkpoint_write_then_resume(tmp_path, run_main):
    """kill -9 while a checkpoint is half written (temp file present, not yet renamed): the previous
    checkpoint stays valid and --resume reaches the same final step count."""
    folder = write_idx(tmp_path / "idx")
    out = tmp_path / "run"
    args = ["train", "--no-progress", *sum([["--set", s] for s in TINY + ["data.source=idx", f"data.path={folder}",
                                                                          f"out_dir={out}", "steps=8"]], [])]
    env = dict(os.environ, OMP_NUM_THREADS="1", DIFFUSION_FAULT_PAUSE_BEFORE_RENAME="3")
    p = CliProcess(args, env=env)
    deadline = time.time() + 120
    killed_mid_write = False
    while time.time() < deadline and p.poll() is None:
        if (out / STATE).exists() and list(out.glob(f".{STATE}.*.tmp")):   # second write in progress
            p.send_signal(signal.SIGKILL)
            killed_mid_write = True
            break
        time.sleep(0.05)
    p.wait(timeout=60)
    assert killed_mid_write
    state = load_file(str(out / STATE))           # the previous checkpoint is intact
    assert "rng.dropout" in state
    r = run_main(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "model" / "training.json").read_text())["steps"] == 8


@pytest.mark.slow
def test_repeated_kill_9_at_random_points_then_resume(tmp_path, run_main):
    """Five runs killed with SIGKILL after a random number of steps (seeded): mid-step or mid-write
    (every write pauses 0.3 s before its rename). After each kill a valid checkpoint or none exists; the
    last --resume finishes at exactly the configured step count."""
    import random
    folder = write_idx(tmp_path / "idx")
    out = tmp_path / "run"
    args = ["train", "--no-progress", "--resume", *sum([["--set", s] for s in TINY + [
        "data.source=idx", f"data.path={folder}", f"out_dir={out}", "steps=80"]], [])]
    env = dict(os.environ, OMP_NUM_THREADS="1", DIFFUSION_FAULT_PAUSE_BEFORE_RENAME="0.3")
    rng = random.Random(1234)
    steps_seen = []
    for _ in range(5):
        p = CliProcess(args, env=env)
        starts = len((out / "commands.txt").read_text().splitlines()) if (out / "commands.txt").exists() else 0
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None and (not (out / "commands.txt").exists() or len(
                (out / "commands.txt").read_text().splitlines()) == starts):
            time.sleep(0.05)                            # until this run has loaded and started its loop
        logged = len((out / "log.csv").read_text().splitlines()) if (out / "log.csv").exists() else 0
        k = rng.randint(1, 8)                           # then let it run k more steps (whatever the CPU speed)
        while time.time() < deadline and p.poll() is None and (not (out / "log.csv").exists() or len(
                (out / "log.csv").read_text().splitlines()) < logged + k):
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        if (out / STATE).exists():
            from safetensors import safe_open
            with safe_open(str(out / STATE), "pt") as f:      # parses: never a torn file
                steps_seen.append(int(f.metadata()["step"]))
    assert len(steps_seen) >= 3 and steps_seen == sorted(steps_seen)     # progress is never lost
    assert steps_seen[-1] < 80
    r = run_main(*args)
    assert r.returncode == 0, r.stderr
    info = json.loads((out / "model" / "training.json").read_text())
    assert info["steps"] == 80
    assert len((out / "commands.txt").read_text().splitlines()) >= 2     # every restart is recorded


@pytest.mark.slow
def test_disk_full_during_save_keeps_the_previous_checkpoint(tmp_path, run_main):
    """A real write error from the OS: the resumed run gets RLIMIT_FSIZE below the checkpoint's size, so
    every checkpoint write fails (EFBIG, as a full disk fails with ENOSPC). Periodic failures warn and
    training goes on; the final one exits with a one-line error; the step-4 checkpoint survives intact and a
    later --resume (with room to write) finishes the run."""
    folder = write_idx(tmp_path / "idx")
    out = tmp_path / "run"
    base = TINY + ["data.source=idx", f"data.path={folder}", f"out_dir={out}"]
    args = ["train", "--no-progress", *sum([["--set", s] for s in base], [])]
    assert run_main(*args, "--set", "steps=4").returncode == 0
    size = (out / STATE).stat().st_size
    before = (out / STATE).read_bytes()

    p = CliProcess([*args, "--set", "steps=8", "--resume"], env=dict(os.environ, OMP_NUM_THREADS="1"), capture=True,
                   max_file_bytes=size // 2, output_dir=tmp_path)
    code, printed = p.wait(timeout=300), p.output()
    assert code == 2, printed
    assert "warning: could not write" in printed and "at step 6" in printed
    last = printed.strip().splitlines()[-1]
    assert last.startswith("error: could not write") and "step 8" in last and "(step 4) is kept" in last, last
    assert "Traceback" not in printed
    assert (out / STATE).read_bytes() == before
    assert not list(out.glob(f".{STATE}.*.tmp"))                # no partial temp files left behind
    r = run_main(*args, "--set", "steps=8", "--resume")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "model" / "training.json").read_text())["steps"] == 8


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint(tmp_path):
    folder = write_idx(tmp_path / "idx")
    out = tmp_path / "run"
    args = ["train", "--no-progress", *sum([["--set", s] for s in TINY + ["data.source=idx", f"data.path={folder}",
                                                                          f"out_dir={out}", "steps=100000",
                                                                          "checkpoint_every=100000"]], [])]
    p = CliProcess(args, env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 120
    def logged_steps():
        return len((out / "log.csv").read_text().splitlines()) - 1 if (out / "log.csv").exists() else 0
    while time.time() < deadline and logged_steps() < 2:
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 0
    tr = Trainer(load_train_config(None, TINY + ["data.source=idx", f"data.path={folder}", f"out_dir={out}"]),
                 resume=True, progress=False)
    assert tr.step >= 2


@pytest.mark.slow
def test_ddp_two_processes_identical_weights(tmp_path):
    folder = write_idx(tmp_path / "idx")
    out = tmp_path / "ddp"
    sets = sum([["--set", s] for s in TINY + ["data.source=idx", f"data.path={folder}", f"out_dir={out}", "steps=3"]], [])
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                        "-m", "diffusion_core", "train", "--no-progress", *sets], cwd=ROOT, capture_output=True,
                       text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    check = json.loads((out / "ddp_check.json").read_text())
    assert check["world_size"] == 2 and check["identical"]
    assert json.loads((out / "model" / "training.json").read_text())["images_seen"] == 3 * 4 * 2


@pytest.mark.slow
def test_super_resolution_and_cascade(tmp_path, run_main):
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).resize((32, 32)).save(root / f"{i}.png")
    base = Trainer(load_train_config(None, TINY + ["data.source=folder", f"data.path={root}", "data.image_size=16",
                                                   "data.channels=3", f"out_dir={tmp_path / 'base'}", "steps=2"]),
                   progress=False).run()
    sr = Trainer(load_train_config(None, TINY + ["task=super_resolution", "low_res=16", "crop=16", "data.source=folder",
                                                 f"data.path={root}", "data.image_size=32", "data.channels=3",
                                                 f"out_dir={tmp_path / 'sr'}", "steps=2"]), progress=False).run()
    srp = load(sr)
    assert srp.config.task == "super_resolution" and srp.config.unet.image_size == 16
    up = srp.upscale(torch.zeros(2, 3, 16, 16), steps=2)
    assert up.shape == (2, 3, 32, 32)          # trained on 16 px crops, samples at full size
    r = run_main("cascade", "--out", str(tmp_path / "casc"), "--stage", "../base/model", "--stage", "../sr/model:0.1")
    assert r.returncode == 0, r.stderr
    casc = load(tmp_path / "casc")
    stages = [rec.stage for rec in casc.stream(1, steps=2, sr_steps=2)]
    assert stages == [0, 0, 1, 1]
    assert casc.sample(1, steps=2, sr_steps=2).shape == (1, 3, 32, 32)


@pytest.mark.slow
def test_pose_and_cold_training(tmp_path):
    pose = Trainer(load_train_config(None, TINY + ["task=pose", "data.source=pose", "data.pose_pairs=16",
                                                   "data.channels=3", f"out_dir={tmp_path / 'pose'}", "steps=2"]),
                   progress=False).run()
    pp = load(pose)
    assert pp.config.unet.cond_channels == 1 and pp.config.unet.out_channels == 3
    stick = torch.ones(1, 32, 32)
    assert pp.sample(1, steps=2, cond_image=stick, guidance=2.0).shape == (1, 3, 32, 32)
    folder = write_idx(tmp_path / "idx")
    cold = Trainer(load_train_config(None, TINY + ["data.source=idx", f"data.path={folder}", "diffusion.degradation=blur",
                                                   "diffusion.prediction=x0", "diffusion.T=20",
                                                   f"out_dir={tmp_path / 'cold'}", "steps=2"]), progress=False).run()
    cp = load(cold)
    assert cp.samplers == ("cold",) and cp.stages[0].prior is not None and cp.stages[0].prior.shape[1:] == (1, 32, 32)
    assert cp.sample(2, sampler="cold", steps=5, labels=["1"]).shape == (2, 1, 32, 32)


@pytest.mark.slow
def test_experts_branch_from_parent_and_assemble(tmp_path, run_main):
    folder = write_idx(tmp_path / "idx")
    common = TINY + ["data.source=idx", f"data.path={folder}", "steps=1"]
    parent = Trainer(load_train_config(None, common + [f"out_dir={tmp_path / 'p'}"]), progress=False).run()
    ens = tmp_path / "ens"
    for name, lo, hi in (("low", 0, 400), ("high", 400, 1000)):
        cfg = load_train_config(None, common + [f"out_dir={tmp_path / name}", f"parent={parent}",
                                                f"diffusion.t_range=[{lo},{hi}]"])
        tr = Trainer(cfg, progress=False)
        assert torch.equal(next(tr.net.parameters()), next(load(parent).net.parameters()))
        tr.run()
        import shutil
        shutil.copytree(tmp_path / name / "model", ens / name)
    r = run_main("ensemble", "--out", str(ens), "--expert", "low:0:400", "--expert", "high:400:1000")
    assert r.returncode == 0, r.stderr
    pipe = load(ens)
    assert pipe.kind == "ensemble" and pipe.stages[0].expert_index(399) == 0 and pipe.stages[0].expert_index(400) == 1
    bad = run_main("ensemble", "--out", str(ens), "--expert", "low:0:300", "--expert", "high:400:1000")
    assert bad.returncode == 2 and "gap" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_a_fine_tune_keeps_its_parents_sampling_defaults(tmp_path):
    """Issue 39: a model trained from a ``parent`` of the same task and labels is exported with the parent's
    ``sampling`` section (the app's measured defaults: for emoji, the skin tones and colours held at weight 1).
    Exported with the plain defaults, every emoji fine-tune's picks and tones were judged with every pick guided
    at full scale, unlike the parent's app."""
    folder = write_idx(tmp_path / "idx")
    common = TINY + ["data.source=idx", f"data.path={folder}", "steps=1"]
    parent = Trainer(load_train_config(None, common + [f"out_dir={tmp_path / 'p'}"]), progress=False).run()
    cfg_file = Path(parent) / "config.json"
    measured = dict(sampler="ddpm", steps=7, spacing="leading", guidance=3.5, why="measured on the parent",
                    held_labels=[])
    cfg_file.write_text(json.dumps(dict(json.loads(cfg_file.read_text()), sampling=measured)))
    child = Trainer(load_train_config(None, common + [f"out_dir={tmp_path / 'c'}", f"parent={parent}"]),
                    progress=False).run()
    assert json.loads((Path(child) / "config.json").read_text())["sampling"] == measured
    assert load(child).stages[0].config.sampling == load(parent).stages[0].config.sampling
    plain = Trainer(load_train_config(None, common + [f"out_dir={tmp_path / 'q'}"]), progress=False).run()
    assert json.loads((Path(plain) / "config.json").read_text())["sampling"] != measured


@pytest.mark.slow
def test_cli_sample_and_bad_arguments(tmp_path, run_main):
    folder = write_idx(tmp_path / "idx")
    out = Trainer(tiny_cfg(tmp_path, "data.source=idx", f"data.path={folder}", "steps=1"), progress=False).run()
    r = run_main("sample", "--model", str(out), "--out", str(tmp_path / "s"), "--n", "3", "--steps", "3",
                "--label", "2", "--grid", "--gif")
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert files == ["00000.png", "00001.png", "00002.png", "grid.png", "process.gif"]
    meta = json.loads(Image.open(tmp_path / "s" / "00001.png").text["parameters"])
    assert meta["seed"] == 1 and meta["labels"] == ["2"]
    for bad, needle in ((["--label", "Unicorn"], "unknown label"), (["--steps", "0"], "steps"),
                        (["--eta", "3"], "eta"), (["--sampler", "cold"], "cold")):
        r = run_main("sample", "--model", str(out), "--out", str(tmp_path / "x"), "--n", "1", *bad)
        assert r.returncode != 0 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run_main("sample", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "no such checkpoint folder" in r.stderr
    r = run_main("train", "--set", "unet.colour=3")
    assert r.returncode == 2 and "unknown config key" in r.stderr


def test_evaluate_metrics(tmp_path):
    from diffusion_core.evaluation.metrics import f1_per_attribute, frechet_distance
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4))
    assert frechet_distance(a, b) < 0.05
    assert abs(frechet_distance(a, b + 1.0) - 4.0) < 0.2        # ||mu1-mu2||^2 = 4
    # a feature that is 0 in both sets (a dead ReLU unit) adds nothing, and no singular-matrix warning;
    # one that is constant but differs between the sets still counts: (3 - 1)^2 = 4 more
    import warnings
    dead = np.zeros((2000, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert frechet_distance(np.hstack([a, dead]), np.hstack([b, dead])) == pytest.approx(frechet_distance(a, b))
        assert frechet_distance(np.hstack([a, dead + 1]), np.hstack([b, dead[:, :1] + 3, dead[:, 1:] + 1])) \
            == pytest.approx(frechet_distance(a, b) + 4.0)
    pred = torch.tensor([[1, 0], [1, 1], [0, 0]], dtype=torch.bool)
    truth = torch.tensor([[1, 0], [0, 1], [0, 1]], dtype=torch.bool)
    assert torch.allclose(f1_per_attribute(pred, truth), torch.tensor([2 / 3, 2 / 3]))
    from diffusion_core.evaluation.metrics import visible_f1
    v = visible_f1({"woman": 0.9, "cat": 0.0, "bald": 0.5, "man": 0.7},
                   {"woman": 0.95, "cat": 0.9, "bald": 0.3, "man": 0.85}, {"woman": 40, "cat": 1, "bald": 30, "man": 10})
    assert v["attributes"] == ["woman", "man"] and v["mean"] == pytest.approx(0.8)   # cat: 1 positive; bald: unseen


@pytest.mark.skipif(not HAS_FASHION, reason="dataset-fashion-mnist not installed")
@pytest.mark.slow
def test_evaluate_command_end_to_end(tmp_path, run_main):
    from diffusion_core.evaluation.classifier import Classifier, ClassifierConfig, save_classifier
    folder = write_idx(tmp_path / "idx")
    model = Trainer(tiny_cfg(tmp_path, "data.source=idx", f"data.path={folder}", "steps=1"), progress=False).run()
    torch.manual_seed(0)
    save_classifier(tmp_path / "clf", ClassifierConfig(), Classifier(ClassifierConfig()).eval(), {"test": True})
    cache = tmp_path / "cache"
    args = ["evaluate", "--model", str(model), "--classifier", str(tmp_path / "clf"), "--n", "20",
            "--batch", "10", "--cache-dir", str(cache)]
    r = run_main(*args, "--steps", "2", "--tag", "t")
    assert r.returncode == 0, r.stderr
    m = json.loads((model / "metrics-t.json").read_text())
    assert m["n"] == 20 and 0 <= m["accuracy"] <= 1 and m["fid"] > 0 and m["fid_real_vs_real"] >= 0
    assert set(m["accuracy_per_class"]) == set(load(model).config.label_names) and "resumed_from" not in m
    assert m["timed_batches"] == 2 and 0 < m["sampling_s_per_image"] <= m["sampling_s"] / 10
    assert "4/4" in r.stderr and "step" in r.stderr          # progress per sampling step: 2 batches x 2 steps
    r2 = run_main(*args, "--steps", "2", "--tag", "u", "--no-cache")
    assert json.loads((model / "metrics-u.json").read_text())["fid"] == m["fid"]     # deterministic given a seed
    # a run stopped after its first batch resumes from the kept samples and ends where an uninterrupted run does
    from safetensors import safe_open
    from diffusion_core.checkpoint import atomic_save_tensors
    (kept,) = cache.iterdir()
    with safe_open(str(kept), "pt") as f:
        meta, first = f.metadata(), f.get_tensor("batch.0")
    atomic_save_tensors({"batch.0": first}, kept, metadata=meta)
    r3 = run_main(*args, "--steps", "2", "--tag", "t")
    assert r3.returncode == 0, r3.stderr
    m3 = json.loads((model / "metrics-t.json").read_text())
    assert m3["resumed_from"] == 10 and m3["fid"] == m["fid"] and m3["accuracy"] == m["accuracy"]
    assert m3["timed_batches"] == 2            # the kept batch's time and the new one's
    assert "2/2" in r3.stderr and "10 images" in r3.stderr     # only the batch left is counted
    # other settings under the same name: the kept samples are not reused
    r4 = run_main(*args, "--steps", "3", "--tag", "t")
    assert r4.returncode == 0 and "resumed_from" not in json.loads((model / "metrics-t.json").read_text())
    # samples made elsewhere (--samples-only: no metrics file) in a copy of the model folder at another path
    # (the cache is keyed by folder name and weights' SHA-256), finished here without sampling again
    import shutil
    elsewhere = tmp_path / "elsewhere" / model.name
    shutil.copytree(model, elsewhere)
    other_cache = tmp_path / "cache2"
    r5 = run_main("evaluate", "--model", str(elsewhere), "--n", "20", "--batch", "10", "--steps", "2", "--tag", "s",
                 "--cache-dir", str(other_cache), "--samples-only", "--device", "cpu")
    assert r5.returncode == 0, r5.stderr
    assert not (elsewhere / "metrics-s.json").exists() and len(list(other_cache.iterdir())) == 1
    r6 = run_main(*args[:-1], str(other_cache), "--steps", "2", "--tag", "s")
    assert r6.returncode == 0, r6.stderr
    m6 = json.loads((model / "metrics-s.json").read_text())
    assert m6["resumed_from"] == 20 and m6["fid"] == m["fid"] and m6["accuracy"] == m["accuracy"]
    r7 = run_main(*args, "--steps", "2", "--samples-only", "--no-cache")
    assert r7.returncode != 0 and "--samples-only" in r7.stderr


def test_sample_cache_reads_a_legacy_key_and_rewrites_it(tmp_path):
    from diffusion_core.evaluation.evaluate import SampleCache
    path = tmp_path / "c.safetensors"
    old = SampleCache(path, {"model": "/abs/fashion", "steps": 2})
    old.batch_s = [1.5]
    old.save([torch.ones(2, 1, 4, 4)], 3.0)
    assert SampleCache(path, {"model": "fashion", "steps": 2}).load() == []          # another key: ignored
    new = SampleCache(path, {"model": "fashion", "steps": 2}, legacy=({"model": "/abs/fashion", "steps": 2},))
    kept = new.load()
    assert len(kept) == 1 and torch.equal(kept[0], torch.ones(2, 1, 4, 4)) and new.batch_s == [1.5]
    new.save(kept, 4.0)                                                             # rewritten under the new key
    assert len(SampleCache(path, {"model": "fashion", "steps": 2}).load()) == 1


@pytest.mark.slow
def test_emoji_source_trains(tmp_path):
    from diffusion_core.data.emoji import EMOJI_TEST, FONT
    if not (Path(EMOJI_TEST).exists() and Path(FONT).exists()):
        pytest.skip("emoji packages not installed")
    out = Trainer(load_train_config(None, TINY + ["data.source=emoji", "data.channels=3", "data.limit=24",
                                                  f"out_dir={tmp_path / 'e'}", "steps=2"]), progress=False).run()
    pipe = load(out)
    assert pipe.config.multi_label and "woman" in pipe.config.label_names and "dark skin tone" in pipe.config.label_names
    x = pipe.sample(1, steps=2, labels=["woman", "dark skin tone"], guidance=2.0)
    assert x.shape == (1, 3, 32, 32)
    from diffusion_core.evaluation.evaluate import memorisation
    m = memorisation(out, n=4, steps=2)
    assert m["n"] == 4 and (out / "memorisation.png").is_file()
    # an untrained model's samples are noise: far from every training image, unlike held-out real emoji
    assert m["near_copy_fraction"] == 0.0
    assert m["median_rms_to_nearest_train_samples"] > m["median_rms_to_nearest_train_held_out_real"]


@pytest.mark.slow
def test_evaluate_super_resolution_against_bicubic(tmp_path):
    out = tmp_path / "sr"
    sr = Trainer(load_train_config(None, TINY + ["task=super_resolution", "low_res=16", "crop=16", "data.source=pose",
                                                 "data.pose_pairs=16", "data.image_size=32", "data.channels=3",
                                                 f"out_dir={out}", "steps=2"]), progress=False).run()
    from diffusion_core.evaluation.super_resolution import evaluate_super_resolution
    m = evaluate_super_resolution(sr, n=4, steps=2, batch=3)
    assert m["n"] == 4 and m["output"] == "32x32" and "procedural figures" in m["held_out"]
    for k in ("psnr_bicubic", "psnr_sr", "ssim_bicubic", "ssim_sr", "sharpness_sr", "sharpness_truth"):
        assert np.isfinite(m[k]), k
    assert 5 < m["psnr_bicubic"] < 60 and 0 < m["ssim_bicubic"] <= 1
    assert Image.open(sr / "sr_examples.png").size[1] > 4 * 32      # four rows: input, bicubic, SR, truth
