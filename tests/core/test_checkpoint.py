"""Checkpoints: JSON + safetensors round trips, strict refusals with one-line messages, ensembles, cascades."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import diffusion_core
from diffusion_core import CheckpointError, load, save_cascade, save_ensemble, save_model
from diffusion_core.checkpoint import write_json
from diffusion_core.config import to_dict
from diffusion_core.denoisers import ModelDenoiser


def _probe(net, channels=1, size=8, n=2, cond=None):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, channels, size, size, generator=g)
    t = torch.tensor([3, 77])[:n]
    with torch.no_grad():
        return net(x, t, cond)


# ---- round trips --------------------------------------------------------------------------------
def test_round_trip_fp16_gives_identical_outputs(tmp_path, make_model):
    cfg, net = make_model(tmp_path / "m", seed=3, half=True)   # net holds the fp16-rounded weights
    pipe = load(tmp_path / "m")
    assert pipe.kind == "model" and pipe.config == cfg
    tensors = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert all(v.dtype == torch.float16 for v in tensors.values() if v.is_floating_point())
    out = _probe(pipe.net)
    assert torch.equal(out, _probe(net))
    assert out.abs().max() > 0.1            # random weights: the output is not the zero-initialised 0


def test_round_trip_full_precision_is_exact(tmp_path, make_model):
    cfg, net = make_model(tmp_path / "m", seed=4, half=False, unet=dict(num_labels=2),
                          label_names=("cat", "dog"), multi_label=True, description="tiny")
    pipe = load(tmp_path / "m")
    assert pipe.config == cfg and pipe.config.label_names == ("cat", "dog") and pipe.description == "tiny"
    for k, v in net.state_dict().items():
        assert torch.equal(pipe.net.state_dict()[k], v), k
    from diffusion_core import Condition
    cond = Condition(labels=torch.tensor([[1.0, 0.0], [1.0, 1.0]]), uncond=torch.zeros(2, dtype=torch.bool))
    assert torch.equal(_probe(pipe.net, cond=cond), _probe(net, cond=cond))
    # config.json is plain JSON of the frozen dataclasses
    assert json.loads((tmp_path / "m" / "config.json").read_text()) == to_dict(cfg)


def test_prior_round_trip(tmp_path, make_model):
    prior = torch.rand(5, 1, 8, 8) * 2 - 1
    cfg, net = make_model(tmp_path / "m", diffusion=dict(degradation="blur", prediction="x0"))
    save_model(tmp_path / "m", cfg, net.state_dict(), extra={"prior": prior})
    assert torch.equal(load(tmp_path / "m").stages[0].prior, prior)


# ---- refusals -----------------------------------------------------------------------------------
def _refused(path, must_name: Path, *fragments):
    with pytest.raises(CheckpointError) as err:
        load(path)
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert str(must_name) in msg, (msg, must_name)
    for f in fragments:
        assert f in msg, (msg, f)
    return msg


def _edit_config(folder: Path, edit):
    data = json.loads((folder / "config.json").read_text())
    edit(data)
    (folder / "config.json").write_text(json.dumps(data))


def test_refuses_truncated_weights(tmp_path, make_model):
    make_model(tmp_path / "m")
    w = tmp_path / "m" / "model.safetensors"
    data = w.read_bytes()
    for cut in (len(data) // 2, 5):
        w.write_bytes(data[:cut])
        _refused(tmp_path / "m", w, "truncated")


def test_refuses_wrong_shapes(tmp_path, make_model):
    cfg, net32 = make_model(tmp_path / "m", unet=dict(base_channels=32))
    _edit_config(tmp_path / "m", lambda d: d["unet"].update(base_channels=16))
    _refused(tmp_path / "m", tmp_path / "m" / "model.safetensors", "has shape", "config needs")


def test_refuses_unknown_config_key(tmp_path, make_model):
    make_model(tmp_path / "m")
    _edit_config(tmp_path / "m", lambda d: d.update(learning_rate=1e-4))
    _refused(tmp_path / "m", tmp_path / "m" / "config.json", "unknown config key", "learning_rate")
    make_model(tmp_path / "n")
    _edit_config(tmp_path / "n", lambda d: d["unet"].update(widht=3))
    _refused(tmp_path / "n", tmp_path / "n" / "config.json", "unet.widht")


def test_refuses_missing_and_unexpected_weights(tmp_path, make_model):
    cfg, net = make_model(tmp_path / "m")
    sd = net.state_dict()
    missing = sorted(sd)[0]
    save_file({k: v.half() for k, v in sd.items() if k != missing}, str(tmp_path / "m" / "model.safetensors"))
    _refused(tmp_path / "m", tmp_path / "m" / "model.safetensors", "missing", missing)
    save_file({**{k: v.half() for k, v in sd.items()}, "extra.weight": torch.zeros(2)},
              str(tmp_path / "m" / "model.safetensors"))
    _refused(tmp_path / "m", tmp_path / "m" / "model.safetensors", "unexpected", "extra.weight")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_refuses_non_finite_weights(tmp_path, make_model, bad):
    cfg, net = make_model(tmp_path / "m")
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    key = "conv_in.weight"
    sd[key].view(-1)[7] = bad
    save_model(tmp_path / "m", cfg, sd)
    _refused(tmp_path / "m", tmp_path / "m" / "model.safetensors", key, "NaN or inf")


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt"])
def test_refuses_pickles_without_unpickling(tmp_path, make_model, monkeypatch, suffix):
    cfg, net = make_model(tmp_path / "m")
    pt = tmp_path / "m" / f"model{suffix}"
    torch.save(net.state_dict(), pt)
    (tmp_path / "m" / "model.safetensors").unlink()

    def boom(*a, **k):
        raise AssertionError("something tried to unpickle a checkpoint")
    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    _refused(pt, pt, "pickle", "convert")                 # pointing at the file
    _refused(tmp_path / "m", pt, "pickle", "convert")     # a folder that only holds a pickle


def test_refuses_absurd_config(tmp_path, make_model):
    make_model(tmp_path / "m")
    _edit_config(tmp_path / "m", lambda d: d["unet"].update(base_channels=10 ** 9))
    _refused(tmp_path / "m", tmp_path / "m" / "config.json", "absurd")
    # large but individually plausible numbers are caught by the parameter estimate before allocating
    _edit_config(tmp_path / "m", lambda d: d["unet"].update(base_channels=1024, channel_mults=[4, 4, 4, 4],
                                                             num_res_blocks=8))
    _refused(tmp_path / "m", tmp_path / "m" / "config.json", "too large")


def test_refuses_bad_config_files(tmp_path, make_model):
    make_model(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg_path.write_text('{"version": 1, "unet": {')
    _refused(tmp_path / "m", cfg_path, "not valid JSON")
    cfg_path.write_text("[1, 2]")
    _refused(tmp_path / "m", cfg_path, "JSON object")
    cfg_path.write_text(json.dumps({"version": 99}))
    _refused(tmp_path / "m", cfg_path, "version 99")
    cfg_path.write_text(json.dumps({"kind": "zoo"}))
    _refused(tmp_path / "m", cfg_path, "unknown kind")
    cfg_path.write_text(json.dumps({"unet": {"base_channels": "32"}}))
    _refused(tmp_path / "m", cfg_path, "expected an integer")
    cfg_path.unlink()
    _refused(tmp_path / "m", cfg_path, "missing")
    _refused(tmp_path / "nowhere", tmp_path / "nowhere", "no such checkpoint folder")


HOSTILE_UNET = [   # (unet fields, what the one-line message names)
    (dict(num_labels=10 ** 8), "unet.num_labels must be in [0, 10000]"),
    (dict(num_labels=10 ** 7), "unet.num_labels"),
    (dict(in_channels=10 ** 8), "unet.in_channels must be in [1, 16]"),
    (dict(cond_channels=10 ** 8), "unet.cond_channels"),
    (dict(out_channels=-3), "unet.out_channels"),
    (dict(num_heads=0), "unet.num_heads must be in [1, 64]"),
    (dict(num_heads=-1), "unet.num_heads"),
    (dict(num_labels=-5), "unet.num_labels"),
    (dict(dropout=1.0), "unet.dropout"),
    (dict(attention_resolutions=[0]), "attention_resolutions"),
    (dict(base_channels=512, channel_mults=[1, 2, 4, 8], num_res_blocks=16), "too large"),
]


@pytest.fixture(scope="module")
def fresh_process_peaks(tmp_path_factory):
    """{repr(unet fields): KiB}: one fresh process loads each HOSTILE_UNET folder in turn (each refused) and reports
    its peak memory after each load above the peak after importing the package. The peak only grows, so each
    number bounds that load and every load before it: one process (a start costs seconds) checks what one process
    per folder did, or more strictly."""
    import subprocess
    import sys

    from conftest import save_tiny_model
    root = tmp_path_factory.mktemp("hostile")
    folders = []
    for i, (unet, _) in enumerate(HOSTILE_UNET):
        save_tiny_model(root / f"m{i}")
        _edit_config(root / f"m{i}", lambda d: d["unet"].update(unet))
        folders.append(str(root / f"m{i}"))
    code = ("import json, resource, sys; sys.path.insert(0, sys.argv[1]); import diffusion_core as dc\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "peaks = []\n"
            "for folder in sys.argv[2:]:\n"
            "    try: dc.load(folder)\n"
            "    except dc.CheckpointError: pass\n"
            "    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)\n"
            "print(json.dumps(peaks))")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parents[2]), *folders],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return {repr(unet): kib for (unet, _), kib in zip(HOSTILE_UNET, json.loads(out.stdout))}


@pytest.mark.parametrize("unet, fragment", HOSTILE_UNET)
@pytest.mark.slow
def test_hostile_config_is_refused_before_anything_is_allocated(tmp_path, make_model, fresh_process_peaks, unet,
                                                                fragment):
    """Every size field is bounded and the exact parameter count (from a network built on the meta device) is
    checked before the network or its weights are allocated: in a fresh process the refused load's peak memory
    stays that of importing torch (num_labels = 10^8 used to allocate 12.8 GB)."""
    make_model(tmp_path / "m")
    _edit_config(tmp_path / "m", lambda d: d["unet"].update(unet))
    _refused(tmp_path / "m", tmp_path / "m" / "config.json", fragment)
    kib = fresh_process_peaks[repr(unet)]
    assert kib < 50_000, kib          # KiB: under 50 MB more than after the imports


@pytest.mark.parametrize("dtype", [torch.int32, torch.float8_e4m3fn, torch.float64])
def test_refuses_weights_of_other_dtypes(tmp_path, make_model, dtype):
    make_model(tmp_path / "m")
    w = tmp_path / "m" / "model.safetensors"
    save_file({k: v.to(dtype) for k, v in load_file(str(w)).items()}, str(w))
    _refused(tmp_path / "m", w, "weights must be float16, bfloat16 or float32")


def test_refuses_deep_and_huge_config_files(tmp_path, make_model):
    make_model(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    good = json.loads(cfg_path.read_text())
    cfg_path.write_text('{"a": ' * 5000 + "1" + "}" * 5000)           # the parser's recursion limit
    _refused(tmp_path / "m", cfg_path, "nested")
    deep = "deep"
    for _ in range(18):
        deep = [deep]
    cfg_path.write_text(json.dumps({**good, "description": {"x": deep}}))
    _refused(tmp_path / "m", cfg_path, "more than 16 levels")
    cfg_path.write_text(json.dumps({**good, "description": "x" * 2_000_000}))     # was read on every request
    _refused(tmp_path / "m", cfg_path, "more than a config file can be")
    cfg_path.write_text(json.dumps(good))
    assert load(tmp_path / "m").kind == "model"


def test_cascade_cycles_are_refused_without_recursing(tmp_path, make_model):
    _cascade(tmp_path, make_model)
    cfg_path = tmp_path / "casc" / "config.json"
    write_json(cfg_path, {"version": 1, "kind": "cascade", "stages": [{"path": "."}, {"path": "."}]})
    _refused(tmp_path / "casc", cfg_path, "stage 0 (.) is itself a cascade")
    other = tmp_path / "other"
    write_json(other / "config.json", {"version": 1, "kind": "cascade", "stages": [{"path": "../casc"}, {"path": "../sr"}]})
    write_json(cfg_path, {"version": 1, "kind": "cascade", "stages": [{"path": "../other"}, {"path": "../sr"}]})
    _refused(tmp_path / "casc", cfg_path, "is itself a cascade")
    _refused(other, other / "config.json", "is itself a cascade")


@pytest.mark.parametrize("args, fragment", [
    (["--stage", "../base", "--stage", "../nowhere"], "no such checkpoint folder"),
    (["--stage", "../base", "--stage", "../base"], "not a super-resolution model"),
    (["--stage", "../base", "--stage", "../sr:lots"], "FOLDER[:AUG_LEVEL[:MATCH_SCALE[:DENOISE_T]]]"),
    (["--stage", "../base", "--stage", "../sr:3"], "aug_level"),
    (["--stage", "../base", "--stage", "../sr:0.1:half"], "FOLDER[:AUG_LEVEL[:MATCH_SCALE[:DENOISE_T]]]"),
    (["--stage", "../base", "--stage", "../sr:0.1:9"], "match_scale"),
    (["--stage", "../base", "--stage", "../sr:0.1:1:soon"], "FOLDER[:AUG_LEVEL[:MATCH_SCALE[:DENOISE_T]]]"),
    (["--stage", "../base", "--stage", "../sr:0.1:1:1000"], "denoise_t must be -1 (none) or in [0, 1000)"),
    (["--stage", "../base:0:0:100", "--stage", "../sr"], "denoise_t 100 is not a timestep"),      # the base's T is 100
    (["--stage", ".", "--stage", "."], "itself a cascade"),
])
def test_cascade_command_checks_everything_before_writing(tmp_path, make_model, run_main, args, fragment):
    """A failing ``cascade`` leaves the folder's working config.json as it was (it used to overwrite it first)."""
    _cascade(tmp_path, make_model)
    before = (tmp_path / "casc" / "config.json").read_bytes()
    r = run_main("cascade", "--out", tmp_path / "casc", *args)
    assert r.returncode != 0 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (tmp_path / "casc" / "config.json").read_bytes() == before
    assert load(tmp_path / "casc").kind == "cascade"


