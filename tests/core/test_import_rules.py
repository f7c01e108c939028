"""The architecture as import rules, read from the sources (nothing is imported): what may depend on what."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "diffusion_core"


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file, as absolute dotted names (relative imports resolved
    against the package the file is in, sub-packages included)."""
    package = list(path.relative_to(ROOT).parent.parts)       # e.g. ["diffusion_core", "evaluation"]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = ".".join(package[:len(package) - (node.level - 1)])
                base = anchor + ("." + base if base else "")
                out.update(f"{base}.{a.name}" if not node.module else base for a in node.names)
            else:
                out.add(base)
                if base == "diffusion_core":
                    out.update(f"diffusion_core.{a.name}" for a in node.names)
    return out


def module_imports(name: str) -> set[str]:
    """name: a module of the package, dotted below it ("schedules", "evaluation.metrics"), or a sub-package
    ("samplers"): the imports of all its modules, without those between its own modules."""
    path = PKG.joinpath(*name.split("."))
    if path.is_dir():
        inner = "diffusion_core." + name
        return {m for p in path.rglob("*.py") for m in imports(p) if not m.startswith(inner)}
    return imports(path.with_suffix(".py"))


def test_the_package_never_imports_gradio():
    assert len(list(PKG.rglob("*.py"))) > len(list(PKG.glob("*.py")))      # sub-packages are read too
    for path in PKG.rglob("*.py"):
        assert not {m for m in imports(path) if m.split(".")[0] in ("gradio", "gradio_client", "spaces")}, path.name


def test_the_benchmark_is_outside_the_package():
    """Issue 19: the benchmark (diffusers, a development dependency; the library's speed switches set at run
    time) lives in benchmarks/, beside the package. Only the CLI's ``bench`` command reaches it."""
    assert not (PKG / "bench.py").exists() and (ROOT / "benchmarks" / "bench.py").is_file()
    for path in PKG.rglob("*.py"):
        uses = {m for m in imports(path) if m.split(".")[0] == "benchmarks"}
        assert not uses or path.name == "__main__.py", path.name
        assert not {m for m in imports(path) if m.split(".")[0] == "diffusers"}, path.name


def test_the_maths_does_not_import_the_network_data_or_training():
    """Schedules, samplers and denoisers are functions over tensors and a denoiser callable (DESIGN habit 1)."""
    forbidden = {"unet", "data", "training", "evaluation", "pipeline", "checkpoint",
                 "runtime"}
    for name in ("schedules", "samplers", "denoisers", "options"):
        bad = {m for m in module_imports(name) if m.startswith("diffusion_core.") and m.split(".")[1] in forbidden}
        assert not bad, (name, bad)
    assert not any(m == "torch" or m.startswith("torch.") for m in module_imports("options"))   # --help stays fast


def test_the_network_does_not_import_training_or_data():
    bad = {m for m in module_imports("unet")
           if m.startswith("diffusion_core.") and m.split(".")[1] in {"training", "data",
                                                                       "evaluation", "pipeline", "runtime"}}
    assert not bad, bad


APP_FILES = [ROOT / "app.py", *sorted((ROOT / "diffusion_app").rglob("*.py"))]     # the tab packages too


def test_the_app_uses_only_the_public_api():
    """The launcher and every module of the app package import names from ``diffusion_core`` itself, never from
    one of its modules (``import diffusion_core.samplers`` or ``from diffusion_core.images import ...``)."""
    import diffusion_core
    assert len(APP_FILES) > 10
    for path in APP_FILES:
        mods = imports(path)
        sub = {m for m in mods if m.startswith("diffusion_core.") and m.split(".")[1] not in diffusion_core.__all__}
        assert not sub, (path.name, sub)
        used = {m.split(".")[1] for m in mods if m.startswith("diffusion_core.")}
        assert used <= set(diffusion_core.__all__), (path.name, used - set(diffusion_core.__all__))


def test_the_app_is_a_launcher_and_small_modules():
    """app.py only launches the package (no handlers or layout of its own), and no module of the package is
    longer than about 400 lines (issue 18: each readable in one sitting)."""
    tree = ast.parse((ROOT / "app.py").read_text())
    defs = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert defs <= {"freeze_startup_objects", "exit_on_sigterm", "stop_and_exit"}, defs
    assert "diffusion_app" in imports(ROOT / "app.py")
    long = {p.name: n for p in APP_FILES if (n := len(p.read_text().splitlines())) > 420}
    assert not long, long


