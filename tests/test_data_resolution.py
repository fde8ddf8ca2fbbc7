"""Where data comes from: --data-dir, $METAGNA_DATA_DIR, TFDS when asked or cached, the bundle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metagna_tf import data
from metagna_tf.data import omniglot, source_dir

REPO = Path(__file__).resolve().parents[1]

# Loaded by the child process through PYTHONPATH: every outgoing connection and every name
# lookup but the loopback's fails and is recorded, so the test sees any network attempt
# (TFDS retries for minutes otherwise).
NO_NETWORK = '''
import socket, os
_log = os.environ["NETWORK_ATTEMPTS_LOG"]
_getaddrinfo = socket.getaddrinfo
def _record(what):
    with open(_log, "a") as f:
        f.write(repr(what) + "\\n")
def _refuse(self, address, *args, **kwargs):
    _record(address)
    raise OSError("network disabled by the test")
def _resolve(host, *args, **kwargs):
    if host in ("127.0.0.1", "localhost"):
        return _getaddrinfo(host, *args, **kwargs)
    _record(("resolve", host))
    raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.getaddrinfo = _resolve
'''


def offline_env(tmp_path: Path) -> tuple[dict, Path]:
    """The environment of a child process without network, and its attempts log."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_NETWORK)
    attempts = tmp_path / "attempts.log"
    env = {k: v for k, v in os.environ.items()
           if k != "METAGNA_DATA_DIR" and not k.lower().endswith("_proxy")}
    env.update(PYTHONPATH=f"{site}{os.pathsep}{REPO}", NETWORK_ATTEMPTS_LOG=str(attempts),
               TFDS_DATA_DIR=str(tmp_path / "empty_tfds"), TF_CPP_MIN_LOG_LEVEL="2")
    return env, attempts


def test_bundled_sets_train_offline_without_any_data_setting(tmp_path):
    env, attempts = offline_env(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "metagna_tf.train", "--workdir", tmp_path / "w",
                           "--dataset", "omniglot", "--iterations", "2", "--checkpoint-every",
                           "1", "--meta-batch-size", "2", "--filters", "8", "--val-episodes",
                           "4", "--verbose", "0"], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["iteration"] == 2
    assert "using the minimal background sets bundled with metagna-tf" in proc.stderr
    assert not attempts.exists(), attempts.read_text()


def test_download_without_network_fails_at_once_with_the_usual_message(tmp_path):
    env, attempts = offline_env(tmp_path)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "metagna_tf.train", "--workdir", tmp_path / "w",
                           "--dataset", "omniglot", "--download", "--verbose", "0"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    took = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: omniglot: no --data-dir or METAGNA_DATA_DIR given and TFDS could not provide "
        "'omniglot' (cannot reach the download host (github.com:443: Temporary failure in name "
        "resolution)); ")
    # one look-up of the download host, then nothing: TFDS's downloader never started
    assert attempts.read_text().splitlines() == ["('resolve', 'github.com')"]
    assert "Dl Completed" not in proc.stderr and took < 120  # start-up included


def test_resolution_order(tmp_path, monkeypatch, omniglot_dir):
    monkeypatch.delenv("METAGNA_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "tfds_cached", lambda name: False)
    assert source_dir("omniglot") == omniglot.bundled_dir()
    assert source_dir("omniglot", download=True) is None  # TFDS, the full set
    monkeypatch.setattr(data, "tfds_cached", lambda name: name == "omniglot")
    assert source_dir("omniglot") is None  # already in the TFDS cache: no download needed
    monkeypatch.setenv("METAGNA_DATA_DIR", str(omniglot_dir))
    assert source_dir("omniglot") == omniglot_dir
    assert source_dir("omniglot", data_dir=tmp_path) == tmp_path
    monkeypatch.delenv("METAGNA_DATA_DIR")
    monkeypatch.setattr(data, "tfds_cached", lambda name: False)
    with pytest.raises(FileNotFoundError, match="pass --download"):
        source_dir("cub")
    with pytest.raises(ValueError, match="no TFDS source"):
        source_dir("folder", download=True)


def test_an_empty_tfds_cache_is_not_cached_and_logs_nothing(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with caplog.at_level("WARNING"):
        assert data.tfds_cached("omniglot") is False
    assert caplog.records == []  # a fresh machine's first run prints no TFDS warning


def test_bundled_sets_are_the_official_zips_and_are_installed(omniglot_dir):
    bundled = omniglot.bundled_dir()
    assert bundled.is_relative_to(REPO / "metagna_tf")
    for name in omniglot.BUNDLED:
        assert (bundled / name).read_bytes() == (omniglot_dir / name).read_bytes()
    assert "MIT" in (bundled / "LICENSE").read_text()
    assert "Lake" in (bundled / "README.md").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"omniglot_minimal/*"' in pyproject  # package data: wheel and editable installs


def test_a_corrupted_or_missing_bundled_zip_is_reported(tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(omniglot.bundled_dir(), copy)
    data_bytes = bytearray((copy / "images_background_small2.zip").read_bytes())
    data_bytes[1000] ^= 0xFF
    (copy / "images_background_small2.zip").write_bytes(bytes(data_bytes))
    with pytest.raises(ValueError, match=r"images_background_small2.zip is corrupted \(sha256"):
        omniglot.bundled_dir(copy)
    (copy / "images_background_small1.zip").unlink()
    with pytest.raises(FileNotFoundError, match="images_background_small1.zip is missing"):
        omniglot.bundled_dir(copy)
