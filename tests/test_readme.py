"""The README's own commands, taken from its code blocks, against the program, so the README cannot drift.

Commands that a test can afford are run as written, in a scratch folder whose ``checkpoints/fashion`` is a tiny
model with Fashion-MNIST's class names (the shipped one would take longer and prove nothing more): the app
(`python app.py`, with only `requirements.txt`'s packages importable), `sample`, `train` (with `--set` overrides
that make it tiny) and the Python API block. Commands that would run for minutes (DDP training, the classifier)
are parsed by the real argument parser; synopsis lines (``[--opt A|B]``) must name only options that exist,
with exactly the choices the parser has. The install and test lines must be the ones CI runs. Every command in
a code block must fall in one of these groups, so a new README command needs a check here.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from diffusion_core.data import FASHION_CLASSES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
HAS_FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists()
SETUP = {"python3 -m venv .venv", ". .venv/bin/activate"}          # shell set-up, nothing to check
# the browser build's lines: .ci/run installs web/ with the first; tests/web/test_web.py builds the site with
# web/build.py's build() and serves it as http.server does
WEB = {"npm ci --prefix web --ignore-scripts", "python web/build.py --out web/dist", "python -m http.server -d web/dist 8000"}
CLI = re.compile(r"^(?:python -m|torchrun \S+ -m) diffusion_core ([\w-]+)(.*)$")
QUICK = 'python -m pytest tests/core tests/training tests/test_readme.py -q -m "not slow" -n 2'   # the quick subset
FULL = "python -m pytest tests -q -n 2 --dist loadfile"                 # everything, on 2 workers: what CI runs


def code_blocks(lang: str, text: str = README) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def commands() -> list[str]:
    """Every command of the README's bash blocks: comments dropped, indented continuation lines joined,
    ``a && b`` split."""
    lines: list[str] = []
    for block in code_blocks("bash"):
        for line in block.splitlines():
            code = re.sub(r"\s+#.*$", "", line).rstrip()
            if line[:1].isspace() and lines:
                lines[-1] += " " + code.strip()
            elif code:
                lines.append(code)
    return [c.strip() for line in lines for c in line.split(" && ")]


def is_synopsis(cmd: str) -> bool:
    return any(ch in cmd for ch in "[|") or re.search(r"\s[A-Z]{2,}(\s|$)", cmd) is not None


def subparsers() -> dict[str, argparse.ArgumentParser]:
    from diffusion_core.__main__ import _parser
    from benchmarks.bench import build_parser
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {**sub.choices, "bench": build_parser()}     # bench parses its own options


def cli_commands(kind):
    out = []
    for c in commands():
        m = CLI.match(c)
        if m and is_synopsis(c) == (kind == "synopsis"):
            out.append((m.group(1), c))
    return out


def test_every_readme_command_is_checked():
    checked = {"pip install -r requirements.txt", "python app.py", "pip install -r requirements-dev.txt",
               FULL, QUICK}
    unknown = [c for c in commands() if c not in SETUP | WEB | checked and not CLI.match(c)
               and not c.startswith("sudo apt-get install -y ")]
    assert not unknown, f"README commands without a check in tests/test_readme.py: {unknown}"
    # the first screen's order: set-up, the app, then the tests
    order = [commands().index(c) for c in ("pip install -r requirements.txt", "python app.py",
                                           "pip install -r requirements-dev.txt", FULL)]
    assert order == sorted(order)


def test_install_and_test_lines_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pip install -q -r requirements-dev.txt" in ci
    assert "npm ci --prefix web --ignore-scripts" in ci                     # the README's web/ install line
    assert ci.strip().splitlines()[-1] == FULL                             # CI ends with the README's test line
    (apt,) = [c for c in commands() if c.startswith("sudo apt-get install -y ")]
    # CI installs $PKGS: the README's packages, plus nodejs and npm only where npm is missing (as the README's comment)
    assert re.search(r"apt-get install -y \$PKGS >", ci)
    ci_apt = re.search(r'^PKGS="([\w\- ]+)"$', ci, re.M).group(1)
    assert set(apt.split()[4:]) == set(ci_apt.split())
    dev = (ROOT / "requirements-dev.txt").read_text().split()
    assert dev[0:2] == ["-r", "requirements.txt"]                           # dev = runtime + test tools


@pytest.mark.slow
def test_the_quick_subset_is_the_maths_without_the_slow_tests(tmp_path):
    """The README's quick line, collected by pytest as written (a plugin lists what the marker leaves out): the core
    and training rooms and the README's own checks, never the app's or the web page's (each imports Gradio or
    drives a browser). It keeps the maths' test files whole but for the shipped models and the learning run, and
    leaves out the processes that train and every test that imports the app."""
    assert QUICK in commands()
    (tmp_path / "list_deselected.py").write_text(
        "def pytest_deselected(items):\n"
        "    for item in items:\n"
        "        print('DESELECTED', item.nodeid)\n"
        "def pytest_collection_finish(session):\n"
        "    import sys\n"
        "    print('IMPORTED', sorted({'gradio', 'diffusion_app'} & set(sys.modules)))\n")
    r = subprocess.run([sys.executable, *shlex.split(QUICK)[1:], "--collect-only", "-p", "no:cacheprovider",
                        "-p", "list_deselected"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)])))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.splitlines()
    slow = {line.split(" ", 1)[1] for line in lines if line.startswith("DESELECTED ")}
    quick = {line.strip() for line in lines if line.startswith("tests/") and "::" in line}

    def in_file(t: str, name: str) -> bool:            # t: tests/<room>/<name>.py::<test>
        return t.split("::")[0].endswith(f"/{name}.py")
    assert len(quick) > 400 and len(slow) > 50 and not quick & slow
    for name in ("test_schedules", "test_samplers", "test_unet", "test_denoisers", "test_shared",
                 "test_training_math", "test_python_version"):
        assert any(in_file(t, name) for t in quick), name
        left_out = {t for t in slow if in_file(t, name)}
        assert all("shipped" in t or "a_tiny_model_learns" in t for t in left_out), (name, left_out)
    assert not any(t.startswith(("tests/app/", "tests/web/")) for t in quick | slow)
    for name in ("test_cli", "test_hostile_round3"):
        assert not any(in_file(t, name) for t in quick), name
    for name in ("test_repeated_kill_9_at_random_points_then_resume", "test_ddp_two_processes_identical_weights",
                 "test_the_app_starts_with_requirements_txt_alone", "test_a_fractional_whole_number_in_a_link_is_"
                 "dropped_not_rounded[steps-2.5]"):
        assert any(t.endswith(f"::{name}") for t in slow), name
    assert "IMPORTED []" in lines, [line for line in lines if line.startswith("IMPORTED")]   # collected without the app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def scratch(tmp_path, make_model):
    """A folder laid out like a checkout for the README's relative paths: a tiny ``checkpoints/fashion`` (1
    channel, 32 px, Fashion-MNIST's classes, cosine schedule) and the real ``configs/``."""
    make_model(tmp_path / "checkpoints" / "fashion", unet=dict(num_labels=10, image_size=32),
               diffusion=dict(schedule="cosine", T=1000), label_names=FASHION_CLASSES)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    return tmp_path


