"""What the three CLIs share: logging, quiet TensorFlow, clean errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

# Before TensorFlow is imported by the command: keep its C++ start-up chatter off stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run(main: Callable[[], None]) -> None:
    """Run a CLI; user errors become one ``error: ...`` line and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # checkpoint-sharding chatter
    from metagna_tf.data.images import ImageError
    from metagna_tf.training import NonFiniteLossError

    try:
        main()
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(3)
    except (ValueError, FileNotFoundError, FileExistsError, ConnectionError, ImageError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
