"""The app as a server in its own process, as ``python app.py`` runs on a Space: for the benchmarks and tests that
measure or stop a real server (a client in the server's own process would share its GIL, and a signal would reach
both)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parents[1] / "app.py"


def free_port() -> int:
    """A TCP port nothing listens on now (on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict | None = None, log=None, timeout_s: float = 120.0) -> tuple[subprocess.Popen, str]:
    """``python app.py`` with ``env`` (this process's environment when None; a free GRADIO_SERVER_PORT when it names
    none), its output to ``log`` (an open file) or discarded. Returns (process, page URL) once the page answers;
    RuntimeError (the process killed) when it exits first or does not answer within ``timeout_s``."""
    env = dict(os.environ if env is None else env)
    env.setdefault("GRADIO_SERVER_PORT", str(free_port()))
    out = (dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if log is None
           else dict(stdout=log, stderr=subprocess.STDOUT))
    proc = subprocess.Popen([sys.executable, str(LAUNCHER)], cwd=LAUNCHER.parent, env=env, **out)
    url = f"http://127.0.0.1:{env['GRADIO_SERVER_PORT']}/"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the app exited at start-up (exit code {proc.returncode})") from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the app did not answer within {timeout_s:g} s")
