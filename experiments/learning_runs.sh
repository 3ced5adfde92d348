#!/usr/bin/env bash
# The acceptance learning runs of experiments.train, one after the other, then a table.
#
#   bash experiments/learning_runs.sh [RUNS_DIR]        # default RUNS_DIR=/tmp/jaxrnn_runs
#
# Each run writes RUNS_DIR/<name>/{summary.json,metrics.jsonl,loss_curve.png} and its log
# to RUNS_DIR/<name>.log; re-running the script resumes unfinished runs from their
# checkpoints. Every command is also runnable on its own (README: "Learning results").
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-/tmp/jaxrnn_runs}"
mkdir -p "$RUNS"

ADDING="--task=adding --seq_len=100 --hidden_size=64 --batch_size=50 --optimizer=adam --learning_rate=1e-3 --clip_norm=1 --steps=4000"
COPY="--task=copy --seq_len=20 --hidden_size=64 --batch_size=64 --optimizer=adam --learning_rate=3e-3 --clip_norm=1 --steps=8000"
CHARLM="--task=charlm --hidden_size=128 --steps=3000"

run() {
  local name="$1"; shift
  echo "== $name: python -m experiments.train $* --workdir=$RUNS/$name"
  if python -m experiments.train "$@" --workdir="$RUNS/$name" > "$RUNS/$name.log" 2>&1; then
    grep -m1 "test loss" "$RUNS/$name.log"
  else
    echo "FAILED (see $RUNS/$name.log)"
  fi
}

run adding_lstm $ADDING --cell=lstm
run adding_gru $ADDING --cell=gru
run copy_lstm $COPY --cell=lstm
run copy_gru $COPY --cell=gru
run charlm_lstm $CHARLM --cell=lstm
run charlm_rnn $CHARLM --cell=rnn

python - "$RUNS" <<'EOF'
import json, os, sys
runs = sys.argv[1]
names = ("adding_lstm", "adding_gru", "copy_lstm", "copy_gru", "charlm_lstm", "charlm_rnn")
missing = [n for n in names if not os.path.exists(os.path.join(runs, n, "summary.json"))]
if missing:
  sys.exit(f"no summary for {', '.join(missing)}")
s = {n: json.load(open(os.path.join(runs, n, "summary.json"))) for n in names}
bars = {
    "adding_lstm": ("test MSE < 0.01", s["adding_lstm"]["test_loss"] < 0.01),
    "adding_gru": ("test MSE < 0.01", s["adding_gru"]["test_loss"] < 0.01),
    "copy_lstm": ("CE < 0.5 x baseline", s["copy_lstm"]["loss_over_baseline"] < 0.5),
    "copy_gru": ("CE < 0.5 x baseline", s["copy_gru"]["loss_over_baseline"] < 0.5),
    "charlm_lstm": ("val < 0.55 x unigram and < rnn",
                    s["charlm_lstm"]["loss_over_baseline"] < 0.55
                    and s["charlm_lstm"]["test_loss"] < s["charlm_rnn"]["test_loss"]),
    "charlm_rnn": ("(reference for lstm)", True),
}
print("| run | steps | test loss | baseline | ratio | accuracy | bar | met | wall s |")
print("|---|---|---|---|---|---|---|---|---|")
for name, r in s.items():
  acc = "-" if r["test_accuracy"] is None else f"{r['test_accuracy']:.3f}"
  bar, ok = bars[name]
  print(f"| {name} | {r['steps']} | {r['test_loss']:.4f} | {r['baseline_loss']:.4f} | "
        f"{r['loss_over_baseline']:.3f} | {acc} | {bar} | {'yes' if ok else 'NO'} | "
        f"{r['wall_seconds']:.0f} |")
EOF
