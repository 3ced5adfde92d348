#!/usr/bin/env bash
# One GPU check in one command (issue 16): versions, offline wheels, the core
# tests and the gradient checks on the GPU, the benchmark, a short training
# run and a profile of one LSTM train step. About 8.5 minutes on one H100/H200;
# no network needed.
#
# Usage: experiments/gpu_check.sh OUTDIR
#
# gpu_wheels/ (git-ignored; carry it to the GPU machine) holds pure-Python wheels of what
# a bare JAX+PyTorch machine may lack, made with:
#   pip download --no-deps --only-binary=:all: --python-version 3.11 --implementation py \
#     --abi none --platform any -d gpu_wheels pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 \
#     packaging==26.4 pygments==2.21.0 hypothesis==6.155.7 sortedcontainers==2.4.0 \
#     dm-haiku==0.0.17 jmp==0.0.4 tabulate==0.10.0 exceptiongroup==1.3.1 tomli==2.5.0 \
#     pytest-xdist==3.8.0 execnet==2.1.2
# (hypothesis after 6.155.7 ships compiled wheels only). Orbax (tensorstore) and matplotlib
# are not among them: experiments.gpu_train and the benchmark run without them.
#
# Every phase runs under its own timeout, tees its log into OUTDIR, and the
# next phase runs whatever happened; the phases' time limits shrink so that
# the whole run stays within GPU_CHECK_BUDGET_S. OUTDIR/summary.txt (also
# printed at the end) lists each phase's status and seconds.
#
# Environment:
#   GPU_CHECK_BUDGET_S   total seconds for all phases (default 510)
#   GPU_CHECK_ALLOW_CPU  1: run without a GPU (a dry run; skips the GPU asserts)
#   GPU_CHECK_QUICK      1: tiny settings everywhere (with ALLOW_CPU, for a dry run)
#   GPU_CHECK_TEST_WORKERS  N: run the tests in N pytest-xdist workers (default 0: one process)
#   PYTHON               the interpreter (default: python or python3, whichever imports jax)
set -u

# The phases run as `gpu_check.sh --phase NAME OUTDIR` (a child of `timeout`, which
# cannot run a shell function); everything below up to the phases is set in both.
if [[ "${1:-}" == --phase ]]; then
  phase_name="${2:?}"
  out="${3:?}"
else
  phase_name=""
  out="${1:?usage: experiments/gpu_check.sh OUTDIR}"
  mkdir -p "${out}"
  out="$(cd "${out}" && pwd)"
fi
cd "$(dirname "$0")/.." || exit 1
repo="$(pwd)"
self="${repo}/experiments/gpu_check.sh"
if [[ -z "${PYTHON:-}" ]]; then
  # The first of python, python3 that imports JAX (a bare machine may have only python3).
  for candidate in python python3; do
    if command -v "${candidate}" >/dev/null && "${candidate}" -c 'import jax' 2>/dev/null; then
      PYTHON="${candidate}"
      break
    fi
  done
fi
export PYTHON="${PYTHON:-python3}"  # experiments/gpu_benchmark.sh reads it too
python="${PYTHON}"
budget="${GPU_CHECK_BUDGET_S:-510}"
allow_cpu="${GPU_CHECK_ALLOW_CPU:-0}"
quick="${GPU_CHECK_QUICK:-0}"
if [[ -z "${phase_name}" ]]; then
  GPU_CHECK_SCRATCH="$(mktemp -d /tmp/gpu_check.XXXXXX)"
  export GPU_CHECK_SCRATCH
  export PYTHONUNBUFFERED=1
  export PYTHONDONTWRITEBYTECODE=1
  export PYTHONPATH="${repo}${PYTHONPATH:+:${PYTHONPATH}}"
  # PyTorch and JAX share the GPU in the benchmark and the profile.
  export XLA_PYTHON_CLIENT_PREALLOCATE=false
  if [[ "${allow_cpu}" != 1 ]]; then
    # A GPU that JAX cannot initialise must fail loudly, not fall back to the CPU.
    export JAX_PLATFORMS="${JAX_PLATFORMS:-cuda,cpu}"
  fi
fi
scratch="${GPU_CHECK_SCRATCH}"

summary=()
started="${SECONDS}"

