#!/usr/bin/env bash
# The inner-loop study (docs/results.md, "When the inner loop does the adapting"): MAML, Meta-GNA
# in the authors' form (joint Arbiter), Meta-GNA in ours (per-tensor Arbiter) and LSLR, all with
# MAML's linear head, BatchNorm not adapted and 5 second-order inner steps in training and at
# test, on Omniglot 5-way 1-shot, in-domain and cross-alphabet; then the same four with the
# prototype head. Every phase resumes: rerun it after any interruption.
#   METAGNA_DATA_DIR=../shared/data/omniglot bash tools/results_inner_loop.sh select [RUNS_DIR]
#   METAGNA_DATA_DIR=../shared/data/omniglot bash tools/results_inner_loop.sh train [RUNS_DIR] [RUN...]
#   METAGNA_DATA_DIR=../shared/data/omniglot bash tools/results_inner_loop.sh evaluate [RUNS_DIR] [PROTOCOL...]
#   bash tools/results_inner_loop.sh save|restore [RUNS_DIR] [RUN...]
# select: each model's inner learning rate on the validation split (short runs, in-domain; the
#   authors' beta sets a step's norm, ours multiplies the gradient, so the same number means
#   different steps); writes $record/selection_val.json (compare's paired record) and
#   $record/chosen.txt (model, rate, validation accuracy).
# train: the study's runs with the chosen rates (all, or the RUNs named), each resumable, to
#   its protocol's budget (budget below).
# evaluate: paired comparisons per protocol (clean, occluded and wrong-label supports at 1 and
#   5 shots; 0/1/5/10 test-time steps), the scales and step norms per tensor and step
#   (alpha_<protocol>.png) and the runs' validation curves, written to $record; then
#   `python tools/results_inner_loop_table.py tables` prints the tables of docs/results.md.
# save: the runs' resumable state (config, metrics, latest and best checkpoints; all runs, or the
#   RUNs named) into $record/runs, to commit, so that a run outlives its machine; pause training
#   first (kill -STOP). restore: put it back into RUNS_DIR on a new machine, then `train`
#   resumes every run where it stopped (tools/study_state.py).
set -euo pipefail
phase=${1:?usage: results_inner_loop.sh select|train|evaluate|save|restore [RUNS_DIR]}
case $phase in
  select | train | evaluate | save | restore) ;;
  *) echo "unknown phase '$phase': select, train, evaluate, save or restore" >&2; exit 2 ;;
esac
runs=${2:-runs/inner_loop}
selected=("${@:3}")
record=${METAGNA_STUDY_RECORD:-docs/results/inner_loop}
mkdir -p "$record" "$runs"
# the method settings every model shares (the authors' form's, as paper_omniglot_5w1s)
method=(--dataset omniglot --ways 5 --shots 1 --head linear --inner-params no_bn
        --inner-steps 5 --inner-steps-test 5 --checkpoint-every 100 --verbose 2)
# model name -> algorithm flags
model_flags() {
  case $1 in
    maml) echo "--algorithm maml" ;;
    authors) echo "--algorithm metagna --arbiter-form joint" ;;
    ours) echo "--algorithm metagna --arbiter-form per_tensor" ;;
    lslr) echo "--algorithm maml_lslr" ;;
    *) echo "unknown model $1" >&2; return 2 ;;
  esac
}
# selection: short runs, meta-batch 16, 1 query, 500 iterations; candidate inner rates per model
select_budget=(--iterations 500 --meta-batch-size 16 --queries 1 --seed 0)
candidates() {
  case $1 in
    authors) echo "0.01 0.1 0.4" ;;  # beta: the step's norm (theirs: 0.01 at 84x84)
    *) echo "0.1 0.4" ;;             # a factor on the gradient (MAML's Omniglot rates)
  esac
}

chosen() {  # model -> its chosen rate (after select)
  awk -v m="$1" '$1 == m { print $2 }' "$record/chosen.txt"
}

