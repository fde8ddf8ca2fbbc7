"""Typed run configuration: one frozen dataclass, named presets, JSON round trip.

The full config is written to ``<workdir>/config.json`` and into every
checkpoint, so a workdir alone is enough to evaluate, predict or export.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from metagna_tf.algorithms.table import (
    ALGORITHM_KEYS,
    ALGORITHMS,
    ARBITER_KEYS,  # noqa: F401  (re-exported: tuning and tests read the keys here)
    STEP_SIZE_KEYS,  # noqa: F401
    algorithm,
)

# The scale networks' output bounds, and the rule they share (Arbiter, LearnedStepSizes and
# the config check all call check_scale_bounds).
ARBITER_BOUNDS = ("clip", "tanh")


def check_scale_bounds(owner: str, a_min, a_max, bound) -> None:
    """``0 < a_min <= 1 <= a_max``, and ``a_min < 1 < a_max`` for the tanh bound (its two
    branches scale ``log a_max`` and ``-log a_min``); a ValueError naming ``owner`` otherwise."""
    if bound not in ARBITER_BOUNDS:
        raise ValueError(f"{owner}: bound must be one of {ARBITER_BOUNDS}, got {bound!r}")
    if not 0 < a_min <= 1 <= a_max:
        raise ValueError(f"{owner}: need 0 < a_min <= 1 <= a_max, got a_min={a_min!r}, "
                         f"a_max={a_max!r}")
    if bound == "tanh" and not a_min < 1 < a_max:
        raise ValueError(f"{owner}: the tanh bound needs a_min < 1 < a_max, got a_min={a_min!r}, "
                         f"a_max={a_max!r}")

# The allowed values of every enumerated key (used by the checks and by the flags' choices).
CHOICES: dict[str, tuple] = {
    "algorithm": ALGORITHMS,
    "downsample": ("stride", "maxpool", "avgpool"),
    "activation": ("relu", "softplus", "leaky_relu"),
    "head": ("proto", "linear"),
    "inner_params": ("all", "no_bn"),
    "arbiter_form": ("per_tensor", "joint"),
    "feature_reduce": ("mean", "flatten"),
    "dtype": ("float32", "float64"),
    "gna_direction": ("mean", "sample"),
    "gna_sample_grads": ("frozen_stats", "jacobian"),
    "arbiter_bound": ARBITER_BOUNDS,
    "lr_schedule": ("constant", "cosine"),
    "jit": ("auto", "on", "off"),
    "channels": (1, 3),
    "protocol": ("standard", "cross_alphabet"),
    "task_batching": ("auto", "loop", "grouped", "stacked"),
    "precision": ("float32", "bfloat16", "mixed_float16"),
}
# A saved config (a workdir's config.json, a checkpoint's, an export's model_info.json) holds
# every key of the version that wrote it. A key it lacks was added later; if that key's default
# has changed since, the run was made with the value below, not with today's default.
# (arbiter_bound: clip was the only bound, then the default, until 2026-11-29.)
SAVED_DEFAULTS: dict[str, Any] = {"arbiter_bound": "clip"}


@dataclasses.dataclass(frozen=True)
class Config:
    # data
    dataset: str = "omniglot"
    ways: int = 5
    shots: int = 1
    queries: int = 1
    image_size: int = 28
    channels: int = 1
    train_split: str = "train"
    rotations: bool = True  # Omniglot: 90/180/270-degree rotations as new training classes
    # class split protocol: standard | cross_alphabet (Omniglot: no alphabet shared between
    # training and validation/test; see docs/datasets.md)
    protocol: str = "standard"
    # model
    backbone: str = "conv4"
    filters: int = 64
    downsample: str = "stride"  # stride | maxpool | avgpool
    # relu | softplus (smooth, for finite differences) | leaky_relu (slope 0.01, the authors')
    activation: str = "relu"
    feature_reduce: str = "mean"  # mean (spatial average) | flatten
    bn_eps: float = 1e-3
    dtype: str = "float32"
    # compute precision of the inner loop and the forward passes (variables stay in dtype):
    # float32 | bfloat16 | mixed_float16 (float16 with loss scaling); for GPUs, see
    # docs/scaling.md. BatchNorm moments, losses and gradient norms stay in float32.
    precision: str = "float32"
    # recompute each inner step in the backward pass (a manual reverse pass): memory for time
    inner_checkpointing: bool = False
    # the classifier head: proto (Proto-MAML: fitted to the support set's class means before any
    # step, any number of classes) | linear (MAML's meta-learned N-way head: `ways` classes,
    # adapted by the inner loop alone)
    head: str = "proto"
    # the tensors the inner loop adapts: all | no_bn (BatchNorm's gamma and beta are learned in
    # the outer loop only, as in MAML++ and the authors' code)
    inner_params: str = "all"
    # algorithm
    algorithm: str = "metagna"
    inner_steps: int = 1
    inner_steps_test: int = 3
    inner_lr: float = 0.1  # chosen on Omniglot validation (docs/results.md)
    gna_direction: str = "mean"  # mean | sample (experimental, ~n backward passes)
    # per-sample gradients for the Arbiter's features: frozen_stats (BatchNorm statistics
    # held constant; per-layer identities, one extra backward) | jacobian (through the
    # statistics too; a pfor Jacobian, ~n backward passes)
    gna_sample_grads: str = "frozen_stats"
    arbiter_hidden: int = 32
    arbiter_embed: int = 4
    arbiter_a_min: float = 0.01
    arbiter_a_max: float = 100.0
    # tanh (smooth) | clip; the validation split preferred tanh (docs/results.md)
    arbiter_bound: str = "tanh"
    arbiter_use_features: bool = True  # False: step and tensor embeddings only (ablation)
    # per_tensor (ours: sample-aware features per tensor, a factor on |g|) | joint (the authors':
    # standardized weight and gradient norms of all tensors into one MLP that sets each step's
    # norm; docs/method.md)
    arbiter_form: str = "per_tensor"
    # outer loop
    meta_batch_size: int = 32
    meta_lr: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine
    iterations: int = 2000
    checkpoint_every: int = 100
    val_episodes: int = 100
    seed: int = 0
    jit: str = "auto"  # auto | on | off
    # the layout of a meta-batch's tasks (the same inner loop, inner_loop.py): loop (one task
    # at a time) | grouped (all at once, grouped convolutions) | stacked (all at once, a
    # convolution per task) | auto (grouped for float32 with many small tasks, where
    # measured faster; else loop)
    task_batching: str = "auto"

    def __post_init__(self) -> None:
        checks = {name: (getattr(self, name) in values, " or ".join(map(str, values)))
                  for name, values in CHOICES.items()}
        checks.update({
            "ways": (self.ways >= 2, "at least 2"),
            "shots": (self.shots >= 1, "at least 1"),
            "queries": (self.queries >= 1, "at least 1"),
            "image_size": (self.image_size >= 8, "at least 8"),
            "meta_batch_size": (self.meta_batch_size >= 1, "at least 1"),
            "inner_steps": (self.inner_steps >= 1, "at least 1"),
            "inner_steps_test": (self.inner_steps_test >= 1, "at least 1"),
            "inner_lr": (self.inner_lr > 0, "positive"),
            "meta_lr": (self.meta_lr > 0, "positive"),
            "iterations": (self.iterations >= 1, "at least 1"),
            "checkpoint_every": (self.checkpoint_every >= 1, "at least 1"),
            "val_episodes": (self.val_episodes >= 0, "non-negative"),
            "precision": (self.precision == "float32" or self.dtype == "float32",
                          "float32 with dtype float64 (low precision needs float32 variables)"),
        })
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"config: {name}={getattr(self, name)!r} is invalid: expected {expected}")
        check_scale_bounds(f"config (arbiter_a_min={self.arbiter_a_min!r}, "
                           f"arbiter_a_max={self.arbiter_a_max!r}, "
                           f"arbiter_bound={self.arbiter_bound!r})",
                           self.arbiter_a_min, self.arbiter_a_max, self.arbiter_bound)

    @property
    def first_order(self) -> bool:
        return algorithm(self.algorithm).first_order

    @property
    def compute_dtype(self) -> str:
        return {"float32": self.dtype, "bfloat16": "bfloat16",
                "mixed_float16": "float16"}[self.precision]

    @property
    def batching(self) -> str:
        """The task layout ``auto`` resolves to (tools/bench.py measured it: grouped
        convolutions win for many small float32 tasks, e.g. Omniglot's 32 tasks of 28x28
        images, and lose at 84x84 with 4 tasks; TensorFlow has no grouped-convolution
        gradient on the CPU in float64 or float16, none without oneDNN and none in bfloat16
        without AVX-512: ``models.conv4.grouped_gradients_available`` tells)."""
        if self.task_batching != "auto":
            return self.task_batching
        small = self.image_size <= 32 and self.meta_batch_size >= 8
        measured = self.dtype == "float32" and self.precision in ("float32", "bfloat16")
        if not (small and measured):
            return "loop"
        from metagna_tf.models.conv4 import grouped_gradients_available

        return "grouped" if grouped_gradients_available(self.compute_dtype) else "loop"

    @property
    def inert_keys(self) -> frozenset[str]:
        """The algorithm-specific keys this algorithm does not read (algorithms/table.py)."""
        return ALGORITHM_KEYS - algorithm(self.algorithm).keys(self.arbiter_form)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_saved(cls, values: dict[str, Any], source: str = "saved config") -> Config:
        """A config written by a run (``to_dict``): a key it lacks takes the value it had
        when that run was made (``SAVED_DEFAULTS``), else today's default."""
        if not isinstance(values, dict):
            raise ValueError(f"{source}: expected a JSON object of config keys")
        return cls.from_dict({**SAVED_DEFAULTS, **values}, source=source)


