"""The app as a process: SIGTERM (how a Space or a service manager stops it) removes its temp folder."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app_fixtures import build_checkpoints, free_port, start_app_process  # noqa: E402



def test_sigterm_removes_the_temp_folder(tmp_path):
    ckpt = build_checkpoints(tmp_path / "ckpt")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    env = dict(os.environ, TMPDIR=str(tmp), DIFFUSION_CHECKPOINTS=str(ckpt), GRADIO_SERVER_PORT=str(port),
               OMP_NUM_THREADS="1")
    proc, _ = start_app_process(env)
    try:
        made = list(tmp.glob("diffusion_app_*"))
        assert len(made) == 1, made
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert not made[0].exists()
    finally:
        if proc.poll() is None:
            proc.kill()
