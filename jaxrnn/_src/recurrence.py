"""The cell kit: a cell's kernel, its time loop and its explicit BPTT.

A cell is a `Kernel`: the part of the step that depends on the input only
(``project``, hoisted out of the time loop into one matmul per gate block)
and the part that depends on the previous state (``recur``), plus the cell's
hand-derived backward: ``recur_bwd`` is one reverse step of BPTT and
``param_grads`` turns the per-step gradients into weight gradients with one
matmul over all ``T*B`` rows, as cuDNN does. `kernel_cell` turns a kernel
into a `Model` whose time loop is a `jax.custom_vjp` with that backward.

Nothing here calls `jax.vjp`, `jax.grad`, `jax.jacobian` or
`jax.linear_transpose`: the backward is a separate derivation, which is what
lets the tests check autodiff against it. A kernel without ``recur_bwd``
(a `custom_cell` without ``step_vjp``) is differentiated by JAX instead.
"""

from collections.abc import Callable
from typing import Any, NamedTuple, Optional, Protocol, Union

import jax
import jax.numpy as jnp
from jax import lax

from jaxrnn._src import base
from jaxrnn._src import parallel_in_time
from jaxrnn._src import sequences
from jaxrnn._src import validation

Array = jax.Array
PyTree = base.PyTree


class StepGrads(NamedTuple):
  """What one reverse step of BPTT returns.

  Attributes:
    d_state: the gradient of the state the step read.
    d_pre: per-step gradients, stacked over time for ``param_grads`` (the
      pre-activation gradients of most built-in cells; the reset-after GRU's
      is ``dL/dh_t`` alone); for a kernel without ``param_grads``, the
      step's input gradient ``d_x``.
    d_params: this step's parameter gradient, summed over the batch, for a
      kernel without ``param_grads`` (the time loop sums it); None otherwise.
  """
  d_state: base.State
  d_pre: PyTree
  d_params: Optional[base.Params] = None


class ProjectFn(Protocol):
  """``project(params, xs, one_step=False) -> gx``: the input-only part of the step.

  For any number of leading axes. ``one_step`` says ``xs`` is one step's
  input, projected inside the loop.
  """

  def __call__(self, params: base.Params, xs: Array, /, one_step: bool = False) -> PyTree:
    ...


class RecurFn(Protocol):
  """``recur(params, state, gx_t) -> (new_state, res)``: one step from the projected input.

  ``res`` is what ``output`` and the backward reuse beyond the states
  themselves: the activations, or (the plain LSTM, the ConvLSTM and the
  reset-after GRU) the step's own derivatives, computed where the
  activations are at hand so that the reverse step only multiplies by them.
  """

  def __call__(self, params: base.Params, state: base.State,
               gx_t: PyTree, /) -> tuple[base.State, PyTree]:
    ...


class OutputFn(Protocol):
  """``output(new_state, res) -> y``; works on one step or stacked over time."""

  def __call__(self, new_state: base.State, res: PyTree, /) -> Array:
    ...


class RecurBwdFn(Protocol):
  """``recur_bwd(params, w_t, state, new_state, res, d_new_state, d_y) -> StepGrads``.

  One reverse step, given the state the step read and the one it made, and
  the gradients of the new state (from the next step) and of the output.
  ``w_t`` is what ``transposed_weights`` returned.
  """

  def __call__(self, params: base.Params, w_t: PyTree, state: base.State,
               new_state: base.State, res: PyTree, d_new_state: base.State,
               d_y: Array, /) -> StepGrads:
    ...


class ParamGradsFn(Protocol):
  """``param_grads(params, xs, states, res, d_pre) -> (d_params, d_xs)`` over whole sequences.

  ``states`` are the states each step read, time-major.
  """

  def __call__(self, params: base.Params, xs: Array, states: base.State, res: PyTree,
               d_pre: PyTree, /) -> tuple[base.Params, Array]:
    ...


class GradNormFn(Protocol):
  """``grad_norm(d_new_state, d_y) -> [B]``: the norm `bptt` reports for a step."""

  def __call__(self, d_new_state: base.State, d_y: Array, /) -> Array:
    ...


