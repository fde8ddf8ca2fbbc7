"""Which TensorFlow is installed: exactly one of tensorflow-cpu or tensorflow, please.

``pip install ".[cpu]"`` brings tensorflow-cpu, ``".[gpu]"`` brings tensorflow with CUDA.
Both in one environment share the ``tensorflow`` package folder, so whichever was installed
last silently wins and uninstalling one breaks the other; none means nothing runs.
"""

from __future__ import annotations

from importlib import metadata

FLAVOURS = ("tensorflow-cpu", "tensorflow", "tensorflow-gpu", "tf-nightly", "tf-nightly-cpu")


def installed_flavours() -> list[str]:
    found = []
    for name in FLAVOURS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def tensorflow_problem(found: list[str] | None = None) -> str | None:
    """A sentence naming the problem, or None when exactly one TensorFlow is installed."""
    found = installed_flavours() if found is None else found
    if not found:
        return ('TensorFlow is not installed: pip install -e ".[cpu]" (CPU) or ".[gpu]" '
                "(NVIDIA GPU)")
    if len(found) > 1:
        return (f"several TensorFlow distributions are installed ({', '.join(found)}); they "
                'overwrite each other\'s files. Keep one: pip uninstall -y '
                f'{" ".join(found)}, then pip install -e ".[cpu]" or ".[gpu]"')
    return None
