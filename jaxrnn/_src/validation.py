"""Trace-time checks of user input, with messages that say what to do.

Every check reads only shapes and dtypes, so under `jit` it runs once while
tracing and costs nothing at run time. The value checks (`seq_lengths` in
range, labels in ``[0, num_classes)``) run only on concrete arrays, outside
`jit`; under `jit` the values are traced and the documented fallback applies.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import base


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


def _spatial_letters(spatial_dims):
  """``"H, W, "`` for 2 spatial axes (``"W, "``, ``"D, H, W, "``); ``""`` for none."""
  return "".join(f"{a}, " for a in "DHW"[3 - spatial_dims:])


def check_spatial_shape(spatial_shape, spatial_dims, model_name):
  """``spatial_shape`` as a tuple of ``spatial_dims`` positive ints, or a `ValueError`."""
  try:
    shape = tuple(spatial_shape)
  except TypeError:
    shape = None
  if shape is None or len(shape) != spatial_dims or not all(
      isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in shape):
    raise ValueError(
        f"spatial_shape: {model_name}.initial_state expected the sizes of the {spatial_dims}"
        f" spatial axes of the inputs ({spatial_dims} positive ints, e.g. spatial_shape="
        f"xs.shape[2:-1] for time-major xs), got {spatial_shape!r}.")
  return tuple(int(n) for n in shape)


def check_step_input(model_name, x, input_size, spatial_dims=0):
  """Checks one step's ``x``: ``[batch, *spatial, F]`` or ``[*spatial, F]``."""
  check_floating("x", x, _TOKEN_HINT)
  n = spatial_dims + 1
  if x.ndim not in (n, n + 1) or (input_size is not None and x.shape[-1] != input_size):
    dims = _spatial_letters(spatial_dims) + ("F" if input_size is None else str(input_size))
    raise ValueError(f"x: {model_name}.step expected shape [batch, {dims}] or [{dims}]"
                     f" (input_size read from params), got {list(x.shape)}.")


def check_step(model, model_name, params, state, x):
  """Checks the arguments of ``model.step``; returns ``(state, x)`` in the parameters' dtype."""
  if not hasattr(x, "shape") or not hasattr(x, "dtype"):
    raise TypeError(f"x: expected a floating-point array [batch, F] or [F], got"
                    f" {type(x).__name__}.")
  check_floating("x", x, _TOKEN_HINT)
  if np.ndim(x) >= 1:
    check_params(model, params, x.shape[-1])
  S = model.spatial_dims
  check_step_input(model_name, x, model.input_size(params), S)
  batched = x.ndim == S + 2
  check_state(model, params, state, x.shape[0] if batched else None, batch_of="x",
              spatial_shape=x.shape[x.ndim - S - 1:-1])
  return cast_to_params(params, state), cast_to_params(params, jnp.asarray(x))


def check_sequence(model, params, xs, time_major):
  """Checks ``xs`` and returns ``(T, B)``."""
  S = model.spatial_dims
  layout = ("[T, B, " if time_major else "[B, T, ") + _spatial_letters(S) + ("C]" if S else "F]")
  if not hasattr(xs, "shape") or not hasattr(xs, "dtype"):
    raise TypeError(f"xs: expected a floating-point array {layout}, got {type(xs).__name__}.")
  check_floating("xs", xs, _TOKEN_HINT)
  if xs.ndim != 3 + S:
    what = f", the model's spatial_dims={S}" if S else ""
    raise ValueError(f"xs: expected rank {3 + S} {layout} (time_major={time_major}{what}),"
                     f" got shape {list(xs.shape)} of rank {xs.ndim}. Add a batch axis of size 1"
                     " for a single sequence.")
  if any(n < 1 for n in xs.shape[2:-1]):
    raise ValueError(f"xs: expected spatial axes of size 1 or more, got shape {list(xs.shape)}.")
  check_params(model, params, xs.shape[-1])
  expected = model.input_size(params)
  if expected is not None and xs.shape[-1] != expected:
    raise ValueError(f"xs: expected feature size {expected} (read from params), got shape"
                     f" {list(xs.shape)} with feature size {xs.shape[-1]}.")
  return (xs.shape[0], xs.shape[1]) if time_major else (xs.shape[1], xs.shape[0])


