"""Issue 37, hostile input round three: each case answered with one line naming the file and field (never a
traceback), the exact message asserted. The items' numbers are the issue's."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from cli_process import CliProcess
from diffusion_core import CheckpointError, load
from diffusion_core.__main__ import main as cli
from diffusion_core.config import ConfigError

from app_fixtures import build_checkpoints, client, free_port, launch_app, server, start_app_process  # noqa: F401
from test_train import TINY, write_idx

ROOT = Path(__file__).resolve().parents[2]


def one_line_error(capsys, argv) -> str:
    """Run the command line in this process: it must exit 2 with one line on stderr, which is returned."""
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def edit_config(folder: Path, **sections) -> Path:
    """Overwrite fields of ``folder``'s config.json (a dict value updates that section)."""
    path = folder / "config.json"
    data = json.loads(path.read_text())
    for k, v in sections.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) else v
    path.write_text(json.dumps(data))
    return path


# ---- 1. deep JSON in training configs ---------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a": ' * 3000 + "1" + "}" * 3000,
                                  json.dumps({"unet": {"channel_mults": json.loads("[" * 20 + "]" * 20)}})])
def test_deep_training_config_is_one_line(tmp_path, capsys, text):
    path = tmp_path / "deep.json"
    path.write_text(text)
    err = one_line_error(capsys, ["train", "--config", str(path)])
    assert err == f"error: {path}: JSON nested too deeply (more than 16 levels)"


def test_deep_set_value_is_one_line(capsys):
    err = one_line_error(capsys, ["train", "--set", "unet.channel_mults=" + "[" * 20_000 + "]" * 20_000])
    assert err == "error: --set unet.channel_mults: JSON nested too deeply (more than 16 levels)"
    err = one_line_error(capsys, ["train", "--set", "a." * 5000 + "b=1", "--set", "steps=2"])
    assert err == "error: --set " + ("a." * 30) + ": a key of 5001 parts; config keys have at most 3"


# ---- 2. bad linear betas, 3. negative super-resolution sizes: refused at load with file and field ----------------
@pytest.mark.parametrize("section, field_msg", [
    (dict(diffusion=dict(schedule="linear", beta_1=0.03, beta_T=0.02)),
     "diffusion.beta_1 out of range: a linear schedule needs 0 < beta_1 <= beta_T < 1, got beta_1 = 0.03, "
     "beta_T = 0.02"),
    (dict(diffusion=dict(schedule="linear", beta_1=1e-4, beta_T=1.5)),
     "diffusion.beta_T out of range: a linear schedule needs 0 < beta_1 <= beta_T < 1, got beta_1 = 0.0001, "
     "beta_T = 1.5"),
    (dict(task="super_resolution", low_res=-8), "low_res must be in [0, 1024], got -8"),
    (dict(task="super_resolution", low_res=4, high_res=-16), "high_res must be in [0, 1024], got -16"),
    (dict(task="super_resolution", low_res=8, high_res=8),
     "low_res must be in [1, 7] for a super-resolution model (it enlarges low_res px to high_res = 8 px), got 8"),
])
def test_bad_schedule_and_sizes_are_refused_at_load(tmp_path, make_model, capsys, section, field_msg):
    folder = tmp_path / "m"
    make_model(folder)
    path = edit_config(folder, **section)
    with pytest.raises(CheckpointError) as err:
        load(folder)
    assert str(err.value) == f"{path}: {field_msg}"
    t0 = time.time()       # the command line: the same line, before any backend is measured (it took 76-118 s)
    assert one_line_error(capsys, ["sample", "--model", str(folder), "--backend", "auto", "--out",
                                   str(tmp_path / "o")]) == f"error: {path}: {field_msg}"
    assert time.time() - t0 < 20


def test_bad_betas_are_listed_broken_in_the_app(tmp_path, make_model):
    import diffusion_app as app
    make_model(tmp_path / "ckpt" / "bad")
    edit_config(tmp_path / "ckpt" / "bad", diffusion=dict(schedule="linear", beta_1=0.5, beta_T=0.1))
    state = app.DiffusionApp(str(tmp_path / "ckpt"))
    md, _ = state.card_update("bad")
    assert md.startswith("### bad (broken)") and "bad/config.json: diffusion.beta_1 out of range" in md, md


