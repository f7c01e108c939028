"""Backends (diffusion_core/backends.py): where the network runs. Each must compute the network's function (the
exported graph exactly, bf16 within rounding), keep a seed's image independent of the batch size, and be picked
only by measurement among those that match fp32; fp32 stays the default and bit-identical to the network."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from diffusion_core import load
from diffusion_core.runtime import backends
from diffusion_core.runtime.backends import BackendError, Choice
from diffusion_core.runtime import openvino_net
from diffusion_core.runtime.openvino_net import flat_inputs
from diffusion_core.conditioning import Condition

ROOT = Path(__file__).resolve().parents[2]
HAS_OPENVINO = backends.openvino_version() is not None
NAMES = ("a", "b", "c", "d")      # label names of the tiny saved models
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed (optional)")

# (UNetConfig overrides, condition builder) for every kind of network the project ships
KINDS = {
    "class": dict(num_labels=4),
    "attributes": dict(num_labels=5, label_mask=True),
    "pose": dict(cond_channels=1),
    "sr": dict(cond_channels=1, aug_level_embedding=True),
    "plain": dict(),
    "student": dict(num_labels=4, guidance_embedding=True),
}


def _conds(unet: dict, b: int, g: torch.Generator) -> list[Condition | None]:
    """Conditions as the pipeline builds them for this kind, plus the None / partial cases."""
    out: list[Condition | None] = [None]
    uncond = torch.arange(b) % 2 == 1
    if unet.get("num_labels"):
        labels = (torch.rand(b, unet["num_labels"], generator=g) < 0.4).float()
        out += [Condition(labels=labels), Condition(labels=labels, uncond=uncond), Condition(uncond=uncond)]
        if unet.get("label_mask"):
            known = (torch.rand(b, unet["num_labels"], generator=g) < 0.5).float()
            out.append(Condition(labels=labels, known=known, uncond=uncond))
    if unet.get("cond_channels"):
        image = torch.rand(b, 1, 8, 8, generator=g) * 2 - 1
        if unet.get("aug_level_embedding"):
            aug = torch.full((b,), 0.2)
            out += [Condition(image=image, aug_level=aug), Condition(image=image[:, :, ::2, ::2], aug_level=aug)]
        else:
            out += [Condition(image=image), Condition(image=image, uncond=uncond)]
    if unet.get("guidance_embedding"):        # guided distillation: w is an input of the network
        w = torch.tensor([1.0, 2.5, 4.0, 1.5])[:b]
        out += [Condition(labels=labels, uncond=uncond, guidance=w), Condition(guidance=w)]
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_flat_inputs_give_the_network_s_output(kind, tiny_net):
    """The exported graph takes every condition field as a tensor; the tensors chosen for absent fields must mean
    what None means to the network (no labels: the null embedding; no image: zeros; no mask: all known)."""
    cfg, net = tiny_net(**KINDS[kind])
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(4, 1, 8, 8, generator=g), torch.tensor([0, 10, 50, 99])
    flat = openvino_net.FlatNet(net, openvino_net.cond_fields(cfg.unet))
    with torch.no_grad():
        for cond in _conds(KINDS[kind], 4, g):
            inputs = flat_inputs(cfg.unet, x, t, cond)
            assert inputs is not None
            assert torch.equal(flat(*inputs), net(x, t, cond)), (kind, cond)


def test_flat_inputs_decline_what_always_present_fields_cannot_say(tiny_net):
    """A pose network masks its drawing for the null rows only when no aug_level is passed: with one passed it
    must not be expressed as the exported graph (which then runs the eager network instead)."""
    cfg, _ = tiny_net(cond_channels=1)
    x, t = torch.zeros(2, 1, 8, 8), torch.tensor([1, 2])
    odd = Condition(image=torch.zeros(2, 1, 8, 8), uncond=torch.tensor([True, False]), aug_level=torch.zeros(2))
    assert flat_inputs(cfg.unet, x, t, odd) is None


def test_bf16_stores_matrix_weights_in_bf16_and_stays_close(tiny_net):
    cfg, net = tiny_net(num_labels=4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    runner = backends.make(net, "bf16")
    assert runner.net.conv_in.weight.dtype == torch.bfloat16 and runner.net.label_proj.weight.dtype == torch.bfloat16
    assert runner.net.norm_out.weight.dtype == torch.float32          # norms stay fp32
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())   # the fp32 network is untouched
    err = backends.match_error(runner, net)
    assert 0 < err < backends.MATCH_TOLERANCE, err
    x, t, cond = backends.probe_batch(cfg.unet)
    with torch.inference_mode():
        assert runner(x, t, cond).dtype == torch.float32


def test_bf16_picks_a_layout_and_both_layouts_compute_the_network(tiny_net, monkeypatch):
    cfg, net = tiny_net(num_labels=4)
    for layout in (True, False):
        runner = backends.Bf16Net(net, channels_last=layout)
        assert runner.net.channels_last is layout
        assert backends.match_error(runner, net) < backends.MATCH_TOLERANCE
    monkeypatch.setattr(backends.Bf16Net, "_faster_layout", lambda self: False)
    assert backends.Bf16Net(net).net.channels_last is False          # the measured layout is the one used


def test_bf16_times_its_layouts_at_the_size_the_network_runs_at(tiny_net, monkeypatch):
    """Issue 40: a super-resolution stage trained on small crops runs at its full size, where the faster layout
    can be the other one (pose-sr256: channels_last 0.20 s, NCHW 0.56 s a row at 256 px). The layout is timed on
    inputs of the size asked for (pipelines ask for the stage's output size), else of the config's."""
    cfg, net = tiny_net(num_labels=4)
    sides = []
    real = backends.probe_batch
    monkeypatch.setattr(backends, "probe_batch", lambda c, rows=16, image_size=None: (
        sides.append((rows, image_size)) or real(c, rows, image_size)))
    backends.Bf16Net(net, image_size=4 * cfg.unet.image_size)
    assert sides == [(min(8, backends.rows_at(8, 4 * cfg.unet.image_size)), 4 * cfg.unet.image_size)]
    sides.clear()
    backends.make(net, "bf16", image_size=2 * cfg.unet.image_size)
    assert sides == [(min(8, backends.rows_at(8, 2 * cfg.unet.image_size)), 2 * cfg.unet.image_size)]
    sides.clear()
    backends.choose(net, "bf16", None, 8, image_size=2 * cfg.unet.image_size)      # as a pipeline's stage asks
    assert sides == [(min(8, backends.rows_at(8, 2 * cfg.unet.image_size)), 2 * cfg.unet.image_size)]
    sides.clear()
    backends.Bf16Net(net)
    assert sides == [(8, cfg.unet.image_size)]


@needs_openvino
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["class", "attributes", "pose", "sr"])
def test_openvino_fp32_computes_the_network(kind, tiny_net, tmp_path):
    cfg, net = tiny_net(**KINDS[kind])
    runner = openvino_net.OpenVinoNet(net, tmp_path, chunk=4, precision="f32")
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(6, 1, 8, 8, generator=g), torch.tensor([0, 5, 20, 40, 70, 99])
    with torch.inference_mode():
        for cond in _conds(KINDS[kind], 6, g):
            ref, out = net(x, t, cond), runner(x, t, cond)
            assert out.shape == ref.shape and out.dtype == torch.float32
            assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4), (kind, (out - ref).abs().max())


@needs_openvino
@pytest.mark.slow
def test_openvino_export_is_cached_and_reused(tiny_net, tmp_path, monkeypatch):
    cfg, net = tiny_net(num_labels=4)
    x, t, cond = backends.probe_batch(cfg.unet, rows=4)
    with torch.inference_mode():
        first = openvino_net.OpenVinoNet(net, tmp_path, chunk=4, precision="f32")(x, t, cond)
    assert len(list(tmp_path.glob("openvino-*.xml"))) == 1 and list(tmp_path.glob("openvino-*.bin"))
    import openvino

    class Exported(Exception):
        pass

    def refuse(*a, **k):
        raise Exported("exported again")
    monkeypatch.setattr(openvino, "convert_model", refuse)
    with torch.inference_mode():
        again = openvino_net.OpenVinoNet(net, tmp_path, chunk=4, precision="f32")(x, t, cond)
    assert torch.equal(first, again)
    other = randomized_copy(net)
    with torch.inference_mode(), pytest.raises(Exported):
        openvino_net.OpenVinoNet(other, tmp_path, chunk=4, precision="f32")(x, t, cond)   # other weights: new export


def randomized_copy(net):
    import copy
    other = copy.deepcopy(net)
    with torch.no_grad():
        other.conv_in.bias.add_(1.0)
    return other


@pytest.mark.parametrize("backend", ["fp32", "bf16",
                                     pytest.param("openvino", marks=(needs_openvino, pytest.mark.slow))])
def test_a_seed_gives_the_same_image_at_any_batch_size_within_a_backend(backend, tmp_path, make_model):
    make_model(tmp_path / "m", unet=dict(num_labels=4), label_names=NAMES)
    pipe = load(tmp_path / "m", backend=backend)
    assert pipe.backend == backend
    kw = dict(sampler="dpm++", steps=4, guidance=2.0, labels=[1])
    five = pipe.sample(5, seed=10, **kw)
    two = pipe.sample(2, seed=12, **kw)
    assert torch.equal(two, five[2:4])


def test_fp32_is_the_default_and_is_the_network_itself(tmp_path, make_model, monkeypatch):
    monkeypatch.delenv(backends.ENV, raising=False)
    _, net = make_model(tmp_path / "m", unet=dict(num_labels=4), label_names=NAMES)
    pipe = load(tmp_path / "m")
    assert pipe.backend == "fp32" and pipe._runner(pipe.net) is pipe.net
    den = pipe.stages[0].denoiser(guidance=1.0, clip="none")
    shared = den.net.func                   # the run's view of the stage's SharedNet (concurrent runs share it)
    assert shared is pipe.stages[0].shared_net(pipe.net)
    assert shared.net.net is pipe.net       # the runtime's chunking (ChunkedNet) around the network itself


def test_the_environment_variable_forces_a_backend(tmp_path, make_model, monkeypatch):
    make_model(tmp_path / "m", unet=dict(num_labels=4), label_names=NAMES)
    monkeypatch.setenv(backends.ENV, "bf16")
    assert load(tmp_path / "m").backend == "bf16"
    assert load(tmp_path / "m", backend="fp32").backend == "fp32"      # an explicit name wins
    monkeypatch.setenv(backends.ENV, "fast")
    with pytest.raises(BackendError, match="unknown backend 'fast'"):
        load(tmp_path / "m")


def test_a_missing_runtime_is_a_clear_error_and_auto_skips_it(tmp_path, make_model, monkeypatch):
    make_model(tmp_path / "m", unet=dict(num_labels=4), label_names=NAMES)
    monkeypatch.setattr(backends, "openvino_version", lambda: None)
    assert "openvino" not in backends.candidates("cpu", backends.CpuInfo("x", ("avx512_bf16",)))
    with pytest.raises(BackendError, match="not available"):
        load(tmp_path / "m", backend="openvino")


def test_candidates_follow_the_cpu():
    plain = backends.CpuInfo("AVX2 only", ("avx2",))
    amx = backends.CpuInfo("Xeon", ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"))
    assert "bf16" not in backends.candidates("cpu", plain) and "bf16" in backends.candidates("cpu", amx)
    assert backends.candidates("cpu", plain)[0] == "fp32"


def test_auto_picks_the_fastest_that_matches_and_remembers(tiny_net, tmp_path, monkeypatch):
    cfg, net = tiny_net(num_labels=4)
    monkeypatch.setattr(backends.os, "getloadavg", lambda: (0.1, 0.1, 0.1))      # an idle machine
    monkeypatch.setattr(backends, "candidates", lambda device, info=None: ["fp32", "bf16", "openvino"])
    monkeypatch.setattr(backends, "available", lambda device="cpu": ["fp32", "bf16", "openvino"])
    monkeypatch.setattr(backends, "make", lambda net, name, cache=None, chunk=8, image_size=None: (name, net))
    times = {"fp32": 1.0, "bf16": 0.5, "openvino": 0.4}
    errors = {"bf16": 0.005, "openvino": 0.5}           # openvino is fastest but does not match: never chosen
    monkeypatch.setattr(backends, "match_error", lambda runner, net, image_size=None: errors[runner[0]])
    monkeypatch.setattr(backends, "time_runner", lambda runner, *a, **k: times[runner[0]])
    folder = tmp_path / "model"
    folder.mkdir()
    runner, choice = backends.choose(net, "auto", folder)
    assert choice.name == "bf16" and runner[0] == "bf16" and "openvino" not in choice.seconds
    assert json.loads((folder / ".cache" / "backend-choice.json").read_text())
    times["bf16"] = 0.99                                  # not MIN_SPEEDUP faster: fp32 stays...
    monkeypatch.setattr(backends, "time_runner", lambda runner, *a, **k: pytest.fail("measured again"))
    assert backends.choose(net, "auto", folder)[1].name == "bf16"       # ...but the remembered choice is reused
    (folder / ".cache" / "backend-choice.json").unlink()
    monkeypatch.setattr(backends, "time_runner", lambda runner, *a, **k: times[runner[0]])
    assert backends.choose(net, "auto", folder)[1].name == "fp32"


def test_a_forced_backend_reports_it(tiny_net):
    _, net = tiny_net(num_labels=4)
    runner, choice = backends.choose(net, "bf16")
    assert isinstance(runner, backends.Bf16Net) and choice == Choice("bf16", "forced", {}, {})


def test_cli_sample_takes_backend_and_records_it(tmp_path, make_model):
    from PIL import Image

    from diffusion_core.__main__ import main
    make_model(tmp_path / "m", unet=dict(num_labels=4), label_names=NAMES)
    out = tmp_path / "out"
    assert main(["sample", "--model", str(tmp_path / "m"), "--n", "2", "--steps", "2", "--backend", "bf16",
                 "--out", str(out), "--no-progress"]) == 0
    params = json.loads(Image.open(out / "00000.png").text["parameters"])
    assert params["backend"] == "bf16"
    with pytest.raises(SystemExit):                          # argparse: an unknown backend is a usage error
        main(["sample", "--model", str(tmp_path / "m"), "--backend", "tpu"])


# ---- the shipped model: a fixed-seed batch stays close to fp32 -------------------------------------------
FASHION = ROOT / "checkpoints" / "fashion"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["bf16", pytest.param("openvino", marks=needs_openvino)])
def test_shipped_fashion_samples_stay_close_to_fp32(backend):
    """The app's default for fashion (DPM-Solver++(3M), 10 Karras steps, guidance 2), 4 images of a fixed seed
    (4,096 pixels; bf16 is emulated and slow on a CPU without AVX-512 BF16): the per-pixel difference from fp32 is
    bounded (bf16 rounding moves a few trajectories a little; the FID gate in docs/performance.md shows the
    distribution is unchanged)."""
    kw = dict(sampler="dpm++3m", steps=10, spacing="karras", guidance=2.0, labels=[3], seed=5)
    ref = load(FASHION, backend="fp32").sample(4, **kw)
    out = load(FASHION, backend=backend).sample(4, **kw)
    diff = (out - ref).abs()
    assert diff.pow(2).mean().sqrt() < 0.04, diff.pow(2).mean().sqrt()
    assert torch.quantile(diff.flatten(), 0.99) < 0.2, torch.quantile(diff.flatten(), 0.99)
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_keeps_working_with_autocast():
    kw = dict(sampler="dpm++3m", steps=10, spacing="karras", guidance=2.0, labels=[3], seed=5)
    ref = load(FASHION, backend="fp32").sample(4, **kw)
    pipe = load(FASHION, device="cuda", backend="bf16")
    assert pipe.backend == "bf16" and pipe._runner(pipe.net).device_type == "cuda"
    out = pipe.sample(4, device="cuda", **kw).cpu()
    assert torch.isfinite(out).all() and (out - ref).pow(2).mean().sqrt() < 0.05
    assert load(FASHION, device="cuda", backend="auto").backend in ("fp32", "bf16")


def test_a_choice_measured_on_a_busy_machine_is_used_but_not_remembered(tiny_net, tmp_path, monkeypatch):
    """Timed beside another job, every backend looked like OpenVINO's best here (one session remembered that for
    every model): with the load average at or above half the workers (min 1), the choice is not written down."""
    cfg, net = tiny_net(num_labels=4)
    monkeypatch.setattr(backends, "candidates", lambda device, info=None: ["fp32", "bf16"])
    monkeypatch.setattr(backends, "match_error", lambda runner, net, image_size=None: 0.0)
    monkeypatch.setattr(backends, "time_runner", lambda runner, *a, **k: 0.5 if isinstance(runner, backends.Bf16Net)
                        else 1.0)
    folder = tmp_path / "model"
    folder.mkdir()
    monkeypatch.setattr(backends.os, "getloadavg", lambda: (1.5, 1.0, 1.0))
    _, choice = backends.choose(net, "auto", folder)
    assert choice.name == "bf16" and "not remembered" in choice.reason
    assert not (folder / ".cache" / "backend-choice.json").exists()
    monkeypatch.setattr(backends.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    _, choice = backends.choose(net, "auto", folder)
    assert "not remembered" not in choice.reason and (folder / ".cache" / "backend-choice.json").is_file()


@pytest.mark.slow
def test_a_large_network_is_timed_and_matched_on_as_many_pixels_as_a_small_one(tiny_net):
    """The auto choice times every candidate: at 128 px, the 8 and 32 rows (and the 16-row match batch) of a 32 px
    network cost 16x the pixels, and loading the 128 px cascade took minutes. Rows scale with 1 / side^2 (at least
    2); a 32 px network is timed as before."""
    cfg, net = tiny_net(num_labels=4)
    pixels = {}
    def runner(x, t, cond=None):
        pixels.setdefault(x.shape[-1], []).append(x.shape[0] * x.shape[-1] * x.shape[-2])
        return net(x, t, cond)
    from diffusion_core.pipeline import eval_chunk
    for side in (32, 64, 128):      # timed through the fixed chunks the model's pipeline uses
        backends.time_runner(runner, net.cfg, chunk=eval_chunk(side), repeats=1, image_size=side)
        backends.match_error(runner, net, image_size=side)
    assert backends.rows_at(8, 32) == 8 and backends.rows_at(32, 32) == 32      # 32 px: the rows of before
    for side in (64, 128):      # the whole measurement: about a 32 px network's pixels (10x more before at 128 px)
        assert sum(pixels[side]) <= 2 * sum(pixels[32]), (side, sum(pixels[side]), sum(pixels[32]))
