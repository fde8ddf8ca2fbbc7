"""Load dataset pickles from the internet without running their code.

A pickle can name any importable callable and call it while loading (``os.system``,
``subprocess.Popen``, ``builtins.eval``...). ``load`` uses an unpickler that can
build only NumPy arrays, dtypes and scalars and plain containers (dict, list,
tuple, str, bytes, numbers, set); any other global is refused before it is
imported, with an error naming the file and the global.

Python-2 pickles (MetaOptNet/RFS mini-ImageNet) load with ``encoding="latin1"``;
``bytes`` dict keys are decoded to ``str`` so ``b"data"`` and ``"data"`` agree.
"""

from __future__ import annotations

import _codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np


class PickleLoadError(ValueError):
    """A pickle file that is truncated, corrupt or not what was expected."""


class UnsafePickleError(PickleLoadError):
    """A pickle that asks for a global outside the allow-list; nothing was executed."""


def _latin1_encode(obj, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` as Python 3 emits it for bytes in protocol 0-2, latin1 only."""
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return _codecs.encode(obj, "latin1", errors)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 / numpy 1
    allowed = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = core.multiarray._reconstruct
        allowed[(module, "scalar")] = core.multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = core.numeric._frombuffer  # protocol-5 arrays
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # numpy 2 pickles dtypes of builtin kinds as e.g. numpy.dtypes.UInt8DType
    for name in dir(np.dtypes):
        if name.endswith("DType") and not name.startswith("_"):
            allowed[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return allowed


_ALLOWED = {
    **_numpy_globals(),
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only returns allow-listed globals."""

    def __init__(self, file, *, source: str, encoding: str = "ASCII"):
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refused to load global {module}.{name}: this pickle would "
                "construct or call something other than NumPy arrays and plain containers, "
                "so it was not loaded (nothing in it was executed)") from None


def _decode_keys(obj):
    """Recursively turn ``bytes`` dict keys into ``str`` (Python-2 pickles)."""
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): _decode_keys(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_keys(v) for v in obj]
    return obj


def loads(data: bytes, source: str = "<bytes>", encoding: str = "latin1") -> Any:
    import io

    return _load(io.BytesIO(data), source, encoding)


def load(path: str | Path, encoding: str = "latin1") -> Any:
    """Unpickle ``path`` allowing only NumPy arrays and plain containers.

    ``latin1`` reads both Python-3 pickles and Python-2 pickles of NumPy arrays.
    Raises ``FileNotFoundError``, ``UnsafePickleError`` or ``PickleLoadError``
    (truncated or corrupt), each naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open("rb") as f:
        return _load(f, str(path), encoding)


def _load(file, source: str, encoding: str) -> Any:
    try:
        obj = RestrictedUnpickler(file, source=source, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except EOFError as err:
        raise PickleLoadError(f"{source}: truncated pickle (ended early: {err or 'EOF'}); "
                              "re-download the file") from err
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, UnicodeDecodeError) as err:
        raise PickleLoadError(f"{source}: corrupt or truncated pickle ({type(err).__name__}: "
                              f"{err}); re-download the file") from err
    return _decode_keys(obj)
