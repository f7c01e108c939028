"""One reader of a model folder's training data source (diffusion_core.training_source): the app's choice of
low-res examples and the super-resolution evaluator's held-out data both go through it (issue 35, structure)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import diffusion_core
from diffusion_core import CheckpointError, training_source
from diffusion_core.evaluation.super_resolution import _held_out_high_res

ROOT = Path(__file__).resolve().parents[2]


def data_source(folder: Path) -> str:
    """The app's reader, imported here: the tests that call it are slow (Gradio's import), the others quick."""
    from diffusion_app.generate.presets import data_source as app_reader
    return app_reader(folder)


def folder_with(tmp_path: Path, text: str | None) -> Path:
    """A model folder whose train_config.json holds ``text`` (no file for None)."""
    if text is not None:
        (tmp_path / "train_config.json").write_text(text)
    return tmp_path


def test_training_source_is_exported_from_the_package():
    assert "training_source" in diffusion_core.__all__ and diffusion_core.training_source is training_source


@pytest.mark.parametrize("folder, source", [("pose-sr", "pose"), ("pose-sr128", "pose"), ("emoji-sr", "emoji"),
                                            ("fashion", "fashion")])
def test_the_shipped_models_sources(folder, source):
    assert training_source(ROOT / "checkpoints" / folder) == source


@pytest.mark.slow      # the app's reader too
@pytest.mark.parametrize("text", [None, "{}", '{"data": {}}', '{"data": {"source": null}}'])
def test_no_file_or_no_source_is_none(tmp_path, text):
    folder = folder_with(tmp_path, text)
    assert training_source(folder) is None
    assert data_source(folder) == ""                  # the app: every bundled low-res input


@pytest.mark.slow
@pytest.mark.parametrize("text, says", [("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object"),
                                        ('{"data": "pose"}', "'data' must be an object"),
                                        ('{"data": {"source": 3}}', "'data.source' must be a string")])
def test_a_broken_train_config_is_refused_with_its_file_named(tmp_path, text, says):
    folder = folder_with(tmp_path, text)
    with pytest.raises(CheckpointError, match=says) as e:
        training_source(folder)
    assert "train_config.json" in str(e.value)
    assert data_source(folder) == ""                  # the page tolerates it ...
    with pytest.raises(CheckpointError):              # ... the evaluator does not guess its held-out data
        _held_out_high_res(folder, 2, 32, seed=0)


@pytest.mark.slow
def test_the_app_and_the_evaluator_read_the_same_source(tmp_path):
    folder = folder_with(tmp_path, json.dumps({"data": {"source": "pose", "image_size": 64}}))
    assert training_source(folder) == data_source(folder) == "pose"
    images, what = _held_out_high_res(folder, 2, 32, seed=0)
    assert images.shape == (2, 3, 32, 32) and "procedural figures" in what
