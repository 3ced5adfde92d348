#!/usr/bin/env bash
# The benchmark on one GPU: the default shapes plus DeepBench's, every peer
# (cuDNN through jax.experimental.rnn.lstm; PyTorch on CUDA where this torch
# build has it), then --mode=memory, then --mode=parallel (sequential unroll
# against parallel_unroll's methods). No network; under 5 minutes on one H100
# plus PARALLEL_TIMEOUT_S.
# Each train/forward run saves its JSON and table after every shape, so a run
# cut short by its timeout still leaves what it measured (--mode=memory writes
# at its end only).
#
# Usage: experiments/gpu_benchmark.sh OUTDIR [FLAGS of experiments.benchmark...]
#   FLAGS go to the train/forward run (e.g. --repeats=5 --nocompile_scaling).
# Environment:
#   BENCH_TIMEOUT_S (220), MEMORY_TIMEOUT_S (60): the two runs' time limits;
#   MEMORY_FLAGS: extra flags of the memory run (split on spaces);
#   PARALLEL_TIMEOUT_S (240; 0 skips the run), PARALLEL_FLAGS: the --mode=parallel run's
#   time limit and flags (split on spaces; default gru, lstm and min_gru, T 64..65536,
#   H 8, 64, 256, with --parallel_time_budget at 85% of the limit, so rows predicted to
#   pass it are skipped and listed). It saves after every row.
#   GPU_CHECK_ALLOW_CPU=1: run on a machine without a GPU too (a dry run).
set -euo pipefail
out_dir="${1:?usage: experiments/gpu_benchmark.sh OUTDIR [BENCHMARK FLAGS...]}"
shift
bench_flags=("$@")
read -r -a memory_flags <<< "${MEMORY_FLAGS:-}"
python="${PYTHON:-python}"
cd "$(dirname "$0")/.."
mkdir -p "${out_dir}"

# JAX must not take the whole GPU: PyTorch allocates on it in the same process.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

if [[ "${GPU_CHECK_ALLOW_CPU:-0}" != 1 ]]; then
  "${python}" -c 'import jax; assert jax.default_backend() == "gpu", jax.devices()'
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
  > "${out_dir}/gpu.txt" 2>&1 || true

status=0
timeout -k 10 "${BENCH_TIMEOUT_S:-220}" "${python}" -m experiments.benchmark \
  --mode=train,forward --out_dir="${out_dir}" ${bench_flags[@]+"${bench_flags[@]}"} 2>&1 \
  | tee "${out_dir}/log.txt" || status=$?
timeout -k 10 "${MEMORY_TIMEOUT_S:-60}" "${python}" -m experiments.benchmark --mode=memory \
  --out_dir="${out_dir}/memory" ${memory_flags[@]+"${memory_flags[@]}"} 2>&1 \
  | tee "${out_dir}/memory_log.txt" || status=$?
read -r -a parallel_flags <<< "${PARALLEL_FLAGS:---parallel_cells=gru,lstm,min_gru \
--parallel_times=64,1024,16384,65536 --parallel_hiddens=8,64,256 --parallel_repeats=3 \
--parallel_max_gb=20 --parallel_time_budget=$(( ${PARALLEL_TIMEOUT_S:-240} * 85 / 100 ))}"
if [[ "${PARALLEL_TIMEOUT_S:-240}" != 0 ]]; then
  timeout -k 10 "${PARALLEL_TIMEOUT_S:-240}" "${python}" -m experiments.benchmark --mode=parallel \
    --out_dir="${out_dir}/parallel" "${parallel_flags[@]}" 2>&1 \
    | tee "${out_dir}/parallel_log.txt" || status=$?
fi
exit "${status}"