class MaskHooks(NamedTuple):
  """What `jaxrnn.recurrent_dropout` and `jaxrnn.zoneout` need from a kernel.

  ``recur``, ``recur_bwd`` and ``param_grads`` are the kernel's own, taking
  one more argument, ``keep``: None, or a ``[B, O]`` multiplier of the
  hidden state (the output, ``O`` its size; ``[B, *spatial, O]`` for a cell
  with spatial axes) where it enters the recurrent
  weights only, not where it is carried on (the GRU's ``z * h``, the LSTM's
  cell); ``param_grads`` receives the states unmasked and masks them itself.

  Attributes:
    recur: ``recur(params, state, gx_t, keep) -> (new_state, res)``.
    recur_bwd: ``recur_bwd(params, w_t, state, new_state, res, d_new_state, d_y,
      keep) -> StepGrads``.
    param_grads: ``param_grads(params, xs, states, res, d_pre, keep) -> (d_params, d_xs)``.
    output_grad: ``output_grad(d_y, new_state) -> d_new_state``: the gradient
      of the state from that of the output (the output is the hidden state).
  """
  recur: Callable[..., tuple[base.State, PyTree]]
  recur_bwd: Callable[..., StepGrads]
  param_grads: Callable[..., tuple[base.Params, Array]]
  output_grad: Callable[[Array, base.State], base.State]
class RecurJacFn(Protocol):
  """``recur_jac(params, state, new_state, res, diagonal) -> J``: the step's Jacobian.

  ``J[n, i, j] = d s'_i / d s_j`` over the state flattened to one vector per
  row (leaves in `jax.tree` order, e.g. ``[h, c]``), ``[N, D, D]``; with
  ``diagonal`` only its diagonal, ``[N, D]``. Used by `parallel_unroll`.
  """

  def __call__(self, params: base.Params, state: base.State, new_state: base.State,
               res: PyTree, diagonal: bool, /) -> Array:
    ...


class LogLinearFn(Protocol):
  """``log_linear(params, gx) -> (log_a, log_b)`` of a step ``s' = a * s + b`` with ``a, b > 0``.

  For cells linear in their state, which `parallel_unroll` solves in one
  pass in log space.
  """

  def __call__(self, params: base.Params, gx: PyTree, /) -> tuple[Array, Array]:
    ...


class Kernel(NamedTuple):
  """A cell, split into the pieces that the time loop and its BPTT need.

  Attributes:
    project: the input-only part of the step (`ProjectFn`).
    recur: one step from the projected input (`RecurFn`).
    output: the step's output from its new state and activations (`OutputFn`).
    recur_bwd: one reverse step of the explicit BPTT (`RecurBwdFn`), or None
      to let JAX differentiate ``recur``.
    param_grads: the weight gradients from the stacked per-step gradients
      (`ParamGradsFn`), or None when ``recur_bwd`` returns each step's
      parameter gradient in `StepGrads.d_params`.
    transposed_weights: ``transposed_weights(params) -> w_t``: the recurrent
      weights ``recur_bwd`` multiplies by, transposed once before the reverse
      scan (`base.transposed`) rather than at every step.
    grad_norm: the per-step norm of the gradient reaching the step's output
      that `bptt` reports with ``return_hidden_grad_norms`` (`GradNormFn`).
    mask_hooks: `MaskHooks` for the recurrent regularisers, or None (they
      refuse the cell).
    recur_jac: the hand-derived Jacobian of ``recur`` in the state
      (`RecurJacFn`), or None: `parallel_unroll` then builds it from
      ``recur_bwd`` (one basis vector per row) or, without that, with
      `jax.jacfwd`.
    log_linear: for a step linear in the state, its coefficients in log
      space (`LogLinearFn`), or None.
  """
  project: ProjectFn
  recur: RecurFn
  output: OutputFn
  recur_bwd: Optional[RecurBwdFn]
  param_grads: Optional[ParamGradsFn]
  transposed_weights: Callable[[base.Params], PyTree]
  grad_norm: GradNormFn
  mask_hooks: Optional[MaskHooks] = None
  recur_jac: Optional[RecurJacFn] = None
  log_linear: Optional[LogLinearFn] = None


def hidden_grad_norm(hidden: Callable[[base.State], Array]) -> GradNormFn:
  """``grad_norm`` of a cell whose output is ``hidden(state)``: ``||dL/dh_t||``.

  The norm is per sequence, over every axis but the batch axis (features, and
  the spatial axes of a `conv_lstm`).
  """
  def grad_norm(d_new_state, d_y):
    d = hidden(d_new_state) + d_y
    return jnp.sqrt(_sum_per_sequence(d * d))
  return grad_norm


