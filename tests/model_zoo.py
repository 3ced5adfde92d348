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
  params = model.init(k_init, input_size)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(k_noise, len(leaves))
  leaves = [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
  return jax.tree.unflatten(treedef, leaves)


def random_like(key, tree):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, max(len(leaves), 1))
  return jax.tree.unflatten(
      treedef, [jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)])


def python_loop(step, params, xs, state):
  """The reference: a Python loop over ``step``, time-major."""
  ys = []
  for t in range(xs.shape[0]):
    state, y = step(params, state, xs[t])
    ys.append(y)
  return state, jnp.stack(ys)


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
  num = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  den = max(float(jnp.max(jnp.abs(y))) for y in jax.tree.leaves(b))
  return num / max(den, 1e-300)


def compiled(fn, *args):
  """``jax.jit(fn)(*args)``; compiling is nearly all of the time, faster without LLVM's passes."""
  lowered = jax.jit(fn).lower(*args)
  options = {"xla_backend_optimization_level": "0"} if jax.default_backend() == "cpu" else None
  return lowered.compile(options)(*args)