def test_ensemble_command_checks_everything_before_writing(tmp_path, make_model, run_main):
    _ensemble(tmp_path, make_model)
    save_ensemble(tmp_path / "ens", [("e0", 0, 40), ("e1", 40, 100)], T=100)
    before = (tmp_path / "ens" / "config.json").read_bytes()
    for args, fragment in ((["--expert", "e0:0:40", "--expert", "e1:40:90"], "must end at T=100"),
                           (["--expert", "e0:0:40.5", "--expert", "e1:40.5:100"], "whole numbers"),
                           (["--expert", "e0:0:40", "--expert", "nowhere:40:100"], "no such checkpoint folder")):
        r = run_main("ensemble", "--out", tmp_path / "ens", *args)
        assert r.returncode != 0 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert (tmp_path / "ens" / "config.json").read_bytes() == before


# ---- ensembles ----------------------------------------------------------------------------------
def _ensemble(tmp_path, make_model, ranges=((0, 40), (40, 100))):
    nets = []
    for i, (lo, hi) in enumerate(ranges):
        cfg, net = make_model(tmp_path / "ens" / f"e{i}", seed=10 + i, diffusion=dict(t_range=(lo, hi)))
        nets.append(net)
    return cfg, nets


def test_ensemble_loads_routes_and_samples(tmp_path, make_model):
    cfg, nets = _ensemble(tmp_path, make_model)
    save_ensemble(tmp_path / "ens", [("e1", 40, 100), ("e0", 0, 40)], T=100, description="two experts")
    pipe = load(tmp_path / "ens")
    assert pipe.kind == "ensemble" and pipe.description == "two experts"
    assert [pipe.stages[0].expert_index(t) for t in (0, 39, 40, 99)] == [0, 0, 1, 1]
    den = pipe.stages[0].denoiser(clip="none")
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for t, net in ((39, nets[0]), (40, nets[1])):
        got = den(x, torch.full((2,), t), None)
        want = ModelDenoiser(net, pipe.stages[0].schedule, "eps")(x, torch.full((2,), t), None)
        assert torch.allclose(got.x0_hat, want.x0_hat, atol=1e-6)
    recs = list(pipe.stream(2, sampler="ddim", steps=5, seed=1))
    assert [pipe.stages[0].expert_index(r.t) for r in recs] == [1, 1, 1, 0, 0]      # t = 99, 79, 59, 39, 19
    out = pipe.sample(2, sampler="ddpm", steps=5, seed=1)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all() and out.abs().max() <= 1


