"""`check_cell`: jaxrnn's conformance suite, as one function for any model.

Every check computes the same thing two ways and compares them in float64:
`unroll` against a Python loop over ``model.step``, `jax.grad` against
central finite differences, `bptt` and the default gradient against JAX
differentiating the scan, the batched step against the unbatched one under
`jax.vmap`, and ``remat_chunk`` against the plain path. The reference loop
does its own masking, reversal and resets with numpy indexing, one sequence
at a time, so it shares no sequence code with `unroll`.
"""

import importlib
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import base
from jaxrnn._src import bptt as bptt_lib
from jaxrnn._src import unroll as unroll_lib

UNROLL = "unroll_vs_step_loop"
FINITE_DIFFERENCES = "grad_vs_finite_differences"
BPTT = "bptt_vs_autodiff"
GRAD = "grad_vs_autodiff"
UNBATCHED = "batched_vs_unbatched_step"
REMAT = "remat_vs_plain"
DTYPES_FLOAT64 = "dtypes_float64"
DTYPES_FLOAT32 = "dtypes_float32"

CHECKS = (UNROLL, FINITE_DIFFERENCES, BPTT, GRAD, UNBATCHED, REMAT, DTYPES_FLOAT64,
          DTYPES_FLOAT32)

# Bounds on the relative errors, in float64. A correct implementation measures
# about 1e-15 on all but the finite differences (about 1e-9 with this step);
# a wrong derivative is off by orders of magnitude more.
BOUNDS = {
    UNROLL: 1e-12,
    FINITE_DIFFERENCES: 1e-6,
    BPTT: 1e-10,
    GRAD: 1e-10,
    UNBATCHED: 1e-12,
    REMAT: 1e-12,
}

_FD_STEP = 1e-5
_FD_DIRECTIONS = 3  # random unit directions per differentiated argument
# `unroll_kwargs` may not set what the checks vary or compare themselves.
_CONTROLLED = ("seq_lengths", "resets", "reverse", "time_major", "backward", "remat_chunk",
               "state_grad_clip")


class CheckReport(NamedTuple):
  """What `check_cell` ran and measured; returned only when every check passed.

  Attributes:
    passed: the names of the checks that ran, in order (see `check_cell`).
    skipped: ``(name, reason)`` for each check that does not apply to the model.
    max_errors: ``{name: largest relative error measured}`` for the numerical
      checks that ran.
    bounds: ``{name: bound}`` that those errors were held to.
    notes: remarks on how the checks ran (x64, dropout).
  """
  passed: tuple[str, ...]
  skipped: tuple[tuple[str, str], ...]
  max_errors: Mapping[str, float]
  bounds: Mapping[str, float]
  notes: tuple[str, ...]

  def __str__(self) -> str:
    lines = [f"check_cell: {len(self.passed)} checks passed, {len(self.skipped)} skipped."]
    for name in self.passed:
      if name in self.max_errors:
        lines.append(f"  passed  {name:28s} max error {self.max_errors[name]:.1e}"
                     f" (bound {self.bounds[name]:.0e})")
      else:
        lines.append(f"  passed  {name}")
    lines += [f"  skipped {name:28s} {reason}" for name, reason in self.skipped]
    lines += [f"  note: {note}" for note in self.notes]
    return "\n".join(lines)


class _Case(NamedTuple):
  """One combination of `unroll`'s sequence options."""
  features: bool     # seq_lengths and resets given
  reverse: bool
  state_given: bool  # a random initial state, or None for model.initial_state


# Every pair of settings of the three options appears in some case.
_CASES = (
    _Case(features=False, reverse=False, state_given=True),
    _Case(features=False, reverse=True, state_given=False),
    _Case(features=True, reverse=False, state_given=False),
    _Case(features=True, reverse=True, state_given=True),
)
_FD_CASES = (2, 3)
_REMAT_CASES = (3,)


class _Problem(NamedTuple):
  """The data of every check: one pytree, so it passes through `jax.jit`."""
  params: Any
  xs: jax.Array
  state: Any
  seq_lengths: jax.Array
  resets: jax.Array
  d_final: Any
  d_ys: jax.Array