def _sum_per_sequence(a):
  """``[B, ...] -> [B]``: the sum over every axis but the batch axis."""
  return jnp.sum(a, axis=tuple(range(1, a.ndim)))


class Steps(NamedTuple):
  """The time-major inputs of one time loop.

  Attributes:
    xs: ``[T, B, F]`` inputs.
    mask: ``[T, B]`` bool, True on valid steps, or None.
    resets: ``[T, B]`` bool, True where ``h0`` is swapped in, or None.
    noise: a pytree of ``[T, ...]`` arrays read step by step beside ``xs``
      (a regulariser's masks), or None. With it, ``recur`` receives
      ``(gx_t, noise_t)``.
  """
  xs: Array
  mask: Optional[Array]
  resets: Optional[Array]
  noise: Optional[PyTree] = None


class LoopOptions(NamedTuple):
  """The static settings of a time loop (from `base.Context`)."""
  remat_chunk: Optional[int]
  scan_unroll: int
  state_grad_clip: Optional[base.StateGradClip]


class Residuals(NamedTuple):
  """What the forward of BPTT keeps for the backward.

  Attributes:
    params: the parameters.
    steps: the `Steps` read.
    h0: the initial state (also the reset state).
    states: the state after every step, or with ``remat_chunk`` the state at
      the start of every chunk.
    res: the activations of every step, or None with ``remat_chunk``.
  """
  params: base.Params
  steps: Steps
  h0: base.State
  states: base.State
  res: Optional[PyTree]


# How `_scan_forward` runs: "primal" projects each step inside the loop and
# keeps nothing; "residuals" hoists the projection and keeps the states and
# activations for the explicit backward; "autodiff" hoists the projection
# (JAX's transpose of it is one matmul) and keeps nothing.
_PRIMAL, _RESIDUALS, _AUTODIFF = "primal", "residuals", "autodiff"


def clip_state_grad(d_state: base.State, clip: Optional[base.StateGradClip]) -> base.State:
  """Clips a recurrent-state gradient per sequence (by value or by L2 norm)."""
  if clip is None:
    return d_state
  threshold = clip.threshold
  if clip.mode == "value":
    return jax.tree.map(lambda d: jnp.clip(d, -threshold, threshold), d_state)
  leaves = jax.tree.leaves(d_state)
  sq = sum(_sum_per_sequence(d * d) for d in leaves)
  norm = jnp.sqrt(sq)
  scale = jnp.where(norm > threshold, threshold / jnp.where(norm > 0, norm, 1), 1)
  return jax.tree.map(
      lambda d: d * scale.reshape(scale.shape + (1,) * (d.ndim - 1)).astype(d.dtype), d_state)


def _project_in_loop():
  """Whether forward-only runs project each step's input inside the time loop.

  On XLA:CPU one small matmul per step inside the loop beat reading a
  hoisted ``[T, B, G*H]`` projection; on a GPU the hoisted projection (one
  large matmul before the loop and a smaller loop body) was the faster one at
  every benchmark shape. BUILD.md has both measurements. The backend is read
  at trace time.
  """
  return jax.default_backend() == "cpu"


def _scan_forward(kernel, opts, params, steps, h0, h_start, mode):
  """Runs ``kernel`` over ``steps`` from ``h_start``; ``h0`` is swapped in at resets.

  Returns ``(h_end, ys)``, or in the "residuals" mode ``(h_end, (ys, states,
  res))``: the state after every step and the activations. The loop stores
  only those; the outputs are read off after the loop, which saves a copy
  per step inside it. On the CPU the "primal" mode projects each step's
  input with one matmul inside the loop instead of reading a hoisted
  ``[T, B, G*H]`` projection (see `_project_in_loop`).
  """
  in_loop = mode == _PRIMAL and _project_in_loop()
  gx = steps.xs if in_loop else kernel.project(params, steps.xs)

  def body(h, inp):
    gx_t, m_t, r_t, noise_t = inp
    if in_loop:
      gx_t = kernel.project(params, gx_t, one_step=True)
    if noise_t is not None:
      gx_t = (gx_t, noise_t)
    h_in = h if r_t is None else sequences.batch_where(r_t, h0, h)
    h_new, res = kernel.recur(params, h_in, gx_t)
    if m_t is not None:
      h_new = sequences.batch_where(m_t, h_new, h)
    if mode == _RESIDUALS:
      return h_new, (h_new, res)
    y = kernel.output(h_new, res)
    if m_t is not None:
      y = sequences.zero_padding(y, m_t)
    return h_new, y

  h_end, out = lax.scan(body, h_start, (gx, steps.mask, steps.resets, steps.noise),
                        unroll=opts.scan_unroll)
  if mode != _RESIDUALS:
    return h_end, out
  states, res = out
  ys = sequences.zero_padding(kernel.output(states, res), steps.mask)
  return h_end, (ys, states, res)