def test_bad_betas_in_generate_are_one_line(client, server):  # noqa: F811
    """Item 2 as a visitor meets it: /generate on the folder answers with the reason in one line (it gave Gradio's
    generic error: a ValueError raised in _new_run, outside the handler's try)."""
    from gradio_client.exceptions import AppError
    shutil.copytree(server[1] / "tiny", server[1] / "bad-betas")
    try:
        edit_config(server[1] / "bad-betas", diffusion=dict(schedule="linear", beta_1=0.5, beta_T=0.1))
        with pytest.raises(AppError) as err:
            client.submit(model="bad-betas", steps=2, batch_size=1, seed=3, api_name="/generate").result()
        assert str(err.value) == ("bad-betas/config.json: diffusion.beta_1 out of range: a linear schedule needs "
                                  "0 < beta_1 <= beta_T < 1, got beta_1 = 0.5, beta_T = 0.1")
    finally:
        shutil.rmtree(server[1] / "bad-betas")


# ---- 4. convert -----------------------------------------------------------------------------------------------
class Payload:
    """A pickle that would create a file when unpickled without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def convert_case(tmp_path, make_model):
    cfg, net = make_model(tmp_path / "m")
    return tmp_path, tmp_path / "m" / "config.json", net


def test_convert_refuses_a_pickle_payload_without_running_it(convert_case, capsys):
    tmp_path, cfg_path, _ = convert_case
    src, marker = tmp_path / "evil.pt", tmp_path / "ran"
    src.write_bytes(pickle.dumps({"w": Payload(marker)}))
    err = one_line_error(capsys, ["convert", str(src), "--config", str(cfg_path), "--out", str(tmp_path / "o")])
    # the detail is torch's own line (torch 2.x: "Unsupported operand 149", or "Unsupported global: ...")
    assert err.startswith(f"error: {src}: refused, nothing in it was run: it holds Python objects other than "
                          "tensors (Unsupported ") and err.endswith(")"), err
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_convert_refuses_a_text_file_and_wrong_keys(convert_case, capsys):
    tmp_path, cfg_path, net = convert_case
    text = tmp_path / "notes.pt"
    text.write_text("hello, not a checkpoint\n")
    err = one_line_error(capsys, ["convert", str(text), "--config", str(cfg_path), "--out", str(tmp_path / "o")])
    assert err == f"error: {text}: not a PyTorch checkpoint (torch.load: KeyError: 101)"
    wrong = tmp_path / "wrong.pt"
    sd = net.state_dict()
    torch.save({"module." + k: v for k, v in sd.items()}, wrong)
    err = one_line_error(capsys, ["convert", str(wrong), "--config", str(cfg_path), "--out", str(tmp_path / "o")])
    first = sorted(sd)[:3]
    assert err == (f"error: {wrong}: weights do not match {cfg_path} (missing: {', '.join(first)}; unexpected: "
                   f"{', '.join('module.' + k for k in first)})")
    good = tmp_path / "good.pt"                 # and the right file converts
    torch.save({"state_dict": sd}, good)
    assert cli(["convert", str(good), "--config", str(cfg_path), "--out", str(tmp_path / "o")]) == 0
    assert load(tmp_path / "o").kind == "model"


# ---- 5. misleading one-liners: the option named, before any work ------------------------------------------------
def test_per_pick_and_epochs_name_their_option(capsys):
    assert one_line_error(capsys, ["evaluate", "--model", "checkpoints/emoji", "--picks", "--per-pick", "0"]) == \
        "error: --per-pick must be in [1, 64], got 0"
    assert one_line_error(capsys, ["classifier", "--out", "/nonexistent/c", "--epochs", "0"]) == \
        "error: --epochs must be in [1, 1000], got 0"


# ---- 6. a 250-character model folder name -------------------------------------------------------------------------
def test_long_names_fit_the_file_system(tmp_path):
    from PIL import Image

    from diffusion_app.render import fitting_path, save_png
    name = "m" * 250
    path = fitting_path(tmp_path / f"{name}-12345.png")
    assert len(path.name.encode()) == 255 and path.suffix == ".png" and path.name.startswith("m" * 200)
    assert fitting_path(tmp_path / f"{name}-12346.png") != path          # distinct names stay distinct
    assert fitting_path(tmp_path / "short-1.png") == tmp_path / "short-1.png"
    saved = save_png(Image.new("L", (4, 4)), tmp_path / f"{name}-7.png", {"seed": 7})
    assert Path(saved).is_file()


def test_generate_with_a_250_character_model_name(client, server):  # noqa: F811
    name = "x" * 250
    shutil.copytree(server[1] / "tiny", server[1] / name)
    try:
        job = client.submit(model=name, steps=1, batch_size=1, seed=3, make_gif=True, api_name="/generate")
        job.result()
        assert len(job.outputs()[-1][2]) == 1 and job.outputs()[-1][3]        # the gallery and the GIF
    finally:
        shutil.rmtree(server[1] / name)


# ---- 15. an API call with too few inputs ------------------------------------------------------------------------
def test_too_few_inputs_is_one_line(server):  # noqa: F811
    """Gradio checks the count before the handler runs and hid its ValueError ({"error": null}, a traceback in the
    log); diffusion_app.inputs.check_input_count, which layout.build_demo installs, says it in one line. (The
    session's app: the request is refused before any handler runs, so it changes nothing there.)"""
    from gradio_client import Client

    url = server[0]
    params = Client(url, verbose=False).view_api(print_info=False, return_format="dict")
    n = len(params["named_endpoints"]["/generate"]["parameters"])
    data = json.dumps({"data": ["tiny"] + [None] * (n - 2)}).encode()
    req = urllib.request.Request(f"{url}gradio_api/call/generate", data=data,
                                 headers={"Content-Type": "application/json"})
    event = json.loads(urllib.request.urlopen(req, timeout=30).read())["event_id"]
    text = urllib.request.urlopen(f"{url}gradio_api/call/generate/{event}", timeout=60).read().decode()
    assert "event: error" in text and f"/generate takes 19 inputs, got {n - 1}: send every input, in order " \
        "(Model, Sampler, Steps," in text, text
    assert '"error": null' not in text


# ---- 7. a models folder outside the working and temp folders -----------------------------------------------------
def test_samples_png_outside_the_served_folders(tmp_path, monkeypatch):
    """The card's samples.png lies outside the working and temp folders (here the temp folder is moved away
    from the checkpoints): Gradio refused to serve it, failing every such card; the app serves a copy."""
    import tempfile

    from gradio_client import Client
    ckpt = build_checkpoints(tmp_path / "ckpt")
    elsewhere = tmp_path / "systemp"
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))
    demo, url = launch_app(ckpt)
    try:
        md, img = Client(url, verbose=False).predict(model="tiny", api_name="/model_card")
        assert "tiny class-conditional" in md and img and Path(img).is_file()
    finally:
        demo.close()


