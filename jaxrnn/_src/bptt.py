"""`bptt`: the explicit, hand-derived backward of `unroll`."""

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import unroll as unroll_lib
from jaxrnn._src import validation


def run_backward(model, params, xs, state, ctx, reverse, d_final, d_ys):
  """``model.backward`` on checked, time-major inputs, reading backwards if asked."""
  if not reverse:
    return model.backward(params, xs, state, ctx, d_final, d_ys)
  T, B = xs.shape[:2]
  index = unroll_lib.reversal_index(ctx.mask, T, B)
  ctx = ctx._replace(resets=unroll_lib.reversed_resets(ctx.resets, ctx.mask, index))
  d_params, d_xs, d_state, norms = model.backward(
      params, unroll_lib.gather_time(xs, index), state, ctx, d_final,
      unroll_lib.gather_time(d_ys, index))
  return (d_params, unroll_lib.gather_time(d_xs, index), d_state,
          unroll_lib.gather_time(norms, index))


def bptt(model, params, xs, state, d_ys, d_final_state=None, *, seq_lengths=None,
         resets=None, reverse=False, time_major=True, rng=None, remat_chunk=None,
         scan_unroll=1, state_grad_clip=None, return_hidden_grad_norms=False):
  r"""Backpropagation through time, derived by hand for every cell.

  Returns what ``jax.vjp`` of `unroll` returns for the cotangent
  ``(d_final_state, d_ys)``, but computes it with each cell's explicit
  backward equations (see the cells' docstrings) run as a reverse-time
  `lax.scan`; it never differentiates the step with JAX. Because the loss is
  the sum of the per-step errors, ``d_ys[t]`` is ``dL_t/dy_t`` and the
  backward sums the errors' contributions over all steps.

  Args:
    model: any `Model` accepted by `unroll`.
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

  Returns:
    ``(d_params, d_xs, d_state)``, plus the norms when asked.
  """
  state_given = state is not None
  xs_tm, state, ctx = unroll_lib.prepare(
      model, params, xs, state, seq_lengths=seq_lengths, resets=resets,
      time_major=time_major, rng=rng, backward="bptt", remat_chunk=remat_chunk,
      scan_unroll=scan_unroll, state_grad_clip=state_grad_clip)
  T, B = xs_tm.shape[:2]
  ys_shape = (T, B, model.output_size) if time_major else (B, T, model.output_size)
  validation.check_same_shape("d_ys", d_ys, ys_shape, "the shape of ys")
  validation.check_floating("d_ys", d_ys)
  if d_final_state is None:
    d_final_state = base.tree_zeros_like(state)
  else:
    validation.check_state(model, params, d_final_state, B, name="d_final_state")
  if not time_major:
    d_ys = jnp.swapaxes(d_ys, 0, 1)
  d_params, d_xs, d_state, norms = run_backward(
      model, params, xs_tm, state, ctx, reverse, d_final_state, d_ys)
  if not state_given:
    d_params = base.tree_add(d_params, model.initial_state_grad(params, d_state))
  if not time_major:
    d_xs = jnp.swapaxes(d_xs, 0, 1)
    norms = jax.tree.map(lambda n: jnp.swapaxes(n, 0, 1), norms)
  if return_hidden_grad_norms:
    return d_params, d_xs, d_state, norms
  return d_params, d_xs, d_state
