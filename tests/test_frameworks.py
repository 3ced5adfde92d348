"""`jaxrnn.flax.RNN`, `jaxrnn.nnx.RNN` and `jaxrnn.equinox.RNN` against the functional API."""

import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import equinox as eqx
from flax import linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn
import jaxrnn.equinox
import jaxrnn.flax
import jaxrnn.nnx
import model_zoo

T, B, F, H = 6, 3, 4, 5
MODELS = (
    ("lstm", lambda: jaxrnn.lstm(H)),
    ("gru", lambda: jaxrnn.gru(H)),
    ("stack", lambda: jaxrnn.stack([jaxrnn.lstm(H), jaxrnn.gru(H)], dropout=0.3)),
    ("bidirectional", lambda: jaxrnn.bidirectional(jaxrnn.rnn(H), jaxrnn.mgu(H))),
)
SEQ_LENGTHS = jnp.array([6, 2, 0])


def _xs(seed=0, time_major=True):
  shape = (T, B, F) if time_major else (B, T, F)
  return model_zoo.normal(jax.random.key(seed), shape)


def _loss_of_ys(ys):
  return jnp.sum(jnp.sin(ys))


def _functional(model, params, xs, **kwargs):
  """ys and the gradient of a fixed loss of them, through `jaxrnn.unroll`."""
  loss = lambda p: _loss_of_ys(jaxrnn.unroll(model, p, xs, **kwargs)[1])
  return jaxrnn.unroll(model, params, xs, **kwargs)[1], jax.grad(loss)(params)


def _assert_is_model_params(test, params, model):
  """``params`` is the model's own pytree: its types, structure, shapes and dtypes."""
  want = jax.eval_shape(lambda key: model.init(key, F), jax.random.key(0))
  test.assertEqual(jax.tree.structure(params), jax.tree.structure(want))
  test.assertEqual([(a.shape, a.dtype) for a in jax.tree.leaves(params)],
                   [(a.shape, a.dtype) for a in jax.tree.leaves(want)])


