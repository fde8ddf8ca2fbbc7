"""Inner update rules by algorithm name."""

from __future__ import annotations

from metagna_tf.algorithms.gna import GNAUpdate
from metagna_tf.algorithms.inner_loop import sgd_update


def make_update_rule(config, arbiter=None):
    """The inner step of ``config.algorithm``.

    ``maml``/``fomaml``: SGD; ``metagna``: GNA with the Arbiter; ``gna_normalize_only``: GNA
    without; ``maml_lslr``: SGD with a learned scale per step and tensor (``arbiter`` is then a
    ``LearnedStepSizes``; the GNA step with a feature-free scale is exactly that).
    ``arbiter`` is any callable ``(features, step) -> scales`` with ``uses_features``.
    """
    if config.algorithm in ("maml", "fomaml"):
        return sgd_update(config.inner_lr)
    if config.algorithm in ("metagna", "maml_lslr"):
        if arbiter is None:
            raise ValueError(f"{config.algorithm} needs its scale network (Arbiter or step sizes)")
        return GNAUpdate(config.inner_lr, arbiter, config.gna_direction, config.gna_sample_grads)
    if config.algorithm == "gna_normalize_only":
        return GNAUpdate(config.inner_lr, None, config.gna_direction)
    raise ValueError(f"unknown algorithm {config.algorithm!r}")


def make_scale_network(config, num_tensors: int):
    """The learned scale network of ``config.algorithm`` (None for the others)."""
    from metagna_tf.arbiter import Arbiter, LearnedStepSizes

    common = dict(num_steps=config.inner_steps, a_min=config.arbiter_a_min,
                  a_max=config.arbiter_a_max, bound=config.arbiter_bound, dtype=config.dtype)
    if config.algorithm == "metagna":
        return Arbiter(num_tensors, hidden=config.arbiter_hidden, embed_dim=config.arbiter_embed,
                       use_features=config.arbiter_use_features, name="arbiter", **common)
    if config.algorithm == "maml_lslr":
        return LearnedStepSizes(num_tensors, name="arbiter", **common)
    return None
