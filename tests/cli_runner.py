"""Run a command-line module in the test process, as ``python -m MODULE ARGS`` would.

A new interpreter costs each call a TensorFlow import (4-7 s of CPU on the CI machine); the
test process has TensorFlow already. ``run_module`` goes through the same ``cli.run`` as
``python -m`` (its error lines and exit codes) and returns what ``subprocess.run`` would:
``returncode``, ``stdout`` and ``stderr`` (with the log lines the command writes there).

What only a real process shows stays tested in one: the ``python -m`` entry points and
TensorFlow's hidden start-up lines (tests/test_cli.py), a closed output pipe, tf.distribute's
devices (tests/test_distribution.py), TF Serving's loader (``saved_model_cli``).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import subprocess
import sys
from unittest import mock


@contextlib.contextmanager
def _log_to(stream):
    """INFO and above on ``stream``, in ``cli.run``'s format, for the block."""
    root = logging.getLogger()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    level = root.level
    root.addHandler(handler)  # before cli.run: its basicConfig then adds no handler of its own
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def run_module(module: str, *args, env: dict[str, str | None] | None = None
               ) -> subprocess.CompletedProcess:
    """``python -m module *args`` in this process; ``env``: variables to set (None: unset)."""
    from metagna_tf import cli

    main = importlib.import_module(module).main
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    # sys.argv and os.environ are restored on leaving
    with mock.patch.object(sys, "argv", [module, *argv]), mock.patch.dict(os.environ), \
            _log_to(err), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for key, value in (env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        try:
            cli.run(lambda: main(argv))
            code = 0
        except SystemExit as exit_:
            code = exit_.code
            if code is None:
                code = 0
            elif not isinstance(code, int):  # sys.exit("message")
                print(code, file=sys.stderr)
                code = 1
    return subprocess.CompletedProcess([sys.executable, "-m", module, *argv], code,
                                       out.getvalue(), err.getvalue())
