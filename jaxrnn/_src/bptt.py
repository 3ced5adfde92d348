"""`bptt`: the explicit, hand-derived backward of `unroll`."""

from typing import Any

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import unroll as unroll_lib
from jaxrnn._src import validation


def _describe_model(model):
  config = model.config
  return getattr(config, "name", None) or type(config).__name__


def bptt(model, params, xs, state, d_ys, d_final_state=None, *, seq_lengths=None,
         resets=None, reverse=False, time_major=True, rng=None, remat_chunk=None,
         scan_unroll=1, state_grad_clip=None, return_hidden_grad_norms=False) -> tuple[Any, ...]:
  r"""Backpropagation through time, derived by hand for every cell.

  Returns what ``jax.vjp`` of `unroll` returns for the cotangent
  ``(d_final_state, d_ys)``. Each cell's time loop runs its explicit backward
  equations (see the cells' docstrings) as a reverse-time `lax.scan`; JAX
  never differentiates a cell's step. There is one backward composition:
  JAX differentiates only the glue between cells (a `stack`'s dropout and
  layer plumbing, a `bidirectional`'s reversal and merge, a learned initial
  state's broadcast), so `bptt` and `jax.grad` of `unroll` run the same
  backward. Because the loss is the sum of the per-step errors, ``d_ys[t]``
  is ``dL_t/dy_t`` and the backward sums the errors' contributions over all
  steps.

  Args:
    model: any `Model` accepted by `unroll` whose cells all have a
      hand-derived backward (``model.explicit_backward``).
    params: its parameters.
    xs: the inputs given to `unroll`.
    state: the initial state, or None for ``model.initial_state(params, B)``;
      in that case the gradient that reaches the initial state also flows into
      ``d_params`` (e.g. for `learned_initial_state`).
    d_ys: the cotangent of ``ys``, shaped like ``ys``.
    d_final_state: the cotangent of the final state; None means zeros.
    seq_lengths, resets, reverse, time_major, rng, remat_chunk, scan_unroll,
      state_grad_clip: as in `unroll`.
    return_hidden_grad_norms: also return the per-step norms
      :math:`\|\partial L/\partial h_t\|`, ``[T, B]`` for a cell (a tuple per
      layer for `stack`, a pair for `bidirectional`); zero at padded steps.
      For a `custom_cell` the norm is over the gradients of its new state and
      its output together.

  Returns:
    ``(d_params, d_xs, d_state)``, plus the norms when asked.

  Raises:
    ValueError: if a cell of ``model`` has no hand-derived backward.
  """
  if isinstance(model, base.Model) and not model.explicit_backward:
    raise ValueError(
        f"model: {_describe_model(model)} has a cell without a hand-derived backward (a"
        " custom_cell without step_vjp), so there is no explicit BPTT to run. Its gradients"
        " come from JAX differentiating the step: use jax.grad or jax.vjp of jaxrnn.unroll,"
        " or give custom_cell a step_vjp.")
  validation.check_bool("reverse", reverse)
  validation.check_bool("return_hidden_grad_norms", return_hidden_grad_norms)
  state_given = state is not None
  state_like = state
  xs_tm, state, ctx = unroll_lib.prepare(
      model, params, xs, state, seq_lengths=seq_lengths, resets=resets,
      time_major=time_major, rng=rng, backward="bptt", remat_chunk=remat_chunk,
      scan_unroll=scan_unroll, state_grad_clip=state_grad_clip)
  T, B = xs_tm.shape[:2]
  # `prepare` cast the inputs to the parameters' dtype; their gradients come back in their own.
  xs_dtype = jnp.result_type(xs)
  per_step = tuple(xs_tm.shape[2:-1]) + (model.output_size,)  # spatial axes, if any
  ys_shape = ((T, B) if time_major else (B, T)) + per_step
  validation.check_same_shape("d_ys", d_ys, ys_shape, "the shape of ys")
  validation.check_floating("d_ys", d_ys)
  if d_final_state is None:
    d_final_state = base.tree_zeros_like(state)
  else:
    validation.check_state(model, params, d_final_state, B, name="d_final_state",
                           spatial_shape=xs_tm.shape[2:-1])
  if not time_major:
    d_ys = jnp.swapaxes(d_ys, 0, 1)
  probe = model.norm_probe(T, B, d_ys.dtype) if return_hidden_grad_norms else None

  def run(params, xs_tm, state, probe):
    return unroll_lib.run(model, params, xs_tm, state, ctx._replace(probe=probe), reverse)

  (final, ys), vjp = jax.vjp(run, params, xs_tm, state, probe)
  cast = lambda d, like: jnp.asarray(d).astype(like.dtype)
  d_params, d_xs, d_state, norms = vjp(
      (jax.tree.map(cast, d_final_state, final), cast(d_ys, ys)))
  if not state_given:
    _, vjp_state = jax.vjp(lambda p: base.initial_state(model, p, B, xs_tm.shape[2:-1]), params)
    d_params = base.tree_add(d_params, vjp_state(d_state)[0])
  d_xs = d_xs.astype(xs_dtype)
  if state_given:
    d_state = jax.tree.map(lambda d, s: d.astype(jnp.result_type(s)), d_state, state_like)
  if not time_major:
    d_xs = jnp.swapaxes(d_xs, 0, 1)
    norms = jax.tree.map(lambda n: jnp.swapaxes(n, 0, 1), norms)
  if return_hidden_grad_norms:
    return d_params, d_xs, d_state, norms
  return d_params, d_xs, d_state
