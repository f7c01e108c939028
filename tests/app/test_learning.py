"""The app's Learn tab, end to end through gradio_client, on tiny random-weight checkpoints.

/explain_step and /trajectory look at the session's last /generate run (a gradio_client Client is one
session); /compare, /compare_guidance and /interpolate sample anew.
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from app_fixtures import build_checkpoints, client, launch_app, server  # noqa: E402,F401


def generate(client, **kw):
    job = client.submit(api_name="/generate", **{"batch_size": 2, "preview_every": 50, **kw})
    outs = list(job)
    job.result()
    return outs


def gallery_path(item) -> str:
    img = item["image"] if isinstance(item, dict) else item[0]
    return img["path"] if isinstance(img, dict) else img


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.int16)


# ------------------------------------------------------------------------------------------------ endpoints
def test_endpoints_have_stable_names(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/explain_step", "/compare", "/compare_guidance", "/interpolate", "/trajectory"} <= names


def test_explain_without_a_run_says_what_to_do(server):
    fresh = Client(server[0], verbose=False)            # a new session: nothing generated yet
    for api, kw in (("/explain_step", dict(step=1)), ("/trajectory", dict(frames=5))):
        with pytest.raises(Exception) as err:
            fresh.predict(api_name=api, **kw)
        assert "run generate first" in str(err.value).lower()


COEF = re.compile(r"coefficient of `([^`]+)` \| ([-+0-9.e]+) \|")


@pytest.mark.parametrize("sampler", ["ddim", "dpm++"])
def test_explain_step_numbers_reproduce_x_next(client, server, sampler):
    """The coefficients the app shows (JSON and markdown table) rebuild x_next from x_t, x0_hat, eps_hat
    (and DPM-Solver++(2M)'s previous x0_hat, named ``x0_hat[t_prev]``) within 1e-4, on the records of the same
    run made with the package directly."""
    from diffusion_core import load
    steps, seed = 5, 21
    generate(client, model="tiny", sampler=sampler, steps=steps, seed=seed, class_label="Bag", guidance=2.0)
    pipe = load(server[1] / "tiny")
    recs = list(pipe.stream(1, sampler=sampler, steps=steps, guidance=2.0, labels=["Bag"], seed=seed))
    sched = pipe.stages[0].schedule
    for k in range(1, steps + 1):
        md, strip, plot, num = client.predict(step=k, api_name="/explain_step")
        rec = recs[k - 1]
        assert (num["t"], num["t_next"], num["step"]) == (rec.t, rec.t_next, k)
        ab_t, ab_n = float(sched.alpha_bar_at(rec.t)), float(sched.alpha_bar_at(rec.t_next))
        assert abs(num["alpha_bar_t"] - ab_t) < 1e-12 and abs(num["alpha_bar_next"] - ab_n) < 1e-12
        assert f"t = {rec.t} → t' = {rec.t_next}" in md
        assert f"`alpha_bar_t` | {ab_t:.6g} |" in md and f"`alpha_bar_t_next` | {ab_n:.6g} |" in md
        assert "$$" in md and ("\\hat x_0" in md)
        terms = {"x_t": rec.x_t, "x0_hat": rec.x0_hat, "eps_hat": rec.eps_hat}
        if k > 1:
            terms[f"x0_hat[{recs[k - 2].t}]"] = recs[k - 2].x0_hat
        shown = {name: float(v) for name, v in COEF.findall(md)}
        assert set(shown) == set(num["coefficients"])
        for coefs in (num["coefficients"], shown):
            rebuilt = sum(c * terms[name].double() for name, c in coefs.items())
            assert float((rebuilt - rec.x_next.double()).abs().max()) < 1e-4, (sampler, k, coefs)
        assert num["sigma"] == 0.0 and num["residual_max"] < 1e-4
        if sampler == "dpm++" and 1 < k < steps:
            assert num["order"] == 2 and "h" in num and "r" in num and "lambda_t" in num
        assert Path(strip).is_file() and plot
    with pytest.raises(Exception) as err:
        client.predict(step=steps + 1, api_name="/explain_step")
    assert f"[1, {steps}]" in str(err.value)


@pytest.mark.parametrize("sampler", ["dpm++3m", "unipc"])
def test_explain_multistep_solvers(client, server, sampler):
    """DPM-Solver++(3M) and UniPC are explained with the weights the package's own update gives
    (``explain_step``): the app shows the same numbers, in JSON and in the markdown, with the earlier
    steps' x0_hat as named terms; for 3M they rebuild x_next from the recorded x_t and x0_hat."""
    from diffusion_core import SamplerSpec, explain_step, load
    steps, seed = 6, 5
    generate(client, model="tiny", sampler=sampler, steps=steps, seed=seed, class_label="Bag", guidance=2.0,
             spacing="logsnr")
    pipe = load(server[1] / "tiny")
    recs = list(pipe.stream(1, sampler=sampler, steps=steps, guidance=2.0, labels=["Bag"], seed=seed, spacing="logsnr"))
    ts = torch.tensor([r.t for r in recs] + [-1])
    for k in range(1, steps + 1):
        md, strip, plot, num = client.predict(step=k, api_name="/explain_step")
        ex = explain_step(SamplerSpec(sampler), ts, recs, k - 1, schedule=pipe.stages[0].schedule)
        weights, info = ex.weights, ex.info
        assert num["coefficients"].keys() == weights.keys() and num["order"] == info["order"]
        assert all(abs(num["coefficients"][n] - w) < 1e-12 for n, w in weights.items())
        shown = {name: float(v) for name, v in COEF.findall(md)}
        assert set(shown) == set(weights) and num["residual_max"] < 1e-4
        if sampler == "dpm++3m":
            by_t = {f"x0_hat[{r.t}]": r.x0_hat for r in recs}
            rebuilt = sum(c * {"x_t": recs[k - 1].x_t, "x0_hat": recs[k - 1].x0_hat, **by_t}[n].double()
                          for n, c in num["coefficients"].items())
            assert float((rebuilt - recs[k - 1].x_next.double()).abs().max()) < 1e-4
        if 2 < k < steps - 1:
            assert any(n.startswith("x0_hat[") for n in weights) and "\\hat x_0^{(" in md
        assert Path(strip).is_file() and plot


@pytest.mark.parametrize("model,sampler,eta,expect", [
    ("tiny", "ddpm", 0.0, "posterior variance"),
    ("tiny", "ddim", 0.5, "DDIM (eta = 0.5)"),
    ("tiny-cold", "cold", 0.0, "D(\\hat x_0"),
])
def test_explain_stochastic_and_cold(client, model, sampler, eta, expect):
    """A stochastic step is explained with the noise it drew: DDPM's posterior variance, and DDIM's with the eta
    the run had (the kept run's own request), sigma as Song et al. 2021 eq. 16 writes it."""
    generate(client, model=model, sampler=sampler, steps=4, seed=2, eta=eta)
    md, _, _, num = client.predict(step=2, api_name="/explain_step")
    assert expect in md, md[:300]
    if sampler == "ddim":
        ab, ab_prev = num["alpha_bar_t"], num["alpha_bar_next"]
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab)) * math.sqrt(1 - ab / ab_prev)
        assert abs(num["sigma"] - sigma) < 1e-6 and num["residual_max"] < 1e-4, (num["sigma"], sigma)
    if sampler == "ddpm":
        assert num["sigma"] > 0 and f"{num['sigma']:.6g}" in md
        assert 0.6 < num["noise_std"] < 1.4 and num["residual_max"] < 1e-4     # the z the step drew, N(0, 1)
    if sampler == "cold":
        assert num["residual_max"] < 1e-4 and set(num["coefficients"]) == {"x_t", "D(x0_hat,t)", "D(x0_hat,t_next)"}


