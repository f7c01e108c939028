"""The package's public API: ``diffusion_core/__init__.py`` imports its names lazily (``__getattr__``, so that
``import diffusion_core`` does not import torch) and lists them a second time in an ``if TYPE_CHECKING:`` block, for
tools that cannot see through ``__getattr__``. These tests keep the two lists equal, so they cannot drift."""
import ast
import importlib
from pathlib import Path

import diffusion_core

INIT = Path(diffusion_core.__file__)


def _type_checking_imports() -> dict[str, str]:
    """name -> module (relative to the package) of every import in ``__init__``'s ``if TYPE_CHECKING:`` block."""
    tree = ast.parse(INIT.read_text())
    blocks = [node for node in tree.body if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
              and node.test.id == "TYPE_CHECKING"]
    assert len(blocks) == 1, "diffusion_core/__init__.py needs one `if TYPE_CHECKING:` block at module level"
    out = {}
    for node in blocks[0].body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1, ast.unparse(node)
        for alias in node.names:
            assert alias.asname is None and alias.name not in out, ast.unparse(node)
            out[alias.name] = node.module
    return out


def test_every_public_name_imports_from_the_module_that_defines_it():
    assert diffusion_core.__all__, "empty public API"
    for name in diffusion_core.__all__:
        value = getattr(diffusion_core, name)
        module = diffusion_core._MODULE_OF[name]
        assert value == getattr(importlib.import_module(f"diffusion_core.{module}"), name), name
        assert name in dir(diffusion_core), name


def test_a_name_its_module_makes_when_asked_stays_live():
    """``options.SAMPLERS`` is the registry's names when asked; ``diffusion_core.SAMPLERS`` must not keep the first
    answer (a sampler registered later was missing from it)."""
    from dataclasses import replace
    from diffusion_core import register_sampler, sampler_info, unregister_sampler
    assert "ddim" in diffusion_core.SAMPLERS and "api-probe" not in diffusion_core.SAMPLERS
    register_sampler(replace(sampler_info("ddim"), name="api-probe"))
    try:
        assert "api-probe" in diffusion_core.SAMPLERS
    finally:
        unregister_sampler("api-probe")
    assert "api-probe" not in diffusion_core.SAMPLERS


def test_the_type_checking_block_names_exactly_the_public_api():
    seen = _type_checking_imports()
    assert sorted(seen) == diffusion_core.__all__, (
        f"only in TYPE_CHECKING: {sorted(set(seen) - set(diffusion_core.__all__))}; "
        f"only in _EXPORTS: {sorted(set(diffusion_core.__all__) - set(seen))}")
    assert seen == diffusion_core._MODULE_OF      # and each from the module the lazy import reads it from


def test_an_unknown_name_is_an_attribute_error():
    try:
        diffusion_core.no_such_name
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("diffusion_core.no_such_name did not raise")

