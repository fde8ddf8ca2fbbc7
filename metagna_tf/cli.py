"""What the CLIs share: their parser and common flags, logging, quiet TensorFlow start-up
unless --verbose, clean errors."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable

# Before TensorFlow is imported by the command: keep its C++ start-up chatter off stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ---- flags ----------------------------------------------------------------------------------
def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m module``, its docstring ``doc`` shown as written."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_data_flags(p: argparse.ArgumentParser) -> None:
    """Where the dataset comes from (``data.source_dir``)."""
    p.add_argument("--data-dir", help="dataset folder (default: $METAGNA_DATA_DIR; else TFDS's "
                   "cached copy; else, for omniglot, the bundled minimal sets)")
    p.add_argument("--download", action="store_true",
                   help="fetch the dataset through TFDS (omniglot: the full set; cub)")


def add_checkpoint_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                   help="a workdir's best checkpoint (validation accuracy) or its latest")


def add_training_flags(p: argparse.ArgumentParser, exclude=()) -> None:
    """train and tune: ``--config``, the data flags and one flag per config key."""
    from metagna_tf.config import add_config_flags

    p.add_argument("--config", help="a preset name or a JSON file of config keys")
    add_data_flags(p)
    add_config_flags(p, exclude=exclude)


def training_config(args: argparse.Namespace):
    """The ``Config`` of ``add_training_flags``' flags: ``--config`` (else the dataset's
    preset) with every config flag given applied."""
    from metagna_tf import config as cfg

    return cfg.config_from_args(args, cfg.base_config(args.config, args.dataset))


def add_episode_flags(p: argparse.ArgumentParser, dataset_default: str) -> None:
    """evaluate and compare: which evaluation episodes (``episode_setup.evaluation_episodes``)."""
    from metagna_tf.corruption import KINDS

    p.add_argument("--dataset", help=f"evaluation dataset (default: {dataset_default})")
    add_data_flags(p)
    p.add_argument("--split", default="test")
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--ways", type=int, help="default: as in training (any number works)")
    p.add_argument("--shots", type=int, help="default: as in training")
    p.add_argument("--queries", type=int, help="default: as in training")
    p.add_argument("--seed", type=int, default=0, help="episode seed (the same for every model)")
    p.add_argument("--support-corruption", choices=KINDS, default="none",
                   help="damage a fraction of each episode's support images (seeded; the same "
                   "for every model; see metagna_tf/corruption.py)")
    p.add_argument("--corruption-rate", type=float, default=0.2,
                   help="fraction of support images corrupted per episode (at least one)")


def evaluation_settings(args: argparse.Namespace):
    """The ``episode_setup.EvaluationSettings`` of ``add_episode_flags``' flags (and of
    ``--protocol``, where a CLI has it)."""
    from metagna_tf.episode_setup import EvaluationSettings

    return EvaluationSettings(split=args.split, episodes=args.episodes, seed=args.seed,
                              dataset=args.dataset, protocol=getattr(args, "protocol", None),
                              ways=args.ways, shots=args.shots, queries=args.queries,
                              corruption=args.support_corruption,
                              corruption_rate=args.corruption_rate)


# ---- running ----------------------------------------------------------------------------------
def verbose_requested(argv) -> bool:
    """``--verbose`` given (with any value but 0), or ``METAGNA_VERBOSE=1``."""
    if os.environ.get("METAGNA_VERBOSE", "") not in ("", "0"):
        return True
    for i, arg in enumerate(argv):
        if arg == "--verbose":
            value = argv[i + 1] if i + 1 < len(argv) else ""
            return value != "0"
        if arg.startswith("--verbose="):
            return arg.split("=", 1)[1] != "0"
    return False


@contextlib.contextmanager
def quiet_stderr_fd():
    """Silence file descriptor 2 (C++ logging) for the block; replay it if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow(verbose: bool) -> None:
    """Import TensorFlow; its start-up lines (oneDNN, CPU features, absl) only if verbose."""
    if verbose:
        import tensorflow  # noqa: F401
        return
    with quiet_stderr_fd():
        import tensorflow  # noqa: F401


def run(main: Callable[[], None]) -> None:
    """Run a CLI; user errors become one ``error: ...`` line and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # checkpoint-sharding chatter
    from metagna_tf.install_check import tensorflow_problem

    problem = tensorflow_problem()
    if problem and problem.startswith("TensorFlow is not installed"):
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    if problem:
        logging.getLogger("metagna_tf").warning(problem)
    import_tensorflow(verbose_requested(sys.argv[1:]))
    from metagna_tf.data.images import ImageError
    from metagna_tf.training import NonFiniteLossError

    try:
        main()
    except BrokenPipeError:  # the reader closed stdout (`... | head`): stop quietly, like cat
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(3)
    except (ValueError, FileNotFoundError, FileExistsError, ConnectionError, ImageError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