def test_trajectory_has_a_frame_per_step(client):
    generate(client, model="tiny", sampler="dpm++", steps=7, seed=4)
    gif, strip = client.predict(frames=4, what="x0_hat", api_name="/trajectory")
    im = Image.open(gif)
    assert im.is_animated and im.n_frames == 7
    s = Image.open(strip)
    assert s.width > 3 * s.height           # a row of 4 labelled frames


def test_compare_grid_sizes(client):
    from diffusion_app import render
    img, note = client.predict(model="tiny", class_label="Bag", seed=3, samplers=["ddim", "dpm++"],
                               step_counts=[2, 3], guidance=2.0, schedules=False, api_name="/compare")
    assert Image.open(img).size == render.grid_size(2, 2) and "2 x 2" in note
    img, note = client.predict(model="tiny", class_label="Bag", seed=3, samplers=["ddim"], step_counts=[2, 3, 5],
                               guidance=2.0, schedules=True, api_name="/compare")
    assert Image.open(img).size == render.grid_size(2, 3)                  # tiny and tiny-linear rows
    img, note = client.predict(model="tiny", class_label="Bag", seed=3, samplers=["dpm++"],
                               guidance_scales=[0, 1, 4], steps=2, schedules=False, api_name="/compare_guidance")
    assert Image.open(img).size == render.grid_size(1, 3)


