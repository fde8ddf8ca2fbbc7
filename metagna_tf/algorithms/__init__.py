"""Inner update rules and scale networks, built from the algorithm table (``table.py``).

Nothing heavy is imported at package import: ``config.py`` reads ``table.py``.
"""

from __future__ import annotations

from metagna_tf.algorithms.table import ALGORITHM_TABLE, ALGORITHMS, Algorithm, algorithm

__all__ = ["ALGORITHMS", "ALGORITHM_TABLE", "Algorithm", "algorithm", "make_scale_network",
           "make_update_rule"]


def make_update_rule(config, arbiter=None, inner_lr=None):
    """The inner step of ``config.algorithm`` (``table.py``), at ``config.inner_lr`` unless
    ``inner_lr`` (a number or a scalar tensor) is given.

    ``arbiter`` is the algorithm's scale network, any callable ``(features, step) -> scales``
    with ``uses_features`` (the ``Arbiter``, ``LearnedStepSizes``, or an export's copy).
    """
    from metagna_tf.algorithms.gna import GNAUpdate
    from metagna_tf.algorithms.inner_loop import sgd_update

    spec = algorithm(config.algorithm)
    lr = config.inner_lr if inner_lr is None else inner_lr
    if spec.scale_network is not None and arbiter is None:
        raise ValueError(f"{spec.name} needs its scale network ({spec.scale_network})")
    if spec.update == "sgd":
        return sgd_update(lr)
    return GNAUpdate(lr, arbiter if spec.scale_network else None, config.gna_direction,
                     config.gna_sample_grads)


def make_scale_network(config, num_tensors: int):
    """The learned scale network of ``config.algorithm`` over ``num_tensors`` adapted tensors
    (None for the algorithms without one)."""
    from metagna_tf.arbiter import Arbiter, JointArbiter, LearnedStepSizes

    kind = algorithm(config.algorithm).scale_network
    if kind == "arbiter" and config.arbiter_form == "joint":
        return JointArbiter(num_tensors, dtype=config.dtype, name="arbiter")
    common = dict(num_steps=config.inner_steps, a_min=config.arbiter_a_min,
                  a_max=config.arbiter_a_max, bound=config.arbiter_bound, dtype=config.dtype)
    if kind == "arbiter":
        return Arbiter(num_tensors, hidden=config.arbiter_hidden, embed_dim=config.arbiter_embed,
                       use_features=config.arbiter_use_features, name="arbiter", **common)
    if kind == "step_sizes":
        return LearnedStepSizes(num_tensors, name="arbiter", **common)
    return None