def states_read(states, h_start, h0, resets):
  """The state each step read, from the states ``[T, ...]`` the steps made."""
  read = jax.tree.map(lambda s, a: jnp.concatenate([a[None], s[:-1]]), states, h_start)
  if resets is None:
    return read
  return jax.tree.map(
      lambda r, a: jnp.where(resets.reshape(resets.shape + (1,) * (r.ndim - 2)), a[None], r),
      read, h0)


def _scan_backward(kernel, opts, params, steps, h_start, h0, states, res, d_ys, d_h, d_h0,
                   with_norms):
  """The reverse-time scan of BPTT over one stretch of steps.

  ``states`` are the states the steps made, from ``h_start``. Returns the
  gradient of the state before the stretch, the accumulated gradient of the
  reset state ``h0``, the parameter and input gradients, and (``with_norms``)
  the per-step norms of ``kernel.grad_norm``, or None.
  """
  w_t = kernel.transposed_weights(params)
  read = states_read(states, h_start, h0, steps.resets)
  per_step_params = kernel.param_grads is None

  def body(carry, inp):
    d_h, d_h0, d_acc = carry
    d_y, m_t, r_t, state_t, new_t, res_t = inp
    if m_t is not None:
      zeros = base.tree_zeros_like(d_h)
      d_new = sequences.batch_where(m_t, d_h, zeros)
      d_pass = sequences.batch_where(m_t, zeros, d_h)
      d_y = sequences.zero_padding(d_y, m_t)
    else:
      d_new, d_pass = d_h, None
    grads = kernel.recur_bwd(params, w_t, state_t, new_t, res_t, d_new, d_y)
    d_in = grads.d_state
    if per_step_params:
      d_acc = base.tree_add(d_acc, grads.d_params)
    if r_t is not None:
      zeros = base.tree_zeros_like(d_in)
      d_h0 = base.tree_add(d_h0, sequences.batch_where(r_t, d_in, zeros))
      d_in = sequences.batch_where(r_t, zeros, d_in)
    if d_pass is not None:
      d_in = base.tree_add(d_in, d_pass)
    d_in = clip_state_grad(d_in, opts.state_grad_clip)
    norm = kernel.grad_norm(d_new, d_y) if with_norms else None
    return (d_in, d_h0, d_acc), (grads.d_pre, norm)

  acc = base.tree_zeros_like(params) if per_step_params else None
  (d_h, d_h0, acc), (d_pre, norms) = lax.scan(
      body, (d_h, d_h0, acc), (d_ys, steps.mask, steps.resets, read, states, res),
      reverse=True, unroll=opts.scan_unroll)
  if per_step_params:
    d_params, d_xs = acc, d_pre
  else:
    d_params, d_xs = kernel.param_grads(params, steps.xs, read, res, d_pre)
  return d_h, d_h0, d_params, d_xs, norms


def _chunked(tree, chunk):
  """``[T, ...] -> [T // chunk, chunk, ...]`` for every leaf."""
  return jax.tree.map(lambda a: a.reshape((a.shape[0] // chunk, chunk) + a.shape[1:]), tree)


def _unchunked(tree):
  return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), tree)


def _pad_time(steps, chunk):
  """Pads time to a multiple of ``chunk`` with masked steps, which change nothing."""
  xs, mask, resets, noise = steps
  T, B = xs.shape[:2]
  pad = (-T) % chunk
  if not pad:
    return steps
  if mask is None:
    mask = jnp.ones((T, B), bool)
  pad_time = lambda a: jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1))
  return Steps(pad_time(xs), pad_time(mask), None if resets is None else pad_time(resets),
               jax.tree.map(pad_time, noise))


def _pad_ys(d_ys, T_padded):
  pad = T_padded - d_ys.shape[0]
  return jnp.pad(d_ys, ((0, pad),) + ((0, 0),) * (d_ys.ndim - 1)) if pad else d_ys


