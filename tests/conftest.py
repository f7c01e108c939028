"""Shared fixtures for the diffusion_core tests: offline, single-threaded, tiny networks."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
# the networks run as fp32 eager, the reference, unless a test names a backend: "auto" would measure this CPU and
# could pick bf16, changing outputs that tests compare bit for bit
os.environ.setdefault("DIFFUSION_CORE_BACKEND", "fp32")
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS.parent))
# the tests are laid out like the packages (core/, training/, app/, web/; see docs/testing.md). Shared fixture
# modules (app_fixtures.py) live here, and a room may import another's helpers by module name (test_distill.py
# takes test_samplers' Gaussian closed forms, test_hostile_round3.py test_train's tiny config), so these folders
# are importable whichever room or file pytest is given (the basenames are unique across rooms)
for _room in (TESTS, *(d for d in sorted(TESTS.iterdir()) if d.is_dir() and any(d.glob("test_*.py")))):
    if str(_room) not in sys.path:
        sys.path.insert(1, str(_room))

import subprocess  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)   # tiny tensors: threads only add overhead (and another job may be training)

from diffusion_core import DiffusionConfig, ModelConfig, UNet, UNetConfig, save_model  # noqa: E402

TINY_UNET = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
                 num_heads=1, dropout=0.0, image_size=8)


def randomize(net: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Overwrite every parameter with N(0, scale^2): the U-Net zero-initialises its output layers, so a
    fresh one predicts exactly 0 and would hide mistakes in checkpoint and pipeline tests."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return net.eval()


def tiny_config(unet: dict | None = None, diffusion: dict | None = None, **model) -> ModelConfig:
    return ModelConfig(unet=UNetConfig(**{**TINY_UNET, **(unet or {})}),
                       diffusion=DiffusionConfig(**{"schedule": "linear", "T": 100, **(diffusion or {})}), **model)


@pytest.fixture
def tiny_net():
    """tiny_net(seed=0, **UNetConfig overrides) -> (ModelConfig, U-Net with random weights, in eval mode)."""
    def make(seed=0, **unet):
        cfg = tiny_config(unet)
        return cfg, randomize(UNet(cfg.unet), seed)
    return make


def save_tiny_model(folder, *, unet=None, diffusion=None, seed=0, half=True, **model):
    """(cfg, net): a tiny U-Net with random weights saved as a model folder; ``net`` holds exactly the saved
    weights (the ``make_model`` fixture, for module-scoped fixtures too)."""
    cfg = tiny_config(unet, diffusion, **model)
    net = randomize(UNet(cfg.unet), seed)
    if half:    # the folder stores fp16; round the reference net the same way
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(p.half().float())
    save_model(folder, cfg, net.state_dict(), half=half)
    return cfg, net


@pytest.fixture
def make_model():
    """make_model(folder, unet={...}, diffusion={...}, seed=0, half=True, **ModelConfig fields) -> (cfg, net):
    a tiny U-Net with random weights saved as a model folder; ``net`` holds exactly the saved weights."""
    return save_tiny_model


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains, starts processes or servers, or runs the shipped models "
                                       "(the README's quick subset, -m 'not slow', leaves them out)")


# modules about the app as a page, a server, a browser or processes, and about hostile inputs to all of them: slow
# whole (each imports Gradio, most start a server or a process); the other modules mark their slow tests
SLOW_MODULES = {"test_app", "test_bad_inputs", "test_learning", "test_browser", "test_load", "test_app_signals",
                "test_hostile_round3", "test_cli"}


def pytest_collection_modifyitems(config, items):
    """Marks slow every test of SLOW_MODULES and every test that talks to the session's app server (app_server,
    through app_fixtures' server / client or test_browser's page: the first starts it, each sends requests)."""
    for item in items:
        module = getattr(getattr(item, "module", None), "__name__", "").rsplit(".", 1)[-1]
        if module in SLOW_MODULES or "app_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def run_main(capsys):
    """run_main(*argv) -> CompletedProcess(argv, returncode, stdout, stderr): ``python -m diffusion_core ARGV`` run in
    this process by its ``main``, where a test is about what a command does rather than about the process (a new
    interpreter importing torch costs seconds). An argparse error gives its exit code, an uncaught exception exit 1
    with its traceback on stderr, as the process would. test_cli.py (--help, one-line errors) and test_readme.py
    (the README's lines as written) run it as a process."""
    from diffusion_core.__main__ import main

    def run(*argv) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:         # argparse's errors, sys.exit(message): the interpreter prints a message
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, int) and e.code is not None:
                print(e.code, file=sys.stderr)
        except Exception:       # noqa: BLE001  (what the process would print and exit with)
            import traceback
            traceback.print_exc()
            code = 1
        out = capsys.readouterr()
        return subprocess.CompletedProcess(list(argv), code, out.out, out.err)
    return run


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """One app for the whole session, served in this process on the tiny checkpoints of app_fixtures.py:
    (url, checkpoints folder). The app test modules share it (app_fixtures.server); a test that changes the
    checkpoints folder puts it back."""
    from app_fixtures import build_checkpoints, launch_app
    ckpt = build_checkpoints(tmp_path_factory.mktemp("ckpt"))
    demo, url = launch_app(ckpt)
    yield url, ckpt
    demo.close()
