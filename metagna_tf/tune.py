"""Search hyperparameters of the meta-learner with keras-tuner (resumable).

    python -m metagna_tf.tune --dataset omniglot --algorithm metagna --tuner random \\
        --trials 20 --iterations-per-trial 500 --workdir runs/tune_metagna
        [--space space.json] [--objective-episodes 200] [config flags as for train]

Each trial is an ordinary training workdir (WORKDIR/trials/<id>), scored by its
validation query accuracy on the same seeded episodes. Rerunning the command
continues the search. Writes WORKDIR/trials.csv, WORKDIR/best_config.json (for
``python -m metagna_tf.train --config WORKDIR/best_config.json``) and TensorBoard
HParams summaries in WORKDIR/tensorboard. The search space is in
metagna_tf/tuning.py (DEFAULT_SPACE); --space FILE overrides keys (null fixes one).
With --tuner hyperband, --iterations-per-trial is the largest budget of a trial.
"""

from __future__ import annotations

import json
import sys

from metagna_tf import cli


def main(argv=None) -> None:
    p = cli.parser("metagna_tf.tune", __doc__)
    p.add_argument("--workdir", required=True, help="the search's folder")
    p.add_argument("--tuner", choices=("random", "bayesian", "hyperband"), default="random")
    p.add_argument("--trials", type=int, default=10, help="number of trials (random, bayesian)")
    p.add_argument("--iterations-per-trial", type=int, default=500)
    p.add_argument("--objective-episodes", type=int, default=200,
                   help="validation episodes scoring each trial (the same for every trial)")
    p.add_argument("--space", help="JSON file overriding the search space")
    p.add_argument("--verbose", default="0", help="Keras verbosity of each trial: 0, 1 or 2")
    cli.add_training_flags(p, exclude=("iterations",))
    args = p.parse_args(argv)
    from metagna_tf.tuning import tune

    base = cli.training_config(args)
    result = tune(base, args.workdir, tuner=args.tuner, trials=args.trials,
                  iterations_per_trial=args.iterations_per_trial, space_file=args.space,
                  objective_episodes=args.objective_episodes, data_dir=args.data_dir,
                  download=args.download, verbose=int(args.verbose))
    print(result["table"], file=sys.stderr)
    print(json.dumps({"best": result["best"], "trials": result["trials"],
                      "best_config": f"{args.workdir}/best_config.json"}))


if __name__ == "__main__":
    cli.run(main)
