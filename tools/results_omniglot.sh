#!/usr/bin/env bash
# The Omniglot minimal-set results table (docs/results.md), one plain train + evaluate
# invocation per row. Rerunning resumes unfinished runs and skips finished ones.
#   METAGNA_DATA_DIR=../shared/data/omniglot bash tools/results_omniglot.sh [RUNS_DIR] [INNER_LR]
set -euo pipefail
runs=${1:-runs/results}
lr=${2:-0.1}   # chosen once for maml on the validation split (docs/results.md)
common=(--dataset omniglot --ways 5 --shots 1 --queries 1 --meta-batch-size 32 --inner-steps 1
        --inner-steps-test 3 --inner-lr "$lr" --iterations 2000 --checkpoint-every 100 --verbose 2
        --arbiter-bound clip)  # the bound of this table's runs, the default when they were made
# name algorithm seed [extra flags]
while read -r name algorithm seed extra; do
  work="$runs/$name"
  # shellcheck disable=SC2086
  python -m metagna_tf.train --algorithm "$algorithm" --seed "$seed" --workdir "$work" "${common[@]}" \
    $extra >> "$work.log" 2>&1
  python -m metagna_tf.evaluate --workdir "$work" --episodes 600 --ways 5 --inner-steps 3 >> "$work.log" 2>&1
  python -m metagna_tf.evaluate --workdir "$work" --episodes 600 --ways 20 --inner-steps 3 >> "$work.log" 2>&1
done <<'RUNS'
maml_seed0 maml 0
fomaml_seed0 fomaml 0
metagna_seed0 metagna 0
gna_normalize_only_seed0 gna_normalize_only 0
maml_seed1 maml 1
metagna_seed1 metagna 1
metagna_jacobian_seed0 metagna 0 --gna-sample-grads jacobian
metagna_jacobian_seed1 metagna 1 --gna-sample-grads jacobian
RUNS
python tools/results_table.py "$runs"
