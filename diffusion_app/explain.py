"""Explain a step: the sampler's update with its numbers, from the package's ``explain_step``."""
from __future__ import annotations

import math

import torch

from diffusion_core import SamplerSpec, explain_step

from .settings import SAMPLER_NAMES


def fmt(v: float) -> str:
    """A number as shown in the explanations (and as tests look it up): 6 significant digits."""
    return f"{float(v):.6g}"


def _alpha_bar(schedule, t: int) -> float:
    return float(schedule.alpha_bar_at(int(t)))


def step_numbers(run: dict, i: int) -> dict:
    """The update of step ``i`` (0-based) of a kept run written out with its actual numbers.

    ``run``: the records kept by Generate (``steps``: SampleStep list for the first image, maybe only the first
    steps of the run; ``grid`` and ``grid_end``: every step's t and the last t_next; ``sampler``, ``eta``,
    ``variance``, ``improved``; ``schedule`` or ``degradation`` (+ ``fixed_noise``)). The weights and terms are
    the package's ``explain_step``: the sampler's own update, so they cannot drift from it. ``coefficients``
    maps a term (x_t, x0_hat, eps_hat, ``x0_hat[t_k]``: the x0_hat of an earlier step, or cold's D(x0_hat, t)
    and D(x0_hat, t_next)) to its weight, so that x_next = sum(coef * term) + sigma * z; ``residual_max`` is
    max |x_next - that sum| (~1e-7: float32 rounding)."""
    recs = run["steps"]
    rec = recs[i]
    t, tn = int(rec.t), int(rec.t_next)
    sampler = run["sampler"]
    spec = SamplerSpec(sampler, eta=float(run.get("eta") or 0.0), variance=run.get("variance", "posterior"),
                       improved=bool(run.get("improved", True)))
    ts = torch.tensor(run["grid"] + [run["grid_end"]]) if run.get("grid") else \
        torch.tensor([r.t for r in recs] + [recs[-1].t_next])
    ex = explain_step(spec, ts, recs, i, schedule=run.get("schedule"), degradation=run.get("degradation"),
                      fixed_noise=run.get("fixed_noise"))
    out = {"step": i + 1, "index": i, "num_steps": rec.num_steps, "sampler": sampler, "t": t, "t_next": tn}
    if "schedule" in run:
        ab_t, ab_n = _alpha_bar(run["schedule"], t), _alpha_bar(run["schedule"], tn)
        out.update(alpha_bar_t=ab_t, alpha_bar_next=ab_n, noise_level_t=math.sqrt(1 - ab_t),
                   noise_level_next=math.sqrt(1 - ab_n))
    out.update(ex.info)
    coef = {k: w for k, w in ex.weights.items() if k != "noise"}
    terms = {k: v for k, v in ex.terms.items() if k != "noise"}
    sigma = ex.weights.get("noise", 0.0)
    det = sum(c * terms[k].double() for k, c in coef.items())
    out["coefficients"] = coef
    out["sigma"] = sigma
    out["residual_max"] = float((rec.x_next.double() - det - sigma * ex.terms.get("noise", 0.0)).abs().max())
    if sigma > 0:
        out["noise_std"] = float(ex.terms["noise"].float().std())
    out["std_x_t"] = float(rec.x_t.float().std())
    out["std_x_next"] = float(rec.x_next.float().std())
    out["_terms"] = terms
    out["_noise"] = ex.terms.get("noise") if sigma > 0 else None
    return out


def _tex_num(v: float) -> str:
    s = fmt(v)
    if "e" in s:
        m, e = s.split("e")
        s = f"{m} \\times 10^{{{int(e)}}}"
    return s


def _tex_sum(terms: list[tuple[float, str]]) -> str:
    out = ""
    for c, name in terms:
        sign = "-" if c < 0 else "+"
        body = f"{_tex_num(abs(c))}\\,{name}"
        out += (("-" if c < 0 else "") + body) if not out else f" {sign} {body}"
    return out or "0"


def _tex_x(t: int) -> str:
    return "x_{-1} \\;(\\text{clean})" if t < 0 else f"x_{{{t}}}"


