"""``python -m diffusion_core ARGS`` as a real process that starts without importing torch again.

The training tests kill runs with SIGKILL and SIGTERM, so each run must be a process of its own; a new interpreter
spent about 3 s importing torch and the package before its first step (six of them in the kill -9 test). These
processes are forked from one server process that imported both once (multiprocessing's forkserver) and never ran a
tensor operation, so no thread pool is copied into a child. A child sets its environment, redirects its output to a
file, then runs the command line's ``main``; its exit status is main's, or minus the signal that killed it.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRELOAD = ["torch", "diffusion_core.__main__", "diffusion_core.training", "cli_process"]


def _child(argv: list[str], env: dict, output: str | None, max_file_bytes: int | None) -> None:
    import resource
    os.environ.clear()
    os.environ.update(env)
    os.chdir(ROOT)
    fd = os.open(output or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if max_file_bytes is not None:          # a write past it fails with EFBIG, as a full disk fails with ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    sys.argv = ["diffusion_core", *argv]
    from diffusion_core.__main__ import main
    try:
        code = main(argv)
    except SystemExit as e:                 # argparse's errors and sys.exit(message), as the interpreter ends them
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


class CliProcess:
    """The subprocess.Popen calls the tests make: pid, poll, wait, send_signal; ``output()`` is what it printed."""

    def __init__(self, argv, env: dict | None = None, capture: bool = False, max_file_bytes: int | None = None,
                 output_dir: Path | None = None):
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        self._out = str(Path(output_dir) / f"cli-{os.getpid()}-{id(self)}.txt") if capture and output_dir else None
        self._p = ctx.Process(target=_child, args=([str(a) for a in argv], dict(env or os.environ), self._out,
                                                   max_file_bytes))
        self._p.start()
        self.pid = self._p.pid

    def poll(self) -> int | None:
        return self._p.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._p.join(timeout)
        if self._p.exitcode is None:
            raise TimeoutError(f"diffusion_core still running after {timeout} s")
        return self._p.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def output(self) -> str:
        return Path(self._out).read_text() if self._out and Path(self._out).exists() else ""
