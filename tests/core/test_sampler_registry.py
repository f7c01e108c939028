"""The sampler registry (issue 35, structure): what a sampler is lives in one exported record in the core; the
pipeline's checks, ``make_step`` and the app's menus, checks and explanations read it. A sampler added in the core
alone (a toy rule and one ``register_sampler`` call, here in a test) is offered by the app's menus, runs through
``Pipeline.stream`` and the app's Generate, Compare, Interpolate and Branch, and is explained step by step; and
no module of the app names a sampler."""
from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_core import (DEFAULT_SAMPLER, SamplerInfo, SamplerSpec, load, register_sampler,  # noqa: E402
                            sampler_info, all_samplers, unregister_sampler)
from diffusion_core.samplers import Step, make_step  # noqa: E402
from diffusion_core.samplers.updates import _ab  # noqa: E402

# string constants in the app equal to a sampler's name that are not about a sampler, with the reason
ALLOWED = {("compare.py", "cold"): "a cold-diffusion model's schedule column in a Compare caption, not a sampler"}
APP_FILES = sorted((ROOT / "diffusion_app").rglob("*.py")) + sorted((ROOT / "diffusion_app").rglob("*.pyi")) \
    + [ROOT / "app.py"]


def test_no_app_module_names_a_sampler():
    """Every sampler name the app shows, checks or defaults to comes from the registry: no string constant of an
    app module (a literal, a default, a piece of an f-string) is a registered sampler's name, but those allowed
    above, each with its reason."""
    names = {s.name for s in all_samplers()}
    found = []
    for path in APP_FILES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names \
                    and (path.name, node.value) not in ALLOWED:
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert not found, found


