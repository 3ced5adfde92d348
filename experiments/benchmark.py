r"""Times jaxrnn against Flax, Equinox, Haiku, PyTorch (and cuDNN on a GPU).

For each shape, every peer's train step (the gradient of an MSE loss on every
output of a one-layer model, float32) and forward step (the loss alone) run in
this one process, interleaved: after a warm-up, each repetition runs every
(peer, mode) once, round-robin, and a row reports the median over the
repetitions. FLOP counts are in `benchmark_peers.flops`; "% of peak" compares
with a large float32 matmul timed in the same round-robin. Compile times (jit lower +
compile) are reported apart, with jaxrnn's at T and 4T to show that the
compile does not grow with the sequence (no Python unrolling).

`--mode=parallel` times sequential `unroll` against each method of
`jaxrnn.parallel_unroll` over a grid of T and H (`experiments.benchmark_parallel`;
opt-in, not part of `--mode=all`), and prints a Markdown table.

`--mode=memory` compares the peak memory and time of jaxrnn's gradient with and
without `remat_chunk` on one long sequence. Memory is read from the compiled
executable's `memory_analysis()`: argument + output + temp - alias bytes. XLA
fixes these sizes at compile time, so the number is exact and repeatable
(unlike sampling the allocator), and it is the live peak a run needs.

Usage:
  python -m experiments.benchmark --out_dir=/tmp/bench
  python -m experiments.benchmark --mode=memory --memory_shape=lstm:16:2048:64:256
  python -m experiments.benchmark --shapes=lstm:8:20:16:32 --peers=jaxrnn,torch --repeats=3
  python -m experiments.benchmark --mode=parallel --parallel_cells=gru --parallel_times=64,1024
  # the issue's grid on a small CPU in about 15 minutes (rows past the budget are skipped):
  python -m experiments.benchmark --mode=parallel --parallel_cells=gru,lstm \
    --parallel_times=64,256,1024,4096,16384,65536 --parallel_hiddens=8,32,128,256 \
    --parallel_repeats=3 --parallel_time_budget=840 --parallel_row_budget=20
  python -m experiments.benchmark --mode=parallel --parallel_shapes=gru:1024:64,lstm:4096:8
"""

import os
import platform
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import app
from absl import flags
from absl import logging

import jaxrnn
from experiments import benchmark_parallel
from experiments import benchmark_peers as peers
from experiments import benchmark_report as report

DEFAULT_SHAPES = ("lstm:32:100:64:256,lstm:64:50:128:512,lstm:16:200:32:128,"
                  "gru:32:100:64:256,rnn:32:100:64:256,lstm_ln:32:100:64:256,"
                  "conv_lstm:8:20:4:16:16x16:3")
# DeepBench's inference/training RNN shapes (input size = hidden size), for GPUs.
DEEPBENCH_SHAPES = "lstm:128:25:1024:1024,gru:32:1500:1024:1024,lstm:4:150:256:256"
MODES = ("train", "forward", "memory")
PARALLEL = "parallel"  # opt-in: not part of --mode=all
_PAR = benchmark_parallel.ParallelConfig()
_PEAK = ("peak", "matmul")

_SHAPES = flags.DEFINE_string("shapes", DEFAULT_SHAPES,
                             "Comma-separated cell:B:T:I:H, with cell any name in jaxrnn.CELLS"
                             " or lstm_ln (jaxrnn.lstm(H, layer_norm=True)), or"
                             " conv_lstm:B:T:C:Hc:HxW:K (inputs [T, B, H, W, C]).")
_DEEPBENCH = flags.DEFINE_bool(
    "deepbench", True, "Also run the DeepBench shapes when the backend is a GPU.")
_MODE = flags.DEFINE_list("mode", ["train", "forward"],
                          f"Any of {MODES + (PARALLEL,)}, or 'all' (= {MODES}).")
_PEERS = flags.DEFINE_list("peers", list(peers.PEERS), "Peers to run.")
_REPEATS = flags.DEFINE_integer("repeats", 11, "Timed runs per peer; rows show the median.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed runs per peer before timing.")
_OUT_DIR = flags.DEFINE_string("out_dir", "/tmp/jaxrnn_benchmark",
                               "Where benchmark.{json,txt,png} go.")
