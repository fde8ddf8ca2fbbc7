"""The measurement tools' own logic (their figures are produced by running them, not here)."""

import numpy as np
import pytest
import tensorflow as tf

from tools.profile_meta_step import kernel_times, op_type


def test_op_type_reads_kernel_events_and_skips_executor_events():
    assert op_type("grad/Conv2DBackpropFilter_6:_MklNativeConv2DBackpropFilter") == \
        "Conv2DBackpropFilter"
    assert op_type("StatefulPartitionedCall/mul_3:Mul") == "Mul"
    assert op_type("ExecutorState::Process") is None
    assert op_type("no kernel here") is None


def test_kernel_times_finds_the_traced_convolutions(tmp_path):
    x = tf.constant(np.random.default_rng(0).random((8, 28, 28, 1), np.float32))
    w = tf.Variable(tf.ones((3, 3, 1, 16)))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(tf.nn.conv2d(x, w, 1, "SAME") ** 2)
        return tape.gradient(y, w)

    step()
    tf.profiler.experimental.start(str(tmp_path))
    for _ in range(3):
        step()
    tf.profiler.experimental.stop()
    totals = kernel_times(str(tmp_path))
    assert totals["Conv2D"] > 0 and totals["Conv2DBackpropFilter"] > 0


def test_profile_reads_a_training_runs_config(tmp_path, capsys):
    from tests.conftest import tiny_config
    from tools.profile_meta_step import main

    config = tiny_config(algorithm="metagna", arbiter_form="per_tensor", head="linear",
                         inner_params="no_bn", dtype="float32", meta_batch_size=2)
    (tmp_path / "config.json").write_text(config.to_json() + "\n")
    assert main(["--workdir", str(tmp_path), "--steps", "1", "--top", "30"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path} (task batching")
    # the linear-head per-tensor form: convolutions plus the per-sample kernel norms' Einsum
    assert "| Conv2D |" in out and "| Einsum |" in out


def test_profile_refuses_flags_that_workdir_would_ignore(tmp_path, capsys):
    from tools.profile_meta_step import main

    with pytest.raises(SystemExit):
        main(["--workdir", str(tmp_path), "--algorithm", "metagna"])
    assert "drop --algorithm" in capsys.readouterr().err