# run_phase NAME NOMINAL_S RESERVE_S SIGNAL: runs phase NAME under a timeout of
# NOMINAL_S seconds, or less so that RESERVE_S seconds stay for the later phases
# (the phase reads its limit from PHASE_LIMIT_S); on timeout it gets SIGNAL (INT
# lets pytest write its report), then SIGKILL 15 s later. Tees the output into
# OUTDIR/NAME.log and records the status.
run_phase() {
  local name="$1" nominal="$2" reserve="$3" signal="$4"
  local left=$(( budget - (SECONDS - started) - reserve ))
  local limit=$(( nominal < left ? nominal : left ))
  if (( limit < 10 )); then
    echo "=== ${name}: SKIPPED (no time left: ${left} s)" | tee "${out}/${name}.log"
    summary+=("$(printf '%-16s %-24s %5s s' "${name}" "SKIPPED (no time)" 0)")
    return 0
  fi
  echo "=== ${name}: up to ${limit} s ($(date -u +%H:%M:%S) UTC, $(( SECONDS - started )) s into the run)"
  local t0="${SECONDS}" rc
  PHASE_LIMIT_S="${limit}" timeout -s "${signal}" -k 15 "${limit}" \
    bash "${self}" --phase "${name}" "${out}" 2>&1 | tee "${out}/${name}.log"
  rc="${PIPESTATUS[0]}"
  local took=$(( SECONDS - t0 )) status="ok"
  if (( rc == 124 || rc == 137 )) || { [[ "${signal}" == INT ]] && (( took >= limit )); }; then
    status="TIMEOUT after ${limit} s"
  elif (( rc != 0 )); then
    status="FAILED (exit ${rc})"
  fi
  local detail
  detail="$(grep -E '[0-9]+ (passed|failed|errors?|deselected).* in [0-9.]+s' \
            "${out}/${name}.log" | tail -n 1 | sed -e 's/=//g' -e 's/^ *//')"
  summary+=("$(printf '%-16s %-24s %5s s  %s' "${name}" "${status}" "${took}" "${detail}")")
  echo "=== ${name}: ${status} in ${took} s"
  return 0
}

# --- a. versions ---------------------------------------------------------------------------
phase_versions() {
  local rc=0
  {
    echo "date: $(date -u)"; echo "host: $(uname -a)"; echo "cpus: $(nproc)"
    free -g 2>/dev/null | head -2
    echo "python: $(command -v "${python}") $("${python}" -V 2>&1)"
    echo "pip: $("${python}" -m pip --version 2>&1 | head -1)"
    echo; echo "--- nvidia-smi"
    nvidia-smi 2>&1 || echo "(no nvidia-smi)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit \
      --format=csv 2>&1 || true
    echo; echo "--- python packages"
    "${python}" - <<'EOF'
import importlib.metadata as md
import platform, sys
print("python", sys.version.replace("\n", " "), platform.platform())
names = ["jax", "jaxlib", "flax", "equinox", "dm-haiku", "optax", "chex", "absl-py", "numpy",
         "torch", "orbax-checkpoint", "tensorstore", "matplotlib", "tqdm", "pytest", "hypothesis",
         "pluggy", "packaging", "pygments", "ml_dtypes", "scipy"]
dists = {d.metadata["Name"].lower(): d.version for d in md.distributions() if d.metadata["Name"]}
for name in names:
  print(f"{name:<20} {dists.get(name.lower(), '-')}")
for name in sorted(dists):
  if name.startswith(("jax-cuda", "jax_cuda", "jax-plugin", "nvidia-", "triton")):
    print(f"{name:<34} {dists[name]}")
try:
  import pydoc_data.topics  # the default corpus of experiments.train
  print("pydoc_data.topics: present")
except ImportError:
  print("pydoc_data.topics: MISSING")
EOF
    echo; echo "--- jax first, then torch, in one process"
    "${python}" - <<'EOF' || rc=1
import jax, jax.numpy as jnp
print("jax", jax.__version__, "backend", jax.default_backend(), jax.devices())
print("jax_default_matmul_precision", jax.config.jax_default_matmul_precision)
x = jnp.ones((256, 256)); print("jax matmul ok", float((x @ x)[0, 0]))
try:
  import torch
  print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
        torch.backends.cudnn.version(), "available", torch.cuda.is_available())
  if torch.cuda.is_available():
    print("torch device", torch.cuda.get_device_name(0))
    y = torch.ones(256, 256, device="cuda"); print("torch matmul ok", float((y @ y)[0, 0]))
    lstm = torch.nn.LSTM(8, 16).cuda(); out, _ = lstm(torch.ones(5, 2, 8, device="cuda"))
    torch.cuda.synchronize(); print("torch cuDNN LSTM ok", tuple(out.shape))
  print("torch tf32: cuda.matmul.allow_tf32", torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32", torch.backends.cudnn.allow_tf32)
except Exception as e:  # pylint: disable=broad-except
  print("torch FAILED:", type(e).__name__, e)
print("jax after torch ok", float((x @ x)[0, 0]))
try:
  from jax.experimental import rnn
  import jax.random as jr
  w = rnn.init_lstm_weight(jr.key(0), 8, 16, 1, False)
  z = jnp.zeros((1, 2, 16))
  ys, _, _ = rnn.lstm(jnp.ones((2, 5, 8)), z, z, w, jnp.full((2,), 5, jnp.int32), 8, 16,
                      num_layers=1, dropout=0.0, bidirectional=False)
  print("jax.experimental.rnn.lstm (cuDNN) ok", ys.shape)
except Exception as e:  # pylint: disable=broad-except
  print("jax.experimental.rnn.lstm FAILED:", type(e).__name__, str(e)[:300])
for name in ("equinox", "flax"):
  try:
    print(name, __import__(name).__version__)
  except Exception as e:  # pylint: disable=broad-except
    print(name, "FAILED:", type(e).__name__, e)
EOF
    echo; echo "--- torch first, then jax (the benchmark's import order)"
    "${python}" -c 'import torch, jax, jax.numpy as jnp; print("backend", jax.default_backend(), jax.devices(), float(jnp.ones(3).sum()))' 2>&1 | tail -5
    echo; echo "--- XLA_FLAGS=--xla_gpu_autotune_level=0 accepted?"
    if XLA_FLAGS=--xla_gpu_autotune_level=0 "${python}" -c 'import jax.numpy as jnp; jnp.ones(1).block_until_ready()' >/dev/null 2>&1; then
      echo "yes"; echo 1 > "${scratch}/autotune_flag_ok"
    else
      echo "no"
    fi
  } > "${out}/versions.txt" 2>&1
  grep -E "^(python |jax |jax[a-z_-]* |torch|backend|jax\.|flax|equinox|pydoc|yes|no$)" \
    "${out}/versions.txt" | head -40
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || true
  return "${rc}"
}