# ---- 8. work per step, not only parameters -----------------------------------------------------------------------
def test_work_per_step_is_bounded_before_sampling(tmp_path, make_model):
    folder = tmp_path / "attn1024"
    make_model(folder)
    path = edit_config(folder, unet=dict(image_size=1024, attention_resolutions=[1024], base_channels=8,
                                         channel_mults=[1], num_res_blocks=1, num_heads=1))
    with pytest.raises(CheckpointError) as err:
        load(folder)
    assert str(err.value) == (f"{path}: unet: one network pass at 1024 px needs an estimated 1.4e+14 FLOPs (limit "
                              "1e+12) and 4.1e+03 GiB of activations (limit 4 GiB) per image")
    path = edit_config(folder, unet=dict(attention_resolutions=[], base_channels=64, channel_mults=[1, 2, 4, 8],
                                         num_res_blocks=2, num_heads=4))            # 58 M parameters at 1,024 px
    with pytest.raises(CheckpointError) as err:
        load(folder)
    assert str(err.value) == (f"{path}: unet: one network pass at 1024 px needs an estimated 6.1e+12 FLOPs (limit "
                              "1e+12) and 5.42 GiB of activations (limit 4 GiB) per image")


@pytest.mark.parametrize("unet, side", [(dict(), 8), (dict(attention_resolutions=(8, 4), num_heads=2), 16),
                                        (dict(cond_channels=3, in_channels=3, out_channels=3), 24)])
