"""The minimum Python version, checked statically: the code runs on Python 3.10 (Hugging Face ZeroGPU runs
3.10.13), while this machine and CI run 3.11, where a newer API would pass every other test.

Every .py file of the package, the app, the launcher, the benchmarks and the scripts is parsed with the 3.10
grammar (``ast.parse(feature_version=(3, 10))``, plus the two 3.11 forms that it lets through: ``a[*b]`` and
``*args: *Ts``), and searched for the standard library's names, keywords and regex syntax that appeared after 3.10
(from the "What's New" pages of 3.11-3.13). The list names what a 3.11 habit reaches for; it is not every API.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MIN_PYTHON = (3, 10)
SOURCES = sorted([*(ROOT / "diffusion_core").rglob("*.py"), *(ROOT / "diffusion_app").rglob("*.py"), ROOT / "app.py",
                  *(ROOT / "scripts").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")])

NEW_MODULES = {"tomllib": "3.11", "wsgiref.types": "3.11"}
# module -> {attribute: version}: `module.attr` and `from module import attr`
NEW_ATTRS = {
    "hashlib": {"file_digest": "3.11"},
    "datetime": {"UTC": "3.11"},
    "typing": {n: "3.11" for n in ("Self", "LiteralString", "Never", "assert_never", "assert_type", "reveal_type",
                                   "dataclass_transform", "Required", "NotRequired", "TypeVarTuple", "Unpack",
                                   "get_overloads", "clear_overloads")}
              | {"override": "3.12", "TypeAliasType": "3.12", "ReadOnly": "3.13", "TypeIs": "3.13",
                 "NoDefault": "3.13", "get_protocol_members": "3.13", "is_protocol": "3.13"},
    "enum": {n: "3.11" for n in ("StrEnum", "ReprEnum", "EnumCheck", "FlagBoundary", "verify", "member", "nonmember",
                                 "global_enum", "show_flag_values")},
    "asyncio": {"TaskGroup": "3.11", "timeout": "3.11", "timeout_at": "3.11", "Runner": "3.11"},
    "itertools": {"batched": "3.12"},
    "contextlib": {"chdir": "3.11"},
    "operator": {"call": "3.11"},
    "math": {"cbrt": "3.11", "exp2": "3.11", "sumprod": "3.12", "fma": "3.13"},
    "logging": {"getLevelNamesMapping": "3.11", "getHandlerByName": "3.12", "getHandlerNames": "3.12"},
    "re": {"NOFLAG": "3.11"},
    "sys": {"exception": "3.11", "monitoring": "3.12", "activate_stack_trampoline": "3.12", "_is_gil_enabled": "3.13"},
    "inspect": {"getmembers_static": "3.11", "markcoroutinefunction": "3.12"},
    "os": {"process_cpu_count": "3.13"},
    "os.path": {"splitroot": "3.12"},
    "threading": {"settrace_all_threads": "3.12", "setprofile_all_threads": "3.12"},
    "unittest": {"enterModuleContext": "3.11"},
    "sqlite3": {"Blob": "3.11"},
    "statistics": {"kde": "3.13"},
    "copy": {"replace": "3.13"},
}
NEW_BUILTINS = {"ExceptionGroup": "3.11", "BaseExceptionGroup": "3.11", "EncodingWarning": "3.10",
                "PythonFinalizationError": "3.13"}
# methods and keyword arguments whose names are not used by anything older (any receiver, any callee)
NEW_METHODS = {"add_note": "3.11 (BaseException.add_note)", "is_junction": "3.12 (Path.is_junction)",
               "with_segments": "3.12 (Path.with_segments)", "full_match": "3.13 (Path.full_match)",
               "from_uri": "3.13 (Path.from_uri)"}
NEW_KEYWORDS = {"onexc": "3.12 (shutil.rmtree)", "delete_on_close": "3.12 (tempfile.NamedTemporaryFile)",
                "walk_up": "3.12 (Path.relative_to)", "case_sensitive": "3.12 (Path.glob)"}
REGEX_CALLS = {"compile", "match", "fullmatch", "search", "findall", "finditer", "sub", "subn", "split"}


def _too_new(version: str) -> bool:
    return tuple(int(p) for p in version.split(" ")[0].split(".")) > MIN_PYTHON


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _regex_syntax(pattern: str) -> str | None:
    """Atomic groups and possessive quantifiers (3.11), found by 3.11's own regex parser."""
    try:
        from re import _parser
        from re import _constants as c
    except ImportError:                  # a Python older than 3.11 cannot have compiled them anyway
        return None
    try:
        parsed = _parser.parse(pattern)
    except re.error:
        return None
    found = []

    def walk(items):
        for op, av in items:
            if op in (c.ATOMIC_GROUP, c.POSSESSIVE_REPEAT):
                found.append(str(op))
            for sub in (av if isinstance(av, (list, tuple)) else [av]):
                if isinstance(sub, _parser.SubPattern):
                    walk(sub)
                elif isinstance(sub, (list, tuple)):
                    for s in sub:
                        if isinstance(s, _parser.SubPattern):
                            walk(s)
    walk(parsed)
    return found[0] if found else None