TEX_FORMULAS = {
    "ddpm": (r"$$x_{t'} = \frac{\sqrt{\bar\alpha_{t'}}\,\beta}{1-\bar\alpha_t}\,\hat x_0"
             r" + \frac{\sqrt{1-\beta}\,(1-\bar\alpha_{t'})}{1-\bar\alpha_t}\,x_t + \sigma z,"
             r"\qquad \beta = 1-\frac{\bar\alpha_t}{\bar\alpha_{t'}},\quad"
             r" \sigma^2 = \frac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}\,\beta$$",
             "DDPM ancestral step: sample the posterior q(x_t' | x_t, x0_hat) (Ho et al. 2020, eqs. 6-7, "
             "respaced as in Nichol & Dhariwal 2021); no noise on the last step."),
    "ddim": (r"$$x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}-\sigma_t^2}\,\hat\epsilon"
             r" + \sigma_t z,\qquad \sigma_t = \eta\sqrt{\frac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}}"
             r"\sqrt{1-\frac{\bar\alpha_t}{\bar\alpha_{t'}}}$$",
             "DDIM (Song et al. 2021, eqs. 12 and 16): jump to the noise level of t' along the predicted "
             "noise direction; eta = 0 is deterministic."),
    "dpm++": (r"$$x_{t'} = \frac{\sigma_{t'}}{\sigma_t}\,x_t - \alpha_{t'}\left(e^{-h}-1\right) D,\qquad"
              r" \alpha = \sqrt{\bar\alpha},\ \sigma = \sqrt{1-\bar\alpha},\ \lambda = \log\frac{\alpha}{\sigma},"
              r"\ h = \lambda_{t'} - \lambda_t$$"
              "\n\n"
              r"$$D = \left(1 + \frac{1}{2r}\right)\hat x_0 - \frac{1}{2r}\,\hat x_0^{\mathrm{prev}},\qquad"
              r" r = \frac{h_{\mathrm{prev}}}{h}\qquad(\text{first step: } D = \hat x_0)$$",
              "DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): an exponential-integrator step in log-SNR time "
              "lambda, second order from the previous step's x0_hat; the last step returns x0_hat."),
    "dpm++3m": (r"$$x_{t'} = \frac{\sigma_{t'}}{\sigma_t}\,x_t - \alpha_{t'}\left(e^{-h}-1\right)\hat x_0"
                r" + \alpha_{t'}\left(\frac{e^{-h}-1}{h}+1\right) D_1"
                r" - \alpha_{t'}\left(\frac{e^{-h}-1+h}{h^2}-\frac12\right) D_2$$"
                "\n\n"
                r"$$D_1, D_2:\ \text{first and second divided differences of } \hat x_0"
                r" \text{ over the last three steps in } \lambda = \log\frac{\alpha}{\sigma}$$",
                "DPM-Solver++(3M) (Lu et al. 2022): the exponential-integrator step with the x0_hat of the two "
                "previous steps; lower order on the first two steps and near the end of short runs."),
    "unipc": (r"$$x_{t'} = \frac{\sigma_{t'}}{\sigma_t}\,x_t^c - \alpha_{t'}\left(e^{-h}-1\right)\hat x_0"
              r" - \alpha_{t'}\,B(h)\sum_k \rho_k D_k,\qquad B(h) = e^{-h}-1$$"
              "\n\n"
              r"$$x_t^c:\ x_t \text{ corrected by UniC with this step's } \hat x_0 \text{ (no extra network call)}$$",
              "UniPC (Zhao et al. 2023, bh2): the predictor UniP from x_t as corrected by UniC, which redoes the "
              "previous step using the denoiser's output at x_t; D_k = (x0_hat_k - x0_hat) / r_k."),
    "cold": (r"$$x_{t'} = x_t - D(\hat x_0, t) + D(\hat x_0, t')\qquad"
             r"(\text{naive: } x_{t'} = D(\hat x_0, t'))$$",
             "Cold Diffusion (Bansal et al. 2022, Alg. 2): re-degrade the prediction to both severities and "
             "move x_t by the difference; D(x, -1) = x."),
}


TERM_TEX = {"x_t": None, "x0_hat": r"\hat x_0", "eps_hat": r"\hat\epsilon", "D(x0_hat,t)": None, "D(x0_hat,t_next)": None}


