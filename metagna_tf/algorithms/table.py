"""Every algorithm's facts in one table: its update, its scale network, first order or not,
and the config keys it reads.

Config validation and ``Config.inert_keys``, the update-rule and scale-network factories
(``algorithms/__init__.py``), the tuning search space, the app and the analysis tools read
this table; nothing else lists algorithms. Imports nothing (``config.py`` reads it).
"""

from __future__ import annotations

import dataclasses

# the keys of each scale network and update option; an algorithm reads the union of its parts
ARBITER_KEYS = ("arbiter_hidden", "arbiter_embed", "arbiter_a_min", "arbiter_a_max",
                "arbiter_bound", "arbiter_use_features")
STEP_SIZE_KEYS = ("arbiter_a_min", "arbiter_a_max", "arbiter_bound")
GNA_KEYS = ("gna_direction",)
SAMPLE_FEATURE_KEYS = ("gna_sample_grads",)  # how the Arbiter's per-sample features are taken
# the Arbiter's two forms (arbiter.py) and the keys each reads besides arbiter_form:
# per_tensor (ours: sample-aware features per tensor, a bounded factor on |g|) and joint (the
# authors': standardized weight and gradient norms of all tensors, one MLP, the step's norm)
ARBITER_FORM_KEYS = {"per_tensor": ARBITER_KEYS + SAMPLE_FEATURE_KEYS, "joint": ()}


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """One inner-loop algorithm.

    ``update``: ``sgd`` (``theta - inner_lr * a * g``) or ``gna`` (the gradient normalized,
    its norm chosen by ``a``; see ``gna.py``). ``scale_network``: what gives the scales ``a``:
    ``arbiter`` (sample-aware, ``arbiter.Arbiter``), ``step_sizes`` (a learned table,
    ``arbiter.LearnedStepSizes``) or None (``a = 1``).
    """

    name: str
    update: str
    scale_network: str | None
    first_order: bool
    summary: str

    def keys(self, arbiter_form: str = "per_tensor") -> frozenset[str]:
        """The algorithm-specific config keys this algorithm reads (with that Arbiter form)."""
        keys = set(GNA_KEYS) if self.update == "gna" else set()
        if self.scale_network == "arbiter":
            keys |= {"arbiter_form", *ARBITER_FORM_KEYS[arbiter_form]}
        elif self.scale_network == "step_sizes":
            keys |= set(STEP_SIZE_KEYS)
        return frozenset(keys)


ALGORITHM_TABLE: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("maml", "sgd", None, False, "second-order MAML"),
    Algorithm("fomaml", "sgd", None, True, "first-order MAML"),
    Algorithm("metagna", "gna", "arbiter", False,
              "Meta-GNA: normalized gradient, norm from the sample-aware Arbiter"),
    Algorithm("gna_normalize_only", "gna", None, False,
              "the normalized gradient alone (GNA's first component)"),
    # the GNA step with a feature-free scale is LSLR's step exactly: a * |g| * g/|g| = a * g
    Algorithm("maml_lslr", "gna", "step_sizes", False,
              "learned per-step, per-tensor step sizes (MAML++'s LSLR), no sample awareness"),
)}
ALGORITHMS = tuple(ALGORITHM_TABLE)
# every algorithm-specific key: a key that an algorithm does not read is inert for it
ALGORITHM_KEYS = frozenset().union(*(a.keys(form) for a in ALGORITHM_TABLE.values()
                                    for form in ARBITER_FORM_KEYS))


def algorithm(name: str) -> Algorithm:
    if name not in ALGORITHM_TABLE:
        raise ValueError(f"unknown algorithm {name!r}; known: {list(ALGORITHM_TABLE)}")
    return ALGORITHM_TABLE[name]