def test_network_cost_matches_the_flop_counter(unet, side):
    """unet.network_cost's FLOPs (from the config alone) against torch's count of one pass on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    from conftest import TINY_UNET
    from diffusion_core import UNetConfig
    from diffusion_core.conditioning import Condition
    from diffusion_core.unet import UNet, network_cost
    cfg = UNetConfig(**{**TINY_UNET, **unet})
    with torch.device("meta"):
        net = UNet(cfg)
        x, t = torch.zeros(1, cfg.in_channels, side, side), torch.zeros(1, dtype=torch.long)
        cond = Condition(image=torch.zeros(1, cfg.cond_channels, side, side)) if cfg.cond_channels else None
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x, t, cond)
    flops, nbytes = network_cost(cfg, side)
    assert flops == pytest.approx(counter.get_total_flops(), rel=0.01)
    assert nbytes > 4 * cfg.base_channels * side * side



@pytest.fixture
def no_network_calls(monkeypatch):
    """Fails the test at any U-Net forward pass: a refusal must come before the first network call."""
    from diffusion_core.unet import UNet

    def forward(*_):
        raise AssertionError("the network was called before the request's work was checked")
    monkeypatch.setattr(UNet, "forward", forward)


def _work_case(tmp_path, make_model, case):
    """A tiny base model (8 px, 1 channel; a wider one, 32 channels over 4 levels without attention, for "guided"),
    or 2x super-resolution model (4 -> 8 px), or a cascade of the base and two of them (8 -> 16 -> 32 px), and the
    request that makes its work larger than its config's."""
    make_model(tmp_path / "base", unet=dict(base_channels=32, channel_mults=(1, 2, 2, 2), attention_resolutions=())
               if case == "guided" else None)
    make_model(tmp_path / "sr", task="super_resolution", low_res=4,
               unet=dict(cond_channels=1, aug_level_embedding=True))
    if case == "cascade":
        (tmp_path / "casc").mkdir()
        (tmp_path / "casc" / "config.json").write_text(json.dumps({"version": 1, "kind": "cascade", "stages": [
            {"path": "../base"}, {"path": "../sr"}, {"path": "../sr"}]}))
    folder = tmp_path / ("base" if case == "guided" else "sr" if case.startswith("sr") else "casc")
    request = {"sr_input": dict(n=1, low_res=torch.zeros(1, 1, 512, 512)),          # a 1,024 px image
               "sr_batch": dict(n=64, low_res=torch.zeros(1, 1, 128, 128)),         # 64 images of 256 px
               "guided": dict(n=64, guidance=3.0, init_image=torch.zeros(1, 512, 512)),   # img2img at 512 px
               "cascade": dict(n=2, low_res=torch.zeros(2, 1, 128, 128))}[case]     # 256, then 512 px
    return folder, request


@pytest.mark.parametrize("case, message", [
    ("sr_input", "sr: a request of 1 image: one network pass at 1024 px needs an estimated 1.8e+13 FLOPs (limit "
                 "1e+12) and 256 GiB of activations (limit 4 GiB) per image"),
    ("sr_batch", "sr: a request of 64 images: 64 network passes per step at 256 px need an estimated 8.07 GiB of "
                 "activations in one network call of 8 passes (limit 8 GiB)"),     # its chunk: 8 rows, set at 8 px
    ("guided", "base: a request of 64 guided images (2 network passes each): 128 network passes per step at 512 px "
               "need an estimated 1.7e+13 FLOPs (limit 1e+13 per step)"),
    ("cascade", "casc/../sr: a request of 2 images: one network pass at 512 px needs an estimated 1.1e+12 FLOPs "
                "(limit 1e+12) and 16 GiB of activations (limit 4 GiB) per image"),
])
def test_a_requests_work_is_bounded_before_any_network_call(tmp_path, make_model, no_network_calls, case, message):
    """Item 8: the work a request makes, not only its config's: a super-resolution input (its size times the
    factor), a batch, guidance's second pass, an img2img input, a cascade's stages on a large input. Refused when
    the run is asked for (``stream`` itself, before its first step), not at a step; a cascade's last stage before
    its first runs."""
    folder, request = _work_case(tmp_path, make_model, case)
    pipe = load(folder)
    with pytest.raises(ValueError) as err:
        pipe.stream(**request)
    assert str(err.value) == f"{tmp_path}/{message}"


