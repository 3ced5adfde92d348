#!/usr/bin/env bash
# The benchmark on one GPU: the default shapes plus DeepBench's, every peer
# (cuDNN through jax.experimental.rnn.lstm; PyTorch on CUDA where this torch
# build has it), then --mode=memory. No network; under 5 minutes on one H100.
# Each run saves its JSON and table after every shape, so a run cut short by
# its timeout still leaves what it measured.
#
# Usage: experiments/gpu_benchmark.sh OUTDIR
set -euo pipefail
out_dir="${1:?usage: experiments/gpu_benchmark.sh OUTDIR}"
python="${PYTHON:-python}"
cd "$(dirname "$0")/.."
mkdir -p "${out_dir}"

# JAX must not take the whole GPU: PyTorch allocates on it in the same process.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

"${python}" -c 'import jax; assert jax.default_backend() == "gpu", jax.devices()'
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
  > "${out_dir}/gpu.txt" 2>&1 || true

status=0
timeout 220 "${python}" -m experiments.benchmark --mode=train,forward \
  --out_dir="${out_dir}" 2>&1 | tee "${out_dir}/log.txt" || status=$?
timeout 60 "${python}" -m experiments.benchmark --mode=memory \
  --out_dir="${out_dir}/memory" 2>&1 | tee "${out_dir}/memory_log.txt" || status=$?
exit "${status}"