_PEAK_SIZE = flags.DEFINE_integer(
    "peak_size", 0, "Side of the peak-FLOP/s matmul; 0: 2048 on CPU, 8192 on GPU.")
_COMPILE_SCALING = flags.DEFINE_bool(
    "compile_scaling", True, "Compile jaxrnn's train step at 4T too.")
_MEMORY_SHAPE = flags.DEFINE_string("memory_shape", "lstm:16:8192:64:256",
                                    "cell:B:T:I:H of --mode=memory.")
_REMAT_CHUNKS = flags.DEFINE_list("remat_chunks", ["64", "512"],
                                  "remat_chunk values that --mode=memory compares.")
_MEMORY_REPEATS = flags.DEFINE_integer(
    "memory_repeats", 3, "Timed runs per row in --mode=memory (long sequences).")
_PARALLEL_CELLS = flags.DEFINE_list("parallel_cells", list(_PAR.cells),
                                    "Cells of --mode=parallel (names in jaxrnn.CELLS).")
_PARALLEL_TIMES = flags.DEFINE_list("parallel_times", [str(t) for t in _PAR.times],
                                    "Sequence lengths T of --mode=parallel.")
_PARALLEL_HIDDENS = flags.DEFINE_list("parallel_hiddens", [str(h) for h in _PAR.hiddens],
                                      "Hidden sizes H (= input sizes) of --mode=parallel.")
_PARALLEL_BATCH = flags.DEFINE_integer("parallel_batch", _PAR.batch,
                                       "Batch size B of --mode=parallel.", lower_bound=1)
_PARALLEL_PATHS = flags.DEFINE_list(
    "parallel_paths", list(_PAR.paths),
    f"Paths of --mode=parallel, any of {list(benchmark_parallel.PATHS)}.")
_PARALLEL_REPEATS = flags.DEFINE_integer("parallel_repeats", _PAR.repeats,
                                         "Timed runs per row of --mode=parallel.", lower_bound=1)
_PARALLEL_MAX_ITERS = flags.DEFINE_integer(
    "parallel_max_iters", None, "max_iters of parallel_unroll (default: T).", lower_bound=1)
_PARALLEL_MAX_GB = flags.DEFINE_float(
    "parallel_max_gb", _PAR.max_gb, "Skip parallel rows whose Jacobians take more GB.")
_PARALLEL_SHAPES = flags.DEFINE_string(
    "parallel_shapes", None, "cell:T:H,... rows of --mode=parallel; replaces the product of"
    " --parallel_cells, --parallel_times and --parallel_hiddens.")
_PARALLEL_TIME_BUDGET = flags.DEFINE_float(
    "parallel_time_budget", _PAR.time_budget_s, "Seconds for the whole --mode=parallel grid:"
    " a row whose predicted time passes what is left is skipped, saying so (0: no limit).",
    lower_bound=0)
_PARALLEL_ROW_BUDGET = flags.DEFINE_float(
    "parallel_row_budget", _PAR.row_budget_s, "Seconds for one row of --mode=parallel"
    " (compile and timed runs): a row predicted to take longer is skipped (0: no limit).",
    lower_bound=0)

# Inside `Config` its field `peers` hides the module of that name.
_Shape = peers.Shape


class Config(NamedTuple):
  """What one benchmark run measures (the flags, as importable values)."""
  shapes: Sequence[peers.Shape]
  modes: Sequence[str]
  peers: Sequence[str]
  out_dir: str
  repeats: int = 11
  warmup: int = 2
  peak_size: int = 0
  compile_scaling: bool = True
  memory_shape: _Shape = _Shape("lstm", 16, 8192, 64, 256)
  remat_chunks: Sequence[int] = (64, 512)
  memory_repeats: int = 3
  parallel: benchmark_parallel.ParallelConfig = _PAR


