"""tf.distribute: mirrored over 2 logical CPU devices, and two workers on 127.0.0.1 ports.

Each case runs ``tests/distributed_run.py`` in fresh processes (logical devices and a
multi-worker strategy must be set up before TensorFlow initializes anything).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app_server import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "distributed_run.py"
KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "arbiter_scale")


def start(*args, env=None):
    return subprocess.Popen([sys.executable, str(HELPER), *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})


def result(proc) -> dict:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


def run(*args, env=None) -> dict:
    return result(start(*args, env=env))


def assert_same_rows(a: list[dict], b: list[dict]) -> None:
    assert [r["iteration"] for r in a] == [r["iteration"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in KEYS:
            assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-6), (ra["iteration"], key)


def test_mirrored_meta_gradients_equal_the_single_device_ones():
    out = run("gradients", "--logical-cpus", "2")
    assert out["replicas"] == 2 and out["max_relative_error"] < 1e-5


@pytest.fixture(scope="module")
def single(omniglot_dir, tmp_path_factory) -> dict:
    """The reference: 6 iterations on one device (both distributed runs are checked on it)."""
    return run("train", "--workdir", tmp_path_factory.mktemp("single") / "single",
               "--iterations", "6", "--data-dir", omniglot_dir)


def test_mirrored_run_matches_the_single_device_run(single, omniglot_dir, tmp_path):
    mirrored = run("train", "--workdir", tmp_path / "mirrored", "--iterations", "6",
                   "--strategy", "mirrored", "--logical-cpus", "2", "--data-dir", omniglot_dir)
    assert_same_rows(single["rows"], mirrored["rows"])  # validation aggregated right, too
    for a, b in zip(single["weights"], mirrored["weights"], strict=True):
        assert b == pytest.approx(a, rel=1e-5)


def test_two_workers_train_resume_and_match_one_device(single, omniglot_dir, tmp_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    work = tmp_path / "multi"

    def workers(iterations):
        procs = [start("train", "--workdir", work, "--iterations", iterations, "--strategy",
                       "multiworker", "--data-dir", omniglot_dir,
                       env={"TF_CONFIG": json.dumps({"cluster": cluster,
                                                     "task": {"type": "worker", "index": i}})})
                 for i in range(2)]
        return [result(p) for p in procs]

    first = workers(4)
    assert [r["iteration"] for r in first[0]["rows"]] == [2, 4]
    assert sorted(p.name for p in (work / "checkpoints").glob("*.index")) == [
        "ckpt-2.index", "ckpt-4.index"]  # the chief's checkpoints only, in the workdir
    resumed = workers(6)  # both workers restore iteration 4 from the workdir and go on
    assert_same_rows(single["rows"], resumed[0]["rows"])
    assert resumed[0]["rows"] == resumed[1]["rows"]  # one metrics file, the chief's
