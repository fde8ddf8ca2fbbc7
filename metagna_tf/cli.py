"""What the CLIs share: logging, quiet TensorFlow start-up unless --verbose, clean errors."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable

# Before TensorFlow is imported by the command: keep its C++ start-up chatter off stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def verbose_requested(argv) -> bool:
    """``--verbose`` given (with any value but 0), or ``METAGNA_VERBOSE=1``."""
    if os.environ.get("METAGNA_VERBOSE", "") not in ("", "0"):
        return True
    for i, arg in enumerate(argv):
        if arg == "--verbose":
            value = argv[i + 1] if i + 1 < len(argv) else ""
            return value != "0"
        if arg.startswith("--verbose="):
            return arg.split("=", 1)[1] != "0"
    return False


@contextlib.contextmanager
def quiet_stderr_fd():
    """Silence file descriptor 2 (C++ logging) for the block; replay it if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow(verbose: bool) -> None:
    """Import TensorFlow; its start-up lines (oneDNN, CPU features, absl) only if verbose."""
    if verbose:
        import tensorflow  # noqa: F401
        return
    with quiet_stderr_fd():
        import tensorflow  # noqa: F401


def run(main: Callable[[], None]) -> None:
    """Run a CLI; user errors become one ``error: ...`` line and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # checkpoint-sharding chatter
    from metagna_tf.install_check import tensorflow_problem

    problem = tensorflow_problem()
    if problem and problem.startswith("TensorFlow is not installed"):
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    if problem:
        logging.getLogger("metagna_tf").warning(problem)
    import_tensorflow(verbose_requested(sys.argv[1:]))
    from metagna_tf.data.images import ImageError
    from metagna_tf.training import NonFiniteLossError

    try:
        main()
    except BrokenPipeError:  # the reader closed stdout (`... | head`): stop quietly, like cat
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(3)
    except (ValueError, FileNotFoundError, FileExistsError, ConnectionError, ImageError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
