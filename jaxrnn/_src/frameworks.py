"""What the Flax and Equinox modules share: one call of `unroll` on checked arguments."""

from typing import Any, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import unroll as unroll_lib


def check_model(model: Any, owner: str) -> None:
  if not isinstance(model, base.Model):
    raise TypeError(f"model: {owner} expected a jaxrnn Model (from jaxrnn.lstm, jaxrnn.stack, ...),"
                    f" got {type(model).__name__}.")


def check_input_size(input_size: Any, owner: str) -> None:
  if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 1:
    raise ValueError(f"input_size: {owner} expected a positive int, got {input_size!r}.")


def call_unroll(model: base.Model, params: base.Params, xs: jax.Array,
                state: Optional[base.State], *, time_major: bool, seq_lengths, resets,
                reverse: bool, rng: Optional[jax.Array], return_state: bool):
  """Runs `jaxrnn.unroll` and returns ``ys`` or ``(final_state, ys)``."""
  final, ys = unroll_lib.unroll(model, params, xs, state, seq_lengths=seq_lengths,
                                resets=resets, reverse=reverse, time_major=time_major, rng=rng)
  return (final, ys) if return_state else ys


def add_batch_axis(xs, state, seq_lengths, resets):
  """One sequence ``[T, F]`` as a batch of one; the state and options follow."""
  add = lambda a: None if a is None else jnp.asarray(a)[None]
  if state is not None:
    state = jax.tree.map(lambda a: jnp.asarray(a)[None], state)
  resets = None if resets is None else jnp.asarray(resets)[:, None]
  return xs[:, None], state, add(seq_lengths), resets


def drop_batch_axis(out, return_state):
  if return_state:
    final, ys = out
    return jax.tree.map(lambda a: a[0], final), ys[:, 0]
  return out[:, 0]
