"""One reader of each of a model folder's facts (issue 35, structure): its typed config.json (read_config), which
the app's catalogue reads, and its training data source (training_source), which the app's choice of low-res
examples and the super-resolution evaluator's held-out data both go through."""
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


def test_read_config_types_each_kind_with_the_defaults_filled_in(tmp_path):
    """The typed reader of config.json (issue 35: the app compared raw dicts, so a folder that wrote a default out
    and one that left it to the default read as different models): each kind's typed config, a key left out read
    as its default, the values written read as written."""
    from diffusion_core import DiffusionConfig, ModelConfig, read_config
    assert [read_config(ROOT / "checkpoints" / n).kind for n in ("fashion", "fashion-experts", "pose-cascade")] \
        == ["model", "ensemble", "cascade"]
    raw = json.loads((ROOT / "checkpoints" / "fashion" / "config.json").read_text())
    cfg = read_config(ROOT / "checkpoints" / "fashion")
    assert isinstance(cfg, ModelConfig) and list(cfg.label_names) == raw["label_names"]
    assert cfg.unet.base_channels == raw["unet"]["base_channels"]
    assert cfg.diffusion.schedule == raw["diffusion"]["schedule"]
    (tmp_path / "config.json").write_text('{"unet": {"base_channels": 8}}')
    assert read_config(tmp_path).diffusion == DiffusionConfig() and read_config(tmp_path).unet.base_channels == 8
    assert read_config(ROOT / "checkpoints" / "pose-cascade").stages[0].path == "../pose"


@pytest.mark.parametrize("text, says", [('{"unet": {"base_channels": -1}}', "base_channels"),
                                        ('{"kind": "painting"}', "unknown kind"), ("[]", "expected a JSON object"),
                                        ('{"kind": "cascade", "stages": []}', "2 to 4 stages")])
def test_read_config_refuses_what_loading_refuses_naming_the_file(tmp_path, text, says):
    from diffusion_core import read_config
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=says) as e:
        read_config(tmp_path)
    assert "config.json" in str(e.value)
