#!/usr/bin/env bash
# The acceptance learning runs of experiments.train, five seeds each, one run after the other,
# then the table.
#
#   bash experiments/learning_runs.sh [RUNS_DIR]        # default RUNS_DIR=/tmp/jaxrnn_runs5
#
# Each run trains seeds 0..4 side by side (--seeds=5, one vmapped step) and writes
# RUNS_DIR/<name>/{summary.json,metrics.jsonl,loss_curve.png} and its log to
# RUNS_DIR/<name>.log; re-running the script resumes unfinished runs from their checkpoints.
# The table (experiments/learning_report.py) gives every row as mean ± std over the seeds and
# how many seeds met the task's bar. Every command is also runnable on its own (README:
# "Learning results").
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-/tmp/jaxrnn_runs5}"  # not the single-seed commands' /tmp/jaxrnn_runs
mkdir -p "$RUNS"

SEEDS="--seeds=5"
ADDING="--task=adding --seq_len=100 --hidden_size=64 --batch_size=50 --optimizer=adam --learning_rate=1e-3 --clip_norm=1 --steps=4000 $SEEDS"
COPY="--task=copy --seq_len=20 --hidden_size=64 --batch_size=64 --optimizer=adam --learning_rate=3e-3 --clip_norm=1 --steps=8000 $SEEDS"
CHARLM="--task=charlm --hidden_size=128 --steps=3000 $SEEDS"
DIGITS="--task=digits --hidden_size=64 --batch_size=64 --learning_rate=3e-3 --schedule=cosine --steps=3000 $SEEDS"
NAMES=(adding_lstm adding_gru copy_lstm copy_gru charlm_lstm charlm_rnn digits_lstm digits_gru)

# shellcheck source=experiments/runs_lib.sh
. experiments/runs_lib.sh

run adding_lstm $ADDING --cell=lstm
run adding_gru $ADDING --cell=gru
run copy_lstm $COPY --cell=lstm
run copy_gru $COPY --cell=gru
run charlm_lstm $CHARLM --cell=lstm
run charlm_rnn $CHARLM --cell=rnn
run digits_lstm $DIGITS --cell=lstm
run digits_gru $DIGITS --cell=gru

report "${NAMES[@]}"
