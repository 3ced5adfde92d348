"""Sequence plumbing shared by `unroll`, `bptt`, `bidirectional`, readouts and losses.

Small free functions over time-major ``[T, B, ...]`` arrays: valid-step masks
from lengths, per-sequence reversal of the valid prefix, resets seen when
reading backwards, and per-sequence selection between two states.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from jaxrnn._src import base

Array = jax.Array


def lengths_to_mask(seq_lengths: Array, T: int) -> Array:
  """``[T, B]`` booleans, True on the steps ``t < seq_lengths[b]``."""
  return jnp.arange(T)[:, None] < jnp.asarray(seq_lengths)[None, :]


def batch_where(cond: Array, on_true: base.PyTree, on_false: base.PyTree) -> base.PyTree:
  """``where`` over pytrees, with a ``[B]`` condition broadcast over features."""
  def pick(a, b):
    c = cond.reshape(cond.shape + (1,) * (a.ndim - cond.ndim))
    return jnp.where(c, a, b)
  return jax.tree.map(pick, on_true, on_false)


def zero_padding(ys: Array, mask: Optional[Array]) -> Array:
  """``ys`` ``[T, B, ...]`` with the steps outside ``mask`` ``[T, B]`` set to zero.

  Also for one step: ``ys`` ``[B, ...]`` and ``mask`` ``[B]``.
  """
  if mask is None:
    return ys
  return jnp.where(mask.reshape(mask.shape + (1,) * (ys.ndim - mask.ndim)), ys,
                   jnp.zeros((), ys.dtype))


def reversal_index(mask: Optional[Array], T: int, B: int) -> Array:
  """``[T, B]`` indices that reverse each sequence's valid prefix in place.

  Position ``t < L_b`` maps to ``L_b - 1 - t`` and padding stays where it is.
  The map is its own inverse, so the same gather undoes it.
  """
  t = jnp.arange(T)[:, None]
  if mask is None:
    return jnp.broadcast_to(T - 1 - t, (T, B))
  lengths = mask.sum(0)[None, :]
  return jnp.where(t < lengths, lengths - 1 - t, t)


def gather_time(tree: base.PyTree, index: Array) -> base.PyTree:
  """Reorders the time axis of each ``[T, B, ...]`` leaf by a ``[T, B]`` index."""
  def take(a):
    idx = index.reshape(index.shape + (1,) * (a.ndim - 2))
    return jnp.take_along_axis(a, idx, axis=0)
  return jax.tree.map(take, tree)


def reversed_resets(resets: Optional[Array], mask: Optional[Array],
                    index: Array) -> Optional[Array]:
  """Resets for reading backwards, so that episodes stay intact.

  ``resets[t]`` marks ``xs[t]`` as the first element of an episode. Reading
  backwards, that boundary is crossed after ``xs[t]`` and before ``xs[t-1]``,
  so the flag moves one step earlier before the sequence is reversed.
  """
  if resets is None:
    return None
  shifted = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])], axis=0)
  if mask is not None:
    shifted = shifted & jnp.concatenate([mask[1:], jnp.zeros_like(mask[:1])], axis=0)
  return gather_time(shifted, index)