def test_ensemble_refusals(tmp_path, make_model):
    _ensemble(tmp_path, make_model)
    cfg_path = tmp_path / "ens" / "config.json"
    with pytest.raises(ValueError, match="gap"):
        save_ensemble(tmp_path / "ens", [("e0", 0, 30), ("e1", 40, 100)], T=100)
    write_json(cfg_path, {"version": 1, "kind": "ensemble", "T": 100,
                          "experts": [{"path": "e0", "t_lo": 0, "t_hi": 30}, {"path": "e1", "t_lo": 40, "t_hi": 100}]})
    _refused(tmp_path / "ens", cfg_path, "gap")
    write_json(cfg_path, {"version": 1, "kind": "ensemble", "T": 100,
                          "experts": [{"path": "e0", "t_lo": 0, "t_hi": 60}, {"path": "e1", "t_lo": 40, "t_hi": 100}]})
    _refused(tmp_path / "ens", cfg_path, "overlap")
    write_json(cfg_path, {"version": 1, "kind": "ensemble", "experts": []})
    _refused(tmp_path / "ens", cfg_path, "non-empty")
    write_json(cfg_path, {"version": 1, "kind": "ensemble",
                          "experts": [{"path": "e0", "t_lo": 0, "t_hi": 40, "weight": 2}]})
    _refused(tmp_path / "ens", cfg_path, "unknown config key(s) experts[0].weight")
    write_json(cfg_path, {"version": 1, "kind": "ensemble",
                          "experts": [{"path": "e0", "t_lo": "zero", "t_hi": 40}]})
    _refused(tmp_path / "ens", cfg_path, "t_lo")
    write_json(cfg_path, {"version": 1, "kind": "ensemble",
                          "experts": [{"path": "missing", "t_lo": 0, "t_hi": 100}]})
    _refused(tmp_path / "ens", tmp_path / "ens" / "missing" / "config.json", "missing")
    # an expert whose own weights are broken is named, not the ensemble
    (tmp_path / "ens" / "e1" / "model.safetensors").write_bytes(b"\x00" * 3)
    write_json(cfg_path, {"version": 1, "kind": "ensemble",
                          "experts": [{"path": "e0", "t_lo": 0, "t_hi": 40}, {"path": "e1", "t_lo": 40, "t_hi": 100}]})
    _refused(tmp_path / "ens", tmp_path / "ens" / "e1" / "model.safetensors")


