"""`--mode=parallel` of `experiments.benchmark`: sequential `unroll` against `parallel_unroll`.

For every cell, T and H of the grid, the sequential scan and each parallel
method (``newton``, ``quasi_newton`` and their damped, ELK, forms) run the
same one-layer model (float32, B sequences, input size H) forward (the MSE
loss of every output) and for training (its gradient). A row reports the
median time, the Newton iterations the forward took, whether it converged,
and the depth each path needs: T sequential steps for the scan; for a
parallel path, iterations x (2 ceil(log2 T) + 1), the levels of one
associative scan plus the step's evaluation, per Newton step. Training adds
the adjoint: one more scan for ``newton``, an iteration of its own for
``quasi_newton``.

Dense Newton stores ``[T, B, D, D]`` Jacobians (D = H, 2H for an LSTM; ELK
three such arrays, its Kalman elements); a row whose Jacobians would pass
``max_gb`` is skipped, printing the predicted size, instead of running out of
memory.

Bounded time (for the whole grid on a small CPU): ``shapes`` replaces the
cells x H x T product by an explicit list, and ``time_budget_s`` skips a row
(printing why) whose predicted time would pass what is left of the budget,
and ``row_budget_s`` one whose predicted time passes that.
The prediction scales the last measured row of the same cell, path and mode
by the work of one iteration (``T B D^3`` for dense Newton and ELK, ``T B D``
for the diagonal methods, ``T B D^2`` for the sequential scan), so the grid
runs from small to large; the iteration count can still surprise it (set
``max_iters`` to bound that too).
"""

import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn
from experiments import benchmark_peers as peers

# name -> (method, damping); "sequential" is jaxrnn.unroll.
PATHS = {
    "sequential": None,
    "newton": ("newton", 0.0),
    "quasi_newton": ("quasi_newton", 0.0),
    "elk": ("newton", 1e-4),
    "quasi_elk": ("quasi_newton", 1e-4),
}


class ParallelConfig(NamedTuple):
  """The grid of `--mode=parallel` (its flags, as importable values)."""
  cells: Sequence[str] = ("rnn", "gru", "lstm", "min_gru")
  times: Sequence[int] = (64, 256, 1024, 4096, 16384, 65536)
  hiddens: Sequence[int] = (8, 32, 128, 256)
  batch: int = 16
  paths: Sequence[str] = tuple(PATHS)
  modes: Sequence[str] = ("forward", "train")
  repeats: int = 5
  max_iters: Optional[int] = None
  max_gb: float = 4.0
  shapes: Optional[Sequence[tuple[str, int, int]]] = None  # (cell, T, H); None: the product
  time_budget_s: float = 0.0  # the whole grid; 0: no limit
  row_budget_s: float = 0.0  # one row (compile and timed runs); 0: no limit


def parse_shapes(text: str) -> list[tuple[str, int, int]]:
  """``"gru:1024:64,lstm:64:8"`` -> ``[("gru", 1024, 64), ("lstm", 64, 8)]`` (cell:T:H)."""
  shapes = []
  for item in filter(None, (s.strip() for s in text.split(","))):
    parts = item.split(":")
    if len(parts) != 3 or parts[0] not in jaxrnn.CELLS or not all(
        p.isdigit() and int(p) > 0 for p in parts[1:]):
      raise ValueError(f"parallel_shapes: expected cell:T:H with a cell in {list(jaxrnn.CELLS)}"
                       f" and positive T, H, got {item!r}.")
    shapes.append((parts[0], int(parts[1]), int(parts[2])))
  return shapes


def _state_size(cell: str, hidden: int) -> int:
  model = jaxrnn.CELLS[cell](hidden)
  state = jax.eval_shape(lambda: model.initial_state(
      model.init(jax.random.key(0), hidden), 1))
  return sum(math.prod(s.shape[1:]) for s in jax.tree.leaves(state))


def jacobian_gb(cell: str, T: int, batch: int, hidden: int, method: str,
                damping: float = 0.0) -> float:
  """GB of the stored Jacobians (float32), times 3 for the scan's temporaries.

  ELK's scan carries three of them per step (its Kalman elements A, C, J).
  """
  D = _state_size(cell, hidden)
  per_step = D * D if method == "newton" else D
  arrays = 3 if damping > 0 else 1
  return 3 * arrays * 4 * T * batch * per_step / 1e9


def work(cell: str, T: int, batch: int, hidden: int, path: str) -> float:
  """The work of one iteration of ``path``, the unit of the time prediction."""
  D = _state_size(cell, hidden)
  setting = PATHS[path]
  if setting is None:
    return T * batch * D * D
  return T * batch * (D ** 3 if setting[0] == "newton" else D)


def depth(T: int, iterations: Optional[int]) -> Optional[int]:
  """Sequential steps of a parallel forward: levels of each scan plus one evaluation."""
  if iterations is None:
    return None
  return iterations * (2 * max(1, math.ceil(math.log2(max(T, 2)))) + 1)


def _build(shape: peers.Shape, path: str, mode: str, max_iters):
  model = jaxrnn.CELLS[shape.cell](shape.hidden)
  params = model.init(jax.random.key(0), shape.inputs)
  xs, targets = peers._data(shape)  # pylint: disable=protected-access
  setting = PATHS[path]

  def run(params, xs):
    if setting is None:
      _, ys = jaxrnn.unroll(model, params, xs)
      return ys, None
    method, damping = setting
    _, ys, info = jaxrnn.parallel_unroll(model, params, xs, method=method, damping=damping,
                                         max_iters=max_iters, on_failure="keep")
    return ys, info

  def loss(params, xs, targets):
    ys, _ = run(params, xs)
    return jnp.mean(jnp.square(ys - targets))

  step = peers.jax_step(loss, params, xs, targets, mode, path)
  return step, lambda: None if setting is None else jax.jit(run)(params, xs)[1]


