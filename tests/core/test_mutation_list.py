"""The planted-bug list (``scripts/mutation_check.py``) still points at the code: every bug's original text occurs
exactly once in its file, and its pytest selection names test files that exist. The checker refuses a stale entry
only when it is run (exit 2), which nobody does on every change: six entries had gone stale over three sessions
(app.py's SIGTERM grace, the Trajectory CSS, Upscale's pairing, the examples' lock, the running grid line) before
this test. Read statically: nothing is planted or run here."""
from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def mutants() -> list[tuple[str, str, str, str, str]]:
    tree = ast.parse((ROOT / "scripts" / "mutation_check.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["MUTANTS"]:
            return ast.literal_eval(node.value)
    raise AssertionError("scripts/mutation_check.py has no MUTANTS list")


MUTANTS = mutants()


def test_names_are_unique_and_each_bug_changes_something():
    names = [m[0] for m in MUTANTS]
    assert len(names) > 250 and len(set(names)) == len(names), [n for n in names if names.count(n) > 1]
    assert not [m[0] for m in MUTANTS if m[2] == m[3]]


@pytest.mark.parametrize("name, path, old, new, selection", MUTANTS, ids=[m[0][:60] for m in MUTANTS])
def test_each_bug_points_at_its_code_and_tests(name, path, old, new, selection):
    text = (ROOT / path).read_text()
    assert text.count(old) == 1, f"{name}: its original text occurs {text.count(old)} times in {path}"
    files = [a.split("::")[0] for a in shlex.split(selection) if not a.startswith("-") and a.endswith(".py")
             or "::" in a]
    assert files and all((ROOT / f).is_file() for f in files), (name, selection)