def check_cell(model: base.Model, input_size: Union[int, Sequence[int]], *,
               rng: Optional[jax.Array] = None,
               seq_len: int = 7, batch_size: int = 3, param_noise: float = 0.1,
               unroll_kwargs: Optional[Mapping[str, Any]] = None) -> CheckReport:
  """Checks that ``model`` behaves as jaxrnn's models must, in float64.

  Enables x64 (`jax.enable_x64`, thread-local) for its own duration and
  restores the previous setting on return, so the numerical checks run in
  float64 even when x64 is off; the report notes it. Errors are relative:
  the largest absolute difference over a pytree (``ys``, a state, a
  gradient) over the largest absolute value of the reference. The sequence
  options are crossed so that every pair of settings of ``seq_lengths`` and
  ``resets`` (given together), ``reverse`` and the initial state (random, or
  None for ``model.initial_state``) runs; ``seq_lengths`` holds a full
  length, a short one and 0, and the resets fall inside sequences, on their
  first step and on padding.

  The checks, by name:

  - ``unroll_vs_step_loop``: `unroll` (plain, and under `jax.vjp`) against a
    Python loop over ``model.step`` that masks, reverses and resets with
    numpy indexing, one sequence at a time (bound 1e-12). Skipped when
    ``model.step`` raises `NotImplementedError` (`bidirectional`).
  - ``grad_vs_finite_differences``: `jax.grad` of ``sum(ys * w) + sum(final
    * v)`` (random ``w``, ``v``) with respect to the parameters, the inputs
    and the initial state, along 3 random unit directions in each, against
    central differences with step 1e-5. The error is relative to the norm of
    that argument's gradient (bound 1e-6).
  - ``bptt_vs_autodiff``: `bptt` against `jax.vjp` of ``unroll(...,
    backward="autodiff")``, for ``(d_params, d_xs, d_state)`` each (bound
    1e-10). With ``state=None``, ``d_params`` includes the initial state's
    contribution and ``d_state`` is not compared. Skipped when
    ``model.explicit_backward`` is False.
  - ``grad_vs_autodiff``: the default gradient of `unroll` (what `jax.grad`
    runs) against the autodiff path, likewise (bound 1e-10).
  - ``batched_vs_unbatched_step``: ``jax.vmap`` of ``model.step`` on
    unbatched ``[F]`` inputs and states shaped like ``model.initial_state(
    params, None)`` against the batched step (bound 1e-12). Skipped when the
    step refuses unbatched input.
  - ``remat_vs_plain``: outputs and gradients with ``remat_chunk`` (3, or
    another size that does not divide ``seq_len``) against without (bound
    1e-12).
  - ``dtypes_float64``: parameters, states, ``ys`` and every gradient are
    float64 (or keep their primal's dtype).
  - ``dtypes_float32``: from float32 parameters (``init`` with x64 off), the
    initial state, ``ys``, the final state and every gradient stay float32,
    traced with `jax.eval_shape` with x64 on (so an upcast shows) and off.

  Args:
    model: any `Model`.
    input_size: the feature size ``F`` of the inputs; for a model with
      spatial axes (`conv_lstm`), the shape of one input ``(*spatial, C)``,
      e.g. ``(8, 8, 3)``: ``init`` gets ``C`` and the inputs are
      ``[T, B, *spatial, C]``.
    rng: PRNG key for the parameters and all data; None means
      ``jax.random.PRNGKey(0)``.
    seq_len: ``T``.
    batch_size: ``B``; with 3 or more the lengths include a full one, a
      short one and 0.
    param_noise: standard deviation of the Gaussian noise added to every
      parameter after ``init``, so that zero biases and learned initial
      states are exercised; 0 checks the parameters as ``init`` makes them.
    unroll_kwargs: further keyword arguments for every `unroll` and `bptt`
      call, e.g. ``{"rng": key}`` to check a `stack` with its dropout on (the
      comparison with ``model.step``, which never drops, runs without it).
      Options the checks vary themselves are refused.

  Returns:
    A `CheckReport` (printable) of the checks that passed and were skipped,
    with the largest errors measured.

  Raises:
    AssertionError: naming every check that failed, with the case, the
      error measured, the bound and where in the pytree the error is largest.
    ValueError: for bad arguments.
  """
  unroll_kwargs = dict(unroll_kwargs or {})
  input_shape = _check_arguments(input_size, seq_len, batch_size, param_noise, unroll_kwargs)
  spatial_dims = getattr(model, "spatial_dims", 0)
  if len(input_shape) != spatial_dims + 1:
    raise ValueError(f"input_size: expected {'a shape (*spatial, C) with ' if spatial_dims else ''}"
                     f"{spatial_dims} spatial axes (model.spatial_dims), got {input_size!r}.")
  input_size, seq_len, batch_size = input_shape[-1], int(seq_len), int(batch_size)
  with_rng = unroll_kwargs.get("rng") is not None
  key = jax.random.PRNGKey(0) if rng is None else rng
  x64_was_on = jax.dtypes.canonicalize_dtype(jnp.float64) == jnp.float64
  findings = _Findings()
  with _x64(True):
    # Only init sees the key itself; the data come from numpy, seeded by it.
    generator = np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist())
    problem = _make_problem(model, input_shape, key, generator, seq_len, batch_size,
                            param_noise)
    explicit = bool(getattr(model, "explicit_backward", True))
    if not explicit:
      findings.skip(BPTT, "model.explicit_backward is False (no hand-written backward); the"
                    " default gradient is still checked against autodiff and finite differences")
    results = _measure(model, problem, unroll_kwargs, explicit, generator)
    steppable = _steppable(findings, model, problem)
    if steppable:
      _check_unroll(findings, model, problem, results, with_rng)
    _check_finite_differences(findings, results)
    _check_gradients(findings, results, explicit)
    if steppable:
      _check_unbatched(findings, model, problem)
    _check_remat(findings, results)
    _check_float64(findings, model, problem, results)
    _check_float32(findings, model, input_size, key, problem, unroll_kwargs, explicit)
  if findings.failures:
    raise AssertionError(
        f"check_cell: {len(findings.failures)} of {len(findings.ran)} checks failed (T={seq_len},"
        f" B={batch_size}, input_size={_brief_shape(input_shape)}):\n{findings.message()}")
  notes = ["x64 was off: check_cell turned it on for its own duration (every numerical check"
           " ran in float64) and turned it off again." if not x64_was_on else
           "x64 was on; every numerical check ran in float64."]
  if with_rng:
    notes.append(f"{UNROLL} ran without unroll_kwargs['rng']: model.step never applies dropout.")
  return CheckReport(
      passed=tuple(c for c in CHECKS if c in findings.ran),
      skipped=tuple(findings.skipped),
      max_errors={c: e for c, e in findings.errors.items() if c in findings.ran},
      bounds={c: b for c, b in BOUNDS.items() if c in findings.ran},
      notes=tuple(notes))


