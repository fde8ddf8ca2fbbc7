#!/usr/bin/env bash
# The sample-aware study (docs/results.md, "Where does Meta-GNA beat MAML?"): every model of
# the in-domain and cross-alphabet tables, trained with the results issue's settings, then
# compared on the same episodes (clean, 5-shot, corrupted supports, test-time steps) with
# paired intervals. Rerunning resumes unfinished runs and skips finished comparisons.
#   METAGNA_DATA_DIR=../shared/data/omniglot bash tools/results_sample_aware.sh train [RUNS_DIR] [RUN...]
#   METAGNA_DATA_DIR=../shared/data/omniglot bash tools/results_sample_aware.sh evaluate [RUNS_DIR] [PROTOCOL...]
# train trains every run below in order, or only the RUNs named (e.g. cross_alphabet/maml_seed1),
# so two machines (or two shells sharing cores) can split the list; each run resumes from its
# checkpoints. evaluate compares the finished runs of each protocol (indomain, cross_alphabet; both by
# default) and writes the comparisons to docs/results/sample_aware (or $METAGNA_STUDY_RECORD),
# committed with the study: a comparison there is extended with the runs finished since, and keeps
# the models recorded earlier whose run folders are gone (another machine, an earlier session); a
# model is known by its checkpoint's SHA-256, so a retrained run is evaluated anew. Run it from the
# repository's root.
set -euo pipefail
phase=${1:?usage: results_sample_aware.sh train|evaluate [RUNS_DIR]}
runs=${2:-runs/sample_aware}
selected=("${@:3}")  # evaluate: protocols; train: run names
protocols=("${selected[@]}")
record=${METAGNA_STUDY_RECORD:-docs/results/sample_aware}  # the comparisons, kept in the repo
[[ ${#protocols[@]} -gt 0 ]] || protocols=(indomain cross_alphabet)
# --arbiter-bound clip: the study was made with the clip bound, the default then; the tanh rows
# are the bound's ablation, whose validation result made tanh today's default
common=(--dataset omniglot --ways 5 --shots 1 --queries 1 --meta-batch-size 32 --inner-steps 1
        --inner-steps-test 3 --inner-lr 0.1 --iterations 2000 --checkpoint-every 100 --verbose 2
        --arbiter-bound clip)
# protocol/name algorithm seed [extra flags, after the common ones], in the order they are trained
rows() {
  cat <<'RUNS'
indomain/maml_seed0 maml 0
indomain/metagna_seed0 metagna 0
indomain/maml_seed1 maml 1
indomain/metagna_seed1 metagna 1
indomain/maml_seed2 maml 2
indomain/metagna_seed2 metagna 2
cross_alphabet/maml_seed0 maml 0 --config omniglot_cross_alphabet
cross_alphabet/metagna_seed0 metagna 0 --config omniglot_cross_alphabet
indomain/maml_lslr_seed0 maml_lslr 0
cross_alphabet/maml_seed1 maml 1 --config omniglot_cross_alphabet
cross_alphabet/metagna_seed1 metagna 1 --config omniglot_cross_alphabet
cross_alphabet/maml_lslr_seed0 maml_lslr 0 --config omniglot_cross_alphabet
indomain/metagna_tanh_seed0 metagna 0 --arbiter-bound tanh
cross_alphabet/maml_seed2 maml 2 --config omniglot_cross_alphabet
cross_alphabet/metagna_seed2 metagna 2 --config omniglot_cross_alphabet
cross_alphabet/metagna_tanh_seed0 metagna 0 --config omniglot_cross_alphabet --arbiter-bound tanh
indomain/metagna_nofeatures_seed0 metagna 0 --no-arbiter-use-features
cross_alphabet/metagna_nofeatures_seed0 metagna 0 --config omniglot_cross_alphabet --no-arbiter-use-features
indomain/gna_normalize_only_seed0 gna_normalize_only 0
cross_alphabet/gna_normalize_only_seed0 gna_normalize_only 0 --config omniglot_cross_alphabet
indomain/metagna_sampledir_seed0 metagna 0 --gna-direction sample
cross_alphabet/metagna_sampledir_seed0 metagna 0 --config omniglot_cross_alphabet --gna-direction sample
RUNS
}

# shellcheck source=tools/study_lib.sh
source "$(dirname "$0")/study_lib.sh"

if [[ $phase == evaluate ]]; then
  mkdir -p "$record"
  for protocol in "${protocols[@]}"; do
    compare "$protocol" 5w1s --ways 5 --shots 1 --queries 5
    compare "$protocol" 5w5s --ways 5 --shots 5 --queries 5
    compare "$protocol" 5w5s_occlusion0.2 --ways 5 --shots 5 --queries 5 \
      --support-corruption occlusion --corruption-rate 0.2
    compare "$protocol" 5w5s_label0.2 --ways 5 --shots 5 --queries 5 \
      --support-corruption label --corruption-rate 0.2
    mapfile -t trained < <(finished_runs "$protocol")
    if [[ ${#trained[@]} -gt 0 ]]; then
      # is Meta-GNA's difference its step size? its Arbiter learned scales well below 1, so
      # every model at 0 steps and at 3 steps of the trained inner lr (0.1) and smaller ones
      for setting in 5w5s 5w5s_label0.2; do
        extra=()
        [[ $setting == *label* ]] && extra=(--support-corruption label --corruption-rate 0.2)
        pair "$record/${protocol}_stepsize_$setting.json" --workdirs "${trained[@]}" \
          --inner-steps 0 3 --inner-lr 0.1 0.025 0.005 --ways 5 --shots 5 --queries 5 "${extra[@]}"
      done
    fi
    seed0=("$runs/$protocol/maml_seed0" "$runs/$protocol/metagna_seed0")
    if finished "${seed0[0]}" && finished "${seed0[1]}"; then
      for shots in 1 5; do  # does adaptation itself help? the prototype head alone, 1, 3, 10 steps
        pair "$record/${protocol}_steps_5w${shots}s.json" --workdirs "${seed0[@]}" \
          --inner-steps 0 1 3 10 --ways 5 --shots "$shots" --queries 5
      done
      if finished "$runs/$protocol/metagna_tanh_seed0"; then  # clip or tanh: the validation split decides
        pair "$record/${protocol}_bound_val_5w1s.json" --workdirs "${seed0[@]}" \
          "$runs/$protocol/metagna_tanh_seed0" --split val --ways 5 --shots 1 --queries 5
      fi
      python tools/analyze_adaptation.py --workdirs "${seed0[@]}" --episodes 100 --shots 5 \
        --plot "docs/analysis_${protocol}_5w5s.png" --json "$record/analysis_${protocol}_5w5s.json" > /dev/null
    else
      echo "$protocol seed 0 of MAML or Meta-GNA not trained in $runs: test-time steps and analysis skipped"
    fi
  done
  python tools/results_sample_aware_table.py "$record"
fi

if [[ $phase == train ]]; then
  names=" ${selected[*]} "
  [[ ${#selected[@]} -gt 0 ]] || names=" $(rows | cut -d' ' -f1 | tr '\n' ' ') "
  for wanted in "${selected[@]}"; do
    rows | grep -q "^$wanted " || { echo "unknown run: $wanted (see rows in $0)" >&2; exit 2; }
  done
  rows | while read -r name algorithm seed extra; do
    [[ $names == *" $name "* ]] || continue
    work="$runs/$name"
    mkdir -p "$(dirname "$work")"
    # shellcheck disable=SC2086
    python -m metagna_tf.train --algorithm "$algorithm" --seed "$seed" --workdir "$work" \
      "${common[@]}" $extra >> "$work.log" 2>&1 || echo "FAILED: $name (see $work.log)"
  done
fi