# the budget, the same for every run of a protocol (meta-learning rate constant, so a run trained
# to an earlier budget resumes to this one). In-domain: 3000 iterations left MAML seed 0 still
# rising (its last fifth +0.83 points); at 5000 Meta-GNA in our form had not plateaued (+1.86),
# hence 8000; a copy of our form trained on from 8000 to 10000 raised its best validation
# accuracy by 1.43 points and its test accuracy by 1.59 (docs/results.md, "Budget"), hence
# 12000, where all four seed-0 runs pass. Cross-alphabet (held-out alphabets, a harder
# validation split): MAML seed 0 failed the check at 12000 (mean +1.05, best +1.61) and was
# still rising at 18000 (mean validation accuracy per 1000 iterations 84.6, 85.1, 85.4, 85.6
# from 15000), hence 30000. Meta-GNA in our form then failed it there: over its last fifth
# the mean validation accuracy gained 1.54 points and the best 2.50 (89.82 at 26200 against
# 87.32 at 23800; mean per 2000 iterations 85.1, 86.0, 87.2, 86.6, 87.3 from 20000), hence
# 45000. In-domain again: the authors' form seed 2 failed (b) at 12000, its best validation
# accuracy 0.54 points above the best before its last fifth (96.25 at 10400 against 95.71),
# hence 15000. There the authors' form seed 1 failed both conditions (+1.00 in mean, +1.07 in
# best; mean validation accuracy per 1000 iterations 96.55 over 11000-12000, then 97.3, 97.7,
# 97.6), hence 20000. Cross-alphabet, ours passes at 45000 (-0.05, -0.89), but the authors'
# form seed 0 fails (b) there: its best validation accuracy rose to 87.68 at 42600 against
# 86.79 before its last fifth (+0.89), and that checkpoint tests +1.21 +/- 0.56 above the
# earlier best on the same 600 clean 1-shot episodes, hence 60000. There it fails both
# conditions (+2.29 in mean, +1.61 in best: 90.00 at 53400; mean validation accuracy per 6000
# iterations 83.36, 85.49, 86.43, 87.00 from 36000), hence 80000. Raise a protocol's budget
# again if any of its runs fails the plateau check (tools/results_inner_loop_table.py).
budget() {  # run name -> its iterations
  case $1 in
    cross_alphabet/*) echo 80000 ;;
    *) echo 20000 ;;
  esac
}

# protocol/name model seed head [extra flags]: the study's runs, in training order
rows() {
  cat <<'RUNS'
indomain/maml_seed0 maml 0 linear
indomain/authors_seed0 authors 0 linear
indomain/ours_seed0 ours 0 linear
indomain/lslr_seed0 lslr 0 linear
cross_alphabet/maml_seed0 maml 0 linear --config omniglot_cross_alphabet
cross_alphabet/authors_seed0 authors 0 linear --config omniglot_cross_alphabet
cross_alphabet/ours_seed0 ours 0 linear --config omniglot_cross_alphabet
cross_alphabet/lslr_seed0 lslr 0 linear --config omniglot_cross_alphabet
indomain/maml_seed1 maml 1 linear
indomain/authors_seed1 authors 1 linear
cross_alphabet/maml_seed1 maml 1 linear --config omniglot_cross_alphabet
cross_alphabet/authors_seed1 authors 1 linear --config omniglot_cross_alphabet
indomain/maml_seed2 maml 2 linear
indomain/authors_seed2 authors 2 linear
cross_alphabet/maml_seed2 maml 2 linear --config omniglot_cross_alphabet
cross_alphabet/authors_seed2 authors 2 linear --config omniglot_cross_alphabet
indomain/maml_proto_seed0 maml 0 proto
indomain/authors_proto_seed0 authors 0 proto
indomain/ours_proto_seed0 ours 0 proto
indomain/lslr_proto_seed0 lslr 0 proto
RUNS
}

# shellcheck source=tools/study_lib.sh
source "$(dirname "$0")/study_lib.sh"

train_one() {  # workdir model flags...: train (or resume) into workdir, log beside it
  local work=$1
  shift
  mkdir -p "$(dirname "$work")"
  python -m metagna_tf.train --workdir "$work" "$@" >> "$work.log" 2>&1 \
    || echo "FAILED: $work (see $work.log)"
}

if [[ $phase == select ]]; then
  dirs=()
  for model in maml authors ours lslr; do
    for lr in $(candidates "$model"); do
      work="$runs/select/${model}_lr$lr"
      # shellcheck disable=SC2046
      finished "$work" || train_one "$work" "${method[@]}" $(model_flags "$model") \
        --inner-lr "$lr" "${select_budget[@]}"
      dirs+=("$work")
    done
  done
  pair "$record/selection_val.json" --workdirs "${dirs[@]}" --split val --ways 5 --shots 1 \
    --queries 5
  python - "$record/selection_val.json" "$record/chosen.txt" <<'PY'
import json, sys
from collections import defaultdict
from pathlib import Path
models = json.loads(Path(sys.argv[1]).read_text())["models"]
best = defaultdict(lambda: (-1.0, None))
for entry in models.values() if isinstance(models, dict) else models:
    name = Path(entry["workdir"]).name  # <model>_lr<rate>
    model, rate = name.rsplit("_lr", 1)
    if entry["accuracy"] > best[model][0]:
        best[model] = (entry["accuracy"], rate)
lines = [f"{m} {rate} {acc:.4f}" for m, (acc, rate) in sorted(best.items())]
Path(sys.argv[2]).write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
fi

if [[ $phase == train ]]; then
  [[ -f $record/chosen.txt ]] || { echo "run select first ($record/chosen.txt)" >&2; exit 2; }
  names=" ${selected[*]} "
  [[ ${#selected[@]} -gt 0 ]] || names=" $(rows | cut -d' ' -f1 | tr '\n' ' ') "
  rows | while read -r name model seed head extra; do
    [[ $names == *" $name "* ]] || continue
    # shellcheck disable=SC2046,SC2086
    train_one "$runs/$name" "${method[@]}" $(model_flags "$model") --inner-lr "$(chosen "$model")" \
      --head "$head" --seed "$seed" --meta-batch-size 16 --queries 1 \
      --iterations "$(budget "$name")" $extra
  done
fi

if [[ $phase == evaluate ]]; then
  protocols=("${selected[@]}")
  [[ ${#protocols[@]} -gt 0 ]] || protocols=(indomain cross_alphabet)
  for protocol in "${protocols[@]}"; do
    compare "$protocol" 5w1s --ways 5 --shots 1 --queries 5
    compare "$protocol" 5w5s --ways 5 --shots 5 --queries 5
    for shots in 1 5; do
      compare "$protocol" "5w${shots}s_occlusion0.2" --ways 5 --shots "$shots" --queries 5 \
        --support-corruption occlusion --corruption-rate 0.2
      compare "$protocol" "5w${shots}s_label0.2" --ways 5 --shots "$shots" --queries 5 \
        --support-corruption label --corruption-rate 0.2
    done
    mapfile -t trained < <(finished_runs "$protocol")
    if [[ ${#trained[@]} -gt 0 ]]; then  # the steps now matter: 0, 1, 5 and 10 test-time steps
      pair "$record/${protocol}_steps_5w1s.json" --workdirs "${trained[@]}" \
        --inner-steps 0 1 5 10 --ways 5 --shots 1 --queries 5
    fi
    # the scales (the Arbiter's alpha, LSLR's factors) and the step norms per tensor and step:
    # seed 0 of each linear-head model, 100 test episodes (the record keeps the models whose
    # run folders are gone)
    seed0=()
    for run in "${trained[@]}"; do
      if [[ $run == *_seed0 && $run != *_proto_* ]]; then seed0+=("$run"); fi
    done
    if [[ ${#seed0[@]} -gt 0 ]]; then
      python tools/analyze_adaptation.py --workdirs "${seed0[@]}" --episodes 100 \
        --alpha-plot "$record/alpha_${protocol}.png" --json "$record/alpha_${protocol}.json" \
        --keep-earlier > /dev/null || echo "FAILED: the alpha plot of $protocol"
    fi
  done
  python tools/results_inner_loop_table.py curves "$runs" --record "$record"
fi

if [[ $phase == save ]]; then
  python "$(dirname "$0")/study_state.py" save "$runs" "$record/runs" "${selected[@]}"
fi

if [[ $phase == restore ]]; then
  python "$(dirname "$0")/study_state.py" restore "$record/runs" "$runs"
fi