def test_a_cascade_stages_work_is_checked_at_its_size(tmp_path, make_model):
    """Item 8 at load: a super-resolution stage's own config is checked at its high_res (8 px), but a cascade runs it
    on what the stage before makes (a 256 px base: 512 px)."""
    make_model(tmp_path / "base", unet=dict(image_size=256))
    make_model(tmp_path / "sr", task="super_resolution", low_res=4,
               unet=dict(cond_channels=1, aug_level_embedding=True))
    path = tmp_path / "casc" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"version": 1, "kind": "cascade", "stages": [{"path": "../base"}, {"path": "../sr"}]}))
    with pytest.raises(CheckpointError) as err:
        load(tmp_path / "casc")
    assert str(err.value) == (f"{path}: stage 1 (../sr) makes 512 px images: one network pass at 512 px needs an "
                              "estimated 1.1e+12 FLOPs (limit 1e+12) and 16 GiB of activations (limit 4 GiB) per "
                              "image")

# ---- 9. cascade / ensemble commands: compatible parts, never a model's config -----------------------------------
def test_cascade_refuses_incompatible_channels_and_a_model_as_out(tmp_path, make_model, capsys):
    make_model(tmp_path / "base")                    # 1 channel
    make_model(tmp_path / "sr", task="super_resolution", low_res=4,
               unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True))
    out = tmp_path / "casc"
    err = one_line_error(capsys, ["cascade", "--out", str(out), "--stage", "../base", "--stage", "../sr"])
    assert err == (f"error: {out}/config.json: stage 1 (../sr) upscales 3-channel images into 3-channel ones, but "
                   "stage 0 (../base) makes 1-channel images")
    assert not out.exists()
    before = (tmp_path / "base" / "config.json").read_bytes()
    err = one_line_error(capsys, ["cascade", "--out", str(tmp_path / "base"), "--stage", ".", "--stage", "../sr"])
    assert err == (f"error: --out {tmp_path / 'base'} is a model folder (it holds model.safetensors); a cascade goes "
                   "in a folder of its own")
    assert (tmp_path / "base" / "config.json").read_bytes() == before


def test_ensemble_refuses_experts_that_differ(tmp_path, make_model, capsys):
    make_model(tmp_path / "ens" / "e0", diffusion=dict(t_range=(0, 40)))
    make_model(tmp_path / "ens" / "e1", diffusion=dict(t_range=(40, 100)), unet=dict(in_channels=3, out_channels=3))
    err = one_line_error(capsys, ["ensemble", "--out", str(tmp_path / "ens"), "--expert", "e0:0:40",
                                  "--expert", "e1:40:100"])
    assert err == f"error: {tmp_path / 'ens'}/config.json: expert e1 has unet.in_channels = 3, expert e0 has 1"
    before = (tmp_path / "ens" / "e0" / "config.json").read_bytes()      # --out a model folder, as for cascade
    err = one_line_error(capsys, ["ensemble", "--out", str(tmp_path / "ens" / "e0"), "--expert", "../e1:0:100"])
    assert err == (f"error: --out {tmp_path / 'ens' / 'e0'} is a model folder (it holds model.safetensors); an "
                   "ensemble goes in a folder of its own")
    assert (tmp_path / "ens" / "e0" / "config.json").read_bytes() == before