def primal(kernel, opts, params, steps, h0):
  """The forward without residuals: ``(final_state, ys)``."""
  return _scan_forward(kernel, opts, params, steps, h0, h0, _PRIMAL)


def forward_with_residuals(kernel, opts, params, steps, h0):
  """The forward of BPTT: ``((final_state, ys), Residuals)``.

  Without ``remat_chunk`` the residuals are the state after every step and
  the activations. With it, only the state at the start of each chunk is kept
  and the backward recomputes the rest one chunk at a time.
  """
  k = opts.remat_chunk
  if k is None:
    hT, (ys, states, res) = _scan_forward(kernel, opts, params, steps, h0, h0, _RESIDUALS)
    return (hT, ys), Residuals(params, steps, h0, states, res)
  T = steps.xs.shape[0]

  def chunk_body(h, steps_c):
    h_end, ys_c = _scan_forward(kernel, opts, params, Steps(*steps_c), h0, h, _PRIMAL)
    return h_end, (ys_c, h)

  hT, (ys, starts) = lax.scan(chunk_body, h0, _chunked(tuple(_pad_time(steps, k)), k))
  return (hT, _unchunked(ys)[:T]), Residuals(params, steps, h0, starts, None)


def backward(kernel, opts, residuals, d_hT, d_ys, with_norms=False):
  """The explicit BPTT: ``(d_params, d_xs, d_h0, hidden_grad_norms or None)``."""
  params, steps, h0, states, res = residuals
  zero_h0 = base.tree_zeros_like(h0)
  k = opts.remat_chunk
  if steps.xs.shape[0] == 0:
    # No steps: the final state is the initial one, and nothing reaches the parameters.
    norms = jnp.zeros(steps.xs.shape[:2], d_ys.dtype) if with_norms else None
    return base.tree_zeros_like(params), jnp.zeros_like(steps.xs), d_hT, norms
  if k is None:
    d_h, d_h0, d_params, d_xs, norms = _scan_backward(
        kernel, opts, params, steps, h0, h0, states, res, d_ys, d_hT, zero_h0, with_norms)
  else:
    T = steps.xs.shape[0]
    padded = _pad_time(steps, k)
    d_ys_p = _pad_ys(d_ys, padded.xs.shape[0])

    def chunk_body(carry, inp):
      d_h, d_h0, d_params = carry
      steps_c, d_ys_c, h_start = inp
      steps_c = Steps(*steps_c)
      _, (_, states_c, res_c) = _scan_forward(
          kernel, opts, params, steps_c, h0, h_start, _RESIDUALS)
      d_h, d_h0, d_params_c, d_xs_c, norms_c = _scan_backward(
          kernel, opts, params, steps_c, h_start, h0, states_c, res_c, d_ys_c, d_h, d_h0,
          with_norms)
      return (d_h, d_h0, base.tree_add(d_params, d_params_c)), (d_xs_c, norms_c)

    init = (d_hT, zero_h0, base.tree_zeros_like(params))
    (d_h, d_h0, d_params), (d_xs, norms) = lax.scan(
        chunk_body, init, (_chunked(tuple(padded), k), _chunked(d_ys_p, k), states),
        reverse=True)
    d_xs = _unchunked(d_xs)[:T]
    norms = None if norms is None else _unchunked(norms)[:T]
  d_state = base.tree_add(d_h, d_h0)
  cast = lambda d, p: d.astype(p.dtype)
  return (jax.tree.map(cast, d_params, params), d_xs.astype(steps.xs.dtype),
          jax.tree.map(cast, d_state, h0), norms)


def _bptt_time_loop(kernel, opts, with_norms):
  """The time loop as a `custom_vjp` whose backward is the explicit BPTT.

  ``probe`` (None, or ``[T, B]`` zeros with ``with_norms``) does not change
  the forward; its cotangent is the per-step norms of ``kernel.grad_norm``.
  """

  @jax.custom_vjp
  def loop(params, steps, h0, probe):
    del probe
    return primal(kernel, opts, params, steps, h0)

  def fwd(params, steps, h0, probe):
    del probe
    return forward_with_residuals(kernel, opts, params, steps, h0)

  def bwd(residuals, cotangents):
    d_hT, d_ys = cotangents
    d_params, d_xs, d_h0, norms = backward(kernel, opts, residuals, d_hT, d_ys, with_norms)
    d_steps = Steps(d_xs, None, None, None)
    return d_params, d_steps, d_h0, norms

  loop.defvjp(fwd, bwd)
  return loop