def newer_than_minimum(src: str, name: str = "<src>") -> list[str]:
    """What in ``src`` needs a Python newer than MIN_PYTHON, one line each ("file:line: what (version)")."""
    try:
        tree = ast.parse(src, name, feature_version=MIN_PYTHON)
    except SyntaxError as err:
        return [f"{name}:{err.lineno}: syntax: {err.msg}"]
    aliases: dict[str, str] = {}         # local name -> module it stands for
    problems = []

    def flag(node, what, version):
        if _too_new(version):
            problems.append(f"{name}:{node.lineno}: {what} ({version})")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in NEW_MODULES:
                    flag(node, f"import {a.name}", NEW_MODULES[a.name])
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in NEW_MODULES:
                flag(node, f"from {node.module} import", NEW_MODULES[node.module])
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in NEW_MODULES:
                    flag(node, f"from {node.module} import {a.name}", NEW_MODULES[full])
                elif a.name in NEW_ATTRS.get(node.module, {}):
                    flag(node, f"from {node.module} import {a.name}", NEW_ATTRS[node.module][a.name])
                if full in NEW_ATTRS:
                    aliases[a.asname or a.name] = full
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = _dotted(node.value)
            module = aliases.get(base.split(".")[0], None) if base else None
            if module is not None:
                module = module + base[len(base.split(".")[0]):]
                if node.attr in NEW_ATTRS.get(module, {}):
                    flag(node, f"{module}.{node.attr}", NEW_ATTRS[module][node.attr])
            if node.attr in NEW_METHODS:
                flag(node, f".{node.attr}", NEW_METHODS[node.attr])
        elif isinstance(node, ast.Name) and node.id in NEW_BUILTINS and isinstance(node.ctx, ast.Load):
            flag(node, node.id, NEW_BUILTINS[node.id])
        elif isinstance(node, ast.Subscript):      # a[*b]: the 3.10 grammar check lets it through
            items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            if any(isinstance(e, ast.Starred) for e in items):
                flag(node, "star unpacking in a subscript", "3.11")
        elif isinstance(node, ast.arguments) and node.vararg is not None and \
                isinstance(node.vararg.annotation, ast.Starred):
            flag(node.vararg, "*args: *Ts", "3.11")
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in NEW_KEYWORDS:
                    flag(node, f"keyword {kw.arg}=", NEW_KEYWORDS[kw.arg])
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("to_bytes", "from_bytes") and \
                    len(node.args) < 2 and "byteorder" not in {k.arg for k in node.keywords} and \
                    not any(isinstance(a, ast.Starred) for a in node.args) and not any(k.arg is None for k in node.keywords):
                flag(node, f"int.{func.attr} without a byteorder (defaults added)", "3.11")
            if isinstance(func, ast.Attribute) and func.attr in REGEX_CALLS and _dotted(func.value) == "re" and \
                    node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                syntax = _regex_syntax(node.args[0].value)
                if syntax:
                    flag(node, f"regex {syntax}", "3.11")
    return problems


def test_the_files_checked_are_the_projects():
    names = {p.relative_to(ROOT).as_posix() for p in SOURCES}
    assert {"app.py", "diffusion_core/__init__.py", "diffusion_app/__init__.py", "benchmarks/bench.py",
            "scripts/mutation_check.py", "diffusion_core/evaluation/evaluate.py"} <= names
    assert len(names) > 50


def test_every_file_runs_on_the_minimum_python():
    problems = [p for path in SOURCES
                for p in newer_than_minimum(path.read_text(), path.relative_to(ROOT).as_posix())]
    assert not problems, f"needs a Python newer than {MIN_PYTHON[0]}.{MIN_PYTHON[1]}:\n" + "\n".join(problems)


@pytest.mark.parametrize("src, found", [
    ("import hashlib\nwith open(p, 'rb') as f:\n    h = hashlib.file_digest(f, 'sha256')\n", "hashlib.file_digest"),
    ("from hashlib import file_digest\n", "from hashlib import file_digest"),
    ("import datetime\nnow = datetime.datetime.now(datetime.UTC)\n", "datetime.UTC"),
    ("from datetime import UTC\n", "from datetime import UTC"),
    ("import tomllib\n", "import tomllib"),
    ("from typing import Self\n", "from typing import Self"),
    ("import typing as t\nx: t.Self\n", "typing.Self"),
    ("raise ExceptionGroup('x', [ValueError()])\n", "ExceptionGroup"),
    ("try:\n    pass\nexcept* ValueError:\n    pass\n", "Exception groups"),
    ("import itertools\nitertools.batched(x, 2)\n", "itertools.batched"),
    ("from enum import StrEnum\n", "from enum import StrEnum"),
    ("import asyncio\nasync def f():\n    async with asyncio.timeout(1):\n        pass\n", "asyncio.timeout"),
    ("import shutil\nshutil.rmtree(p, onexc=f)\n", "keyword onexc="),
    ("n.to_bytes()\n", "int.to_bytes"),
    ("import re\nre.compile(r'(?>a)b')\n", "regex ATOMIC_GROUP"),
    ("import re\nre.search('a++', s)\n", "regex POSSESSIVE_REPEAT"),
    ("x = a[*b]\n", "star unpacking"),
    ("def f(*args: *Ts): pass\n", "*args: *Ts"),
    ("err.add_note('x')\n", ".add_note"),
])
def test_the_check_finds_each_kind_of_newer_api(src, found):
    problems = newer_than_minimum(src)
    assert len(problems) == 1 and found in problems[0], problems


@pytest.mark.parametrize("src", [
    "import hashlib\nh = hashlib.sha256()\n", "import datetime\nz = datetime.timezone.utc\n",
    "match x:\n    case 1:\n        pass\n", "from dataclasses import dataclass\n@dataclass(slots=True, kw_only=True)\n"
    "class A:\n    x: int | None = None\n", "n.to_bytes(4, 'big')\n", "import re\nre.compile(r'\\++(?:a)')\n",
    "import os\nfor _ in os.walk('.'): pass\n", "zip(a, b, strict=True)\n", "from typing import TypeAlias\n",
])
def test_what_310_has_passes(src):
    assert newer_than_minimum(src) == []