def test_hand_written_manifests_are_checked_at_load(tmp_path, make_model, capsys):
    """Item 9: a manifest written by hand (not by the commands) is held to the same checks when it is loaded:
    refused with one line naming the file and the mismatch, not a traceback at sample time."""
    make_model(tmp_path / "base")                    # 1 channel
    make_model(tmp_path / "sr", task="super_resolution", low_res=4,
               unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True))
    path = tmp_path / "casc" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"version": 1, "kind": "cascade", "stages": [{"path": "../base"}, {"path": "../sr"}]}))
    message = (f"{path}: stage 1 (../sr) upscales 3-channel images into 3-channel ones, but stage 0 (../base) makes "
               "1-channel images")
    with pytest.raises(CheckpointError) as err:
        load(tmp_path / "casc")
    assert str(err.value) == message
    assert one_line_error(capsys, ["sample", "--model", str(path.parent), "--n", "1", "--steps", "2",
                                   "--out", str(tmp_path / "o")]) == f"error: {message}"
    make_model(tmp_path / "ens" / "e0", diffusion=dict(t_range=(0, 40)))
    make_model(tmp_path / "ens" / "e1", diffusion=dict(t_range=(40, 100)), unet=dict(in_channels=3, out_channels=3))
    path = tmp_path / "ens" / "config.json"
    path.write_text(json.dumps({"version": 1, "kind": "ensemble", "T": 100, "experts": [
        {"path": "e0", "t_lo": 0, "t_hi": 40}, {"path": "e1", "t_lo": 40, "t_hi": 100}]}))
    with pytest.raises(CheckpointError) as err:
        load(tmp_path / "ens")
    assert str(err.value) == f"{path}: expert e1 has unet.in_channels = 3, expert e0 has 1"

# ---- 10. manifests name folders relative to themselves ----------------------------------------------------------
def test_manifest_paths_must_be_relative(tmp_path, make_model, capsys):
    make_model(tmp_path / "elsewhere" / "e0", diffusion=dict(t_range=(0, 100)))
    path = tmp_path / "ens" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"version": 1, "kind": "ensemble", "T": 100, "experts": [
        {"path": str(tmp_path / "elsewhere" / "e0"), "t_lo": 0, "t_hi": 100}]}))
    with pytest.raises(CheckpointError) as err:
        load(tmp_path / "ens")
    assert str(err.value) == (f"{path}: expert path '{tmp_path / 'elsewhere' / 'e0'}' must be relative to the "
                              "manifest's folder, not absolute")
    err = one_line_error(capsys, ["cascade", "--out", str(tmp_path / "c"), "--stage", str(tmp_path / "elsewhere" / "e0"),
                                  "--stage", "../x"])
    assert err == (f"error: {tmp_path / 'c'}/config.json: stage path '{tmp_path / 'elsewhere' / 'e0'}' must be "
                   "relative to the manifest's folder, not absolute")


def test_a_part_outside_the_models_folder_is_named(tmp_path, make_model):
    """The app serves only models under its root: a cascade whose stage lies outside is listed as broken with the
    stage named, and is never loaded; a manifest inside the root loads (the command line may load either)."""
    from diffusion_app.models import Models
    from diffusion_core.checkpoint import part_outside, save_cascade
    make_model(tmp_path / "outside" / "base", unet=dict(in_channels=3, out_channels=3))
    make_model(tmp_path / "root" / "sr", task="super_resolution", low_res=4,
               unet=dict(in_channels=3, out_channels=3, cond_channels=3, aug_level_embedding=True))
    save_cascade(tmp_path / "root" / "casc", [{"path": "../../outside/base"}, {"path": "../sr"}])
    root = tmp_path / "root"
    assert part_outside(root / "casc", root) == \
        f"{root / 'casc'}/config.json: stage 0 (../../outside/base) is outside {root}"
    assert part_outside(root / "sr", root) is None
    models = Models(root)
    with pytest.raises(CheckpointError):
        models.get("casc")
    # the model list names the models folder, never the server's absolute path (issue 35 item 12)
    assert models.broken("casc") == "casc/config.json: stage 0 (../../outside/base) is outside root/"
    save_cascade(root / "casc", [{"path": "../sr"}, {"path": "../sr"}])
    assert part_outside(root / "casc", root) is None