def test_the_runtime_layer_sits_below_the_pipeline():
    """Issue 19: how the network runs (chunks, row workers, backends) is the runtime sub-package, apart from the
    maths: it knows nothing of pipelines, training, data or evaluation (DESIGN 12), and the denoisers and the
    network know nothing of it (ModelDenoiser turns any network callable's output into a Prediction; the U-Net
    owns its dropout generator, which the training's workers seed)."""
    for name in ("runtime.backends", "runtime.parallel", "runtime.chunked"):
        bad = {m for m in module_imports(name)
               if m.startswith("diffusion_core.") and m.split(".")[1] in {"pipeline", "training", "evaluation", "data",
                                                                           "checkpoint"}}
        assert not bad, (name, bad)
    for name in ("denoisers", "samplers", "unet"):
        assert not {m for m in module_imports(name) if m.startswith("diffusion_core.runtime")}, name
    assert not (PKG / "parallel.py").exists() and not (PKG / "backends.py").exists()


def test_evaluation_is_a_layer_above_the_model():
    """Issue 19: the evaluation sub-package (classifiers, FID, pose metrics, the evaluate command) scores what the
    library makes; the maths, the network, the data, training and the pipeline never import it (only the CLI
    does). Its metrics modules stand alone: no network, no pipeline."""
    users = {p.relative_to(PKG).as_posix() for p in PKG.rglob("*.py")
             if any(m.startswith("diffusion_core.evaluation") for m in imports(p))
             and p.parent.name != "evaluation"}
    assert users == {"__main__.py"}, users
    for name in ("evaluation.metrics", "evaluation.pose_metrics"):
        assert not {m for m in module_imports(name) if m.startswith("diffusion_core.")}, name
    assert not (PKG / "evaluate.py").exists() and not (PKG / "evaluate_picks.py").exists()


def test_training_is_split_by_concern():
    """Issue 19: the objective (the batch and the loss, as the papers write them) imports no optimizer, state or
    loop; the state and output modules know nothing of the loop; nothing outside training imports it but the
    CLI, the evaluation's record of its command line, and the picks' attribute classifier, which draws its
    batches with training's attribute-balanced sampling (``objective.sample_weights``: one rule, issue 39)."""
    local = lambda name: {m.split(".")[2] for m in module_imports(name) if m.startswith("diffusion_core.training.")}
    assert local("training.objective") <= {"config"}
    assert local("training.state") <= {"config"} and local("training.outputs") <= {"config"}
    assert local("training.optim") == set()
    users = {p.relative_to(PKG).as_posix() for p in PKG.rglob("*.py")
             if any(m.startswith("diffusion_core.training") for m in imports(p)) and p.parent.name != "training"}
    assert users <= {"__main__.py", "evaluation/evaluate.py", "evaluation/attributes.py"}, users
    assert not (PKG / "train.py").exists()


def test_data_is_a_sub_package_that_imports_no_model():
    """Issue 19: the data sources (dataset, idx, folder, emoji, pose/{poses, render}) know nothing of the network,
    the maths, training, evaluation, the pipeline or the runtime; pose rendering reads poses, not the reverse."""
    allowed = {"config", "images", "data"}
    for path in (PKG / "data").rglob("*.py"):
        used = {m.split(".")[1] for m in imports(path) if m.startswith("diffusion_core.")}
        assert used <= allowed, (path.relative_to(PKG).as_posix(), used - allowed)
    assert not any(m.startswith("diffusion_core.data.pose.render") for m in module_imports("data.pose.poses"))
    assert not (PKG / "data.py").exists() and not (PKG / "data_pose.py").exists() and not (PKG / "data_emoji.py").exists()



def test_the_core_is_small_modules_and_short_functions():
    """Issue 19: no module of diffusion_core is longer than about 400 lines and no function than about 60 (the
    README's module table; each readable in one sitting, each function one idea)."""
    long_modules, long_functions = {}, {}
    for p in PKG.rglob("*.py"):
        text = p.read_text()
        if (n := len(text.splitlines())) > 420:
            long_modules[str(p.relative_to(ROOT))] = n
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    (n := node.end_lineno - node.lineno + 1) > 62:
                long_functions[f"{p.relative_to(ROOT)}:{node.name}"] = n
    assert not long_modules, long_modules
    assert not long_functions, long_functions