# --- b. wheels for what the GPU machine may lack --------------------------------------------
phase_install() {
  if ! ls gpu_wheels/*.whl >/dev/null 2>&1; then
    echo "no gpu_wheels/*.whl in ${repo} (were they carried?)"
    return 1
  fi
  # Only wheels whose package is missing or older: nothing preinstalled is replaced by an
  # older version, and jax, jaxlib and torch are not among the wheels.
  local wanted
  wanted="$("${python}" - gpu_wheels/*.whl <<'EOF'
import importlib.metadata as md, os, re, sys
def key(v):
  return [int(p) if p.isdigit() else 0 for p in re.split(r"[.+-]", v)]
for path in sys.argv[1:]:
  name, version = os.path.basename(path).split("-")[:2]
  installed = None
  for candidate in (name, name.replace("_", "-")):
    try:
      installed = md.version(candidate)
      break
    except md.PackageNotFoundError:
      pass
  if installed is not None and key(installed) >= key(version):
    print(f"keep {name} {installed} (wheel {version})", file=sys.stderr)
  else:
    print(f"install {name} {version} (installed: {installed})", file=sys.stderr)
    print(path)
EOF
)"
  if [[ -z "${wanted}" ]]; then
    echo "every wheel's package is already installed"
  else
    # shellcheck disable=SC2086
    "${python}" -m pip install --no-index --no-deps --disable-pip-version-check \
        --no-warn-script-location ${wanted} \
      || "${python}" -m pip install --no-index --no-deps --disable-pip-version-check \
        --no-warn-script-location --break-system-packages ${wanted} \
      || "${python}" -m pip install --no-index --no-deps --disable-pip-version-check \
        --no-warn-script-location --user ${wanted} \
      || {
        echo "pip failed: unpacking the wheels into ${scratch}/site on PYTHONPATH instead"
        mkdir -p "${scratch}/site"
        for wheel in ${wanted}; do
          "${python}" -m zipfile -e "${wheel}" "${scratch}/site" || echo "cannot unpack ${wheel}"
        done
        echo "${scratch}/site" > "${scratch}/extra_path"
      }
  fi
  if [[ -f "${scratch}/extra_path" ]]; then
    export PYTHONPATH="${scratch}/site${PYTHONPATH:+:${PYTHONPATH}}"
  fi
  "${python}" -c 'import pytest, hypothesis, haiku; print("pytest", pytest.__version__, "hypothesis", hypothesis.__version__, "haiku", haiku.__version__)'
}

# --- c. the core tests and the gradient checks, on the GPU --------------------------------
assert_gpu() {
  "${python}" -c 'import jax; print("backend", jax.default_backend(), jax.devices()); assert jax.default_backend() == "gpu" or __import__("os").environ.get("GPU_CHECK_ALLOW_CPU") == "1", "JAX is not on a GPU"'
}

# The gradient checks: explicit BPTT vs jax.vjp of the scan (float64 and float32) and
# jax.grad through unroll vs finite differences (jax.test_util.check_grads).
gradcheck_k="float32_agreement or finite_differences or side_information"
pytest_args=(-p no:cacheprovider -v -rfE --durations=15 --continue-on-collection-errors)
# GPU_CHECK_TEST_WORKERS=N > 0 runs the tests in N pytest-xdist processes (from gpu_wheels),
# which share the GPU: compiling hundreds of small programs is what takes the time.
workers="${GPU_CHECK_TEST_WORKERS:-0}"
if [[ -n "${phase_name}" && "${phase_name}" == tests_* && "${workers}" =~ ^[1-9][0-9]*$ ]]; then
  if "${python}" -c 'import xdist' 2>/dev/null; then
    pytest_args+=(-n "${workers}")
  else
    echo "pytest-xdist is not importable: running the tests in one process"
  fi
fi
if [[ "${quick}" == 1 ]]; then
  gradcheck_k="float32_agreement and (lstm or gru) or finite_differences and lstm and plain"
fi

phase_tests_gradcheck() {
  assert_gpu || return 1
  "${python}" -m pytest "${pytest_args[@]}" --junitxml="${out}/pytest_gradcheck.xml" \
    tests/test_bptt.py tests/test_unroll.py -k "${gradcheck_k}"
}

phase_tests_core() {
  local files=(tests/test_unroll.py tests/test_bptt.py tests/test_training.py) k
  k="not (${gradcheck_k})"
  if [[ "${quick}" == 1 ]]; then
    k="test_jit_equals_no_jit or test_reverse_equals_flipped_input or test_jax_grad_runs or descends"
  fi
  "${python}" -m pytest "${pytest_args[@]}" --junitxml="${out}/pytest_core.xml" "${files[@]}" -k "${k}"
}

# The same float32 comparison at JAX's default precision (TF32 on the GPU): expected to
# fail by about 1e-3, which is why tests/conftest.py asks for "highest" on accelerators.
# Its failures are the measurement (the "where ... = max_rel_error(...)" lines), so the
# phase reports ok whenever pytest ran.
phase_tests_tf32() {
  JAX_DEFAULT_MATMUL_PRECISION=default "${python}" -m pytest -p no:cacheprovider -q -rfE \
    --junitxml="${out}/pytest_tf32_probe.xml" tests/test_bptt.py \
    -k "float32_agreement and (lstm or gru or rnn_tanh)"
  local rc=$?
  echo "tf32 probe: pytest exit ${rc} (1 = some failed, as expected with TF32 matmuls)"
  (( rc <= 1 ))
}

# --- d. the benchmark ---------------------------------------------------------------------
phase_benchmark() {
  local shapes="lstm:32:100:64:256,lstm:128:25:1024:1024,gru:32:100:64:256,rnn:32:100:64:256,lstm:64:50:128:512,lstm:4:150:256:256,lstm:16:200:32:128,gru:32:1500:1024:1024"
  local memory_flags="--memory_repeats=2"
  local flags=(--nodeepbench --repeats=5 --warmup=1 --nocompile_scaling)
  if [[ "${quick}" == 1 ]]; then
    shapes="lstm:4:10:8:16,gru:4:10:8:16"
    memory_flags="--memory_repeats=1 --memory_shape=lstm:4:64:8:16 --remat_chunks=8"
    flags=(--nodeepbench --repeats=2 --warmup=1 --nocompile_scaling --peak_size=256)
  fi
  # Of this phase's limit: 12 s for start-up and nvidia-smi, 45 s for the memory run.
  local memory_s=45 limit="${PHASE_LIMIT_S:-200}"
  BENCH_TIMEOUT_S=$(( limit - memory_s - 12 )) MEMORY_TIMEOUT_S="${memory_s}" \
  MEMORY_FLAGS="${memory_flags}" PARALLEL_TIMEOUT_S="${PARALLEL_TIMEOUT_S:-0}" \
    bash experiments/gpu_benchmark.sh "${out}/bench" --shapes="${shapes}" "${flags[@]}"
}

# --- e. a short training run --------------------------------------------------------------
# The README's default run (charlm, LSTM H=128, 1,500 steps; 60 s on 2 CPU cores), to compare.
phase_train() {
  local task=(--task=charlm --log_every=100)
  if ! "${python}" -c 'import pydoc_data.topics' 2>/dev/null; then
    echo "no pydoc_data.topics here: the adding task instead of charlm"
    task=(--task=adding --log_every=100)
  fi
  if [[ "${quick}" == 1 ]]; then
    task=(--task=adding --seq_len=20 --hidden_size=16 --batch_size=8 --steps=30 --log_every=10
          --eval_every=30 --eval_size=50)
  fi
  local workdir="${scratch}/train"
  # Its own, shorter timeout, so that what it wrote is still copied into OUTDIR.
  timeout -k 5 "$(( ${PHASE_LIMIT_S:-50} - 8 ))" \
    "${python}" -m experiments.gpu_train "${task[@]}" --checkpoint_every=100000 \
    --workdir="${workdir}"
  local rc=$?
  mkdir -p "${out}/train"
  cp "${workdir}"/{summary.json,metrics.jsonl,config.json} "${out}/train/" 2>/dev/null
  "${python}" - "${workdir}/metrics.jsonl" <<'EOF'
import json, sys
try:
  rows = [json.loads(line) for line in open(sys.argv[1])]
except OSError:
  sys.exit(0)
# Skip the first window (it compiles) and each one that ran an evaluation, or followed one.
rates = [r["steps_per_second"] for i, r in enumerate(rows) if i > 0
         and "eval_metric" not in r and "eval_metric" not in rows[i - 1]]
if rates:
  print(f"train steps/s without compile and evaluation: median "
        f"{sorted(rates)[len(rates) // 2]:.1f}, range {min(rates):.1f}-{max(rates):.1f} "
        f"over {len(rates)} windows")
EOF
  return "${rc}"
}

# --- f. the profile of one LSTM train step -------------------------------------------------
phase_profile() {
  local args=(--out_dir="${out}/profile")
  if [[ "${quick}" == 1 ]]; then
    args+=(--shape=lstm:4:10:8:16 --repeats=3 --trace_steps=2)
  fi
  "${python}" -m experiments.gpu_profile "${args[@]}"
}

# --- the run --------------------------------------------------------------------------------
if [[ -n "${phase_name}" ]]; then
  case "${phase_name}" in
    versions) phase_versions ;;
    install) phase_install ;;
    tests_gradcheck) phase_tests_gradcheck ;;
    tests_core) phase_tests_core ;;
    benchmark) phase_benchmark ;;
    train) phase_train ;;
    profile) phase_profile ;;
    tests_tf32_probe) phase_tests_tf32 ;;
    *) echo "unknown phase ${phase_name}"; exit 2 ;;
  esac
  exit $?
fi

summary=()
started="${SECONDS}"
echo "gpu_check: repo ${repo}, output ${out}, budget ${budget} s, scratch ${scratch}"
# NAME, nominal seconds, seconds reserved for the later phases (their least useful time), signal.
run_phase versions 60 300 TERM
run_phase install 60 280 TERM
if [[ -f "${scratch}/extra_path" ]]; then
  PYTHONPATH="$(cat "${scratch}/extra_path")${PYTHONPATH:+:${PYTHONPATH}}"
  export PYTHONPATH
fi
test_xla_flags="${XLA_FLAGS:-}"
if [[ -f "${scratch}/autotune_flag_ok" ]]; then
  # Correctness only: no GEMM autotuning, so that hundreds of small test programs compile faster.
  test_xla_flags="${test_xla_flags:+${test_xla_flags} }--xla_gpu_autotune_level=0"
fi
XLA_FLAGS="${test_xla_flags}" run_phase tests_gradcheck 75 240 INT
XLA_FLAGS="${test_xla_flags}" run_phase tests_core 90 200 INT
run_phase benchmark 200 90 TERM
run_phase train 50 60 TERM
run_phase profile 80 0 TERM
if (( budget - (SECONDS - started) >= 35 )); then
  XLA_FLAGS="${test_xla_flags}" run_phase tests_tf32_probe 30 0 INT
fi

rm -rf "${scratch}"
{
  echo "gpu_check summary ($(( SECONDS - started )) s in all; budget ${budget} s; output ${out})"
  printf '%s\n' "${summary[@]}"
} | tee "${out}/summary.txt"