# ---- 11. training states: negative steps, debris of a full disk, a final re-save on a full disk ------------------
def _train_cfg(tmp_path, *sets):
    from diffusion_core.training import load_train_config
    folder = write_idx(tmp_path / "idx")
    return load_train_config(None, TINY + ["data.source=idx", f"data.path={folder}", f"out_dir={tmp_path / 'run'}",
                                           *sets])


def test_a_state_with_a_negative_step_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from diffusion_core.training import STATE, Trainer
    Trainer(_train_cfg(tmp_path, "steps=2"), progress=False).run()
    path = tmp_path / "run" / STATE
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    save_file(load_file(str(path)), str(path), metadata={**meta, "step": "-50"})
    with pytest.raises(ConfigError) as err:
        Trainer(_train_cfg(tmp_path, "steps=4"), resume=True, progress=False)
    assert str(err.value) == f"{path}: not a usable training state (step -50, wall time {meta['wall']} in its metadata)"


def test_a_restart_removes_a_full_disks_link(tmp_path):
    from diffusion_core.training import PREV_STATE, Trainer
    Trainer(_train_cfg(tmp_path, "steps=2"), progress=False).run()
    link = tmp_path / "run" / f".{PREV_STATE}.link"
    link.write_bytes(b"left by a write that failed")
    # a resume past the end writes no state, so only the restart's cleaning can remove it
    Trainer(_train_cfg(tmp_path, "steps=2"), resume=True, progress=False).run()
    assert not link.exists()


def test_resume_exports_a_finished_run_on_a_full_disk(tmp_path, run_main):
    """On a 2 MB disk the final re-save of an already-saved step failed, so every --resume exited 2 and the model
    could never be exported. Here the resumed process may write no file as large as the state (RLIMIT_FSIZE); the
    first run, with room to write, is the same command run in this process."""
    from diffusion_core.training import STATE
    folder = write_idx(tmp_path / "idx")
    args = ["train", "--no-progress", *sum([["--set", s] for s in TINY + ["data.source=idx", f"data.path={folder}",
                                                                            f"out_dir={tmp_path / 'run'}", "steps=2"]], [])]
    r = run_main(*args, "--set", "sample_every=0")
    assert r.returncode == 0, r.stderr
    shutil.rmtree(tmp_path / "run" / "model")              # as if the export had not happened
    state = (tmp_path / "run" / STATE).read_bytes()
    limit = len(state) // 2
    p = CliProcess([*args, "--resume"], env=dict(os.environ, OMP_NUM_THREADS="1"), capture=True, max_file_bytes=limit,
                   output_dir=tmp_path)
    code, printed = p.wait(timeout=300), p.output()
    assert code == 0 and "exported" in printed, printed
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "run" / STATE).read_bytes() == state


# ---- 12. evaluate's debris ---------------------------------------------------------------------------------------
def test_sample_cache_removes_a_killed_writes_temp_file(tmp_path):
    from diffusion_core.evaluation.evaluate import SampleCache
    cache = tmp_path / "fashion-metrics.safetensors"
    debris = tmp_path / ".fashion-metrics.safetensors.k3j4h5.tmp"
    other = tmp_path / ".other.safetensors.abc.tmp"            # another run's file is not touched
    debris.write_bytes(b"\0" * 100)
    other.write_bytes(b"\0")
    assert SampleCache(cache, {"steps": 2}).load() == []
    assert not debris.exists() and other.exists()


# ---- 13. saturated weights and outputs ---------------------------------------------------------------------------
def test_huge_weights_are_refused_and_broken_outputs_reported(tmp_path, make_model):
    from safetensors.torch import load_file, save_file

    from diffusion_core.images import output_problem
    folder = tmp_path / "m"
    make_model(folder, half=False)
    w = folder / "model.safetensors"
    sd = load_file(str(w))
    sd["conv_in.weight"] = torch.full_like(sd["conv_in.weight"], 3e38)
    save_file(sd, str(w))
    with pytest.raises(CheckpointError) as err:
        load(folder)
    assert str(err.value) == (f"{w}: tensor conv_in.weight holds values up to 3e+38; trained weights stay far below "
                              "1e+04 (the network's output would overflow)")
    x = torch.rand(3, 1, 4, 4) * 2 - 1
    assert output_problem(x) is None
    x[1, 0, 0, 0] = float("nan")
    assert output_problem(x) == "1 of 3 images have NaN or inf values"
    x[1, 0, 0, 0] = 0
    assert output_problem(x, torch.tensor([True, False, True])) == "1 of 3 images have NaN or inf values"
    x[2] = -5.0
    assert output_problem(x) == "1 of 3 images are saturated (every value at -1 or every value at 1)"
    x[2] = torch.where(torch.rand_like(x[2]) < 0.5, -5.0, 5.0)     # an untrained network's noise: shown, not refused
    x[2, 0, 0, :2] = torch.tensor([-5.0, 5.0])
    assert output_problem(x) is None


