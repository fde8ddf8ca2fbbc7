"""Which episodes train, evaluate, compare and tune see: class pool, sampler, batches, once.

Every episode comes from a seeded stream, so runs resume exactly and every model is
evaluated on the same episodes (the results in docs/results depend on these):

* training meta-batch ``t``:        ``np.random.default_rng([seed, TRAIN_STREAM, t])``
  (the config's seed);
* validation during training, ``t``: ``[seed, VAL_STREAM, t]``;
* evaluation batch ``b`` (evaluate, compare, tune's objective): ``[seed, EVAL_STREAM, b]``
  with ``seed`` 0 unless asked, whatever the training seed; ``EVAL_BATCH_SIZE`` episodes
  per batch, a support corruption (``corruption.py``) drawn from its own stream.

Evaluation pools never carry the training augmentation (rotations).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from metagna_tf.corruption import corrupt_batch
from metagna_tf.data import ClassPool, EpisodeSampler, EpisodeSpec, load_pool

TRAIN_STREAM = 0
VAL_STREAM = 1
EVAL_STREAM = 2
EVAL_BATCH_SIZE = 20

Batch = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # uint8 sx, int32 sy, qx, qy


def episode_spec(config, ways: int | None = None, shots: int | None = None,
                 queries: int | None = None) -> EpisodeSpec:
    """The config's episode shape, with any of ``ways``, ``shots``, ``queries`` overridden."""
    return EpisodeSpec(ways or config.ways, shots or config.shots, queries or config.queries)


def make_sampler(config, split: str, spec: EpisodeSpec | None = None, *, data_dir=None,
                 download: bool = False, pool: ClassPool | None = None) -> EpisodeSampler:
    """A sampler over ``split`` of ``config.dataset`` (``pool``: already loaded images)."""
    if pool is None:
        pool = load_pool(config.dataset, split, config, data_dir, download)
    return EpisodeSampler(pool, spec or episode_spec(config), source=f"{config.dataset} {split}")


# ---- training -------------------------------------------------------------------------------
def training_samplers(config, data_dir=None, download: bool = False
                      ) -> tuple[EpisodeSampler, EpisodeSampler | None]:
    """The training split's sampler and, if ``config.val_episodes``, the validation split's."""
    train = make_sampler(config, config.train_split, data_dir=data_dir, download=download)
    val = (make_sampler(config, "val", data_dir=data_dir, download=download)
           if config.val_episodes else None)
    return train, val


def validation_batches(config) -> int:
    """How many meta-batches hold the ``val_episodes`` validation episodes."""
    return math.ceil(config.val_episodes / config.meta_batch_size)


def training_dataset(sampler: EpisodeSampler, config, start: int,
                     replicas: tuple[int, int, int] = (0, 1, 1)):
    """Training meta-batches ``start, start + 1, ...`` (endless), as ``EpisodeSampler.dataset``."""
    return sampler.dataset((config.seed, TRAIN_STREAM), start, config.meta_batch_size,
                           dtype=config.dtype, replicas=replicas)


def validation_dataset(sampler: EpisodeSampler, config,
                       replicas: tuple[int, int, int] = (0, 1, 1)):
    """The validation meta-batches, cached and repeated: each validation reads one cycle."""
    return sampler.dataset((config.seed, VAL_STREAM), 0, config.meta_batch_size,
                           count=validation_batches(config), dtype=config.dtype,
                           replicas=replicas).cache().repeat()


# ---- evaluation -----------------------------------------------------------------------------
def eval_batches(sampler: EpisodeSampler, episodes: int, seed: int = 0,
                 batch_size: int = EVAL_BATCH_SIZE, corruption: str = "none",
                 rate: float = 0.0) -> list[Batch]:
    """The evaluation episodes as uint8 batches ``(sx, sy, qx, qy)``, the same for every model.

    Batch ``b`` comes from ``np.random.default_rng([seed, EVAL_STREAM, b])``; a support
    corruption uses its own seeded generator, so it changes the support sets of these very
    episodes and nothing else.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    batches = []
    for b in range(math.ceil(episodes / batch_size)):
        n = min(batch_size, episodes - b * batch_size)
        sx, sy, qx, qy = sampler.sample_batch(np.random.default_rng([seed, EVAL_STREAM, b]), n)
        if corruption != "none":
            sx, sy = corrupt_batch(sx, sy, corruption, rate, seed, b)
        batches.append((sx, sy, qx, qy))
    return batches


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """Which evaluation episodes (evaluate's and compare's episode flags, ``cli.py``).

    ``dataset``, ``protocol``, ``ways``, ``shots``, ``queries``: None for the model's own.
    """

    split: str = "test"
    episodes: int = 600
    seed: int = 0
    dataset: str | None = None
    protocol: str | None = None
    ways: int | None = None
    shots: int | None = None
    queries: int | None = None
    corruption: str = "none"
    corruption_rate: float = 0.0


@dataclasses.dataclass
class EvaluationEpisodes:
    """The episodes of ``EvaluationSettings`` for a model: ``config`` is the model's with the
    evaluation's dataset and protocol and no rotations."""

    config: object
    settings: EvaluationSettings
    spec: EpisodeSpec
    batches: list[Batch]

    def describe(self) -> dict:
        """What makes these episodes these (recorded with every comparison)."""
        s = self.settings
        return {"dataset": self.config.dataset, "split": s.split, "protocol": self.config.protocol,
                "ways": self.spec.ways, "shots": self.spec.shots, "queries": self.spec.queries,
                "episodes": s.episodes, "seed": s.seed, "support_corruption": s.corruption,
                "corruption_rate": s.corruption_rate if s.corruption != "none" else 0.0}


def evaluation_episodes(config, settings: EvaluationSettings | None = None, *,
                        data_dir=None, download: bool = False, pool: ClassPool | None = None
                        ) -> EvaluationEpisodes:
    """The evaluation episodes of a model trained with ``config`` (``pool``: the split's
    images, already loaded; ``settings``: default ``EvaluationSettings()``)."""
    s = settings = settings or EvaluationSettings()
    config = config.replace(dataset=s.dataset or config.dataset, rotations=False,
                            protocol=s.protocol or config.protocol)
    spec = episode_spec(config, s.ways, s.shots, s.queries)
    sampler = make_sampler(config, s.split, spec, data_dir=data_dir, download=download, pool=pool)
    batches = eval_batches(sampler, s.episodes, s.seed, corruption=s.corruption,
                           rate=s.corruption_rate)
    return EvaluationEpisodes(config, settings, spec, batches)
