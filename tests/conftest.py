"""Shared fixtures: the Omniglot data, tiny configs, a trained model and real images."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN on, as TensorFlow sets it by default on most x86 CPUs, so that the grouped task
# layout (whose CPU gradient needs oneDNN) is tested on every machine; the fallback where
# it is off has its own test (test_task_layouts.py), in a process with it off
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# pytest-xdist runs a worker per core (pyproject's addopts, capped below): each worker's
# TensorFlow, and the CLIs its tests start, get their share of the cores, not all of them
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

# decoded datasets (metagna_tf.data.decoded_cache) shared by every worker and the CLIs they
# start, outside the user's ~/.cache; the cache's own tests use their own folders
os.environ.setdefault("METAGNA_CACHE_DIR", os.path.join(
    __import__("tempfile").gettempdir(), f"metagna_tf-test-cache-{os.getuid()}"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from metagna_tf.config import Config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_OMNIGLOT = REPO.parent / "shared" / "data" / "omniglot"


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    """The official Omniglot minimal zips: $METAGNA_DATA_DIR, else ../shared/data/omniglot,
    else the copies bundled with the package (checksums verified)."""
    from metagna_tf.data.omniglot import bundled_dir

    value = os.environ.get("METAGNA_DATA_DIR")
    if value:
        path = Path(value)
        if not (path / "images_background_small1.zip").is_file():
            pytest.fail(f"METAGNA_DATA_DIR={value}: no images_background_small1.zip there")
        return path
    if (SHARED_OMNIGLOT / "images_background_small1.zip").is_file():
        return SHARED_OMNIGLOT
    return bundled_dir()


def tiny_config(**changes) -> Config:
    """A small, smooth float64 configuration of the real code (for exact gradient checks)."""
    base = dict(dtype="float64", activation="softplus", downsample="avgpool", image_size=16,
                filters=4, channels=1, feature_reduce="mean", ways=2, shots=2, queries=2,
                inner_steps=2, inner_steps_test=2, inner_lr=0.3, meta_batch_size=1,
                arbiter_hidden=8, rotations=False)
    base.update(changes)
    return Config(**base)


def random_episode(config: Config, seed: int = 0, tasks: int = 1) -> dict:
    """A batch of random episodes shaped by ``config`` (float images in [0, 1])."""
    rng = np.random.default_rng(seed)
    s, c = config.image_size, config.channels
    ns, nq = config.ways * config.shots, config.ways * config.queries
    dtype = np.dtype(config.dtype)
    return {
        "support_x": rng.random((tasks, ns, s, s, c)).astype(dtype),
        "support_y": np.stack([rng.permutation(np.repeat(np.arange(config.ways), config.shots))
                               for _ in range(tasks)]).astype(np.int32),
        "query_x": rng.random((tasks, nq, s, s, c)).astype(dtype),
        "query_y": np.stack([rng.permutation(np.repeat(np.arange(config.ways), config.queries))
                             for _ in range(tasks)]).astype(np.int32),
    }


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: a worker per core, at most 4 (each holds a TensorFlow runtime and builds
    the session's trained model once; more would cost memory for little gain)."""
    return max(1, min(4, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    """Drop tf.test.TestCase.test_session: a TF helper (a context manager), not a test.

    pytest would otherwise collect it from TFDS's DatasetBuilderTestCase and report it
    as skipped ("Not a test"), which reads like a missing check.
    """
    kept = [i for i in items if not (i.name == "test_session" and i.cls is not None)]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


# ---- a trained model and real support/query images, shared by the serving and app tests ----
SERVING_CONFIG = dict(dataset="omniglot", algorithm="metagna", ways=5, shots=1, queries=1,
                      filters=32, meta_batch_size=8, iterations=100, checkpoint_every=50,
                      val_episodes=16, inner_lr=0.1, inner_steps=1, inner_steps_test=3)


@pytest.fixture(scope="session")
def trained_workdir(omniglot_dir, tmp_path_factory, worker_id) -> Path:
    """A Meta-GNA model trained for 100 iterations on Omniglot (about 20 s; 5-way 5-shot test
    accuracy about 80%). Trained once per run: the xdist workers share it (tests only read
    it), the first to ask trains it under a file lock."""
    from filelock import FileLock

    from metagna_tf.training import set_global_determinism, train

    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # the folder every worker's basetemp is in
    work, done = root / "trained" / "metagna", root / "trained" / "done"
    with FileLock(str(root / "trained.lock")):
        if not done.exists():
            shutil.rmtree(work, ignore_errors=True)  # a worker that died halfway
            set_global_determinism(0)
            train(Config(**SERVING_CONFIG), work, omniglot_dir, verbose=0)
            done.touch()
    return work


@pytest.fixture(scope="session")
def exported_model(trained_workdir) -> Path:
    """``trained_workdir``'s best checkpoint exported once per run by ``serving.export``
    (TF Serving's layout: ``<base>/1``; the version folder is returned). Shared by the
    workers like the model itself; tests only read it."""
    from filelock import FileLock

    from metagna_tf.checkpoints import load_trained
    from serving.export import export_meta_model

    base, done = trained_workdir.parent / "export", trained_workdir.parent / "export_done"
    with FileLock(str(trained_workdir.parent / "export.lock")):
        if not done.exists():
            shutil.rmtree(base, ignore_errors=True)  # a worker that died halfway
            export_meta_model(load_trained(trained_workdir)[0], base)
            done.touch()
    return base / "1"


@pytest.fixture(scope="session")
def support_and_queries(omniglot_dir, tmp_path_factory) -> tuple[Path, list[Path], list[str]]:
    """5 held-out (test-split) characters: a support folder of 5 PNGs per class, and 5
    other PNGs per class as queries with their true class names."""
    root = tmp_path_factory.mktemp("omniglot_task")
    queries, truth = [], []
    from metagna_tf.data.omniglot import character_files

    for key, files in character_files(omniglot_dir).items():
        name = key.replace("/", "_")
        folder = root / "support" / name
        folder.mkdir(parents=True)
        for file_name, data in files[:5]:
            (folder / file_name).write_bytes(data)
        for file_name, data in files[5:10]:
            path = root / "query" / f"{name}__{file_name}"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            queries.append(path)
            truth.append(name)
    return root / "support", queries, truth
