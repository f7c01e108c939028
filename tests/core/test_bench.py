"""The benchmark (``python -m diffusion_core bench``): its JSON, the diffusers reference's size, and the
sampling-output check. Tiny sizes only; timings are never asserted."""
from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import bench
from diffusion_core.unet import UNet, _norm, count_parameters

REQUIRED = ("sampling_ratio", "training_ratio", "peak_fraction", "first_preview_s", "fashion16_dpm20_s")


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    pytest.importorskip("diffusers")
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    assert bench.main(["--tiny", "--threads", "1", "--quiet", "--out", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_json_has_the_required_keys(tiny_result):
    r = tiny_result
    for k in REQUIRED:
        assert _positive(r[k]), (k, r[k])
    m = r["machine"]
    assert m["cpu"] and m["cores"] >= 1 and m["torch"] == torch.__version__ and m["threads"] == 1
    assert r["params"]["within_15pct"] is True and _positive(r["params"]["diffusers"])
    tasks = {(row["impl"], row["task"]) for row in r["rows"]}
    assert {("ours", "sample"), ("diffusers", "sample"), ("ours", "first_preview"), ("ours", "cascade"),
            ("ours", "train"), ("diffusers", "train")} <= tasks
    for row in r["rows"]:
        assert _positive(row["seconds"]) and _positive(row["images_per_s"])
    # both implementations did the same work: U-Net rows evaluated per run (one guided step = 2 x batch rows;
    # our row workers may split a step's evaluation into pieces, diffusers makes one call per step)
    ours = {(x["sampler"], x["batch"]): x for x in r["rows"] if x["task"] == "sample" and x["impl"] == "ours"}
    theirs = {(x["sampler"], x["batch"]): x for x in r["rows"] if x["task"] == "sample" and x["impl"] == "diffusers"}
    assert ours.keys() == theirs.keys() and ours
    for key, row in ours.items():
        assert row["unet_rows"] == theirs[key]["unet_rows"] == row["steps"] * 2 * row["batch"]
        assert theirs[key]["unet_calls"] == row["steps"] and theirs[key]["unet_batch"] == [2 * row["batch"]]
        assert row["unet_calls"] >= row["steps"] and max(row["unet_batch"]) <= 2 * row["batch"]
    assert r["flops"]["ours"]["flops_per_forward"] > 0 and 0 < r["peak_fraction"]



@pytest.mark.parametrize("kind, steps, clip", [("ddim", 50, True), ("dpm++", 20, False), ("ddim", 2, True)])
def test_the_benchmarks_diffusers_schedulers_take_our_steps(kind, steps, clip):
    """The benchmark's diffusers side (``bench.diffusers_scheduler``: same betas, trailing timesteps, clipping as
    ours) takes the steps our sampler takes: the same timesteps and, on the exact eps-model of data ~ N(0, 0.5^2 I),
    the same result up to float32 round-off. Otherwise its speed rows would compare different work."""
    pytest.importorskip("diffusers")
    from diffusion_core.config import DiffusionConfig
    from diffusion_core.denoisers import ClipX0, ModelDenoiser
    from diffusion_core.samplers import SamplerSpec, sample
    from diffusion_core.schedules import make_schedule, spaced_timesteps
    diffusion = DiffusionConfig(schedule="cosine")
    sched = make_schedule(diffusion.schedule, diffusion.T, diffusion.beta_1, diffusion.beta_T)

    def model(x, t, _cond=None):          # E[eps | x_t] for x_0 ~ N(0, 0.5^2 I)
        ab = sched.alpha_bar_at(torch.as_tensor(t).reshape(-1)[:1]).float().view(1, 1, 1, 1)
        return (1 - ab).sqrt() * x / (0.25 * ab + 1 - ab)
    x_start = bench.initial_noise(2, 1, 8, seed=0)
    den = ModelDenoiser(model, sched, "eps")
    ts = spaced_timesteps(diffusion.T, steps, "trailing")
    ours = sample(ClipX0(den, sched, "clip") if clip else den, x_start, ts, SamplerSpec(kind), schedule=sched)
    ds = bench.diffusers_scheduler(kind, diffusion, clip=clip)
    ds.set_timesteps(steps)
    assert [int(v) for v in ds.timesteps] == [int(v) for v in ts[:-1]]
    x = x_start.clone()
    for t in ds.timesteps:
        x = ds.step(model(x, t), t, x).prev_sample
    assert (ours - x).abs().max() < 1e-2

@pytest.mark.slow
def test_json_tells_the_backend_story(tiny_result):
    """Issue 25: which CPU, which backend was chosen, one row per available backend, ratios against fp32 and
    OpenVINO, and the peak is the best dtype's."""
    from diffusion_core.runtime import backends
    r = tiny_result
    assert r["cpu_model"] == r["machine"]["cpu_model"] and isinstance(r["cpu_flags"], list)
    assert r["backend"] in backends.BACKENDS
    rows = {x["backend"]: x for x in r["rows"] if x["task"] == "sample_backend"}
    assert set(rows) == set(backends.available("cpu"))
    assert rows["fp32"]["rms_diff_vs_fp32"] == 0 and all(_positive(x["images_per_s"]) for x in rows.values())
    assert r["sampling_vs_fp32"] == pytest.approx(rows[r["backend"]]["images_per_s"] / rows["fp32"]["images_per_s"])
    if "openvino" in rows:
        own = r["fastest_pytorch_backend"]
        assert r["sampling_vs_openvino"] == pytest.approx(rows[own]["images_per_s"] / rows["openvino"]["images_per_s"])
    f = r["flops"]
    assert f["peak_gflops"] == max(f["matmul_peak"]["gflops"], f["conv_peak"]["gflops"],
                                   f["bf16_matmul_peak"]["gflops"], f["bf16_conv_peak"]["gflops"])
    assert _positive(r["first_preview_chosen_s"])


def test_diffusers_reference_matches_the_fashion_architecture():
    pytest.importorskip("diffusers")
    ours = UNet(bench.FASHION_UNET)
    theirs = bench.diffusers_unet(bench.FASHION_UNET)
    n_ours, n_theirs = count_parameters(ours), count_parameters(theirs)
    assert abs(n_theirs / n_ours - 1) <= 0.15, (n_ours, n_theirs)
    groups = {(m.num_channels, m.num_groups) for m in theirs.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups and all(g == _norm(c).num_groups for c, g in groups)
    assert (32, 8) in groups and (64, 16) in groups
    assert theirs.config.num_class_embeds == 11 and tuple(theirs.config.block_out_channels) == (32, 64, 64, 64)
    assert [b for b in theirs.config.down_block_types].count("AttnDownBlock2D") == 1
    assert theirs.config.down_block_types[2] == "AttnDownBlock2D" and theirs.config.up_block_types[1] == "AttnUpBlock2D"


@pytest.mark.slow
def test_check_detects_a_changed_output(tmp_path, make_model):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    model = tmp_path / "m"
    make_model(model, seed=3, unet=dict(num_labels=10))
    ref = tmp_path / "ref.safetensors"
    common = ["--model", str(model), "--reference", str(ref), "--threads", "1", "--check-n", "2"]
    assert bench.main(common + ["--check"]) == 2                       # no reference yet: a clear error
    assert bench.main(common + ["--write-reference"]) == 0
    assert bench.main(common + ["--check"]) == 0                       # same weights, same settings: identical
    # a changed output (stored tensor perturbed by 1e-4) is caught; a tolerance lets it pass
    with safe_open(str(ref), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(ref))
    tensors["images"] = tensors["images"] + 1e-4
    save_file(tensors, str(ref), metadata=meta)
    assert bench.main(common + ["--check"]) == 1
    assert bench.main(common + ["--check", "--tolerance", "1e-3"]) == 0
    # a changed model is caught too
    assert bench.main(common + ["--write-reference"]) == 0
    make_model(model, seed=4, unet=dict(num_labels=10))
    assert bench.main(common + ["--check"]) == 1


@pytest.mark.slow
def test_skip_diffusers_and_bad_options(tmp_path):
    out = tmp_path / "b.json"
    assert bench.main(["--tiny", "--skip-diffusers", "--sections", "sampling", "--threads", "1", "--quiet",
                       "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["sampling_ratio"] is None and r["training_ratio"] is None and _positive(r["fashion16_dpm20_s"])
    assert {row["impl"] for row in r["rows"]} == {"ours"}
    assert bench.main(["--tiny", "--sections", "nonsense", "--quiet", "--out", str(out)]) == 2