# ---- cascades -------------------------------------------------------------------------------------
def _cascade(tmp_path, make_model):
    make_model(tmp_path / "base", seed=20, unet=dict(in_channels=3, out_channels=3))
    make_model(tmp_path / "sr", seed=21, task="super_resolution", low_res=8,
               unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True, image_size=16))
    save_cascade(tmp_path / "casc", [{"path": "../base"}, {"path": "../sr", "aug_level": 0.1, "steps": 3}],
                 description="8 -> 16")


def test_cascade_loads_and_samples(tmp_path, make_model):
    _cascade(tmp_path, make_model)
    pipe = load(tmp_path / "casc")
    assert pipe.kind == "cascade" and pipe.image_size == 16 and pipe.description == "8 -> 16"
    recs = list(pipe.stream(2, sampler="ddim", steps=4, seed=5))
    assert [r.stage for r in recs] == [0] * 4 + [1] * 3
    assert recs[3].x_next.shape == (2, 3, 8, 8) and recs[-1].x_next.shape == (2, 3, 16, 16)
    out = pipe.sample(2, sampler="ddim", steps=4, seed=5)
    assert torch.equal(out, recs[-1].x_next.clamp(-1, 1))
    # the SR stage is the SR model run on the base model's output, with the stage's options
    base, sr = pipe.stage(0), pipe.stage(1)
    low = base.sample(2, sampler="ddim", steps=4, seed=5)
    assert sr.config.sampling.sampler == "ddpm"     # the SR model's own default sampler (config.SR_SAMPLING)
    want = sr.sample(2, low_res=low, steps=3, sampler="ddpm", seed=5 + 10_000, aug_level=0.1)
    assert torch.equal(out, want)
    assert torch.equal(pipe.upscale(low, steps=3, seed=5 + 10_000), want)


