#!/usr/bin/env bash
# Shows that a training job killed at its Slurm time limit resumes and ends with the files of
# an uninterrupted run. A manual check (about 6 minutes on 2 cores), not part of the tests:
#
#   workflow/tools/slurm_time_limit_check.sh
#
# On the single-node test cluster (slurm_test_cluster.sh; started here when none runs, and
# stopped again) it trains one full-mode ConvNeXt for 600 epochs under a 1-minute limit on
# the first attempt (`--set-resources 'train:runtime=2*attempt-1'`), so Slurm kills it
# (TIMEOUT) and Snakemake resubmits it with 3 minutes. Then it trains the same run locally
# without interruption and compares metrics.json, predictions.csv, sample_predictions.csv,
# the saved model and history.csv (without its wall-clock `seconds` column).
# Keep the machine otherwise idle: other CPU work slows the epochs and moves the kill point.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${ICHSEQ_BIN:-$ROOT/.venv/bin}
WORK=$(mktemp -d /tmp/ichseq-time-limit.XXXXXX)
RUN=results/runs/convnext/rep-0
export PATH=$BIN:$PATH # the Slurm jobs run this venv's snakemake

checkout() {
    mkdir -p "$1"
    cp "$ROOT/Snakefile" "$ROOT/config.yaml" "$1/"
    cp -r "$ROOT/workflow" "$ROOT/profiles" "$1/"
}

cat >"$WORK/time-limit.yaml" <<'EOF'
dataset: {synthetic: {n_patients: 16, n_positive: 8, image_size: 64, min_slices: 12, max_slices: 16}}
preprocess: {image_size: 64}
splits: {replicates: 1}
models:
  convnext:
    config: {hidden_sizes: [16, 32, 64, 128], depths: [1, 1, 2, 1]}
    image_size: 64
    training: {mode: full, epochs: 600, patience: null, batch_size: 8}
EOF
checkout "$WORK/slurm"
checkout "$WORK/local"

started=""
if ! sinfo -h >/dev/null 2>&1; then
    bash "$ROOT/workflow/tools/slurm_test_cluster.sh" start
    eval "$(bash "$ROOT/workflow/tools/slurm_test_cluster.sh" env)"
    started=yes
fi

echo "Slurm run (1-minute limit on the first attempt); log: $WORK/slurm.log"
start=$SECONDS
(cd "$WORK/slurm" && snakemake --profile profiles/slurm --profile profiles/slurm-test "$RUN/metrics.json" \
    --configfile "$WORK/time-limit.yaml" --set-resources 'train:runtime=2*attempt-1') >"$WORK/slurm.log" 2>&1 ||
    { tail -n 30 "$WORK/slurm.log"; exit 1; }
echo "  done in $((SECONDS - start)) s"
[ -n "$started" ] && bash "$ROOT/workflow/tools/slurm_test_cluster.sh" stop >/dev/null

echo "local run, uninterrupted; log: $WORK/local.log"
start=$SECONDS
(cd "$WORK/local" && snakemake --cores 2 "$RUN/metrics.json" --configfile "$WORK/time-limit.yaml") \
    >"$WORK/local.log" 2>&1 || { tail -n 30 "$WORK/local.log"; exit 1; }
echo "  done in $((SECONDS - start)) s"

"$BIN/python" - "$WORK" "$RUN" <<'EOF'
import filecmp
import json
import re
import sys
from pathlib import Path

import pandas as pd

work, run = Path(sys.argv[1]), sys.argv[2]
slurm, local = work / "slurm" / run, work / "local" / run
log = (work / "slurm.log").read_text()
timeouts = re.findall(r"SLURM-job '(\d+)' failed, SLURM status is: 'TIMEOUT'", log)
resumed = json.loads((slurm / "cost.json").read_text())["resumed_from_epoch"]
print(f"Slurm jobs killed at the time limit: {', '.join(timeouts) or 'none'}; the retry resumed from epoch {resumed}")
failures = []
if not timeouts or not resumed:
    failures.append("the first attempt was not killed at its limit (machine faster than expected?)")
for name in ("metrics.json", "predictions.csv", "sample_predictions.csv"):
    if not filecmp.cmp(slurm / name, local / name, shallow=False):
        failures.append(f"{name} differs")
diff = filecmp.dircmp(slurm / "model", local / "model")
if diff.left_only or diff.right_only or filecmp.cmpfiles(slurm / "model", local / "model", diff.common_files, shallow=False)[1]:
    failures.append("the saved model differs")
histories = [pd.read_csv(p / "history.csv").drop(columns="seconds") for p in (slurm, local)]
if not histories[0].equals(histories[1]):
    failures.append("history.csv differs")
if failures:
    sys.exit("FAILED: " + "; ".join(failures))
print(f"identical to the uninterrupted run: metrics.json, predictions.csv, sample_predictions.csv, model/, "
      f"history.csv ({len(histories[0])} epochs, without `seconds`)")
EOF
rm -rf "$WORK"
