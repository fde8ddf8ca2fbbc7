"""T tasks at once equal T single tasks: the one inner loop in each task layout
(``Config.batching``: one task at a time, stacked, grouped) gives the same meta-gradients
and metrics, for every algorithm and option."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from metagna_tf.algorithms.maml import EPISODE_KEYS, MetaLearner
from tests.conftest import random_episode, tiny_config


def batch(data):
    return [tf.constant(data[k]) for k in EPISODE_KEYS]


def pair(config, batching):
    loop = MetaLearner(config)
    other = MetaLearner(config.replace(task_batching=batching))
    other.set_weights(loop.get_weights())
    rng = np.random.default_rng(3)
    if loop.arbiter is not None:  # away from the neutral initialization
        for a, b in zip(loop.arbiter.weights, other.arbiter.weights, strict=True):
            value = a.numpy() + 0.2 * rng.standard_normal(a.shape)
            a.assign(value)
            b.assign(value)
    return loop, other


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metagna", "gna_normalize_only",
                                       "maml_lslr"])
@pytest.mark.parametrize("downsample", ["avgpool", "stride"])
def test_stacked_meta_gradients_equal_the_loop_in_float64(algorithm, downsample):
    config = tiny_config(algorithm=algorithm, downsample=downsample, meta_batch_size=3)
    loop, stacked = pair(config, "stacked")
    data = batch(random_episode(config, seed=31, tasks=3))
    a, b = loop.meta_gradients(*data), stacked.meta_gradients(*data)
    for x, y in zip(a[:3], b[:3], strict=True):
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-9, atol=1e-12)
    for name, x, y in zip([v.path for v in loop.trainable_variables], a[3], b[3], strict=True):
        scale = np.max(np.abs(x.numpy()))
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-9, atol=1e-9 * scale,
                                   err_msg=name)


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
def test_grouped_convolutions_equal_the_loop_in_float32(downsample):
    # a fixed initialization: in float32 the two layouts' round-off can flip a max-pooling
    # window whose two largest inputs nearly tie, and routes that gradient elsewhere (an
    # unseeded run failed so once in CI, 2.5% off in 16 of the first kernel's 72 entries;
    # over 10 seeds here the worst entry used 0.11 of the tolerance)
    keras.utils.set_random_seed(32)
    config = tiny_config(algorithm="metagna", dtype="float32", activation="relu",
                         downsample=downsample, meta_batch_size=4, image_size=28, filters=8)
    loop, grouped = pair(config, "grouped")
    data = batch(random_episode(config, seed=32, tasks=4))
    a, b = loop.meta_gradients(*data), grouped.meta_gradients(*data)
    np.testing.assert_allclose(b[0].numpy(), a[0].numpy(), rtol=1e-5)
    for x, y in zip(a[3], b[3], strict=True):
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-3,
                                   atol=1e-4 * np.max(np.abs(x.numpy())))
    episodes = dict(zip(EPISODE_KEYS, data, strict=True))
    la, lb = loop.episode_metrics(episodes, 3, ways=2), grouped.episode_metrics(episodes, 3,
                                                                                ways=2)
    for x, y in zip(la, lb, strict=True):  # float32: the exact check is the float64 one above
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-3, atol=1e-6)


def assert_same_meta_gradients(a, b, variables, rtol=1e-9):
    for x, y in zip(a[:3], b[:3], strict=True):
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=rtol, atol=1e-12)
    for v, x, y in zip(variables, a[3], b[3], strict=True):
        scale = np.max(np.abs(x.numpy()))
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=rtol, atol=rtol * scale,
                                   err_msg=v.path)


@pytest.mark.parametrize("option", [
    {"algorithm": "metagna", "gna_direction": "sample"},
    {"algorithm": "metagna", "gna_sample_grads": "jacobian"},
    {"algorithm": "maml_lslr"},
    {"algorithm": "metagna", "inner_checkpointing": True},
    {"algorithm": "metagna", "head": "linear", "arbiter_form": "joint", "inner_params": "no_bn"},
    {"algorithm": "metagna", "head": "linear", "arbiter_form": "joint", "inner_params": "no_bn",
     "inner_checkpointing": True},
], ids=["gna_direction_sample", "gna_sample_grads_jacobian", "maml_lslr",
        "inner_checkpointing", "authors_form", "authors_form_checkpointing"])
def test_every_option_runs_8_tasks_at_once_as_8_single_tasks(option):
    """No option falls back to a per-task path: 8 tasks in one batch (stacked, float64)
    give the meta-gradients of 8 one-task batches to 1e-9.

    The per-sample direction is the exception in degree, not in kind: it normalizes the mean
    of per-sample unit vectors, which nearly cancel on some tasks, and that amplifies float64
    rounding (the convolutions of one task alone and of a task among many round differently;
    among 32 tasks it reached 1e-10 .. 1e-8 relative on such tasks, on 4 tasks 3e-13). Its
    check is at 1e-7, still far below any error in the maths. (8 tasks, not the study's 16
    or 32: the same code path, at a quarter of the suite's time that 32 took.)"""
    keras.utils.set_random_seed(34)
    config = tiny_config(meta_batch_size=8, inner_steps=2, **option)
    one_at_a_time, at_once = pair(config, "stacked")
    data = batch(random_episode(config, seed=34, tasks=8))
    rtol = 1e-7 if option.get("gna_direction") == "sample" else 1e-9
    # as graphs, as training runs them (eagerly, each per-sample Jacobian retraces its pfor)
    a = tf.function(one_at_a_time.meta_gradients)(*data)
    b = tf.function(at_once.meta_gradients)(*data)
    assert_same_meta_gradients(a, b, one_at_a_time.trainable_variables, rtol=rtol)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metagna", "maml_lslr"])
def test_inner_checkpointing_gives_the_same_meta_gradients(algorithm):
    """Recomputing each inner step in the backward pass: the same second-order
    meta-gradients (float64), for the backbone and the Arbiter alike."""
    config = tiny_config(algorithm=algorithm, meta_batch_size=2, inner_steps=3)
    plain, recomputed = pair(config, "loop")
    recomputed = MetaLearner(config.replace(inner_checkpointing=True))
    recomputed.set_weights(plain.get_weights())
    data = batch(random_episode(config, seed=33, tasks=2))
    a, b = plain.meta_gradients(*data), recomputed.meta_gradients(*data)
    for x, y in zip(a[:3], b[:3], strict=True):
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-12)
    for v, x, y in zip(plain.trainable_variables, a[3], b[3], strict=True):
        scale = np.max(np.abs(x.numpy()))
        assert scale > 0 or algorithm == "fomaml", v.path
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-9, atol=1e-9 * scale,
                                   err_msg=v.path)


