"""The models every core test runs through, small reference routines, and tree checks."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn

CELLS = {
    "rnn_tanh": lambda h: jaxrnn.rnn(h),
    "rnn_relu": lambda h: jaxrnn.rnn(h, activation="relu"),
    "lstm": lambda h: jaxrnn.lstm(h),
    "gru": lambda h: jaxrnn.gru(h),
    "gru_reset_before": lambda h: jaxrnn.gru(h, reset_after=False),
    "mgu": lambda h: jaxrnn.mgu(h),
}

MODELS = dict(CELLS)
MODELS.update({
    "stack": lambda h: jaxrnn.stack([jaxrnn.lstm(h), jaxrnn.gru(h + 1)], dropout=0.25),
    "bidirectional": lambda h: jaxrnn.bidirectional(jaxrnn.lstm(h), jaxrnn.gru(h + 1)),
    "bidirectional_sum": lambda h: jaxrnn.bidirectional(jaxrnn.rnn(h), jaxrnn.gru(h), merge="sum"),
    "learned_state": lambda h: jaxrnn.learned_initial_state(jaxrnn.lstm(h)),
    "learned_stack": lambda h: jaxrnn.learned_initial_state(
        jaxrnn.stack([jaxrnn.gru(h), jaxrnn.rnn(h)])),
})


def indrnn_without_vjp(hidden_size):
  """An IndRNN (``h' = tanh(x W + u * h)``) as a `custom_cell` without a hand-written backward.

  A cell whose config (`CustomCellConfig`) no converter knows.
  """
  def init(key, input_size):
    return {"w": jax.random.normal(key, (input_size, hidden_size)),
            "u": jnp.full((hidden_size,), 0.5)}

  def step(p, h, x):
    h = jnp.tanh(x @ p["w"] + p["u"] * h)
    return h, h

  return jaxrnn.custom_cell(init, step, output_size=hidden_size, name="indrnn")


def random_params(model, key, input_size, scale=0.3):
  """Initialised parameters plus noise, so biases and learned states are non-trivial."""
  k_init, k_noise = jax.random.split(key)
  draw = _normal_draws(k_noise)

  def noisy(a):
    noise = draw(a.shape, a.dtype)
    if isinstance(a, jax.core.Tracer):
      return a + scale * noise
    return jnp.asarray(np.asarray(a) + scale * np.asarray(noise), a.dtype)

  return jax.tree.map(noisy, model.init(k_init, input_size))


def random_like(key, tree):
  """Standard normal leaves of ``tree``'s shapes and dtypes, a function of ``key``."""
  draw = _normal_draws(key)
  return jax.tree.map(lambda a: draw(a.shape, a.dtype), tree)


def normal(key, shape, dtype=None):
  """A standard normal array, a function of ``key`` (`jax.random.normal`'s arguments)."""
  return _normal_draws(key)(shape, jnp.float64 if dtype is None else dtype)


def _normal_draws(key):
  """``draw(shape, dtype)``: standard normal arrays, one after another, determined by ``key``.

  NumPy draws them, from a generator seeded by the key: `jax.random.normal`
  compiles a program for each new shape, which came to a tenth of the suite's
  compile time. Inside a traced function (a traced key) JAX draws them.
  """
  def checked(dtype):
    # float64 becomes float32 unless x64 is on, as jax.random.normal's default does.
    dtype = jax.dtypes.canonicalize_dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(f"normal draws need a floating dtype, got {dtype}")
    return dtype

  if isinstance(key, jax.core.Tracer):
    counter = itertools.count()
    return lambda shape, dtype: jax.random.normal(
        jax.random.fold_in(key, next(counter)), shape, checked(dtype))
  data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  rng = np.random.default_rng(np.asarray(data).ravel().tolist())
  return lambda shape, dtype: jnp.asarray(rng.standard_normal(shape), checked(dtype))


def python_loop(step, params, xs, state):
  """The reference: a Python loop over ``step``, time-major.

  Traced once as a whole and compiled (`compiled`): op by op, every new shape
  compiled each of the step's ops on its own.
  """
  def loop(params, xs, state):
    ys = []
    for t in range(xs.shape[0]):
      state, y = step(params, state, xs[t])
      ys.append(y)
    return state, jnp.stack(ys)

  return compiled(loop, params, xs, state)


def combined_named_parameters(*axes):
  """The product of lists of ``(name, *values)`` cases, for `parameterized.named_parameters`.

  The names of a combination are joined with ``_``, its values concatenated:
  ``combined_named_parameters([("a", 1)], [("x", 2), ("y", 3)])`` is
  ``[("a_x", 1, 2), ("a_y", 1, 3)]``.
  """
  return [("_".join(case[0] for case in combo),
           *itertools.chain.from_iterable(case[1:] for case in combo))
          for combo in itertools.product(*axes)]


def named(values):
  """``[(str(v), v) ...]``: cases named by their values."""
  return [(str(v), v) for v in values]


def _assert_same_structure(a, b):
  sa, sb = jax.tree.structure(a), jax.tree.structure(b)
  if sa != sb:
    raise AssertionError(f"tree structures differ:\n{sa}\n{sb}")


def assert_trees_equal(a, b):
  """Same structure, and leaves of the same shapes and dtypes with equal values."""
  _assert_same_structure(a, b)
  for i, (x, y) in enumerate(zip(jax.tree.leaves(a), jax.tree.leaves(b))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"leaf {i}", strict=True)


def assert_trees_close(a, b, rtol=1e-6, atol=1e-6):
  """Same structure and every leaf within ``np.testing.assert_allclose(rtol, atol)``."""
  _assert_same_structure(a, b)
  for i, (x, y) in enumerate(zip(jax.tree.leaves(a), jax.tree.leaves(b))):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol,
                               err_msg=f"leaf {i}")


def max_rel_error(a, b):
  """max |a-b| / max(|b|, tiny) over a whole pytree."""
  _assert_same_structure(a, b)
  # In NumPy: eager jnp ops would compile a program for each leaf's shape.
  # np.max over the leaves' maxima, not Python's max: that drops a NaN that is not first.
  pairs = [(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
  num = float(np.max([np.max(np.abs(x - y)) for x, y in pairs]))
  den = float(np.max([np.max(np.abs(y)) for _, y in pairs]))
  return num / max(den, 1e-300)


def compiled(fn, *args):
  """``jax.jit(fn)(*args)``; compiling is nearly all of the time, faster without LLVM's passes."""
  lowered = jax.jit(fn).lower(*args)
  options = {"xla_backend_optimization_level": "0"} if jax.default_backend() == "cpu" else None
  return lowered.compile(options)(*args)