def check_state(model, params, state, batch_size, name="state", batch_of="xs",
                spatial_shape=()):
  """Checks that ``state`` is shaped like ``model.initial_state(params, B)`` and is floating.

  For a model with spatial axes, the state's spatial axes must be
  ``spatial_shape``, those of ``batch_of``.
  """
  S = model.spatial_dims
  spatial_shape = tuple(spatial_shape)
  call = f"model.initial_state(params, {batch_size}" + (
      f", spatial_shape={spatial_shape})" if S else ")")
  expected = jax.eval_shape(
      lambda p: base.initial_state(model, p, batch_size, spatial_shape), params)
  if jax.tree.structure(state) != jax.tree.structure(expected):
    raise ValueError(f"{name}: expected a pytree like {call} ="
                     f" {describe(expected)}, got {describe(state)}.")
  lead = 0 if batch_size is None else 1
  for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(expected)):
    shape = tuple(np.shape(got))
    if shape == want.shape:
      continue
    if (batch_size is not None and len(shape) == len(want.shape)
        and shape[1:] == want.shape[1:]):
      raise ValueError(f"{name}: batch size {shape[0]} does not match the batch size of"
                       f" {batch_of}, {batch_size}. Expected {describe(expected)}, got"
                       f" {describe(state)}.")
    if (S and len(shape) == len(want.shape) and shape[:lead] == want.shape[:lead]
        and shape[lead + S:] == want.shape[lead + S:]):
      raise ValueError(f"{name}: spatial shape {list(shape[lead:lead + S])} does not match the"
                       f" spatial shape of {batch_of}, {list(spatial_shape)}. Expected"
                       f" {describe(expected)}, got {describe(state)}.")
    raise ValueError(f"{name}: expected shapes {describe(expected)}, got {describe(state)}.")
  for got in jax.tree.leaves(state):
    if not jnp.issubdtype(_dtype(got), jnp.floating):
      raise TypeError(f"{name}: expected floating-point arrays like"
                      f" {call} = {describe(expected)},"
                      f" got {describe(state)}.")


def check_seq_lengths(seq_lengths, batch_size, T):
  """Checks ``[B]`` integer lengths; concrete ones must lie in ``[0, T]``.

  Under `jit` the lengths are traced and cannot be read: a length above ``T``
  then counts as ``T`` and a negative one as 0 (`sequences.lengths_to_mask`).
  """
  shape = tuple(np.shape(seq_lengths))
  dtype = _dtype(seq_lengths)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"seq_lengths: expected an integer array of shape [{batch_size}], got dtype"
                    f" {jnp.dtype(dtype).name} with shape {list(shape)}.")
  if shape != (batch_size,):
    raise ValueError(f"seq_lengths: expected shape [{batch_size}] (one length per sequence),"
                     f" got {list(shape)}.")
  values = concrete_value(seq_lengths)
  if values is None:
    return
  bad = np.flatnonzero((values < 0) | (values > T))
  if bad.size:
    entries = ", ".join(f"seq_lengths[{b}]={values[b]}" for b in bad[:8])
    more = f" and {bad.size - 8} more" if bad.size > 8 else ""
    raise ValueError(f"seq_lengths: expected lengths in [0, T={T}], got {entries}{more}.")


def check_labels(labels, num_classes, mask):
  """Concrete labels at valid steps (``mask``, or all) must lie in ``[0, num_classes)``."""
  values = concrete_value(labels)
  if values is None or (mask is not None and concrete_value(mask) is None):
    return
  bad = (values < 0) | (values >= num_classes)
  if mask is not None:
    bad &= np.asarray(mask)
  where = np.argwhere(bad)
  if where.size:
    entries = ", ".join(f"labels[{', '.join(map(str, i))}]={values[tuple(i)]}" for i in where[:8])
    more = f" and {len(where) - 8} more" if len(where) > 8 else ""
    raise ValueError(f"labels: expected classes in [0, {num_classes}) at the valid steps, got"
                     f" {entries}{more}.")