_OMNIGLOT = dict(dataset="omniglot", image_size=28, channels=1, filters=64, downsample="stride",
                 feature_reduce="mean", inner_lr=0.1, inner_steps=1, inner_steps_test=3,
                 meta_batch_size=32, rotations=True)
_MINI = dict(dataset="mini_imagenet", image_size=84, channels=3, filters=32, downsample="maxpool",
             feature_reduce="flatten", inner_lr=0.01, inner_steps=5, inner_steps_test=10,
             meta_batch_size=4, rotations=False, queries=15, iterations=60000,
             checkpoint_every=500)

# Meta-GNA as its authors built it (SKKUJMLim/MAML, experiment_config/MAML+Arbiter_5way_1shot.json
# at commit 071b975a; docs/method.md): MAML's linear head, the joint Arbiter, BatchNorm's gamma
# and beta not adapted, 5 second-order inner steps in training and at test
_AUTHORS_METHOD = dict(algorithm="metagna", head="linear", arbiter_form="joint",
                       inner_params="no_bn", inner_steps=5, inner_steps_test=5)
# their settings: 4-CONV with 128 filters, max-pooling and leaky ReLU at 84x84, beta 0.01, 15
# queries, meta-batch 4 (2 at 5-shot), Adam 1e-4 (their cosine schedule ends where it starts),
# 150 x 500 iterations; no multi-step loss, no LSLR, no per-step BatchNorm statistics
_AUTHORS_MINI = dict(_MINI, **_AUTHORS_METHOD, filters=128, activation="leaky_relu",
                     inner_lr=0.01, queries=15, meta_batch_size=4, meta_lr=1e-4,
                     iterations=150 * 500)

