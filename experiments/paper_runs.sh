#!/usr/bin/env bash
# The longer tasks of the papers, five seeds each: adding at T=200 and 400, copy at T=50 and
# 100 (Arjovsky, Shah & Bengio 2016), and the tanh RNN on the tasks those papers say it fails.
#
#   bash experiments/paper_runs.sh [RUNS_DIR [NAME ...]]   # default /tmp/jaxrnn_paper5, every run
#
# The settings are learning_runs.sh's (H=64, Adam, clipping at norm 1) with the papers'
# lengths and longer step budgets; README "The longer tasks of the papers" sets them beside
# the papers' figures. NAMEs pick runs (two shells can share the list between them, one run each at a
# time); re-running resumes unfinished runs from their checkpoints. The table is
# `python -m experiments.learning_report RUNS_DIR`.
set -euo pipefail
RUNS="${1:-/tmp/jaxrnn_paper5}"
shift || true
mkdir -p "$RUNS"
RUNS="$(cd "$RUNS" && pwd)"  # a relative RUNS_DIR means the caller's directory, not the repo's
cd "$(dirname "$0")/.."

SEEDS="--seeds=5"
ADDING="--task=adding --hidden_size=64 --batch_size=50 --optimizer=adam --learning_rate=1e-3 --clip_norm=1 $SEEDS"
COPY="--task=copy --hidden_size=64 --batch_size=64 --optimizer=adam --learning_rate=3e-3 --clip_norm=1 --steps=8000 $SEEDS"
declare -A ARGS=(
  [adding200_lstm]="$ADDING --seq_len=200 --steps=8000 --cell=lstm"
  [adding200_gru]="$ADDING --seq_len=200 --steps=4000 --cell=gru"
  [adding400_lstm]="$ADDING --seq_len=400 --steps=8000 --cell=lstm"
  [adding400_gru]="$ADDING --seq_len=400 --steps=4000 --cell=gru"
  [adding100_rnn]="$ADDING --seq_len=100 --steps=4000 --cell=rnn"
  [adding200_rnn]="$ADDING --seq_len=200 --steps=4000 --cell=rnn"
  [copy50_lstm]="$COPY --seq_len=50 --cell=lstm"
  [copy50_gru]="$COPY --seq_len=50 --cell=gru"
  [copy100_lstm]="$COPY --seq_len=100 --cell=lstm"
  [copy100_gru]="$COPY --seq_len=100 --cell=gru"
  [copy50_rnn]="$COPY --seq_len=50 --cell=rnn"
)
ALL=(adding100_rnn adding200_rnn copy50_rnn copy50_lstm copy50_gru copy100_lstm copy100_gru
     adding200_gru adding400_gru adding200_lstm adding400_lstm)
NAMES=("$@")
((${#NAMES[@]})) || NAMES=("${ALL[@]}")

for name in "${NAMES[@]}"; do  # every name checked before hours of training start
  [[ -v "ARGS[$name]" ]] || { echo "unknown run $name (one of: ${ALL[*]})" >&2; exit 2; }
done

# shellcheck source=experiments/runs_lib.sh
. experiments/runs_lib.sh
for name in "${NAMES[@]}"; do
  # shellcheck disable=SC2086  # ARGS holds flags split on spaces
  run "$name" ${ARGS[$name]}
done
report "${NAMES[@]}"