def concrete_value(x):
  """``x`` as a NumPy array, or None when it is traced (under `jit`, `vmap`, `grad`)."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def check_params(model, params, input_size):
  """Checks ``params`` against the structure and shapes ``model.init`` gives for ``input_size``.

  ``model`` is a `Model` or a `Readout`.

  A mismatch in the input-size axis alone is left to the caller, whose
  message names the input (``xs`` or ``x``) instead.
  """
  expected = expected_params(model, input_size)
  if expected is None:
    return
  what = f"the parameters of this model (model.init(key, {input_size}))"
  if jax.tree.structure(params) != jax.tree.structure(expected):
    raise TypeError(f"params: expected {what} = {describe(expected)}, got {describe(params)}.")
  got_shapes = [tuple(np.shape(a)) for a in jax.tree.leaves(params)]
  if got_shapes == [a.shape for a in jax.tree.leaves(expected)]:
    return
  read_size = getattr(model, "input_size", None)  # a `Readout` does not say
  read = None if read_size is None else read_size(params)
  if read is not None and read != input_size:
    return
  paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
  wrong = [f"params{p}: expected {list(e.shape)}, got {list(g)}"
           for p, g, e in zip(paths, got_shapes, jax.tree.leaves(expected)) if g != e.shape]
  raise ValueError(f"params: shapes do not match {what}: {'; '.join(wrong)}. Expected"
                   f" {describe(expected)}, got {describe(params)}.")


def expected_params(model, input_size):
  """``jax.eval_shape(model.init, key, input_size)``, cached; None if ``init`` cannot say."""
  try:
    return _expected_params_cached(model, input_size, jax.dtypes.canonicalize_dtype(np.float64))
  except TypeError:  # an unhashable model (e.g. a config holding a list)
    return _expected_params(model, input_size)


@functools.lru_cache(maxsize=256)
def _expected_params_cached(model, input_size, default_float):
  del default_float  # part of the key: init's dtypes follow x64
  return _expected_params(model, input_size)


def _expected_params(model, input_size):
  try:
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    return jax.eval_shape(lambda k: model.init(k, input_size), key)
  except Exception:
    # A user's init that cannot be traced abstractly: nothing to compare against.
    return None


def params_dtype(params):
  """The floating dtype the parameters compute in (their promoted type), or None."""
  dtypes = [_dtype(a) for a in jax.tree.leaves(params)]
  floats = [d for d in dtypes if jnp.issubdtype(d, jnp.floating)]
  return jnp.result_type(*floats) if floats else None


def cast_to_params(params, tree):
  """Casts floating inputs (``xs``, ``state``) to the parameters' dtype.

  The documented policy: parameters decide the precision, so float64 NumPy
  data meets float32 parameters (e.g. from `interop.from_torch`) as float32.
  The cast is part of the computation, so gradients come back in the
  inputs' own dtypes.
  """
  dtype = params_dtype(params)
  if dtype is None:
    return tree
  return jax.tree.map(lambda a: a if _dtype(a) == dtype else jnp.asarray(a).astype(dtype), tree)


def check_bool(name, value):
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name}: expected a Python bool, got {type(value).__name__} {value!r}.")


def check_rng(rng):
  """``rng`` is None, a typed key (`jax.random.key`) or a raw key (`jax.random.PRNGKey`)."""
  if rng is None:
    return
  dtype = getattr(rng, "dtype", None)
  if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
    if np.shape(rng) == ():
      return
  elif dtype == jnp.uint32 and np.ndim(rng) == 1:
    return
  what = f"{dtype}{list(np.shape(rng))}" if dtype is not None else f"{type(rng).__name__} {rng!r}"
  raise TypeError(f"rng: expected a PRNG key from jax.random.key(seed) or"
                  f" jax.random.PRNGKey(seed), or None, got {what}.")


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
