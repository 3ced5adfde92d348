# Shared by learning_runs.sh and paper_runs.sh (sourced, not run): `run NAME FLAG...` trains one
# run into $RUNS/NAME with its log in $RUNS/NAME.log; `report NAME...` prints learning_report's
# table, or refuses when a run failed. Needs RUNS set and the repository root as the directory.

FAILED=()
run() {
  local name="$1"; shift
  echo "== $name: python -m experiments.train $* --workdir=$RUNS/$name"
  # A resumed run appends to its log, so the first process's output is kept.
  if python -m experiments.train "$@" --workdir="$RUNS/$name" >> "$RUNS/$name.log" 2>&1; then
    grep "test loss" "$RUNS/$name.log" | tail -n1 || true
  else
    echo "FAILED (see $RUNS/$name.log)"
    FAILED+=("$name")
  fi
}

report() {
  if ((${#FAILED[@]})); then
    # A failed run may have left an older summary.json behind: no table from it.
    echo "not reporting: ${FAILED[*]} failed" >&2
    exit 1
  fi
  python -m experiments.learning_report "$RUNS" "$@"
}
