"""jaxrnn.interop against Haiku's hk.LSTM, hk.GRU and hk.VanillaRNN."""

from absl.testing import absltest
from absl.testing import parameterized
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn
from jaxrnn import interop
import model_zoo

T, B, I, H = 5, 3, 4, 6
TOL = dict(rtol=1e-5, atol=1e-5)

CORES = (
    ("lstm", hk.LSTM, dict()),
    ("gru", hk.GRU, dict()),
    ("vanilla_rnn", hk.VanillaRNN, dict()),
    ("vanilla_rnn_single_bias", hk.VanillaRNN, dict(double_bias=False)),
)


def _randomize(tree, seed):
  """Every array of ``tree`` drawn N(0, 0.5^2), so that biases are not Haiku's zeros."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten([0.5 * model_zoo.normal(k, x.shape, x.dtype)
                            for k, x in zip(keys, leaves)])



def _unroll_fn(core_cls, kwargs, name=None):
  """``(xs, state) -> (ys, final)`` with ``hk.dynamic_unroll``, time-major."""
  def run(xs, state):
    return hk.dynamic_unroll(core_cls(H, name=name, **kwargs), xs, state)
  return hk.without_apply_rng(hk.transform(run))


def _initial_state(core_cls, kwargs, seed):
  zeros = hk.transform(lambda: core_cls(H, **kwargs).initial_state(B)).apply({}, None)
  return _randomize(zeros, seed)


def _inputs(seed=0):
  return model_zoo.normal(jax.random.key(seed), (T, B, I))


class FromHaikuTest(parameterized.TestCase):

  @parameterized.named_parameters(*CORES)
  def test_outputs_and_final_state_match(self, core_cls, kwargs):
    fn = _unroll_fn(core_cls, kwargs)
    xs = _inputs()
    state = _initial_state(core_cls, kwargs, seed=2)
    hk_params = _randomize(fn.init(jax.random.key(0), xs, state), seed=1)
    ys, final = fn.apply(hk_params, xs, state)

    model, params = interop.from_haiku(core_cls, hk_params)
    our_state = jaxrnn.LSTMState(*state) if core_cls is hk.LSTM else state
    our_final, our_ys = jaxrnn.unroll(model, params, xs, our_state)

    np.testing.assert_allclose(our_ys, ys, **TOL)
    # Both LSTM states are (hidden, cell) named tuples, of different classes.
    for a, b in zip(jax.tree.leaves(our_final), jax.tree.leaves(final)):
      np.testing.assert_allclose(a, b, **TOL)

  @parameterized.named_parameters(*CORES)
  def test_round_trip_is_exact(self, core_cls, kwargs):
    fn = _unroll_fn(core_cls, kwargs)
    xs = _inputs()
    hk_params = _randomize(
        fn.init(jax.random.key(0), xs, _initial_state(core_cls, kwargs, 2)), seed=1)
    model, params = interop.from_haiku(core_cls, hk_params)
    back = interop.to_haiku(model, params, double_bias=kwargs.get("double_bias", True))
    model_zoo.assert_trees_equal(back, hk_params)

  def test_forget_gate_constant_goes_to_b_h(self):
    fn = _unroll_fn(hk.LSTM, {})
    hk_params = fn.init(jax.random.key(0), _inputs(), _initial_state(hk.LSTM, {}, 2))
    _, params = interop.from_haiku("LSTM", hk_params)
    np.testing.assert_array_equal(params.b_h, np.repeat([0.0, 1.0, 0.0, 0.0], H))

  def test_custom_module_name(self):
    fn = _unroll_fn(hk.GRU, {}, name="encoder")
    xs = _inputs()
    state = _initial_state(hk.GRU, {}, 2)
    hk_params = _randomize(fn.init(jax.random.key(0), xs, state), seed=1)
    model, params = interop.from_haiku(hk.GRU, hk_params, name="encoder")
    model_zoo.assert_trees_equal(interop.to_haiku(model, params, name="encoder"), hk_params)
    with self.assertRaisesRegex(ValueError, "name="):
      interop.from_haiku(hk.GRU, hk_params)


class ToHaikuTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("lstm", lambda: jaxrnn.lstm(H), hk.LSTM, dict()),
      ("lstm_no_bias", lambda: jaxrnn.lstm(H, bias=False, forget_bias=0.0), hk.LSTM, dict()),
      ("gru_reset_before", lambda: jaxrnn.gru(H, reset_after=False), hk.GRU, dict()),
      ("rnn_relu", lambda: jaxrnn.rnn(H, activation="relu"), hk.VanillaRNN, dict()),
      ("rnn_relu_single_bias", lambda: jaxrnn.rnn(H, activation="relu"), hk.VanillaRNN,
       dict(double_bias=False)),
  )
  def test_jaxrnn_cell_runs_the_same_in_haiku(self, make_cell, core_cls, kwargs):
    model = make_cell()
    # Random b_x and b_h both: to_haiku has to fold them into Haiku's one bias.
    params = _randomize(model.init(jax.random.key(0), I), seed=3)
    xs = _inputs(seed=4)
    state = _initial_state(core_cls, kwargs, seed=5)
    hk_params = interop.to_haiku(model, params, double_bias=kwargs.get("double_bias", True))
    ys, _ = _unroll_fn(core_cls, kwargs).apply(hk_params, xs, state)
    our_state = jaxrnn.LSTMState(*state) if core_cls is hk.LSTM else state
    _, our_ys = jaxrnn.unroll(model, params, xs, our_state)
    np.testing.assert_allclose(our_ys, ys, **TOL)

  @parameterized.named_parameters(
      ("reset_after_gru", lambda: jaxrnn.gru(H), ValueError,
       "^model: expected a reset-before GRU"),
      ("tanh_rnn", lambda: jaxrnn.rnn(H), ValueError,
       "^model: expected an rnn with activation='relu' .*got activation='tanh'"),
      ("stack", lambda: jaxrnn.stack([jaxrnn.lstm(H)]), ValueError,
       "^model: expected a single cell .*got a stack"),
      ("bidirectional", lambda: jaxrnn.bidirectional(jaxrnn.lstm(H), jaxrnn.lstm(H)), ValueError,
       "^model: expected a single cell .*got a bidirectional"),
      ("learned_initial_state", lambda: jaxrnn.learned_initial_state(jaxrnn.lstm(H)),
       ValueError, "^model: expected a single cell, got a learned_initial_state"),
      ("bfloat16", lambda: jaxrnn.gru(H, reset_after=False, dtype=jnp.bfloat16), ValueError,
       "^model: expected matmuls in the parameters' dtype .*got dtype=bfloat16"),
      ("lstm_peephole", lambda: jaxrnn.lstm(H, peephole=True), ValueError,
       r"^model: expected a plain lstm .*got lstm\(peephole=True\)"),
      ("no_config", lambda: jaxrnn.lstm(H)._replace(config=None), TypeError,
       "^model: .*config=None"),
  )
  def test_models_no_core_computes_are_rejected(self, make_model, error, message):
    model = make_model()
    with self.assertRaisesRegex(error, message):
      interop.to_haiku(model, model.init(jax.random.key(0), I))

  def test_custom_cell_is_rejected(self):
    model = model_zoo.indrnn_without_vjp(H)
    with self.assertRaisesRegex(
        ValueError, r"^model: expected an rnn, lstm or gru cell \(config RNNConfig, LSTMConfig"
        r" or GRUConfig.*got custom_cell 'indrnn' \(CustomCellConfig\)"):
      interop.to_haiku(model, model.init(jax.random.key(0), I))

  def test_params_of_another_model_are_rejected(self):
    with self.assertRaisesRegex(TypeError, "^params: expected LSTMParams"):
      interop.to_haiku(jaxrnn.lstm(H), jaxrnn.rnn(H).init(jax.random.key(0), I))
    with self.assertRaisesRegex(ValueError, "^params: expected hidden size 6"):
      interop.to_haiku(jaxrnn.lstm(H), jaxrnn.lstm(H + 1).init(jax.random.key(0), I))

  def test_other_cores_are_rejected(self):
    with self.assertRaisesRegex(TypeError, "core"):
      interop.from_haiku(hk.Linear, {})


if __name__ == "__main__":
  absltest.main()