def test_a_cascades_base_is_made_once_and_follows_its_stage(tmp_path, make_model):
    """Issue 35: ``pipe.base`` of a cascade is one Pipeline (not a new one per access) over the cascade's own
    first Stage, so settings made through the cascade reach it; ``set_backend`` makes it again (its request)."""
    _cascade(tmp_path, make_model)
    pipe = load(tmp_path / "casc")
    base = pipe.base
    assert base is pipe.base and base.stages == [pipe.stages[0]] and base.stages[0] is pipe.stages[0]
    pipe.chunk = 3
    assert base.chunk == 3
    pipe.set_backend("bf16", measure=False)
    assert pipe.base.backend_request == "bf16" and pipe.base.stages[0] is pipe.stages[0]
    one = load(tmp_path / "base")
    assert one.base is one


def test_a_cascade_stage_can_match_its_result_to_its_input_pixel_for_pixel(tmp_path, make_model, run_main):
    """Issue 21: a stage's result is back-projected onto its (noise-augmented) input at 1/4 of its size by
    default; ``match_scale`` in the stage's manifest entry (``cascade --stage FOLDER:AUG:SCALE``) sets that scale.
    At 1 the result, area-downscaled, is the base's output up to what two rounds leave (the pose cascades use it
    for their first stage: the figure keeps the drawn pose). The stage is the SR model run with that scale."""
    _cascade(tmp_path, make_model)
    r = run_main("cascade", "--out", tmp_path / "casc1", "--stage", "../base", "--stage", "../sr:0.1:1")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "casc1" / "config.json").read_text())["stages"][1]["match_scale"] == 1
    default, exact = load(tmp_path / "casc"), load(tmp_path / "casc1")
    assert exact.stages[1].cascade.match_scale == 1 and default.stages[1].cascade.match_scale == 0
    kw = dict(sampler="ddim", steps=4, seed=5, sr_steps=3)
    low = default.base.sample(2, sampler="ddim", steps=4, seed=5)
    a, b = default.sample(2, **kw), exact.sample(2, **kw)
    err = [(torch.nn.functional.adaptive_avg_pool2d(x, 8) - low).abs().mean() for x in (a, b)]
    assert err[1] < 0.5 * err[0], err
    sr = default.stage(1)
    want = sr.sample(2, low_res=low, steps=3, sampler="ddpm", seed=5 + 10_000, aug_level=0.1, match_scale=1)
    assert torch.equal(b, want) and not torch.equal(a, want)