def test_the_registry_is_what_the_core_reads():
    """The records say what the rules do: a stochastic record's step draws noise (DDIM from eta > 0 on), a
    multistep record's step keeps earlier x0_hat, each record's rule is a Step; options.SAMPLERS is the registry's
    names; an unknown name or a second record under a taken name is refused."""
    from diffusion_core import make_schedule, options, spaced_timesteps
    from diffusion_core.degradations import make_degradation
    sched = make_schedule("cosine", T=100)
    ts = spaced_timesteps(100, 5, "trailing")
    assert options.SAMPLERS == tuple(s.name for s in all_samplers())
    assert options.STUDENT_SAMPLERS == tuple(s.name for s in all_samplers() if s.student)
    assert DEFAULT_SAMPLER in options.SAMPLERS
    for info in all_samplers():
        assert issubclass(info.step_class(), Step) and info.formula and info.note and info.label and info.short
        for eta in (0.0, 0.5):
            spec = SamplerSpec(info.name, eta=eta)
            deg = None if info.gaussian else make_degradation("blur", 100)
            step = make_step(spec, ts, sched if info.gaussian else None, deg, torch.zeros(1, 1, 8, 8))
            assert step.stochastic == spec.stochastic == (info.stochastic or (info.noise_param is not None and eta > 0))
            assert spec.multistep == info.multistep == hasattr(step, "history"), info.name
    with pytest.raises(ValueError, match="unknown sampler 'nope'; choose one of ddpm, ddim"):
        SamplerSpec("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_sampler(sampler_info("ddim"))


class ToyStep(Step):
    """A toy rule, deterministic and unlike any registered one: x0_hat at t_next's signal level plus half of
    t_next's noise along this step's eps_hat:
    x_next = sqrt(alpha_bar_next) x0_hat + sqrt(1 - alpha_bar_next) eps_hat / 2."""

    def __init__(self, schedule):
        self.schedule = schedule

    def inputs(self, x_t, t, t_next, pred, noise):
        return {"x0_hat": pred.x0_hat, "eps_hat": pred.eps_hat}

    def rule(self, v, t, t_next):
        ab = _ab(self.schedule, t_next)
        return ab ** 0.5 * v["x0_hat"] + (1 - ab) ** 0.5 / 2 * v["eps_hat"]

    def info(self, t, t_next):
        return {"toy_level": (1 - _ab(self.schedule, t_next)) ** 0.5 / 2}


TOY = SamplerInfo("toy", "Toy jump", "Toy", f"{__name__}:ToyStep", r"$$x_{t'} = \text{toy}$$",
                  "A toy rule registered by a test.", lambda num: [("toy noise level", num["toy_level"])])


@pytest.fixture
def toy():
    register_sampler(TOY)
    try:
        yield TOY
    finally:
        unregister_sampler(TOY.name)


def _toy_level_rule_holds(records, schedule):
    for r in records:
        ab = _ab(schedule, r.t_next)
        assert torch.allclose(r.x_next, ab ** 0.5 * r.x0_hat + (1 - ab) ** 0.5 / 2 * r.eps_hat, atol=1e-6)


def test_a_sampler_added_in_the_core_runs_through_the_pipeline(toy, tmp_path, make_model):
    """Registered in the core alone, the toy is a sampler of every Gaussian model (not of a cold one) and runs
    through Pipeline.stream step by step with its own rule; a record's grids are the spacings it takes."""
    make_model(tmp_path / "m")
    pipe = load(tmp_path / "m")
    assert "toy" in pipe.samplers
    records = list(pipe.stream(2, sampler="toy", steps=4, seed=1))
    assert len(records) == 4 and records[-1].t_next == -1
    _toy_level_rule_holds(records, pipe.stages[0].schedule)
    register_sampler(dataclasses.replace(TOY, name="toy-trailing", grids=("trailing",)))      # its grids are kept to
    try:
        assert len(list(pipe.stream(1, sampler="toy-trailing", steps=3, spacing="trailing"))) == 3
        with pytest.raises(ValueError, match="the karras spacing does not apply to the toy-trailing sampler, which "
                                             "takes trailing"):
            next(pipe.stream(1, sampler="toy-trailing", steps=3, spacing="karras"))
    finally:
        unregister_sampler("toy-trailing")


@pytest.mark.slow
def test_a_sampler_added_in_the_core_reaches_the_apps_menus_and_tabs(toy, tmp_path):
    """The app, untouched, offers the toy in its menus (Generate, Branch, Compare, Interpolate), generates with
    it, explains its steps from its record, and compares, interpolates and branches with it; a cold model does not
    offer it."""
    import diffusion_app as app
    from app_fixtures import build_checkpoints
    demo = app.build_demo(str(build_checkpoints(tmp_path / "ckpt")))
    a = demo.app_state
    menus = [c["props"] for c in demo.config["components"] if c["type"] in ("dropdown", "radio", "checkboxgroup")]
    offered = [p["label"] for p in menus if {("Toy jump", "toy"), ("Toy", "toy")} & set(map(tuple, p["choices"]))]
    assert sorted(offered) == ["Sampler", "Sampler", "Sampler (deterministic)", "Samplers (rows)"], offered
    assert ("Toy jump", "toy") in a.controls_for("tiny")[0]["choices"]
    assert ("Toy jump", "toy") not in a.controls_for("tiny-cold")[0]["choices"]
    out = list(a.generate("tiny", "toy", 4, "trailing", 0.0, 2.0, 5, 1, 1, "Coat"))
    key = out[-1][-1]
    recs = a.runs.get(key).steps
    assert len(recs) == 4 and "Toy jump 4 steps" in str(out[-1][1])
    md, _, _, num = a.explain_step(2, key)
    assert "Toy jump" in md and TOY.formula in md and TOY.note in md and "| toy noise level |" in md, md
    assert num["residual_max"] < 1e-5 and num["sampler"] == "toy"
    img, note = a.compare("tiny", "Coat", None, 0, ["toy", "ddim"], [2], 2.0, False)
    assert note.startswith("2 x 1 grid"), note
    _, _, note = a.interpolate("tiny", "Coat", None, 0, 1, 2, "toy", 2, 2.0)
    assert "Toy jump 2 steps" in note
    _, _, kept = a.branch(2, "toy", 2, 2.0, False, branches=None, run=key)
    assert kept[-1]["caption"].startswith("Toy 2")


def test_the_solver_table_script_reads_its_solvers_from_the_registry():
    """scripts/sampler_table.py's solver rows are the registry's deterministic Gaussian samplers (no list of its
    own): the toy, registered in the core alone, is a solver with a row per grid, and gone once unregistered; neither
    it nor scripts/make_figures.py keeps a table keyed by sampler names (the figures take the registry's labels)."""
    import importlib
    sys.path.insert(0, str(ROOT / "scripts"))
    import sampler_table
    assert sampler_table.SOLVERS == ("ddim", "dpm++", "dpm++3m", "unipc")
    register_sampler(TOY)
    try:
        importlib.reload(sampler_table)
        assert sampler_table.SOLVERS[-1] == "toy"
        assert sorted(g for _, s, k, _, g in sampler_table.SOLVER_ROWS if s == "toy" and k == 10) == sorted(
            sampler_table.GRIDS)
    finally:
        unregister_sampler(TOY.name)
        importlib.reload(sampler_table)
    assert "toy" not in sampler_table.SOLVERS
    names = {s.name for s in all_samplers()}
    own = []
    for path in (ROOT / "scripts" / "sampler_table.py", ROOT / "scripts" / "make_figures.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            items = node.keys if isinstance(node, ast.Dict) else node.elts if isinstance(node, (ast.Tuple, ast.List)) \
                else []
            if len(items) >= 2 + (not isinstance(node, ast.Dict)) and all(
                    isinstance(k, ast.Constant) and k.value in names for k in items):
                own.append(f"{path.name}:{node.lineno}")      # a table keyed by, or a list of, sampler names
    assert not own, own