def time_interleaved(steps: dict[Any, peers.Step], repeats: int,
                     warmup: int) -> dict[Any, dict[str, Any]]:
  """Runs every step `warmup` times, then `repeats` times round-robin.

  Each round starts one peer later than the previous one, so that every peer
  runs equally often in each position (right after the peak matmul, after a
  torch run, ...) and no peer inherits another's cache or thread state.

  Returns:
    For each key: `times_ms` (the timed runs) and `first_call_ms`.
  """
  timings = {key: {"times_ms": [], "first_call_ms": None} for key in steps}
  for i in range(warmup):
    for key, step in steps.items():
      start = time.perf_counter()
      step.run()
      if i == 0:
        timings[key]["first_call_ms"] = 1e3 * (time.perf_counter() - start)
  order = list(steps.items())
  for r in range(repeats):
    for key, step in order[r % len(order):] + order[:r % len(order)]:
      start = time.perf_counter()
      step.run()
      timings[key]["times_ms"].append(1e3 * (time.perf_counter() - start))
  return timings


def _build(name, builder, shape, mode, skipped) -> peers.Step | None:
  try:
    return builder(shape, mode)
  except (ImportError, peers.Unsupported) as e:
    reason = f"{type(e).__name__}: {e}"
  except Exception as e:  # pylint: disable=broad-except
    # A peer that breaks must not take the other rows down with it.
    logging.exception("%s failed on %s", name, shape)
    reason = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
  skipped.append({"peer": name, "shape": str(shape), "mode": mode, "reason": reason})
  logging.info("skipping %s on %s (%s): %s", name, shape, mode, reason)
  return None


def _gflops(count, timing):
  return count / (float(np.median(timing["times_ms"])) * 1e-3) / 1e9


def _row(name, step, shape, mode, timing, peak_gflops):
  median_ms = float(np.median(timing["times_ms"]))
  count = peers.flops(shape, mode)
  gflops = _gflops(count, timing)
  return {
      "peer": name, "label": step.label, "mode": mode, "shape": str(shape),
      "cell": shape.cell, "B": shape.batch, "T": shape.time, "I": shape.inputs,
      "H": shape.hidden, "median_ms": median_ms, "min_ms": min(timing["times_ms"]),
      "times_ms": timing["times_ms"], "first_call_ms": timing["first_call_ms"],
      "compile_s": step.compile_s, "flops": count, "gflops": gflops,
      "peak_gflops": peak_gflops, "pct_peak": 100.0 * gflops / peak_gflops,
  }


def benchmark_shape(shape, config, peak_size, skipped) -> list[dict[str, Any]]:
  """The train/forward rows of one shape, all peers interleaved.

  The peak matmul runs in the same round-robin, so that "% of peak" compares
  timings taken under the same conditions (other load, clock, heat).
  """
  modes = [m for m in config.modes if m in peers.MODES]
  steps: dict[tuple[str, str], peers.Step] = {_PEAK: peers.matmul_step(peak_size)}
  for name in config.peers:
    for mode in modes:
      step = _build(name, peers.PEERS[name], shape, mode, skipped)
      if step is not None:
        steps[(name, mode)] = step
  timings = time_interleaved(steps, config.repeats, config.warmup)
  peak_gflops = _gflops(2.0 * peak_size**3, timings.pop(_PEAK))
  del steps[_PEAK]
  rows = [_row(name, steps[(name, mode)], shape, mode, timings[(name, mode)], peak_gflops)
          for name, mode in steps]
  for row in rows:
    ref = timings.get((peers.REFERENCE, row["mode"]))
    row["ratio_to_jaxrnn"] = (
        row["median_ms"] / float(np.median(ref["times_ms"])) if ref else None)
  return rows


def compile_scaling(shape, config, skipped) -> list[dict[str, Any]]:
  """jaxrnn's train-step compile time at T and 4T (flat if nothing unrolls)."""
  rows = []
  for name in ("jaxrnn", "jaxrnn_autodiff"):
    if name not in config.peers:
      continue
    times = []
    for t in (shape.time, 4 * shape.time):
      step = _build(name, peers.PEERS[name], shape._replace(time=t), "train", skipped)
      times.append(None if step is None else step.compile_s)
    if None not in times:
      rows.append({"peer": name, "shape": str(shape), "T": shape.time,
                   "compile_s_T": times[0], "compile_s_4T": times[1],
                   "ratio_4T_to_T": times[1] / times[0]})
  return rows