def term_tex(name: str) -> str:
    """TeX of a term of an explained step; ``x0_hat[982]`` is the x0_hat the denoiser gave at t = 982."""
    if name.startswith("x0_hat[") and name.endswith("]"):
        return rf"\hat x_0^{{({name[7:-1]})}}"
    return TERM_TEX[name]


def explain_markdown(num: dict, run: dict) -> str:
    """The formula of the run's sampler, then the same formula with this step's numbers."""
    t, tn, sampler = num["t"], num["t_next"], num["sampler"]
    name = SAMPLER_NAMES.get(sampler, sampler)
    if sampler == "ddim":
        name += f" (eta = {fmt(num['eta'])})"
    head = (f"### Step {num['step']} of {num['num_steps']} · {name} · t = {t} → t' = {tn}\n\n"
            f"<small>{run.get('summary', '')}</small>\n\n")
    formula, note = TEX_FORMULAS[sampler]
    rows = [("`t`", str(t)), ("`t_next` (t')", f"{tn}" + (" (the clean image)" if tn < 0 else ""))]
    if sampler == "cold":
        rows += [("degradation", num["degradation"]), ("severity at t", fmt(num["severity_t"])),
                 ("severity at t'", fmt(num["severity_next"]))]
    else:
        rows += [("`alpha_bar_t`", fmt(num["alpha_bar_t"])), ("`alpha_bar_t_next`", fmt(num["alpha_bar_next"])),
                 ("noise level sqrt(1 - alpha_bar_t)", fmt(num["noise_level_t"]))]
    if sampler == "ddpm":
        rows += [("`beta` = 1 - alpha_bar_t / alpha_bar_t'", fmt(num["beta"])),
                 (f"`sigma^2` ({num['variance']} variance)", fmt(num["posterior_variance"])),
                 ("`sigma` (std of the added noise)", fmt(num["sigma"]))]
    elif sampler == "ddim":
        rows += [("`eta`", fmt(num["eta"])), ("`sigma_t(eta)`", fmt(num["sigma"]))]
    elif sampler == "dpm++" and "h" in num:
        rows += [("`lambda_t`", fmt(num["lambda_t"])), ("`lambda_t'`", fmt(num["lambda_next"])),
                 ("`h` = lambda_t' - lambda_t", fmt(num["h"]))]
        if num.get("order") == 2:
            rows += [("`r` = h_prev / h", fmt(num["r"])), ("previous step", f"t = {num['t_prev']}")]
        else:
            rows += [("order", "1 (first step: D = x0_hat)")]
    elif sampler in ("dpm++3m", "unipc"):
        rows += [("order of this step", str(num["order"]))]
        if num.get("corrected"):
            rows += [("`x_t` used", "x_t after UniC's correction")]
    for k, c in num["coefficients"].items():
        rows.append((f"coefficient of `{k}`", fmt(c)))
    table = "| quantity | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    # the formula with this step's numbers
    if sampler == "cold":
        parts = [(c, {"x_t": _tex_x(t), "D(x0_hat,t)": rf"D(\hat x_0, {t})",
                      "D(x0_hat,t_next)": rf"D(\hat x_0, {tn})"}[k]) for k, c in num["coefficients"].items()]
    else:
        parts = [(c, _tex_x(t) if k == "x_t" else term_tex(k)) for k, c in num["coefficients"].items()
                 if c != 0.0]       # e.g. the last step's x_t or eps_hat term
    rhs = _tex_sum(parts)
    if num["sigma"] > 0:
        rhs += f" + {_tex_num(num['sigma'])}\\,z"
    lhs = "x_{-1}" if tn < 0 else f"x_{{{tn}}}"
    numbers = f"$${lhs} = {rhs}$$"
    check = (f"Check: max |x_t' − (the sum above)| = {num['residual_max']:.2e} (float32 rounding: the coefficients "
             f"reproduce x_t')" + (f"; the noise z this step drew has std {num['noise_std']:.3f}" if num["sigma"] > 0
                                   else ""))
    return (head + f"**Update rule.** {note}\n\n{formula}\n\n**This step.**\n\n{numbers}\n\n{check}\n\n{table}\n\n"
            f"std of x_t = {fmt(num['std_x_t'])}, std of x_t' = {fmt(num['std_x_next'])} (measured, first image)")
