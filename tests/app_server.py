"""Start ``python -m serving.app`` as a user would, on a free 127.0.0.1 port, for the tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(*args, timeout: float = 240.0, env: dict | None = None) -> Iterator[str]:
    """Yield the URL of the running app; its output is shown if it fails to start."""
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"metagna_app_{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "serving.app", *map(str, args),
                                 "--port", str(port)], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    url = f"http://127.0.0.1:{port}/"
    try:
        start = time.monotonic()
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() - start > timeout:
                    raise RuntimeError(f"the app did not start:\n{log.read_text()[-3000:]}") \
                        from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.unlink(missing_ok=True)