# --- set-up -----------------------------------------------------------------------


def _x64(enabled):
  """A context with x64 ``enabled`` in this thread, restored on exit."""
  context = getattr(jax, "enable_x64", None)
  if context is None:  # older JAX
    context = importlib.import_module("jax.experimental").enable_x64
  return context(enabled)


def _positive_int(value):
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _brief_shape(shape):
  return shape[0] if len(shape) == 1 else shape


def _check_arguments(input_size, seq_len, batch_size, param_noise, unroll_kwargs):
  """Checks the arguments; returns the shape of one step's input, ``(*spatial, F)``."""
  for name, value in (("seq_len", seq_len), ("batch_size", batch_size)):
    if not _positive_int(value):
      raise ValueError(f"{name}: expected a positive int, got {value!r}.")
  shape = (input_size,) if _positive_int(input_size) else input_size
  if not isinstance(shape, (tuple, list)) or not shape or not all(map(_positive_int, shape)):
    raise ValueError(f"input_size: expected a positive int, or a shape (*spatial, C) of positive"
                     f" ints for a model with spatial axes, got {input_size!r}.")
  if not param_noise >= 0:
    raise ValueError(f"param_noise: expected a standard deviation >= 0, got {param_noise!r}.")
  controlled = sorted(set(unroll_kwargs) & set(_CONTROLLED))
  if controlled:
    raise ValueError(f"unroll_kwargs: {controlled} are set by check_cell itself; pass only"
                     " options it does not vary, such as rng or scan_unroll.")
  return tuple(int(n) for n in shape)


def _random_like(generator, tree, scale=1.0):
  """Gaussian noise shaped like ``tree``, from numpy (so nothing is compiled)."""
  return jax.tree.map(lambda a: jnp.asarray(scale * generator.standard_normal(jnp.shape(a)),
                                            jnp.result_type(a)), tree)


