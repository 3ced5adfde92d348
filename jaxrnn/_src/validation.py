"""Trace-time checks of user input, with messages that say what to do.

Every check reads only shapes and dtypes, so under `jit` it runs once while
tracing and costs nothing at run time.
"""

import jax
import jax.numpy as jnp
import numpy as np


def describe(tree):
  """A short text of a pytree's structure, shapes and dtypes."""
  def leaf(a):
    shape = getattr(a, "shape", None)
    if shape is None:
      return type(a).__name__
    return f"{jnp.dtype(a.dtype).name}{list(shape)}"
  return str(jax.tree.map(leaf, tree))


def _dtype(x):
  return getattr(x, "dtype", None) or jnp.asarray(x).dtype


def check_floating(name, x, hint=""):
  dtype = _dtype(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{name}: expected a floating-point array, got dtype {jnp.dtype(dtype).name}"
                    f" with shape {list(np.shape(x))}.{hint}")


_TOKEN_HINT = (" Integer or boolean inputs look like tokens: embed them first"
               " (e.g. `embedding[tokens]`) and pass the float vectors.")


def check_step_input(model_name, x, input_size, spatial_shape=()):
  check_floating("x", x, _TOKEN_HINT)
  step_shape = tuple(spatial_shape) + (input_size,)
  n = len(step_shape)
  if x.ndim not in (n, n + 1) or tuple(x.shape[x.ndim - n:]) != step_shape:
    dims = ", ".join(map(str, step_shape))
    raise ValueError(f"x: {model_name}.step expected shape [batch, {dims}] or [{dims}]"
                     f" (input_size read from params.w_x), got {list(x.shape)}.")


def check_sequence(model, params, xs, time_major):
  """Checks ``xs`` and returns ``(T, B)``."""
  spatial = tuple(getattr(model, "spatial_shape", ()))
  layout = ("[T, B, " if time_major else "[B, T, ") + "".join(
      f"{n}, " for n in spatial) + ("C]" if spatial else "F]")
  if not hasattr(xs, "shape") or not hasattr(xs, "dtype"):
    raise TypeError(f"xs: expected a floating-point array {layout}, got {type(xs).__name__}.")
  check_floating("xs", xs, _TOKEN_HINT)
  if xs.ndim != 3 + len(spatial):
    raise ValueError(f"xs: expected rank {3 + len(spatial)} {layout} (time_major={time_major}),"
                     f" got shape {list(xs.shape)} of rank {xs.ndim}. Add a batch axis of size 1"
                     " for a single sequence.")
  if tuple(xs.shape[2:-1]) != spatial:
    raise ValueError(f"xs: expected spatial shape {list(spatial)} (the model's spatial_shape),"
                     f" got shape {list(xs.shape)} with spatial shape {list(xs.shape[2:-1])}.")
  expected = model.input_size(params)
  if expected is not None and xs.shape[-1] != expected:
    raise ValueError(f"xs: expected feature size {expected} (read from params), got shape"
                     f" {list(xs.shape)} with feature size {xs.shape[-1]}.")
  return (xs.shape[0], xs.shape[1]) if time_major else (xs.shape[1], xs.shape[0])


def check_state(model, params, state, batch_size, name="state"):
  """Checks that ``state`` is shaped like ``model.initial_state(params, B)``."""
  expected = jax.eval_shape(lambda p: model.initial_state(p, batch_size), params)
  if jax.tree.structure(state) != jax.tree.structure(expected):
    raise ValueError(f"{name}: expected a pytree like model.initial_state(params, {batch_size}) ="
                     f" {describe(expected)}, got {describe(state)}.")
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(expected)):
    shape = tuple(np.shape(got))
    if shape == want.shape:
      continue
    if len(shape) == len(want.shape) and shape[1:] == want.shape[1:]:
      raise ValueError(f"{name}: batch size {shape[0]} does not match the batch size of xs,"
                       f" {batch_size}. Expected {describe(expected)}, got {describe(state)}.")
    raise ValueError(f"{name}: expected shapes {describe(expected)}, got {describe(state)}.")


def check_seq_lengths(seq_lengths, batch_size):
  shape = tuple(np.shape(seq_lengths))
  dtype = _dtype(seq_lengths)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"seq_lengths: expected an integer array of shape [{batch_size}], got dtype"
                    f" {jnp.dtype(dtype).name} with shape {list(shape)}.")
  if shape != (batch_size,):
    raise ValueError(f"seq_lengths: expected shape [{batch_size}] (one length per sequence),"
                     f" got {list(shape)}.")


def check_time_batch(name, flags, T, B, time_major):
  """Checks a ``[T, B]`` (or ``[B, T]``) boolean array such as ``resets``."""
  expected = (T, B) if time_major else (B, T)
  shape = tuple(np.shape(flags))
  dtype = _dtype(flags)
  if not (jnp.issubdtype(dtype, jnp.bool_) or jnp.issubdtype(dtype, jnp.integer)):
    raise TypeError(f"{name}: expected a boolean array of shape {list(expected)}, got dtype"
                    f" {jnp.dtype(dtype).name}.")
  if shape != expected:
    raise ValueError(f"{name}: expected shape {list(expected)} (time_major={time_major}),"
                     f" got {list(shape)}.")


def check_same_shape(name, x, expected_shape, what):
  shape = tuple(np.shape(x))
  if shape != tuple(expected_shape):
    raise ValueError(f"{name}: expected shape {list(expected_shape)} ({what}), got {list(shape)}.")
