"""Fixtures: a real ckad (the built binary, $CKAD_BINARY) as a subprocess on 127.0.0.1, and a
client of it. Run with the stubs on the path (tests/run_all.sh does):

    eval "$(bash client/python/build.sh)"
    CKAD_BINARY=build/test/server/ckad /usr/bin/python3 -m pytest -q client/python/tests
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from typing import List, Optional

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.dirname(HERE))  # the cka package, when PYTHONPATH lacks it

import cka  # noqa: E402

_LISTENING = re.compile(r"ckad listening on 127\.0\.0\.1:(\d+)")


def ckad_binary() -> str:
    """Returns $CKAD_BINARY, or the first ckad of the repository's usual build directories."""
    path = os.environ.get("CKAD_BINARY")
    candidates = [path] if path else [
        os.path.join(ROOT, "build", d, "server", "ckad") for d in ("test", "python", "release")
    ]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return os.path.abspath(c)
    pytest.fail(f"no ckad binary: set CKAD_BINARY (tried {', '.join(map(str, candidates))})")


class Ckad:
    """ckad as a subprocess; its output goes to `log`. start() returns once ckad logged its
    listening line (which carries the port it bound, for --listen 127.0.0.1:0) and answers
    the health check."""

    def __init__(self, log: str, data_dir: Optional[str] = None,
                 extra_flags: Optional[List[str]] = None) -> None:
        self.log = log
        self.data_dir = data_dir
        self.extra_flags = list(extra_flags or [])
        self.port = 0  # 0 until the first start; later starts reuse the port
        self.proc: Optional[subprocess.Popen] = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        argv = [ckad_binary(), "--listen", f"127.0.0.1:{self.port}", "--threads", "2",
                "--log-level", "info"]
        if self.data_dir:
            argv += ["--data-dir", self.data_dir]
        argv += self.extra_flags
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, errors="replace")
        listening = threading.Event()
        found = {}

        def drain(proc: subprocess.Popen) -> None:
            with open(self.log, "a") as out:
                for line in proc.stdout:
                    out.write(line)
                    out.flush()
                    m = _LISTENING.search(line)
                    if m and not listening.is_set():
                        found["port"] = int(m.group(1))
                        listening.set()
            listening.set()  # ckad exited: stop waiting

        threading.Thread(target=drain, args=(self.proc,), daemon=True).start()
        if not listening.wait(timeout) or "port" not in found:
            self.kill()
            pytest.fail(f"ckad did not start; its log is {self.log}:\n{self.tail()}")
        self.port = found["port"]
        with cka.Client(self.address) as client:
            assert client.health(timeout=timeout) == "SERVING", self.tail()

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Sends `sig` and returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            status = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait()
        self.proc = None
        return status

    def tail(self, lines: int = 30) -> str:
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def ckad(tmp_path_factory) -> Ckad:
    """One ckad (state in memory) shared by the tests that do not restart it."""
    server = Ckad(str(tmp_path_factory.mktemp("ckad") / "ckad.log"))
    server.start()
    yield server
    server.kill(signal.SIGTERM)


@pytest.fixture
def client(ckad: Ckad) -> cka.Client:
    with cka.Client(ckad.address) as c:
        yield c


@pytest.fixture
def session_id(request) -> str:
    """A session id unique to the test."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listened on a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require(module: str):
    """Returns the imported `module`; skips the test without it, unless CKA_REQUIRE_TORCH=1
    (tests/run_all.sh, whose install_deps.sh --tests installs python3-torch, python3-sklearn
    and python3-matplotlib) makes a missing one a failure."""
    if os.environ.get("CKA_REQUIRE_TORCH") == "1":
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module)


def import_torch():
    """Returns torch (see `require`)."""
    return require("torch")