def test_cascade_refusals(tmp_path, make_model):
    _cascade(tmp_path, make_model)
    cfg_path = tmp_path / "casc" / "config.json"
    for stages, fragment in (([{"path": "../base"}], "2 to 4 stages"),
                             ([{"path": "../base"}, {"path": "../base"}], "not a super-resolution model"),
                             ([{"path": "../sr"}, {"path": "../sr"}], "must be a base model"),
                             ([{"path": "../base"}, {"path": "../sr", "aug_level": 3}], "aug_level"),
                             ([{"path": "../base"}, {"path": "../sr", "steps": "many"}], "steps"),
                             ([{"path": "../base"}, {"path": "../sr", "match_scale": -1}], "match_scale"),
                             ([{"path": "../base"}, {"steps": 3}], "missing key(s) path"),
                             ([{"path": "../base"}] + [{"path": "../sr"}] * 4, "2 to 4 stages")):
        write_json(cfg_path, {"version": 1, "kind": "cascade", "stages": stages})
        _refused(tmp_path / "casc", cfg_path, fragment)
        if fragment != "not a super-resolution model" and fragment != "must be a base model":
            with pytest.raises(CheckpointError, match="stage|aug_level|steps|path|match_scale"):
                save_cascade(tmp_path / "casc2", stages)      # refused before anything is written
    assert not (tmp_path / "casc2" / "config.json").exists()


def test_public_api_exports():
    for name in diffusion_core.__all__:
        assert hasattr(diffusion_core, name), name


def test_evaluate_cascade_compares_with_the_base_upscaled(tmp_path, make_model):
    from diffusion_core.evaluation.super_resolution import evaluate_cascade
    _cascade(tmp_path, make_model)
    m = evaluate_cascade(tmp_path / "casc", n=3, steps=2, guidance=1.0, batch=2)
    assert m["n"] == 3 and m["sharpness_cascade"] > 0 and m["sharpness_base_bicubic"] > 0
    assert 0 <= m["cascade_sharper_fraction"] <= 1
    assert (tmp_path / "casc" / "cascade_examples.png").is_file()
    with pytest.raises(ValueError, match="not a cascade"):
        evaluate_cascade(tmp_path / "base", n=1)


