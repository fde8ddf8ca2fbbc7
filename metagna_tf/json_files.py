"""A JSON object read from a file, with errors that name the file (``--config``, ``--space``)."""

from __future__ import annotations

import json
from pathlib import Path


def read_json_object(path: str | Path, source: str, expected: str = "a JSON object") -> dict:
    """The JSON object in ``path``; ``source`` names it in errors, ``expected`` says what
    it should hold."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{source}: no such file") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise ValueError(f"{source}: expected {expected}")
    return value