def test_compare_with_schedules_works_at_its_own_defaults(client):
    """Issue 35 item 6: ticking "schedules" at the Compare tab's defaults (3 samplers x 3 step counts, and the
    guidance grid's 3 x 5) failed: twice the rows, 18 cells against a limit of 15. The limits are per model."""
    from diffusion_app import render
    from diffusion_app.settings import (COMPARE_DEFAULT_GUIDANCE_STEPS, COMPARE_DEFAULT_STEPS, COMPARE_GUIDANCE,
                                        compare_default_samplers)
    COMPARE_DEFAULT_SAMPLERS = compare_default_samplers()
    n = len(COMPARE_DEFAULT_SAMPLERS)
    img, note = client.predict(model="tiny", class_label="Bag", seed=3, samplers=COMPARE_DEFAULT_SAMPLERS,
                               step_counts=COMPARE_DEFAULT_STEPS, guidance=2.0, schedules=True, api_name="/compare")
    assert Image.open(img).size == render.grid_size(2 * n, len(COMPARE_DEFAULT_STEPS)), note
    img, note = client.predict(model="tiny", class_label="Bag", seed=3, samplers=COMPARE_DEFAULT_SAMPLERS,
                               guidance_scales=COMPARE_GUIDANCE, steps=COMPARE_DEFAULT_GUIDANCE_STEPS, schedules=True,
                               api_name="/compare_guidance")
    assert Image.open(img).size == render.grid_size(2 * n, len(COMPARE_GUIDANCE)), note


@pytest.mark.parametrize("api,kw,message", [
    ("/compare", dict(samplers=["ddpm", "ddim", "dpm++", "dpm++3m", "unipc"], step_counts=[5, 10, 25, 50],
                      schedules=True), "too much work"),       # 5 x 4 x 2 models = 40 cells, over 2 x 15
    ("/compare", dict(samplers=["ddpm"], step_counts=[50], schedules=False, model="tiny-attr"), "no other model"),
    ("/compare", dict(samplers=["ddim"], step_counts=[2], model="tiny-cold", class_label="(any)"),
     "none of the chosen samplers"),
    ("/compare", dict(samplers=["ddim"], step_counts=[2], model="tiny-sr"), "super-resolution"),
    ("/compare_guidance", dict(samplers=["ddim"], guidance_scales=[0, 2], steps=2, class_label="(any)"), "choose a class"),
])
def test_compare_limits_and_messages(client, api, kw, message):
    kw = dict(kw)
    if "no other" in message:
        kw["schedules"] = True
    kw.setdefault("model", "tiny")
    kw.setdefault("class_label", "Bag")
    with pytest.raises(Exception) as err:
        client.predict(api_name=api, **kw)
    assert message in str(err.value).lower() and "Traceback" not in str(err.value)


def test_interpolate_ends_are_plain_generations(client):
    kw = dict(model="tiny", class_label="Bag", sampler="ddim", steps=4, guidance=2.0)
    gal, row, note = client.predict(seed_a=3, seed_b=40, frames=5, api_name="/interpolate", **kw)
    assert len(gal) == 5 and Path(row).is_file() and "slerp" in note
    for seed, item in ((3, gal[0]), (40, gal[-1])):
        plain = generate(client, seed=seed, batch_size=1, **kw)[-1][2]
        diff = np.abs(pixels(gallery_path(item)) - pixels(gallery_path(plain[0])))
        assert diff.max() <= 2, (seed, diff.max())                       # same x_T, same deterministic sampler
    mids = [pixels(gallery_path(g)) for g in gal]
    assert not np.array_equal(mids[1], mids[0]) and not np.array_equal(mids[1], mids[-1])
    for bad, message in ((dict(sampler="ddpm"), "sampler (deterministic)"), (dict(model="tiny-cold"), "cold")):
        with pytest.raises(Exception) as err:
            client.predict(seed_a=1, seed_b=2, frames=3, api_name="/interpolate", **{**kw, **bad})
        assert message in str(err.value).lower()