def test_evaluate_cascade_runs_every_stage_and_scores_poses_at_the_base_size(tmp_path, make_model):
    """Issue 21: a three-stage cascade (8 -> 16 -> 32) is evaluated through both super-resolution stages (only
    the last one ran on the base's output before: 8 -> 16, not 32), and a pose cascade's final image is scored
    against the drawing at the base's size, beside the base's own score; the whole cascade is timed for one and
    for four images."""
    from diffusion_core.evaluation.super_resolution import evaluate_cascade
    make_model(tmp_path / "base", seed=20, task="pose", unet=dict(in_channels=3, out_channels=3, cond_channels=1))
    for name, lo in (("sr1", 8), ("sr2", 16)):
        make_model(tmp_path / name, seed=21, task="super_resolution", low_res=lo, high_res=2 * lo,
                   unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True,
                             image_size=2 * lo))
    save_cascade(tmp_path / "casc", [{"path": "../base"}, {"path": "../sr1", "aug_level": 0.1},
                                     {"path": "../sr2", "aug_level": 0.1}], description="8 -> 16 -> 32")
    m = evaluate_cascade(tmp_path / "casc", n=3, steps=2, guidance=1.0, batch=2)
    assert m["stage_sizes"] == [8, 16, 32]
    from PIL import Image
    assert Image.open(tmp_path / "casc" / "cascade_examples.png").width > 3 * 32     # 32 px cells, not 16
    for k in ("pose_adherence_cascade", "pose_adherence_base", "pose_adherence_real",
              "pose_adherence_base_bicubic_round_trip"):
        assert 0 <= m[k] <= 1
    assert m["seconds_one_image"] > 0 and m["seconds_four_images"] > 0
    paired = m["pose_adherence_cascade_minus_base"]      # each drawing's final figure against its base figure
    assert paired["n"] == 3 and paired["lower"] + paired["higher"] <= 3
    assert paired["mean_difference"] == pytest.approx(m["pose_adherence_cascade"] - m["pose_adherence_base"])


def test_paired_difference_is_the_mean_and_standard_error_of_the_differences():
    import numpy as np
    from diffusion_core.evaluation.pose_metrics import paired_difference
    a, b = [0.9, 1.0, 0.8, float("nan")], [0.9, 0.7, 1.0, 0.5]       # differences 0, 0.3, -0.2 (nan left out)
    got = paired_difference(lambda fig, stick: fig, a, b, [None] * 4, 4)
    d = np.array([0.0, 0.3, -0.2])
    assert got["n"] == 3 and got["lower"] == 1 and got["higher"] == 1
    assert got["mean_difference"] == pytest.approx(0.1 / 3)
    assert got["standard_error"] == pytest.approx(np.sqrt(((d - d.mean()) ** 2).sum() / 2 / 3))


def test_super_resolution_stages_default_to_their_own_sampling(tmp_path, make_model):
    """Issue 21: a super-resolution model without a ``sampling`` entry samples with config.SR_SAMPLING (ancestral
    DDPM, 10 steps: a deterministic solver left grain on flat backgrounds); a cascade stage, the Upscale tab's
    ``Pipeline.upscale`` and evaluate use the stage model's own defaults unless the request or the cascade's
    manifest names others; a generating model keeps the general default."""
    from diffusion_core import SR_SAMPLING
    from diffusion_core.config import ModelConfig, SamplingDefaults
    assert (SR_SAMPLING.sampler, SR_SAMPLING.steps) == ("ddpm", 10)
    assert ModelConfig(task="super_resolution", low_res=8, high_res=16).sampling == SR_SAMPLING
    assert ModelConfig().sampling == SamplingDefaults()
    own = SamplingDefaults("ddim", 7, guidance=1.0)
    assert ModelConfig(task="super_resolution", low_res=8, high_res=16, sampling=own).sampling == own
    _cascade(tmp_path, make_model)
    casc = load(tmp_path / "casc")
    sr = casc.stage(1)
    low = torch.rand(1, 3, 8, 8) * 2 - 1
    assert torch.equal(sr.upscale(low, seed=2), sr.sample(1, low_res=low, steps=10, sampler="ddpm", seed=2))
    save_cascade(tmp_path / "plain", [{"path": "../base"}, {"path": "../sr", "aug_level": 0.1}])
    plain = load(tmp_path / "plain")
    recs = list(plain.stream(1, sampler="ddim", steps=2, seed=1))
    assert [r.stage for r in recs] == [0] * 2 + [1] * 10 and plain.run_steps(2) == 12
    assert torch.equal(recs[-1].x_next, list(plain.stream(1, sampler="ddim", steps=2, seed=1, sr_sampler="ddpm"))[-1].x_next)
    assert not torch.equal(recs[-1].x_next,
                           list(plain.stream(1, sampler="ddim", steps=2, seed=1, sr_sampler="dpm++"))[-1].x_next)