def _adding_batches(steps, batch_size=32, seq_len=10):
  """Adding-problem batches ``[B, T, 2]`` with targets ``[B, 1]``, batch-major."""
  for k in jax.random.split(jax.random.key(7), steps):
    k_values, k_first, k_second = jax.random.split(k, 3)
    values = jax.random.uniform(k_values, (batch_size, seq_len))
    first = jax.random.randint(k_first, (batch_size, 1), 0, seq_len // 2)
    second = jax.random.randint(k_second, (batch_size, 1), seq_len // 2, seq_len)
    steps_ = jnp.arange(seq_len)[None]
    marks = ((steps_ == first) | (steps_ == second)).astype(values.dtype)
    yield jnp.stack([values, marks], -1), jnp.sum(values * marks, 1, keepdims=True)


def _train(loss_fn, params, steps=300):
  """Adam on ``loss_fn(params, xs, targets)``; returns the first and last 10 steps' mean loss."""
  optimizer = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state, xs, targets):
    loss, grads = jax.value_and_grad(loss_fn)(params, xs, targets)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = optimizer.init(params)
  losses = []
  for xs, targets in _adding_batches(steps):
    params, opt_state, loss = step(params, opt_state, xs, targets)
    losses.append(float(loss))
  return np.mean(losses[:10]), np.mean(losses[-10:])


class LinenTest(parameterized.TestCase):

  @parameterized.named_parameters(*MODELS)
  def test_outputs_and_gradients_equal_the_functional_path(self, make_model):
    model = make_model()
    xs = _xs(time_major=False)
    module = jaxrnn.flax.RNN(model)
    variables = module.init(jax.random.key(1), xs)
    params = variables["params"]["cell"]
    _assert_is_model_params(self, params, model)

    loss = lambda v: _loss_of_ys(module.apply(v, xs, seq_lengths=SEQ_LENGTHS))
    want_ys, want_grads = _functional(model, params, xs, seq_lengths=SEQ_LENGTHS,
                                      time_major=False)
    np.testing.assert_array_equal(module.apply(variables, xs, seq_lengths=SEQ_LENGTHS), want_ys)
    model_zoo.assert_trees_equal(jax.grad(loss)(variables)["params"]["cell"], want_grads)

  def test_state_reverse_time_major_and_return_state(self):
    model = jaxrnn.lstm(H)
    xs = _xs(time_major=True)
    module = jaxrnn.flax.RNN(model, time_major=True, return_state=True)
    variables = module.init(jax.random.key(1), xs)
    params = variables["params"]["cell"]
    state = model_zoo.random_like(jax.random.key(2), model.initial_state(params, B))
    final, ys = module.apply(variables, xs, state, seq_lengths=SEQ_LENGTHS, reverse=True)
    want_final, want_ys = jaxrnn.unroll(model, params, xs, state, seq_lengths=SEQ_LENGTHS,
                                        reverse=True)
    np.testing.assert_array_equal(ys, want_ys)
    model_zoo.assert_trees_equal(final, want_final)

  def test_dropout_comes_from_the_dropout_stream(self):
    model = jaxrnn.stack([jaxrnn.lstm(H), jaxrnn.lstm(H)], dropout=0.5)
    xs = _xs(time_major=False)
    module = jaxrnn.flax.RNN(model)
    variables = module.init(jax.random.key(1), xs)
    plain = module.apply(variables, xs)
    np.testing.assert_array_equal(
        plain, jaxrnn.unroll(model, variables["params"]["cell"], xs, time_major=False)[1])
    drop = lambda seed: module.apply(variables, xs, deterministic=False,
                                     rngs={"dropout": jax.random.key(seed)})
    np.testing.assert_array_equal(drop(3), drop(3))
    self.assertGreater(float(jnp.max(jnp.abs(drop(3) - plain))), 1e-3)
    self.assertGreater(float(jnp.max(jnp.abs(drop(3) - drop(4)))), 1e-3)

  def test_swap_for_flax_lstm_with_the_weights_carried_over(self):
    with jax.enable_x64(True):
      xs = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, F)))

      class FlaxModel(nn.Module):
        @nn.compact
        def __call__(self, xs):
          return nn.Dense(1)(nn.RNN(nn.LSTMCell(H, param_dtype=jnp.float64))(xs))

      class JaxrnnModel(nn.Module):
        @nn.compact
        def __call__(self, xs):
          return nn.Dense(1)(jaxrnn.flax.RNN(jaxrnn.lstm(H))(xs))

      flax_vars = FlaxModel().init(jax.random.key(0), xs)
      flax_vars = jax.tree.map(lambda a: a + 0.1, flax_vars)  # non-zero biases
      # nn.RNN names its cell in the parent's scope.
      _, cell_params = jaxrnn.interop.from_flax(nn.LSTMCell(H),
                                                {"params": flax_vars["params"]["LSTMCell_0"]})
      ours = {"params": {"RNN_0": {"cell": cell_params},
                         "Dense_0": flax_vars["params"]["Dense_0"]}}
      got, want = JaxrnnModel().apply(ours, xs), FlaxModel().apply(flax_vars, xs)
      self.assertEqual(got.dtype, jnp.float64)
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

  def test_trains_on_adding_with_a_dense_readout(self):
    class Model(nn.Module):
      @nn.compact
      def __call__(self, xs):
        return nn.Dense(1)(jaxrnn.flax.RNN(jaxrnn.lstm(16))(xs)[:, -1])

    module = Model()
    xs, _ = next(_adding_batches(1))
    params = module.init(jax.random.key(0), xs)
    loss_fn = lambda p, xs, y: jnp.mean((module.apply(p, xs) - y) ** 2)
    first, last = _train(loss_fn, params)
    self.assertLess(last, 0.3 * first)

  def test_rejects_what_is_not_a_model(self):
    with self.assertRaisesRegex(TypeError, "model: jaxrnn.flax.RNN expected a jaxrnn Model"):
      jaxrnn.flax.RNN(nn.LSTMCell(H)).init(jax.random.key(0), _xs(time_major=False))  # type: ignore


class NNXTest(parameterized.TestCase):

  @parameterized.named_parameters(*MODELS)
  def test_outputs_and_gradients_equal_the_functional_path(self, make_model):
    model = make_model()
    xs = _xs(time_major=False)
    module = jaxrnn.nnx.RNN(model, F, rngs=nnx.Rngs(0))
    params = module.cell.get_value()
    _assert_is_model_params(self, params, model)
    want_ys, want_grads = _functional(model, params, xs, seq_lengths=SEQ_LENGTHS,
                                      time_major=False)
    np.testing.assert_array_equal(module(xs, seq_lengths=SEQ_LENGTHS), want_ys)
    grads = nnx.grad(lambda m: _loss_of_ys(m(xs, seq_lengths=SEQ_LENGTHS)))(module)
    model_zoo.assert_trees_equal(grads["cell"].get_value(), want_grads)

  def test_train_mode_turns_dropout_on(self):
    model = jaxrnn.stack([jaxrnn.lstm(H), jaxrnn.lstm(H)], dropout=0.5)
    module = jaxrnn.nnx.RNN(model, F, rngs=nnx.Rngs(0, dropout=1))
    xs = _xs(time_major=False)
    plain = module(xs)
    module.train()
    self.assertGreater(float(jnp.max(jnp.abs(module(xs) - plain))), 1e-3)
    module.eval()
    np.testing.assert_array_equal(module(xs), plain)

  def test_trains_on_adding_with_a_linear_readout(self):
    class Model(nnx.Module):
      def __init__(self, rngs):
        self.rnn = jaxrnn.nnx.RNN(jaxrnn.lstm(16), 2, rngs=rngs)
        self.out = nnx.Linear(16, 1, rngs=rngs)

      def __call__(self, xs):
        return self.out(self.rnn(xs)[:, -1])

    graphdef, params, rest = nnx.split(Model(nnx.Rngs(0)), nnx.Param, ...)
    loss_fn = lambda p, xs, y: jnp.mean((nnx.merge(graphdef, p, rest)(xs) - y) ** 2)
    first, last = _train(loss_fn, params)
    self.assertLess(last, 0.3 * first)


