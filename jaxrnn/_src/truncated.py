"""Truncated BPTT: gradients over long sequences, one chunk at a time."""

import jax
import jax.numpy as jnp
from jax import lax

from jaxrnn._src import base


def _time_slice(tree, start, size):
  return jax.tree.map(lambda a: lax.slice_in_dim(a, start, start + size, axis=0), tree)


def truncated_value_and_grad(loss_fn, params, xs, state, *, chunk_size):
  """Loss and gradient of a long sequence, truncated every ``chunk_size`` steps.

  The sequence is cut into chunks of ``chunk_size`` steps (the last may be
  shorter). Each chunk starts from the previous chunk's final state under
  `jax.lax.stop_gradient`, so the gradient is the sum of the chunks' own
  gradients and only one chunk's activations are alive at a time: a single
  jitted call trains on sequences longer than memory would allow for full
  BPTT. With ``chunk_size >= T`` it is exactly full BPTT.

  For the other common form, an update after every chunk, call ``loss_fn``'s
  gradient in a loop yourself and carry ``stop_gradient(final_state)``.

  Args:
    loss_fn: ``loss_fn(params, xs_chunk, state) -> (loss, final_state)``,
      where ``xs_chunk`` is ``xs`` restricted to the chunk's steps (``xs`` may
      be a pytree, e.g. inputs and targets, each time-major).
    params: the parameters to differentiate.
    xs: a pytree of time-major arrays with a common length ``T``.
    state: the state at the start of the sequence.
    chunk_size: ``k``, the truncation length.

  Returns:
    ``((total_loss, final_state), grads)``: the summed chunk losses, the state
    after the last step, and the summed chunk gradients.
  """
  lengths = {a.shape[0] for a in jax.tree.leaves(xs)}
  if len(lengths) != 1:
    raise ValueError(f"xs: every leaf needs the same time length, got {sorted(lengths)}.")
  T = lengths.pop()
  if not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}.")
  k = min(chunk_size, T)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def chunk(carry, xs_c):
    loss, state, grads = carry
    (loss_c, state), grads_c = grad_fn(params, xs_c, lax.stop_gradient(state))
    return (loss + loss_c, state, base.tree_add(grads, grads_c)), None

  n_full = T // k
  full = jax.tree.map(lambda a: a[:n_full * k].reshape((n_full, k) + a.shape[1:]), xs)
  (loss_shape, _), _ = jax.eval_shape(grad_fn, params, _time_slice(xs, 0, k), state)
  carry = (jnp.zeros((), loss_shape.dtype), state, base.tree_zeros_like(params))
  carry, _ = lax.scan(chunk, carry, full)
  if T % k:
    carry, _ = chunk(carry, _time_slice(xs, n_full * k, T % k))
  loss, state, grads = carry
  return (loss, state), grads