ONEDNN_OFF = r"""
import json, platform
import numpy as np
import tensorflow as tf
from metagna_tf.algorithms.maml import EPISODE_KEYS, MetaLearner
from metagna_tf.models.conv4 import grouped_gradients_available
from tests.conftest import random_episode, tiny_config
config = tiny_config(dtype="float32", meta_batch_size=8)
out = {"available": grouped_gradients_available(), "auto": config.batching,
       "cpu_only": not tf.config.list_physical_devices("GPU"), "machine": platform.machine()}
try:
    MetaLearner(config.replace(task_batching="grouped"))
    out["grouped"] = "built"
except ValueError as error:
    out["grouped"] = str(error)
model = MetaLearner(config)
model.compile(optimizer="adam")
data = random_episode(config, seed=5, tasks=8)
logs = model.train_step({k: tf.constant(data[k]) for k in EPISODE_KEYS})
out["loss"] = float(logs["loss"])
print(json.dumps(out))
"""


def test_without_onednn_auto_falls_back_to_the_loop_and_grouped_is_refused_clearly():
    """TensorFlow's CPU kernels have no grouped-convolution gradient without oneDNN, which it
    leaves off on some CPUs: `auto` must then pick the loop (the meta-step trains) and an
    explicit `grouped` must say why it can't run (a fresh process: the flag is read once)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONPATH": str(repo)}
    run = subprocess.run([sys.executable, "-c", ONEDNN_OFF], env=env, cwd=repo,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert np.isfinite(out["loss"])
    if out["cpu_only"] and out["machine"] in ("x86_64", "AMD64"):
        assert out["available"] is False  # the case this fallback exists for
    if out["available"]:
        assert out["auto"] == "grouped" and out["grouped"] == "built"
    else:
        assert out["auto"] == "loop"
        assert "--task-batching grouped" in out["grouped"]
        assert "TF_ENABLE_ONEDNN_OPTS=1" in out["grouped"]