def test_sample_reports_a_broken_output(tmp_path, make_model, capsys, monkeypatch):
    """A network whose output overflows after loading (here its output layer is made to): no black PNGs, exit 2."""
    from diffusion_core.unet import UNet
    make_model(tmp_path / "m")
    real = UNet.forward
    monkeypatch.setattr(UNet, "forward", lambda self, *a, **k: real(self, *a, **k) * float("inf"))
    err = one_line_error(capsys, ["sample", "--model", str(tmp_path / "m"), "--n", "2", "--steps", "2", "--out",
                                  str(tmp_path / "o"), "--no-progress", "--backend", "fp32"])
    assert err == (f"error: {tmp_path / 'm'}: 2 of 2 images are saturated (every value at -1 or every "
                   "value at 1): the network's "
                   "output is broken; nothing written")
    assert not list((tmp_path / "o").glob("*.png"))


# ---- 14. SIGTERM with a run in flight ----------------------------------------------------------------------------
HOLD_S = 1.5        # half of app.FILES_GRACE_S (3 s): a client this slow must still get its last files


def test_sigterm_with_a_run_in_flight(tmp_path, monkeypatch):
    """The run in flight is stopped and given time to end before the process exits (the client of it got "cannot
    schedule new futures after shutdown" and the process could abort), its client gets the last output with its
    files, and no temp folder or Gradio cache is left.

    The client fetches the files of the outputs that say the server is stopping only HOLD_S after the first of them
    arrived (or once the process has exited): the race is forced. A server that exits as soon as its runs end (no
    grace) is gone by then; unheld, a client quick enough to fetch before the exit passed (1 run of 3 caught it)."""
    from gradio_client import Client
    from gradio_client.client import Endpoint
    ckpt = build_checkpoints(tmp_path / "ckpt")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    env = dict(os.environ, TMPDIR=str(tmp), DIFFUSION_CHECKPOINTS=str(ckpt), GRADIO_SERVER_PORT=str(port),
               OMP_NUM_THREADS="1")
    env.pop("GRADIO_TEMP_DIR", None)
    log = tmp_path / "server.log"
    proc, url = start_app_process(env, open(log, "w"))
    deadline: list[float] = []          # when the held fetches go on
    fetch = Endpoint.download_files

    def fetch_late(self, *data):
        if any("the server is stopping" in str(d) for d in data):
            deadline.append(deadline[0] if deadline else time.monotonic() + HOLD_S)
            while proc.poll() is None and time.monotonic() < deadline[0]:
                time.sleep(0.01)
        return fetch(self, *data)
    monkeypatch.setattr(Endpoint, "download_files", fetch_late)
    try:
        job = Client(url, verbose=False).submit(model="tiny", steps=1000, batch_size=1, seed=1, api_name="/generate")
        for _ in range(600):
            if len(job.outputs()) >= 2:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        text = log.read_text()
        assert "the server is stopping" in text
        # the visitor is told too: the run's last output, its files fetched, says the server is stopping (item 14)
        final = job.result(timeout=30)
        assert deadline and "the server is stopping" in str(final[1]), final
        assert all(isinstance(out, tuple) for out in job.outputs()), job.outputs()     # no fetch failed
        assert "cannot schedule new futures" not in text and "Traceback" not in text, text
        assert not [p.name for p in tmp.iterdir() if p.name.startswith(("diffusion_app_", "gradio"))]
    finally:
        if proc.poll() is None:
            proc.kill()