PRESETS: dict[str, dict[str, Any]] = {
    "omniglot_5w1s": {**_OMNIGLOT, "ways": 5, "shots": 1, "queries": 1},
    "omniglot_cross_alphabet": {**_OMNIGLOT, "ways": 5, "shots": 1, "queries": 1,
                                "protocol": "cross_alphabet"},
    "omniglot_20w1s": {**_OMNIGLOT, "ways": 20, "shots": 1, "queries": 1, "inner_lr": 0.1,
                       "meta_batch_size": 16, "inner_steps": 5},
    "mini_imagenet_5w1s": {**_MINI, "ways": 5, "shots": 1},
    "mini_imagenet_5w5s": {**_MINI, "ways": 5, "shots": 5, "meta_batch_size": 2},
    "mini_imagenet_to_cub_5w5s": {**_MINI, "ways": 5, "shots": 5, "meta_batch_size": 2,
                                  "train_split": "all"},
    "paper_mini_imagenet_5w1s": {**_AUTHORS_MINI, "ways": 5, "shots": 1},
    "paper_mini_imagenet_5w5s": {**_AUTHORS_MINI, "ways": 5, "shots": 5, "meta_batch_size": 2},
    # the same method at Omniglot's shapes. beta 0.1 chosen on the validation split among
    # 0.01, 0.1 and 0.4 (docs/results/inner_loop/selection_val.txt); meta-batch 16 and 1 query
    # are the selection runs' settings, not yet compared with others (issue 23)
    "paper_omniglot_5w1s": {**_OMNIGLOT, **_AUTHORS_METHOD, "ways": 5, "shots": 1,
                            "queries": 1, "meta_batch_size": 16, "inner_lr": 0.1},
}


def load_config(name_or_path: str | None) -> Config:
    """A named preset, a JSON file of Config keys, or the defaults when None."""
    if name_or_path is None:
        return Config()
    if name_or_path in PRESETS:
        return Config.from_dict(PRESETS[name_or_path], source=f"preset {name_or_path}")
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"--config {name_or_path!r} is neither a preset ({sorted(PRESETS)}) "
                         "nor an existing JSON file")
    from metagna_tf.json_files import read_json_object

    values = read_json_object(path, f"--config {path}", "a JSON object of config keys")
    return Config.from_dict(values, source=str(path))


def default_config(dataset: str) -> Config:
    """The config used when no --config is given: the dataset's 5-way 1-shot preset."""
    preset = {"omniglot": "omniglot_5w1s", "mini_imagenet": "mini_imagenet_5w1s",
              "cub": "mini_imagenet_5w1s", "folder": "mini_imagenet_5w1s"}.get(dataset)
    if preset is None:
        return Config(dataset=dataset)
    return Config.from_dict({**PRESETS[preset], "dataset": dataset}, source=f"preset {preset}")


def add_config_flags(parser: argparse.ArgumentParser, exclude=()) -> None:
    """One ``--key`` flag per Config field (``--no-key`` for booleans); unset flags are None."""
    group = parser.add_argument_group("config keys", "override the preset or --config file; "
                                      "defaults come from the dataset's preset")
    for field in dataclasses.fields(Config):
        if field.name in exclude:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = type(field.default)
        if kind is bool:
            group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                               default=None)
        else:
            group.add_argument(flag, dest=field.name, type=kind, default=None,
                               choices=CHOICES.get(field.name),
                               metavar=None if field.name in CHOICES else field.name.upper())


def config_from_args(args: argparse.Namespace, base: Config) -> Config:
    """``base`` with every config flag that was given applied."""
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
               if getattr(args, f.name, None) is not None}
    return base.replace(**changes)


def base_config(config: str | None, dataset: str | None) -> Config:
    """``--config`` if given, else the dataset's default preset."""
    return load_config(config) if config else default_config(dataset or "omniglot")