class EquinoxTest(parameterized.TestCase):

  @parameterized.named_parameters(*MODELS)
  def test_outputs_and_gradients_equal_the_functional_path(self, make_model):
    model = make_model()
    xs = _xs()
    module = jaxrnn.equinox.RNN(model, F, key=jax.random.key(0))
    _assert_is_model_params(self, module.params, model)
    model_zoo.assert_trees_equal(module.params, model.init(jax.random.key(0), F))
    want_ys, want_grads = _functional(model, module.params, xs, seq_lengths=SEQ_LENGTHS)
    np.testing.assert_array_equal(module(xs, seq_lengths=SEQ_LENGTHS), want_ys)
    grads = eqx.filter_grad(lambda m: _loss_of_ys(m(xs, seq_lengths=SEQ_LENGTHS)))(module)
    model_zoo.assert_trees_equal(grads.params, want_grads)

  def test_one_sequence_and_vmap_equal_the_batched_call(self):
    with jax.enable_x64(True):
      model = jaxrnn.lstm(H)
      module = jaxrnn.equinox.RNN(model, F, key=jax.random.key(0), return_state=True)
      module = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_array(a) else a, module)
      xs = _xs().astype(jnp.float64)
      state = model_zoo.random_like(jax.random.key(2), model.initial_state(module.params, B))
      final, ys = module(xs, state, seq_lengths=SEQ_LENGTHS)
      for b in range(B):
        one = module(xs[:, b], jax.tree.map(lambda a, b=b: a[b], state),
                     seq_lengths=SEQ_LENGTHS[b])
        model_zoo.assert_trees_equal(one, (jax.tree.map(lambda a, b=b: a[b], final), ys[:, b]))
      v_final, v_ys = jax.vmap(lambda x, s, n: module(x, s, seq_lengths=n), (1, 0, 0))(
          xs, state, SEQ_LENGTHS)
      model_zoo.assert_trees_close((v_final, jnp.swapaxes(v_ys, 0, 1)), (final, ys),
                                   rtol=1e-13, atol=1e-13)

  def test_key_drives_dropout(self):
    model = jaxrnn.stack([jaxrnn.lstm(H), jaxrnn.lstm(H)], dropout=0.5)
    module = jaxrnn.equinox.RNN(model, F, key=jax.random.key(0))
    xs = _xs()
    key = jax.random.key(5)
    np.testing.assert_array_equal(module(xs, key=key),
                                  jaxrnn.unroll(model, module.params, xs, rng=key)[1])
    self.assertGreater(float(jnp.max(jnp.abs(module(xs, key=key) - module(xs)))), 1e-3)

  def test_trains_on_adding_with_a_linear_readout(self):
    k_rnn, k_out = jax.random.split(jax.random.key(0))
    model = (jaxrnn.equinox.RNN(jaxrnn.lstm(16), 2, key=k_rnn, time_major=False),
             eqx.nn.Linear(16, 1, key=k_out))
    params, static = eqx.partition(model, eqx.is_array)

    def loss_fn(p, xs, y):
      rnn, out = eqx.combine(p, static)
      return jnp.mean((jax.vmap(out)(rnn(xs)[:, -1]) - y) ** 2)
    first, last = _train(loss_fn, params)
    self.assertLess(last, 0.3 * first)

  def test_rejects_a_bad_input_size(self):
    with self.assertRaisesRegex(ValueError, "input_size: jaxrnn.equinox.RNN expected a positive"):
      jaxrnn.equinox.RNN(jaxrnn.lstm(H), 0, key=jax.random.key(0))


class ImportTest(absltest.TestCase):

  def test_frameworks_are_imported_only_when_used(self):
    code = ("import sys, jaxrnn; assert 'flax' not in sys.modules and 'equinox' not in sys.modules;"
            " jaxrnn.equinox.RNN; assert 'equinox' in sys.modules and 'flax' not in sys.modules;"
            " jaxrnn.flax.RNN; jaxrnn.nnx.RNN; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    self.assertEqual(out.stdout.strip(), "ok", out.stderr)


if __name__ == "__main__":
  absltest.main()