def benchmark_memory(config, skipped) -> list[dict[str, Any]]:
  """Peak memory and time of jaxrnn's gradient, plain and with `remat_chunk`."""
  shape = config.memory_shape
  variants = {"jaxrnn": peers.jaxrnn_peer(),
              "jaxrnn_autodiff": peers.jaxrnn_peer(backward="autodiff")}
  for chunk in config.remat_chunks:
    variants[f"jaxrnn_remat{chunk}"] = peers.jaxrnn_peer(remat_chunk=chunk)
  steps = {}
  for name, builder in variants.items():
    step = _build(name, builder, shape, "train", skipped)
    if step is not None:
      steps[name] = step
  timings = time_interleaved(steps, config.memory_repeats, warmup=1)
  rows = []
  for name, step in steps.items():
    stats = step.compiled.memory_analysis()
    total = (stats.argument_size_in_bytes + stats.output_size_in_bytes
             + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
    rows.append({
        "peer": name, "label": step.label, "shape": str(shape),
        "remat_chunk": int(name.removeprefix("jaxrnn_remat")) if "remat" in name else None,
        "argument_bytes": stats.argument_size_in_bytes,
        "output_bytes": stats.output_size_in_bytes,
        "temp_bytes": stats.temp_size_in_bytes, "alias_bytes": stats.alias_size_in_bytes,
        "total_bytes": total, "median_ms": float(np.median(timings[name]["times_ms"])),
        "times_ms": timings[name]["times_ms"], "compile_s": step.compile_s,
    })
  return rows


def matmul_precision() -> dict[str, Any]:
  """The float32 matmul precision each library is left at (the benchmark changes none).

  On NVIDIA GPUs since Ampere, JAX's default (`jax_default_matmul_precision`
  None) lets XLA's dots and the cuDNN LSTM of `jax.experimental.rnn` use TF32;
  PyTorch keeps cuBLAS matmuls in full float32 (`allow_tf32` False) but lets
  its cuDNN RNNs, which `nn.LSTM`/`nn.GRU`/`nn.RNN` run on CUDA, use TF32
  (`cudnn.allow_tf32`, `cudnn.rnn.fp32_precision` "tf32"). On a CPU none of
  these apply.
  """
  # jax.config's options are set at run time, so its type does not list them.
  setting = jax.config.jax_default_matmul_precision  # pyright: ignore[reportAttributeAccessIssue]
  precision = {"jax_default_matmul_precision": setting}
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return precision
  for name, path in (("torch_cuda_matmul_allow_tf32", "backends.cuda.matmul.allow_tf32"),
                     ("torch_cudnn_allow_tf32", "backends.cudnn.allow_tf32"),
                     ("torch_cudnn_rnn_fp32_precision", "backends.cudnn.rnn.fp32_precision"),
                     ("torch_float32_matmul_precision", None)):
    try:
      if path is None:
        value = torch.get_float32_matmul_precision()
      else:
        value = torch
        for attribute in path.split("."):
          value = getattr(value, attribute)
      precision[name] = value if isinstance(value, (bool, str)) else str(value)
    except Exception:  # pylint: disable=broad-except
      precision[name] = None  # An older or newer torch without this setting.
  return precision


def environment() -> dict[str, Any]:
  versions = {}
  for module in ("jax", "jaxlib", "flax", "equinox", "haiku", "torch", "numpy"):
    try:
      versions[module] = __import__(module).__version__
    except ImportError:
      versions[module] = None
  device = jax.devices()[0]
  return {"backend": jax.default_backend(), "device": device.device_kind,
          "cpu_cores": len(os.sched_getaffinity(0)), "platform": platform.platform(),
          # Other work on the machine skews every row; interleaving only evens it out.
          "load_average_1m_at_start": os.getloadavg()[0],
          "versions": versions, "float32_matmul_precision": matmul_precision()}


def run(config: Config) -> dict[str, Any]:
  """Runs the benchmark of `config`, writes its outputs and returns the results."""
  unknown = set(config.peers) - set(peers.PEERS)
  if unknown:
    raise ValueError(f"Unknown peers {sorted(unknown)}; choose from {list(peers.PEERS)}.")
  env = environment()
  peak_size = config.peak_size or (8192 if env["backend"] == "gpu" else 2048)
  results = {
      "config": config._replace(shapes=[str(s) for s in config.shapes],
                                memory_shape=str(config.memory_shape))._asdict(),
      "environment": env,
      "peak_matmul_size": peak_size,
      "rows": [], "compile_scaling": [], "bf16_gradient_error": [], "memory": [],
      "parallel": [], "skipped": [],
  }
  if any(m in peers.MODES for m in config.modes):
    for shape in config.shapes:
      logging.info("shape %s", shape)
      rows = benchmark_shape(shape, config, peak_size, results["skipped"])
      results["rows"] += rows
      if config.compile_scaling and "train" in config.modes:
        results["compile_scaling"] += compile_scaling(shape, config, results["skipped"])
      if any(row["peer"] == "jaxrnn_bf16" for row in rows):
        results["bf16_gradient_error"].append(
            {"shape": str(shape), **peers.bf16_gradient_error(shape)})
      report.save(results, config.out_dir)  # Partial results survive a timeout.
  if "memory" in config.modes:
    results["memory"] = benchmark_memory(config, results["skipped"])
  if PARALLEL in config.modes:
    benchmark_parallel.benchmark(  # saved after every row: a timeout keeps what ran
        config.parallel, results["skipped"], results["parallel"],
        on_row=lambda: report.save(results, config.out_dir))
  report.save(results, config.out_dir, plot_png=True)
  return results


def _parallel_shapes(text: str) -> list[tuple[str, int, int]]:
  try:
    return benchmark_parallel.parse_shapes(text)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  modes = list(MODES) if "all" in _MODE.value else _MODE.value
  if set(modes) - set(MODES + (PARALLEL,)):
    raise app.UsageError(f"--mode takes {MODES + (PARALLEL,)} or 'all', not {_MODE.value}.")
  unknown = set(_PARALLEL_PATHS.value) - set(benchmark_parallel.PATHS)
  if unknown or set(_PARALLEL_CELLS.value) - set(jaxrnn.CELLS):
    raise app.UsageError(f"--parallel_paths takes {list(benchmark_parallel.PATHS)} and"
                         f" --parallel_cells {list(jaxrnn.CELLS)}.")
  parallel = benchmark_parallel.ParallelConfig(
      cells=_PARALLEL_CELLS.value, times=[int(t) for t in _PARALLEL_TIMES.value],
      hiddens=[int(h) for h in _PARALLEL_HIDDENS.value], batch=_PARALLEL_BATCH.value,
      paths=_PARALLEL_PATHS.value, repeats=_PARALLEL_REPEATS.value,
      max_iters=_PARALLEL_MAX_ITERS.value, max_gb=_PARALLEL_MAX_GB.value,
      shapes=None if _PARALLEL_SHAPES.value is None else _parallel_shapes(_PARALLEL_SHAPES.value),
      time_budget_s=_PARALLEL_TIME_BUDGET.value, row_budget_s=_PARALLEL_ROW_BUDGET.value)
  shapes = peers.parse_shapes(_SHAPES.value)
  if _DEEPBENCH.value and jax.default_backend() == "gpu":
    shapes += peers.parse_shapes(DEEPBENCH_SHAPES)
  config = Config(
      shapes=shapes, modes=modes, peers=_PEERS.value, out_dir=_OUT_DIR.value,
      repeats=_REPEATS.value, warmup=_WARMUP.value, peak_size=_PEAK_SIZE.value,
      compile_scaling=_COMPILE_SCALING.value,
      memory_shape=peers.parse_shapes(_MEMORY_SHAPE.value)[0],
      remat_chunks=[int(k) for k in _REMAT_CHUNKS.value],
      memory_repeats=_MEMORY_REPEATS.value, parallel=parallel)
  results = run(config)
  print(report.format_table(results))
  if PARALLEL in modes:
    print("\nsequential unroll vs parallel_unroll (float32; depth: sequential steps)\n"
          + benchmark_parallel.format_table(results["parallel"], results["skipped"]))


if __name__ == "__main__":
  app.run(main)
