"""Inner update rules by algorithm name."""

from __future__ import annotations

from metagna_tf.algorithms.gna import GNAUpdate
from metagna_tf.algorithms.inner_loop import sgd_update


def make_update_rule(config, arbiter=None):
    """``maml``/``fomaml``: SGD; ``metagna``: GNA with the Arbiter; ``gna_normalize_only``: GNA without."""
    if config.algorithm in ("maml", "fomaml"):
        return sgd_update(config.inner_lr)
    if config.algorithm == "metagna":
        if arbiter is None:
            raise ValueError("metagna needs an Arbiter")
        return GNAUpdate(config.inner_lr, arbiter, config.gna_direction, config.gna_sample_grads)
    if config.algorithm == "gna_normalize_only":
        return GNAUpdate(config.inner_lr, None, config.gna_direction)
    raise ValueError(f"unknown algorithm {config.algorithm!r}")
