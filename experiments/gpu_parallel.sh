#!/usr/bin/env bash
# Parallel-in-time evidence on one GPU (issue 14), in one command: the GRU trained on the
# adding task through `--unroll=parallel` (Newton), then `--mode=parallel` of the benchmark.
# No network; about 7 minutes on one H100/H200 (each phase under its own timeout).
#
# Usage: experiments/gpu_parallel.sh OUTDIR
# Environment: TRAIN_TIMEOUT_S (200), PARALLEL_TIMEOUT_S (220), PARALLEL_FLAGS (the benchmark
# grid, split on spaces), TRAIN_STEPS (4000).
set -uo pipefail
out="${1:?usage: experiments/gpu_parallel.sh OUTDIR}"
mkdir -p "${out}"
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
export PYTHONPATH="${PWD}${PYTHONPATH:+:${PYTHONPATH}}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "${python}" -c 'import jax, jaxlib; print("jax", jax.__version__, "jaxlib", jaxlib.__version__, jax.devices())'
} > "${out}/versions.txt" 2>&1
cat "${out}/versions.txt"
status=0
# The README's sequential GRU adding run, with the parallel path.
SECONDS=0
timeout -k 10 "${TRAIN_TIMEOUT_S:-200}" "${python}" -m experiments.gpu_train --task=adding \
  --seq_len=100 --hidden_size=64 --batch_size=50 --optimizer=adam --learning_rate=1e-3 \
  --clip_norm=1 --steps="${TRAIN_STEPS:-4000}" --cell=gru --unroll=parallel \
  --parallel_method=newton --workdir="${out}/adding_gru_parallel" 2>&1 \
  | tail -n 60 > "${out}/train_log.txt" || status=$?
echo "train: ${SECONDS} s, status ${status}" | tee -a "${out}/train_log.txt"
tail -n 8 "${out}/train_log.txt"
read -r -a parallel_flags <<< "${PARALLEL_FLAGS:---parallel_cells=gru,lstm,min_gru \
--parallel_times=64,1024,16384,65536 --parallel_hiddens=8,64,256 --parallel_repeats=3 \
--parallel_max_gb=40 --parallel_time_budget=$(( ${PARALLEL_TIMEOUT_S:-220} * 85 / 100 ))}"
timeout -k 10 "${PARALLEL_TIMEOUT_S:-220}" "${python}" -m experiments.benchmark --mode=parallel \
  --out_dir="${out}/parallel" "${parallel_flags[@]}" > "${out}/parallel_log.txt" 2>&1 || status=$?
tail -n 80 "${out}/parallel_log.txt"
exit "${status}"