def _grid(config: ParallelConfig):
  if config.shapes is not None:
    return list(config.shapes)
  return [(cell, T, hidden) for cell in config.cells for hidden in config.hiddens
          for T in config.times]


def _skip(skipped, path, shape, reason):
  skipped.append({"peer": path, "shape": str(shape), "mode": "parallel", "reason": reason})
  print(f"skipped {path} {shape}: {reason}", flush=True)


def benchmark(config: ParallelConfig, skipped: list,
              rows: Optional[list] = None, on_row=lambda: None) -> list[dict[str, Any]]:
  """One row per (cell, T, H, path, mode) of the grid; skipped ones say why in `skipped`.

  Rows are appended to ``rows`` (a new list by default), and ``on_row()`` is
  called after each, so that partial results can be saved.
  """
  rows = [] if rows is None else rows
  start = time.perf_counter()
  last = {}  # (cell, path, mode) -> (work, compile seconds, other seconds) of its last row
  for cell, T, hidden in _grid(config):
    shape = peers.Shape(cell, config.batch, T, hidden, hidden)
    for path in config.paths:
      setting = PATHS[path]
      if setting is not None:
        gb = jacobian_gb(cell, T, config.batch, hidden, *setting)
        if gb > config.max_gb:
          _skip(skipped, path, shape, f"its Jacobians would take {gb:.3g} GB > max_gb")
          continue
      solved = None
      for mode in config.modes:
        w = work(cell, T, config.batch, hidden, path)
        reason = _over_budget(config, time.perf_counter() - start, last.get((cell, path, mode)), w)
        if reason:
          _skip(skipped, f"{path} {mode}", shape, reason)
          continue
        row_start = time.perf_counter()
        solved = row = _row(shape, path, mode, config, solved)
        total = time.perf_counter() - row_start
        compile_s = row["compile_s"] or 0.0
        last[(cell, path, mode)] = (w, compile_s, max(total - compile_s, 0.0))
        rows.append(row)
        print(f"{cell} T={T} H={hidden} {path} {mode}: {row['median_ms']:.3f} ms,"
              f" iterations {row['iterations']}, {total:.1f} s", flush=True)
        on_row()
  return rows


def _over_budget(config, elapsed, prev, w):
  """Why a row must be skipped for time, or None."""
  if config.time_budget_s <= 0 and config.row_budget_s <= 0:
    return None
  left = config.time_budget_s - elapsed
  if config.time_budget_s > 0 and left <= 0:
    return f"the time budget of {config.time_budget_s:g} s is spent"
  if prev is None:  # nothing to predict from: the first row of its cell, path and mode
    return None
  predicted = prev[1] + prev[2] * w / prev[0]
  if config.time_budget_s > 0 and predicted > left:
    return f"predicted {predicted:.3g} s > the {left:.3g} s left of the time budget"
  if config.row_budget_s > 0 and predicted > config.row_budget_s:
    return f"predicted {predicted:.3g} s > the row budget of {config.row_budget_s:g} s"
  return None


def _row(shape, path, mode, config, solved=None):
  """One row; ``solved`` is a row of the same shape and path (its solve is not rerun)."""
  step, solve = _build(shape, path, mode, config.max_iters)
  step.run()
  times = []
  for _ in range(config.repeats):
    start = time.perf_counter()
    step.run()
    times.append(1e3 * (time.perf_counter() - start))
  row = {
      "cell": shape.cell, "T": shape.time, "H": shape.hidden, "B": shape.batch,
      "path": path, "mode": mode, "median_ms": float(np.median(times)), "times_ms": times,
      "compile_s": step.compile_s,
  }
  if solved is not None:
    return row | {k: solved[k] for k in ("iterations", "converged", "residual", "depth")}
  info = solve()
  iterations = None if info is None else int(info.iterations)
  return row | {
      "iterations": iterations,
      "converged": None if info is None else bool(info.converged),
      "residual": None if info is None else float(info.residual),
      "depth": shape.time if info is None else depth(shape.time, iterations),
  }


def format_table(rows: list[dict[str, Any]], skipped: list) -> str:
  """A Markdown table to paste into the README, and the skipped rows."""
  lines = ["| cell | T | H | path | mode | ms | x sequential | iterations | converged |"
           " depth |", "|---|---|---|---|---|---|---|---|---|---|"]
  seq = {(r["cell"], r["T"], r["H"], r["mode"]): r["median_ms"] for r in rows
         if r["path"] == "sequential"}
  for r in rows:
    base = seq.get((r["cell"], r["T"], r["H"], r["mode"]))
    ratio = f"{r['median_ms'] / base:.2f}" if base else "-"
    it = "-" if r["iterations"] is None else str(r["iterations"])
    conv = "-" if r["converged"] is None else ("yes" if r["converged"] else "NO")
    lines.append(f"| {r['cell']} | {r['T']} | {r['H']} | {r['path']} | {r['mode']} |"
                 f" {r['median_ms']:.3f} | {ratio} | {it} | {conv} | {r['depth']} |")
  notes = [s for s in skipped if s["mode"] == "parallel"]
  if notes:
    lines += ["", "skipped:"] + [f"  {s['peer']} {s['shape']}: {s['reason']}" for s in notes]
  return "\n".join(lines)
