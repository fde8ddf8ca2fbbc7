# Shell functions the study scripts share (sourced; they read $runs, $record and rows()).
#   finished WORKDIR        a run trained to its configured iterations
#   finished_runs PROTOCOL  the finished workdirs of rows() under PROTOCOL/
#   compare PROTOCOL NAME [compare flags]   every finished model of PROTOCOL on the same episodes
#   pair OUTPUT [compare flags]             chosen models, extending an earlier OUTPUT
finished() {  # workdir: trained to its configured iterations (a run still training is left out)
  python - "$1" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
try:
    target = json.loads((work / "config.json").read_text())["iterations"]
    last = json.loads((work / "metrics.jsonl").read_text().strip().splitlines()[-1])
except (OSError, ValueError, IndexError, KeyError):
    sys.exit(1)
sys.exit(0 if last.get("iteration") == target else 1)
PY
}

finished_runs() {  # protocol: the workdirs of its finished runs, one per line
  while read -r run _; do
    if [[ $run == "$1"/* ]] && finished "$runs/$run"; then echo "$runs/$run"; fi
  done < <(rows)
}

compare() {  # protocol name [compare flags...]: every trained model of the protocol + pixel NN
  local protocol=$1 name=$2
  shift 2
  local dirs=()
  mapfile -t dirs < <(finished_runs "$protocol")
  [[ ${#dirs[@]} -gt 0 ]] || { echo "no finished $protocol run in $runs: compare $name skipped"; return 0; }
  local out="$record/${protocol}_${name}.json" reuse=()
  # the record keeps every model compared so far, their run folders here or not; only the runs
  # finished (or retrained) since are evaluated
  [[ -f $out ]] && reuse=(--reuse "$out" --keep-earlier)
  python -m metagna_tf.compare --workdirs "${dirs[@]}" --pixel-nn --episodes 600 --output "$out" \
    "${reuse[@]}" "$@" > /dev/null 2> "${out%.json}.txt.partial" \
    || { echo "FAILED: compare $protocol $name (see ${out%.json}.txt.partial)"; return 0; }
  mv "${out%.json}.txt.partial" "${out%.json}.txt"
  cat "${out%.json}.txt"
}

pair() {  # output [compare flags...]: chosen models of a protocol, if trained here
  local out=$1
  shift
  local reuse=()
  [[ -f $out ]] && reuse=(--reuse "$out" --keep-earlier)
  python -m metagna_tf.compare "$@" --episodes 600 --output "$out" "${reuse[@]}" \
    > /dev/null 2> "${out%.json}.txt.partial" \
    || { echo "FAILED: $out (see ${out%.json}.txt.partial)"; return 0; }
  mv "${out%.json}.txt.partial" "${out%.json}.txt"
}

