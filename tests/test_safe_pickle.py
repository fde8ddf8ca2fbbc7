"""The restricted unpickler: arrays and containers load, anything else is refused unexecuted."""

from __future__ import annotations

import os
import pickle
import subprocess

import numpy as np
import pytest

from metagna_tf.data import mini_imagenet, safe_pickle
from tests.fixtures_images import make_pickle_cache, py2_pickle


class SystemCall:
    """Unpickling this runs a shell command (the classic malicious pickle)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class PopenCall:
    def __init__(self, argv: list[str]):
        self.argv = argv

    def __reduce__(self):
        return (subprocess.Popen, (self.argv,))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_arrays_and_containers_round_trip(protocol):
    data = {"image_data": np.arange(2 * 3 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3, 3),
            "class_dict": {"n01": [0], "n02": [1]}, "labels": (np.int64(7), 2.5, None, True),
            "tags": {"a", "b"}, "raw": b"\x00\xff"}
    out = safe_pickle.loads(pickle.dumps(data, protocol=protocol), "ok.pkl")
    np.testing.assert_array_equal(out["image_data"], data["image_data"])
    assert out["image_data"].dtype == np.uint8
    assert out["class_dict"] == data["class_dict"]
    assert out["labels"] == data["labels"] and out["tags"] == data["tags"]
    assert out["raw"] == data["raw"]


def test_python2_pickle_with_bytes_keys():
    images = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    out = safe_pickle.loads(py2_pickle({"data": images, "labels": [0, 1, 1]}), "py2.pickle")
    assert set(out) == {"data", "labels"}
    np.testing.assert_array_equal(out["data"], images)
    out = safe_pickle.loads(pickle.dumps({b"data": [1], b"nested": {b"k": 2}}), "bytes.pkl")
    assert out == {"data": [1], "nested": {"k": 2}}


@pytest.mark.parametrize("payload", ["system", "popen", "nested_in_dict"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = {"system": SystemCall(f"touch {marker}"),
            "popen": PopenCall(["touch", str(marker)]),
            "nested_in_dict": {"image_data": np.zeros((1, 2, 2, 3), np.uint8),
                               "class_dict": {"x": [SystemCall(f"touch {marker}")]}}}[payload]
    blob = pickle.dumps(evil, protocol=2)
    # the payload is real: a plain pickle.loads runs it
    result = pickle.loads(blob)  # noqa: S301 - demonstrating the attack on purpose
    if isinstance(result, subprocess.Popen):
        result.wait()
    assert marker.exists()
    marker.unlink()

    path = tmp_path / "mini-imagenet-cache-train.pkl"
    path.write_bytes(blob)
    with pytest.raises(safe_pickle.UnsafePickleError) as err:
        safe_pickle.load(path)
    assert str(path) in str(err.value) and "refused" in str(err.value)
    assert ("system" in str(err.value)) or ("Popen" in str(err.value))
    with pytest.raises(safe_pickle.UnsafePickleError):
        mini_imagenet.load(tmp_path, "train", image_size=8, channels=3)
    assert not marker.exists()


def test_codecs_encode_only_latin1():
    blob = (b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00abcq\x01X\x06\x00\x00\x00"
            b"rot_13q\x02\x86q\x03Rq\x04.")
    with pytest.raises(safe_pickle.PickleLoadError, match="rot_13"):
        safe_pickle.loads(blob, "codec.pkl")


def test_truncated_pickle_names_the_file(tmp_path):
    root = make_pickle_cache(tmp_path / "mini")
    path = root / "mini-imagenet-cache-test.pkl"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(safe_pickle.PickleLoadError, match="truncated") as err:
        mini_imagenet.load(root, "test", image_size=8, channels=3)
    assert str(path) in str(err.value)
    mini_imagenet.load(root, "train", image_size=8, channels=3)  # the other files still load


def test_not_a_pickle(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(safe_pickle.PickleLoadError, match=str(path)):
        safe_pickle.load(path)
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        safe_pickle.load(tmp_path / "missing.pkl")