def run(cmd: str, cwd: Path, *extra: str, timeout=300, **env) -> subprocess.CompletedProcess:
    args = shlex.split(cmd)
    args[0] = sys.executable if args[0] == "python" else args[0]
    return subprocess.run([*args, *extra], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **env))


@pytest.mark.slow
def test_the_app_starts_with_requirements_txt_alone(scratch):
    """``python app.py`` as written, from the checkout, with every package that only requirements-dev.txt adds
    made unimportable, serves its page."""
    runtime = {re.split(r"[<>=\s]", r)[0].lower() for r in (ROOT / "requirements.txt").read_text().split("\n") if r}
    dev_only = [r for r in (ROOT / "requirements-dev.txt").read_text().split()[2:]
                if r.lower() not in runtime and r != "gradio_client"]     # gradio_client comes with gradio
    assert "diffusers" in dev_only and "pytest" in dev_only
    site = scratch / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        f"for name in {[d.replace('-', '_') for d in dev_only]!r}:\n"
        "    sys.modules[name] = None      # importing it now fails\n")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(site), DIFFUSION_CHECKPOINTS=str(scratch / "checkpoints"),
               GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1")
    (cmd,) = [c for c in commands() if c == "python app.py"]
    proc = subprocess.Popen([sys.executable, *shlex.split(cmd)[1:]], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline, status = time.time() + 120, None
        while time.time() < deadline and proc.poll() is None and status != 200:
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status
            except OSError:
                time.sleep(0.5)
        assert status == 200, proc.stdout.read() if proc.poll() is not None else "no answer in 120 s"
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.slow
def test_sample_command_runs_as_written(scratch):
    ((_, cmd),) = [(s, c) for s, c in cli_commands("run") if s == "sample"]
    r = run(cmd, scratch, "--steps", "2")          # the only change: 2 sampling steps instead of 50
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (scratch / "outputs" / "fashion").iterdir())
    assert names == [f"{i:05d}.png" for i in range(16)] + ["grid.png"]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_FASHION, reason="dataset-fashion-mnist not installed")
