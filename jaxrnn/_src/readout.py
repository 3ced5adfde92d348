"""A per-step dense readout."""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import sequences
from jaxrnn._src import validation


class DenseParams(NamedTuple):
  """Parameters of `dense`.

  Attributes:
    w: ``[input_size, output_size]`` weights.
    b: ``[output_size]`` bias.
  """
  w: jax.Array
  b: jax.Array


class Readout(NamedTuple):
  """A per-step layer: ``init(key, input_size) -> params`` and
  ``apply(params, ys, *, seq_lengths=None, time_major=True) -> outputs``."""
  init: Callable
  apply: Callable


def sequence_mask(seq_lengths, T, B, time_major=True):
  """``[T, B]`` (or ``[B, T]``) booleans, True on the valid steps."""
  validation.check_seq_lengths(seq_lengths, B, T)
  mask = sequences.lengths_to_mask(seq_lengths, T)
  return mask if time_major else mask.T


def dense(output_size):
  """A dense layer applied at every step: ``out_t = y_t W + b``.

  Initialisation as PyTorch's ``nn.Linear``: ``U(-1/sqrt(I), 1/sqrt(I))``.
  With ``seq_lengths``, outputs at padded steps are zero. ``ys`` may have
  spatial axes between batch and features (a `conv_lstm`'s ``[T, B, H, W, Hc]``):
  the layer acts on the last axis at every position.

  Args:
    output_size: size of each step's output.

  Returns:
    A `Readout`.
  """
  if not isinstance(output_size, int) or output_size < 1:
    raise ValueError(f"output_size must be a positive int, got {output_size!r}.")

  def init(key, input_size):
    bound = 1.0 / math.sqrt(input_size)
    k_w, k_b = jax.random.split(key)
    dtype = base.default_float()
    return DenseParams(jax.random.uniform(k_w, (input_size, output_size), dtype, -bound, bound),
                       jax.random.uniform(k_b, (output_size,), dtype, -bound, bound))

  def apply(params, ys, *, seq_lengths=None, time_major=True):
    validation.check_floating("ys", ys)
    validation.check_bool("time_major", time_major)
    if isinstance(params, DenseParams) and (ys.ndim < 1 or ys.shape[-1] != params.w.shape[0]):
      raise ValueError(f"ys: expected feature size {params.w.shape[0]} (read from params.w),"
                       f" got shape {list(ys.shape)}.")
    validation.check_params(Readout(init, apply), params, ys.shape[-1])
    if seq_lengths is None:
      return ys @ params.w + params.b
    if ys.ndim < 3:
      raise ValueError(f"ys: seq_lengths needs ys of rank 3 or more ([T, B, ..., F]), got"
                       f" shape {list(ys.shape)}.")
    T, B = (ys.shape[0], ys.shape[1]) if time_major else (ys.shape[1], ys.shape[0])
    mask = sequence_mask(seq_lengths, T, B, time_major)
    valid = mask.reshape(mask.shape + (1,) * (ys.ndim - 2))
    # Padding may hold anything: zeroed before the matmul, it reaches no gradient.
    return jnp.where(valid, jnp.where(valid, ys, 0) @ params.w + params.b, 0)

  return Readout(init, apply)
