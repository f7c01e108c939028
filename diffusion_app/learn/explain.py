"""Explain a step: the sampler's update with its numbers, from the package's ``explain_step``."""
from __future__ import annotations

import math

from diffusion_core import SamplerSpec, explain_step, sampler_info

from ..runs import KeptRun


def fmt(v: float) -> str:
    """A number as shown in the explanations (and as tests look it up): 6 significant digits."""
    return f"{float(v):.6g}"


def _alpha_bar(schedule, t: int) -> float:
    return float(schedule.alpha_bar_at(int(t)))


def step_numbers(run: KeptRun, i: int) -> dict:
    """The update of step ``i`` (0-based) of a kept run written out with its actual numbers.

    ``run``: the run kept by Generate (``steps``: SampleStep list for the first image, maybe only the first
    steps of the run; ``timesteps``: the whole grid; its request's sampler options; its schedule, or its
    degradation and fixed noise). The weights and terms are
    the package's ``explain_step``: the sampler's own update, so they cannot drift from it. ``coefficients``
    maps a term (x_t, x0_hat, eps_hat, ``x0_hat[t_k]``: the x0_hat of an earlier step, or cold's D(x0_hat, t)
    and D(x0_hat, t_next)) to its weight, so that x_next = sum(coef * term) + sigma * z; ``residual_max`` is
    max |x_next - that sum| (~1e-7: float32 rounding)."""
    recs = run.steps
    rec = recs[i]
    t, tn = int(rec.t), int(rec.t_next)
    r = run.request
    sampler = r.sampler
    spec = SamplerSpec(sampler, eta=float(r.eta), variance=r.variance, improved=r.improved)    # the run's own
    ex = explain_step(spec, run.timesteps, recs, i, schedule=run.schedule, degradation=run.degradation,
                      fixed_noise=run.fixed_noise)
    out = {"step": i + 1, "index": i, "num_steps": rec.num_steps, "sampler": sampler, "t": t, "t_next": tn}
    if run.schedule is not None:
        ab_t, ab_n = _alpha_bar(run.schedule, t), _alpha_bar(run.schedule, tn)
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


def term_tex(name: str, t: int, t_next: int) -> str:
    """TeX of a term of an explained step (``samplers.Step.inputs`` names them): ``x0_hat[982]`` is the x0_hat the
    denoiser gave at t = 982; ``D(x0_hat,t)`` a cold step's re-degraded prediction."""
    if name.startswith("x0_hat[") and name.endswith("]"):
        return rf"\hat x_0^{{({name[7:-1]})}}"
    return {"x_t": _tex_x(t), "x0_hat": r"\hat x_0", "eps_hat": r"\hat\epsilon", "D(x0_hat,t)": rf"D(\hat x_0, {t})",
            "D(x0_hat,t_next)": rf"D(\hat x_0, {t_next})"}[name]


def explain_markdown(num: dict, run: KeptRun) -> str:
    """The formula of the run's sampler, then the same formula with this step's numbers."""
    t, tn, sampler = num["t"], num["t_next"], num["sampler"]
    info = sampler_info(sampler)
    name = info.label
    if info.noise_param:
        name += f" ({info.noise_param} = {fmt(num[info.noise_param])})"
    head = (f"### Step {num['step']} of {num['num_steps']} · {name} · t = {t} → t' = {tn}\n\n"
            f"<small>{run.summary}</small>\n\n")
    rows = [("`t`", str(t)), ("`t_next` (t')", f"{tn}" + (" (the clean image)" if tn < 0 else ""))]
    if "alpha_bar_t" in num:        # a Gaussian schedule's noise levels
        rows += [("`alpha_bar_t`", fmt(num["alpha_bar_t"])), ("`alpha_bar_t_next`", fmt(num["alpha_bar_next"])),
                 ("noise level sqrt(1 - alpha_bar_t)", fmt(num["noise_level_t"]))]
    rows += [(k, v if isinstance(v, str) else fmt(v)) for k, v in info.rows(num)]     # the sampler's own
    for k, c in num["coefficients"].items():
        rows.append((f"coefficient of `{k}`", fmt(c)))
    table = "| quantity | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    # the formula with this step's numbers (a term with weight 0, e.g. the last step's x_t or eps_hat, left out)
    parts = [(c, term_tex(k, t, tn)) for k, c in num["coefficients"].items() if c != 0.0]
    rhs = _tex_sum(parts)
    if num["sigma"] > 0:
        rhs += f" + {_tex_num(num['sigma'])}\\,z"
    lhs = "x_{-1}" if tn < 0 else f"x_{{{tn}}}"
    numbers = f"$${lhs} = {rhs}$$"
    check = (f"Check: max |x_t' − (the sum above)| = {num['residual_max']:.2e} (float32 rounding: the coefficients "
             f"reproduce x_t')" + (f"; the noise z this step drew has std {num['noise_std']:.3f}" if num["sigma"] > 0
                                   else ""))
    return (head + f"**Update rule.** {info.note}\n\n{info.formula}\n\n**This step.**\n\n{numbers}\n\n{check}\n\n"
            f"{table}\n\n"
            f"std of x_t = {fmt(num['std_x_t'])}, std of x_t' = {fmt(num['std_x_next'])} (measured, first image)")