def test_train_command_runs_as_written(scratch):
    """The README's training line on the real config and data, made tiny with ``--set`` (what the README says
    ``--set`` is for); it writes under the config's relative ``out_dir``."""
    (cmd,) = [c for s, c in cli_commands("synopsis") if s == "train" and c.startswith("python")]
    cmd = cmd.split(" [")[0]                        # the command without its optional parts
    tiny = ["unet.base_channels=8", "unet.channel_mults=[1,2]", "unet.num_res_blocks=1", "steps=2", "batch_size=4",
            "checkpoint_every=2", "sample_every=0", "log_every=1", "data.limit=64", "sample_steps=2", "sample_images=4"]
    r = run(cmd, scratch, *[a for s in tiny for a in ("--set", s)], "--no-progress")
    assert r.returncode == 0, r.stderr
    assert (scratch / "runs" / "fashion" / "model" / "model.safetensors").is_file()


def test_parsed_commands_parse():
    """Commands a test cannot afford to run (multi-process training, a classifier) parse with the real parser,
    and the config files they name exist."""
    parsers = subparsers()
    parsed = [(sub, c) for sub, c in cli_commands("run") if not (sub == "sample" and c.startswith("python"))]
    assert {sub for sub, _ in parsed} >= {"train", "classifier"}
    for sub, cmd in parsed:
        args = parsers[sub].parse_args(shlex.split(CLI.match(cmd).group(2)))
        if getattr(args, "config", None):
            assert (ROOT / args.config).is_file(), args.config


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in parser._actions for o in a.option_strings}


def test_synopsis_lines_name_real_options_and_choices():
    parsers = subparsers()
    seen = 0
    for sub, cmd in cli_commands("synopsis"):
        opts = _options(parsers[sub])
        for opt, value in re.findall(r"(--[\w-]+)(?:[ =]([^\s\[\]]+))?", cmd):
            assert opt in opts, f"README: `{sub} {opt}` is not an option of {sub}"
            choices = opts[opt].choices
            if choices and value and "|" in value:
                assert set(value.split("|")) == set(choices), f"README: {sub} {opt} {value} vs {sorted(choices)}"
            seen += 1
    assert seen > 20


def test_inline_commands_in_readme_and_docs_name_real_options():
    """Commands quoted inline in the README and docs/*.md (`python -m diffusion_core CMD ...`) use commands and
    options that exist."""
    parsers = subparsers()
    found = 0
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for m in re.finditer(r"`python -m diffusion_core (\w+)([^`]*)`", path.read_text()):
            sub, rest = m.groups()
            assert sub in parsers, f"{path.name}: no command {sub!r}"
            for opt in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest):
                assert opt in _options(parsers[sub]), f"{path.name}: `{sub} {opt}` is not an option"
            found += 1
    assert found >= 10


def test_scripts_quoted_in_the_readme_and_docs_exist():
    """Every script the README, docs/*.md and experiments/README.md name (`python scripts/X.py ...`, a path to a
    .py file of scripts/, experiments/ or docs/, or a file of docs/measurements/) is there: a script that moves
    (issue 35 gave the one-off measurements their own folder, experiments/) leaves no dead command behind."""
    pattern = re.compile(r"(?<![\w/.-])((?:scripts|experiments|docs/measurements)/[\w./-]+\.(?:py|json|txt))")
    found, missing = 0, []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "experiments" / "README.md"]:
        for m in pattern.finditer(path.read_text()):
            found += 1
            if not (ROOT / m.group(1)).is_file():
                missing.append(f"{path.relative_to(ROOT)}: {m.group(1)}")
    assert not missing, missing
    assert found >= 15


def test_the_sampler_tables_in_the_docs_are_the_measured_files():
    """docs/models.md's sampler and solver tables are what `scripts/sampler_table.py --table` prints from the
    metrics files (a model folder's headline runs and docs/measurements/M/), so moving or losing a file shows."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import sampler_table
    doc = (ROOT / "docs" / "models.md").read_text()
    main, solvers = sampler_table.table(), sampler_table.solver_table()
    assert len(main.splitlines()) > 20 and "| - |" not in solvers and "| -" not in solvers
    assert main in doc and solvers in doc


@pytest.mark.slow
def test_api_block_runs_and_prints_what_its_comments_say(scratch):
    (block,) = [b for b in code_blocks("python") if "from diffusion_core import" in b]
    (scratch / "api.py").write_text(block + "\nprint('SHAPE', tuple(images.shape), float(images.min()), "
                                            "float(images.max()))\n")
    r = run("python api.py", scratch)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    steps = [line for line in out if re.match(r"^\d+ \d+ -?\d+ \(4, 1, 32, 32\)$", line)]
    assert len(steps) == 20                                       # one line per DPM-Solver++ step
    shape = next(line for line in out if line.startswith("SHAPE")).split()
    assert " ".join(shape[1:5]) == "(4, 1, 32, 32)" and float(shape[5]) >= -1 and float(shape[6]) <= 1
    grid = next(line for line in out if line.startswith("tensor("))
    assert "tensor([999, 899, ..., 99, -1])" in block                # what the comment claims, and what it prints:
    assert re.sub(r"\s+", "", grid).startswith("tensor([999,899,") and re.sub(r"\s+", "", grid).endswith(",99,-1])")