def _clip_identity(clip):
  """Identity on the state whose backward clips the state's gradient."""

  @jax.custom_vjp
  def identity(h):
    return h

  identity.defvjp(lambda h: (h, None), lambda _, d: (clip_state_grad(d, clip),))
  return identity


def _autodiff_time_loop(kernel, opts, params, steps, h0):
  """The plain `lax.scan` forward, left for JAX to differentiate."""
  clip = opts.state_grad_clip
  if clip is not None:
    identity = _clip_identity(clip)
    recur = kernel.recur
    kernel = kernel._replace(recur=lambda p, h, gx: recur(p, identity(h), gx))
  k = opts.remat_chunk
  if k is None:
    return _scan_forward(kernel, opts, params, steps, h0, h0, _AUTODIFF)
  T = steps.xs.shape[0]

  @jax.checkpoint
  def chunk_body(h, steps_c):
    return _scan_forward(kernel, opts, params, Steps(*steps_c), h0, h, _AUTODIFF)

  hT, ys = lax.scan(chunk_body, h0, _chunked(tuple(_pad_time(steps, k)), k))
  return hT, _unchunked(ys)[:T]


def loop_options(ctx: base.Context) -> LoopOptions:
  return LoopOptions(ctx.remat_chunk, ctx.scan_unroll, ctx.state_grad_clip)


def run_time_loop(kernel: Kernel, params: base.Params, xs: Array, state: base.State,
                  ctx: base.Context, noise: Optional[PyTree] = None) -> tuple[base.State, Array]:
  """Runs ``kernel`` over time-major ``xs`` with the settings of ``ctx``.

  With ``ctx.backward == "bptt"`` and a kernel that has ``recur_bwd``, the
  loop's gradient is the explicit BPTT; otherwise JAX differentiates it.
  ``noise`` (`Steps`) is read step by step beside ``xs`` and receives no
  gradient.
  """
  opts = loop_options(ctx)
  steps = Steps(xs, ctx.mask, ctx.resets, jax.lax.stop_gradient(noise))
  if ctx.backward == "autodiff" or kernel.recur_bwd is None:
    return _autodiff_time_loop(kernel, opts, params, steps, state)
  with_norms = ctx.probe is not None
  return _bptt_time_loop(kernel, opts, with_norms)(params, steps, state, ctx.probe)


def _probe_zeros(T, B, dtype):
  return jnp.zeros((T, B), dtype)


def kernel_cell(kernel: Kernel, *, init: base.InitFn,
                initial_state: Union[base.InitialStateFn, base.SpatialInitialStateFn],
                input_size: base.InputSizeFn, output_size: int, config: Any,
                name: str, spatial_dims: int = 0) -> base.Model:
  """Builds the `Model` of a cell from its kernel.

  The model's ``step`` projects one input and runs ``recur``; ``forward`` runs
  the time loop, whose gradient is the kernel's explicit BPTT (or JAX's, for
  a kernel without ``recur_bwd``).

  Args:
    kernel: the cell's `Kernel`.
    init: ``init(key, input_size) -> params``.
    initial_state: ``initial_state(params, batch_size) -> state``; with
      ``spatial_dims > 0``, ``initial_state(params, batch_size, *,
      spatial_shape) -> state`` (`base.SpatialInitialStateFn`).
    input_size: ``input_size(params) -> int``.
    output_size: size of the output's last axis.
    config: what the cell is, as data; converters dispatch on its type.
    name: the cell's name in error messages.
    spatial_dims: the number of spatial axes of the inputs and states
      (`Model.spatial_dims`); 0 for a cell over feature vectors.

  Returns:
    A `Model`.
  """

  def step(params, state, x):
    state, x = validation.check_step(model, name, params, state, x)
    new_state, res = kernel.recur(params, state, kernel.project(params, x, one_step=True))
    return new_state, kernel.output(new_state, res)

  def forward(params, xs, state, ctx):
    return run_time_loop(kernel, params, xs, state, ctx)

  model = base.Model(
      init=init,
      initial_state=initial_state,
      step=step,
      output_size=output_size,
      input_size=input_size,
      forward=forward,
      norm_probe=_probe_zeros,
      explicit_backward=kernel.recur_bwd is not None,
      config=config,
      spatial_dims=spatial_dims,
      kernel=kernel,
      parallel_forward=parallel_in_time.KernelForward(kernel),
  )
  return model