def _lengths(T, B):
  """A full length first, then a short one and 0, repeating."""
  return np.array([(T, max(1, T // 2), 0)[b % 3] for b in range(B)], np.int32)


def _resets(resets, lengths):
  """Random resets, plus fixed ones that exercise every rule.

  The first sequence gets resets on its first, middle and last steps (one on
  ``xs[0]`` must change nothing, reading either way), and a short sequence one
  on its first padded step, which must be ignored.
  """
  resets = np.array(resets)
  T = resets.shape[0]
  resets[[0, T // 2, T - 1], 0] = True
  short = np.flatnonzero((lengths > 0) & (lengths < T))
  if short.size:
    resets[lengths[short[0]], short[0]] = True
  return resets


def _make_problem(model, input_shape, key, generator, T, B, param_noise):
  params = model.init(key, input_shape[-1])
  if param_noise:
    params = jax.tree.map(jnp.add, params, _random_like(generator, params, param_noise))
  xs = _random_like(generator, jax.ShapeDtypeStruct((T, B) + input_shape, jnp.float64))
  spatial = input_shape[:-1]
  state = _random_like(generator, jax.eval_shape(
      lambda p: base.initial_state(model, p, B, spatial), params))
  final, ys = jax.eval_shape(lambda p, x: unroll_lib.unroll(model, p, x), params, xs)
  lengths = _lengths(T, B)
  resets = _resets(generator.random((T, B)) < 0.3, lengths)
  return _Problem(params, xs, state, jnp.asarray(lengths), jnp.asarray(resets),
                  _random_like(generator, final), _random_like(generator, ys))


def _remat_chunk(T):
  return next((k for k in (3, 2, 4, 5) if T % k), 7)


def _describe(case, problem):
  parts = []
  if case.features:
    resets = np.argwhere(np.asarray(problem.resets))
    parts.append(f"seq_lengths={np.asarray(problem.seq_lengths).tolist()}, resets at (t, b)"
                 f" {[tuple(r) for r in resets.tolist()]}")
  parts.append(f"reverse={case.reverse}")
  parts.append("random initial state" if case.state_given else "state=None")
  return ", ".join(parts)


# --- what the numerical checks compare, in one jitted call ---------------------------


def _arg_names(case):
  return ("params", "xs", "state") if case.state_given else ("params", "xs")


def _unit_directions(generator, args):
  """Random unit directions, each in one argument (zero in the others), stacked."""
  directions = []
  for i, arg in enumerate(args):
    for _ in range(_FD_DIRECTIONS):
      leaves, treedef = jax.tree.flatten(arg)
      v = [generator.standard_normal(jnp.shape(a)) for a in leaves]
      norm = math.sqrt(sum(np.sum(leaf ** 2) for leaf in v))
      directions.append(tuple(jax.tree.unflatten(treedef, [leaf / norm for leaf in v]) if k == i
                              else jax.tree.map(lambda a: np.zeros(jnp.shape(a)), other)
                              for k, other in enumerate(args)))
  return jax.tree.map(lambda *d: jnp.asarray(np.stack(d)), *directions)


def _case_args(case, problem):
  return (problem.params, problem.xs) + ((problem.state,) if case.state_given else ())


def _linear_loss(outputs, problem):
  final, ys = outputs
  return jnp.sum(ys * problem.d_ys) + sum(
      jnp.sum(f * d) for f, d in zip(jax.tree.leaves(final), jax.tree.leaves(problem.d_final)))


def _run_case(model, problem, directions, unroll_kwargs, explicit, case, remat_chunk):
  options = dict(unroll_kwargs, reverse=case.reverse)
  if case.features:
    options.update(seq_lengths=problem.seq_lengths, resets=problem.resets)
  args = _case_args(case, problem)
  cotangent = (problem.d_final, problem.d_ys)

  def run(params, xs, state=None, **extra):
    return unroll_lib.unroll(model, params, xs, state, **options, **extra)

  out = {}
  # The plain forward is compared with model.step, which never applies dropout.
  step_options = {k: v for k, v in options.items() if k != "rng"}
  out["forward"] = unroll_lib.unroll(model, *args, **step_options)
  out["grad_forward"], vjp = jax.vjp(run, *args)
  out["grad"] = vjp(cotangent)
  out["autodiff"] = jax.vjp(lambda *a: run(*a, backward="autodiff"), *args)[1](cotangent)
  if explicit:
    state = problem.state if case.state_given else None
    grads = bptt_lib.bptt(model, problem.params, problem.xs, state, problem.d_ys,
                          problem.d_final, **options)
    out["bptt"] = tuple(grads[:len(args)])
  if remat_chunk is not None:
    out["remat_forward"], vjp = jax.vjp(lambda *a: run(*a, remat_chunk=remat_chunk), *args)
    out["remat_grad"] = vjp(cotangent)
  if directions is not None:
    out["fd"] = _central_differences(lambda *a: _linear_loss(run(*a), problem), args, directions)
  return out


def _central_differences(loss, args, directions):
  """``(loss(a + h v) - loss(a - h v)) / 2h`` for every stacked direction ``v``."""
  n = jax.tree.leaves(directions)[0].shape[0]
  signs = jnp.concatenate([jnp.ones(n), -jnp.ones(n)])
  both = jax.tree.map(lambda d: jnp.concatenate([d, d]), directions)

  def moved(sign_and_direction):
    sign, v = sign_and_direction
    return loss(*jax.tree.map(lambda a, d: a + sign * _FD_STEP * d, args, v))

  values = jax.lax.map(moved, (signs, both))
  return (values[:n] - values[n:]) / (2 * _FD_STEP)


def _measure(model, problem, unroll_kwargs, explicit, generator):
  """Runs every case of `_CASES`, jitted; returns ``[(case, results, directions, text)]``."""
  directions = {i: _unit_directions(generator, _case_args(_CASES[i], problem)) for i in _FD_CASES}
  chunk = _remat_chunk(problem.xs.shape[0])

  def run_all(problem, directions):
    return [_run_case(model, problem, directions.get(i), unroll_kwargs, explicit, case,
                      chunk if i in _REMAT_CASES else None)
            for i, case in enumerate(_CASES)]

  results = _run_once(run_all, problem, directions)
  return [(case, out, directions.get(i), _describe(case, problem))
          for i, (case, out) in enumerate(zip(_CASES, results))]


def _run_once(fn, *args):
  """``jax.jit(fn)(*args)``, compiled without LLVM's optimisations on CPU.

  The checks run each program once on tiny inputs, so compiling is nearly all
  of their time, and XLA:CPU compiles about a third faster without them.
  """
  lowered = jax.jit(fn).lower(*args)
  compiled = None
  if jax.default_backend() == "cpu":
    try:
      compiled = lowered.compile({"xla_backend_optimization_level": "0"})
    except Exception:  # pylint: disable=broad-except
      pass  # an XLA without the option compiles as usual
  return (compiled or lowered.compile())(*args)


# --- the checks ---------------------------------------------------------------------


class _Findings:
  """What the checks measured; collects every failure so that all are reported at once."""

  def __init__(self):
    self.ran, self.skipped, self.errors, self.failures = [], [], {}, {}

  def skip(self, check, reason):
    self.skipped.append((check, reason))

  def fail(self, check, where, message, value=math.inf):
    self.failures.setdefault(check, []).append((value, f"{message} ({where})"))
    self.ok(check)

  def ok(self, check):
    if check not in self.ran:
      self.ran.append(check)

  def error(self, check, where, value, detail):
    """Records a measured relative error; fails the check if it exceeds the bound."""
    previous = self.errors.get(check, 0.0)
    self.errors[check] = value if math.isnan(value) else max(previous, value)
    if value <= BOUNDS[check]:
      self.ok(check)
    else:  # NaN too
      self.fail(check, where, f"{detail}: relative error {value:.2e} > bound"
                f" {BOUNDS[check]:.0e}", value)

  def compare(self, check, where, parts):
    """Compares ``(label, got, want)`` pytrees, each by its own relative error."""
    for label, got, want in parts:
      value, path = _relative_error(got, want)
      self.error(check, where, value, f"{label}{path}")

  def message(self):
    """One line per failed check: its worst comparison, and how many others failed."""
    lines = []
    for check in CHECKS:
      if check not in self.failures:
        continue
      items = self.failures[check]
      _, worst = max(items, key=lambda item: math.inf if math.isnan(item[0]) else item[0])
      more = f"; {len(items) - 1} more comparison(s) fail it" if len(items) > 1 else ""
      lines.append(f"- {check} ({_MEANING[check]}): {worst}{more}")
    return "\n".join(lines)


_MEANING = {
    UNROLL: "unroll disagrees with a Python loop over model.step",
    FINITE_DIFFERENCES: "jax.grad of unroll disagrees with central differences",
    BPTT: "bptt, the hand-written backward, disagrees with JAX differentiating the forward",
    GRAD: "jax.grad through unroll disagrees with backward='autodiff'",
    UNBATCHED: "model.step on unbatched input disagrees with the batched step",
    REMAT: "remat_chunk changes the outputs or the gradients",
    DTYPES_FLOAT64: "a dtype is not float64",
    DTYPES_FLOAT32: "something leaves float32",
}


def _relative_error(got, want):
  """``max |got - want| / max |want|`` over two pytrees, and the path of the worst leaf."""
  got_leaves, got_def = jax.tree_util.tree_flatten_with_path(got)
  want_leaves, want_def = jax.tree_util.tree_flatten_with_path(want)
  if got_def != want_def:
    return math.inf, f" (tree structure {got_def} differs from {want_def})"
  worst, where, scale = -1.0, "", 0.0
  for (path, g), (_, w) in zip(got_leaves, want_leaves):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    if g.shape != w.shape:
      return math.inf, f"{jax.tree_util.keystr(path)} (shape {g.shape} differs from {w.shape})"
    if not g.size:
      continue
    diff = float(np.max(np.abs(g - w)))
    if math.isnan(diff) or diff > worst:
      worst, where = diff, jax.tree_util.keystr(path)
      if math.isnan(diff):
        return math.nan, where
    scale = max(scale, float(np.max(np.abs(w))))
  if worst <= 0.0:
    return 0.0, where
  return (worst / scale if scale > 0 else math.inf), where


def _steppable(findings, model, problem):
  """False (and both step checks skipped) when ``model.step`` is not implemented."""
  row = jax.tree.map(lambda s: s[:1], problem.state)
  try:
    jax.eval_shape(model.step, problem.params, row, problem.xs[0, :1])
  except NotImplementedError as e:
    reason = f"model.step raised {_brief(e)}"
    findings.skip(UNROLL, reason)
    findings.skip(UNBATCHED, reason)
    return False
  return True


def _brief(error):
  """The error's type and the start of its message, on one line."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f"{type(error).__name__}: {' '.join(lines[:4])}"[:400]


def _step_loop(step, params, xs, state, seq_lengths, resets, reverse, output_size):
  """The reference `unroll`: one sequence at a time, one ``step`` at a time.

  Padded steps are never read (the state stays, the output is zero). Reading
  backwards visits ``xs[L-1], ..., xs[0]``. A reset at a valid step ``t``
  swaps the initial state in before ``xs[t]`` is read, or, reading
  backwards, after it (so never after ``xs[0]``).
  """
  xs, state = np.asarray(xs), jax.tree.map(np.asarray, state)
  T, B = xs.shape[:2]
  lengths = np.full(B, T) if seq_lengths is None else np.asarray(seq_lengths)
  resets = np.zeros((T, B), bool) if resets is None else np.asarray(resets)
  ys = np.zeros(xs.shape[:-1] + (output_size,))
  finals = []
  for b in range(B):
    start = jax.tree.map(lambda s, b=b: s[b:b + 1], state)
    s = start
    times = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
    for t in times:
      if resets[t, b] and not reverse:
        s = start
      s, y = step(params, s, xs[t, b:b + 1])
      ys[t, b] = np.asarray(y)[0]
      if resets[t, b] and reverse and t > 0:
        s = start
    finals.append(s)
  return jax.tree.map(lambda *rows: np.concatenate(rows), *finals), ys


def _check_unroll(findings, model, problem, results, with_rng):
  step = jax.jit(model.step)
  for case, out, _, where in results:
    state = problem.state if case.state_given else base.initial_state(
        model, problem.params, problem.xs.shape[1], problem.xs.shape[2:-1])
    features = (problem.seq_lengths, problem.resets) if case.features else (None, None)
    want_final, want_ys = _step_loop(step, problem.params, problem.xs, state, *features,
                                     case.reverse, model.output_size)
    parts = [("final_state", out["forward"][0], want_final), ("ys", out["forward"][1], want_ys)]
    if not with_rng:  # under jax.vjp, unroll runs its forward with residuals
      parts += [("final_state under jax.vjp", out["grad_forward"][0], want_final),
                ("ys under jax.vjp", out["grad_forward"][1], want_ys)]
    findings.compare(UNROLL, where, parts)


def _check_finite_differences(findings, results):
  for case, out, directions, where in results:
    if directions is None:
      continue
    grads, directions = jax.tree.map(np.asarray, (out["grad"], directions))
    names = _arg_names(case)
    norms = [_norm(g) for g in grads]
    for i, fd in enumerate(np.asarray(out["fd"])):
      arg = i // _FD_DIRECTIONS
      v = jax.tree.map(lambda d, i=i: d[i], directions)
      exact = sum(float(np.vdot(g, d))
                  for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(v)))
      # Relative to the largest directional derivative, |grad| (the direction has norm 1);
      # an argument the loss hardly depends on is measured against the whole gradient.
      scale = max(norms[arg], 1e-3 * math.sqrt(sum(n ** 2 for n in norms)), 1e-300)
      findings.error(FINITE_DIFFERENCES, where, abs(float(fd) - exact) / scale,
                     f"d loss / d {names[arg]} along a random unit direction: jax.grad gives"
                     f" {exact:.10g}, central differences (h={_FD_STEP:g}) {float(fd):.10g},"
                     f" |d loss / d {names[arg]}| = {norms[arg]:.3g}")


def _norm(tree):
  return math.sqrt(sum(float(np.sum(np.asarray(a, np.float64) ** 2))
                       for a in jax.tree.leaves(tree)))


def _gradient_parts(case, got, want):
  names = ["d_" + n for n in _arg_names(case)]
  return [(name, g, w) for name, g, w in zip(names, got, want)]


def _check_gradients(findings, results, explicit):
  for case, out, _, where in results:
    if explicit:
      findings.compare(BPTT, where, _gradient_parts(case, out["bptt"], out["autodiff"]))
    findings.compare(GRAD, where, _gradient_parts(case, out["grad"], out["autodiff"]))


def _check_remat(findings, results):
  for case, out, _, where in results:
    if "remat_grad" not in out:
      continue
    parts = [("final_state", out["remat_forward"][0], out["grad_forward"][0]),
             ("ys", out["remat_forward"][1], out["grad_forward"][1])]
    parts += _gradient_parts(case, out["remat_grad"], out["grad"])
    findings.compare(REMAT, f"remat_chunk={_remat_chunk(out['forward'][1].shape[0])}, {where}",
                     parts)


def _check_unbatched(findings, model, problem):
  params, state, x = problem.params, problem.state, problem.xs[0]
  row = jax.tree.map(lambda s: s[0], state)
  try:
    got, y0 = jax.eval_shape(model.step, params, row, x[0])
  except Exception as e:  # pylint: disable=broad-except
    findings.skip(UNBATCHED, f"model.step refused unbatched input: {_brief(e)}")
    return
  want = jax.eval_shape(lambda p: base.initial_state(model, p, None, x.shape[1:-1]), params)
  where = "one step, unbatched x of shape [F]"
  if jax.tree.structure(got) != jax.tree.structure(want) or any(
      g.shape != w.shape for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want))):
    findings.fail(UNBATCHED, where, f"the unbatched step returned a state {_shapes(got)}, but"
                  f" model.initial_state(params, None) is {_shapes(want)}")
    return
  want_y = tuple(x.shape[1:-1]) + (model.output_size,)
  if tuple(y0.shape) != want_y:
    findings.fail(UNBATCHED, where, f"the unbatched step returned y of shape {list(y0.shape)},"
                  f" expected {list(want_y)}")
    return
  vmapped, batched = jax.jit(lambda p, s, x: (jax.vmap(model.step, (None, 0, 0))(p, s, x),
                                                model.step(p, s, x)))(params, state, x)
  findings.compare(UNBATCHED, "jax.vmap of the unbatched step vs the batched step",
                   [("new_state", vmapped[0], batched[0]), ("y", vmapped[1], batched[1])])


def _shapes(tree):
  return str(jax.tree.map(lambda a: f"{jnp.dtype(a.dtype).name}{list(a.shape)}", tree))


def _dtype_mismatches(label, got, want_dtypes):
  """``label.path: got float32, expected float64`` for each leaf of the wrong dtype."""
  got_leaves, got_def = jax.tree_util.tree_flatten_with_path(got)
  want_leaves = jax.tree.leaves(want_dtypes)
  if len(got_leaves) != len(want_leaves):
    return [f"{label}: tree structure {got_def} has {len(got_leaves)} leaves, expected"
            f" {len(want_leaves)}"]
  return [f"{label}{jax.tree_util.keystr(path)}: {jnp.dtype(g.dtype).name}, expected"
          f" {jnp.dtype(w).name}" for (path, g), w in zip(got_leaves, want_leaves)
          if jnp.dtype(g.dtype) != jnp.dtype(w)]


def _dtypes(tree):
  return jax.tree.map(lambda a: jnp.dtype(a.dtype), tree)


def _check_float64(findings, model, problem, results):
  f64 = jnp.dtype(jnp.float64)
  initial = jax.eval_shape(
      lambda p: base.initial_state(model, p, problem.xs.shape[1], problem.xs.shape[2:-1]),
      problem.params)
  wrong = _dtype_mismatches("params", problem.params,
                            jax.tree.map(lambda _: f64, problem.params))
  wrong += _dtype_mismatches("initial_state", initial, jax.tree.map(lambda _: f64, initial))
  for case, out, _, _ in results:
    args = _case_args(case, problem)
    for name in ("forward", "grad_forward"):
      wrong += _dtype_mismatches(f"final_state ({name})", out[name][0], _dtypes(initial))
      wrong += _dtype_mismatches(f"ys ({name})", out[name][1], jnp.dtype(problem.xs.dtype))
    for name in ("grad", "autodiff", "bptt", "remat_grad"):
      if name in out:
        for part, grad, arg in zip(_arg_names(case), out[name], args):
          wrong += _dtype_mismatches(f"d_{part} ({name})", grad, _dtypes(arg))
  _report_dtypes(findings, DTYPES_FLOAT64, "float64 parameters and inputs", wrong)


def _report_dtypes(findings, check, where, wrong):
  wrong = list(dict.fromkeys(wrong))
  if wrong:
    findings.fail(check, where, "wrong dtypes: " + "; ".join(wrong[:8])
                  + (f"; and {len(wrong) - 8} more" if len(wrong) > 8 else ""))
  else:
    findings.ok(check)


def _check_float32(findings, model, input_size, key, problem, unroll_kwargs, explicit):
  """Traces everything from float32 parameters and checks that nothing leaves float32."""
  f32 = jnp.dtype(jnp.float32)
  with _x64(False):
    params = jax.eval_shape(lambda k: model.init(k, input_size), key)
  as32 = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), f32), tree)
  T, B = problem.xs.shape[:2]

  def everything(params, xs, state, d_final, d_ys, seq_lengths, resets):
    data = _Problem(params, xs, state, seq_lengths, resets, d_final, d_ys)
    out = {}
    options = dict(unroll_kwargs, reverse=True, seq_lengths=seq_lengths, resets=resets)
    run = lambda *a, **extra: unroll_lib.unroll(model, *a, **options, **extra)
    out["forward"] = run(params, xs, state)
    out["grad"] = jax.grad(lambda *a: _linear_loss(run(*a), data), (0, 1, 2))(params, xs, state)
    out["grad_state_none"] = jax.grad(lambda *a: _linear_loss(run(*a), data), (0, 1))(params, xs)
    if explicit:
      out["bptt"] = bptt_lib.bptt(model, params, xs, state, d_ys, d_final, **options)
    return out

  inputs = (params, jax.ShapeDtypeStruct(problem.xs.shape, f32), as32(problem.state),
            as32(problem.d_final), jax.ShapeDtypeStruct(problem.d_ys.shape, f32),
            problem.seq_lengths, problem.resets)
  initial = jax.eval_shape(lambda p: base.initial_state(model, p, B, problem.xs.shape[2:-1]),
                           params)
  wrong = _dtype_mismatches("initial_state", initial, jax.tree.map(lambda _: f32, initial))
  for x64 in (True, False):
    try:
      with _x64(x64):
        out = jax.eval_shape(everything, *inputs)
    except Exception as e:  # pylint: disable=broad-except
      wrong.append(f"tracing from float32 parameters with x64 {'on' if x64 else 'off'} raised"
                   f" {_brief(e)}")
      continue
    wrong += [f"{m} (x64 {'on' if x64 else 'off'})" for m in _dtype_mismatches(
        "", out, jax.tree.map(lambda _: f32, out))]
  wrong += _dtype_mismatches("params from init with x64 off", params,
                             jax.tree.map(lambda _: f32, params))
  _report_dtypes(findings, DTYPES_FLOAT32, "float32 parameters from init with x64 off", wrong)
