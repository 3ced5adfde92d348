"""jaxrnn.interop against Flax linen's LSTMCell, OptimizedLSTMCell, GRUCell, MGUCell, SimpleCell."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn
from jaxrnn import interop
import model_zoo

T, B, I, H = 5, 3, 4, 6
TOL = dict(rtol=1e-5, atol=1e-5)

CELLS = (
    ("lstm", lambda: nn.LSTMCell(H)),
    ("optimized_lstm", lambda: nn.OptimizedLSTMCell(H)),
    ("gru", lambda: nn.GRUCell(H)),
    ("mgu", lambda: nn.MGUCell(H)),
    ("mgu_no_reset_gate", lambda: nn.MGUCell(H, reset_gate=False)),
    ("simple_tanh", lambda: nn.SimpleCell(H)),
    ("simple_relu", lambda: nn.SimpleCell(H, activation_fn=nn.relu)),
)


def _randomize(tree, seed):
  """Every array of ``tree`` drawn N(0, 0.5^2), so that biases are not Flax's zeros."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten([0.5 * jax.random.normal(k, x.shape, x.dtype)
                            for k, x in zip(keys, leaves)])


def _inputs(seed=0):
  return jax.random.normal(jax.random.key(seed), (B, T, I))



class FromFlaxTest(parameterized.TestCase):

  @parameterized.named_parameters(*CELLS)
  def test_outputs_and_final_carry_match(self, make_cell):
    rnn = nn.RNN(make_cell())
    xs = _inputs()
    variables = _randomize(rnn.init(jax.random.key(0), xs), seed=1)
    carry0 = _randomize(rnn.cell.initialize_carry(jax.random.key(0), xs[:, 0].shape), seed=2)
    carry, ys = rnn.apply(variables, xs, initial_carry=carry0, return_carry=True)

    model, params = interop.from_flax(rnn, variables)
    final, our_ys = jaxrnn.unroll(model, params, xs, interop.from_flax_carry(carry0),
                                  time_major=False)

    np.testing.assert_allclose(our_ys, ys, **TOL)
    model_zoo.assert_trees_close(interop.to_flax_carry(final), carry, **TOL)

  @parameterized.named_parameters(*CELLS)
  def test_round_trip_is_exact(self, make_cell):
    rnn = nn.RNN(make_cell())
    variables = _randomize(rnn.init(jax.random.key(0), _inputs()), seed=1)
    model, params = interop.from_flax(rnn, variables)
    model_zoo.assert_trees_equal(interop.to_flax(model, params, rnn), variables)

  @parameterized.named_parameters(("reset_gate", True), ("no_reset_gate", False))
  def test_mgu_outputs_states_and_gradients_match_in_float64(self, reset_gate):
    jax.config.update("jax_enable_x64", True)
    rnn = nn.RNN(nn.MGUCell(H, reset_gate=reset_gate, param_dtype=jnp.float64))
    xs = _inputs().astype(jnp.float64)
    variables = _randomize(rnn.init(jax.random.key(0), xs), seed=1)
    carry0 = _randomize(rnn.cell.initialize_carry(jax.random.key(0), xs[:, 0].shape), seed=2)
    d_carry, d_ys = _randomize((carry0, jnp.zeros((B, T, H), jnp.float64)), seed=3)

    def flax_run(variables, xs, carry0):
      return rnn.apply(variables, xs, initial_carry=carry0, return_carry=True)

    def jaxrnn_run(variables, xs, carry0):
      # Through from_flax, so that the gradients come out in Flax's layout.
      model, params = interop.from_flax(rnn, variables)
      return jaxrnn.unroll(model, params, xs, carry0, time_major=False)

    def loss(run, *args):
      carry, ys = run(*args)
      return jnp.sum(carry * d_carry) + jnp.sum(ys * d_ys)

    args = (variables, xs, carry0)
    want = flax_run(*args), jax.grad(functools.partial(loss, flax_run), (0, 1, 2))(*args)
    got = jaxrnn_run(*args), jax.grad(functools.partial(loss, jaxrnn_run), (0, 1, 2))(*args)
    self.assertEqual(got[0][1].dtype, jnp.float64)
    error = max(float(jnp.max(jnp.abs(a - b)))
                for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
    self.assertLessEqual(error, 1e-10)

  def test_bare_cell_and_bare_params_are_accepted(self):
    cell = nn.GRUCell(H)
    x = _inputs()[:, 0]
    variables = _randomize(cell.init(jax.random.key(0), cell.initialize_carry(
        jax.random.key(0), x.shape), x), seed=1)
    _, params = interop.from_flax(cell, variables["params"])
    model_zoo.assert_trees_equal(interop.to_flax(jaxrnn.gru(H), params, nn.GRUCell), variables)


class ToFlaxTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("lstm", lambda: jaxrnn.lstm(H), nn.LSTMCell(H)),
      ("optimized_lstm_no_bias", lambda: jaxrnn.lstm(H, bias=False, forget_bias=0.0),
       nn.OptimizedLSTMCell(H)),
      ("gru", lambda: jaxrnn.gru(H), nn.GRUCell(H)),
      ("gru_no_bias", lambda: jaxrnn.gru(H, bias=False), nn.GRUCell(H)),
      ("mgu", lambda: jaxrnn.mgu(H), nn.MGUCell(H)),
      ("mgu_no_reset_gate", lambda: jaxrnn.mgu(H, reset_gate=False),
       nn.MGUCell(H, reset_gate=False)),
      ("mgu_no_bias", lambda: jaxrnn.mgu(H, bias=False), nn.MGUCell(H)),
      ("rnn_tanh", lambda: jaxrnn.rnn(H), nn.SimpleCell(H)),
      ("rnn_relu", lambda: jaxrnn.rnn(H, activation="relu"),
       nn.SimpleCell(H, activation_fn=nn.relu)),
  )
  def test_jaxrnn_cell_runs_the_same_in_flax(self, make_cell, flax_cell):
    model = make_cell()
    # Random b_x and b_h both: to_flax has to fold them into Flax's one bias.
    params = _randomize(model.init(jax.random.key(0), I), seed=3)
    rnn = nn.RNN(flax_cell)
    xs = _inputs(seed=4)
    ys = rnn.apply(interop.to_flax(model, params, rnn), xs)
    _, our_ys = jaxrnn.unroll(model, params, xs, time_major=False)
    np.testing.assert_allclose(our_ys, ys, **TOL)

  def test_jaxrnn_flax_jaxrnn_keeps_the_function(self):
    model = jaxrnn.lstm(H)
    params = _randomize(model.init(jax.random.key(0), I), seed=3)
    _, back = interop.from_flax(nn.LSTMCell(H), interop.to_flax(model, params, nn.LSTMCell))
    np.testing.assert_array_equal(back.w_x, params.w_x)
    np.testing.assert_array_equal(back.b_h, params.b_x + params.b_h)
    np.testing.assert_array_equal(back.b_x, 0.0)

  @parameterized.named_parameters(
      ("reset_before_gru", lambda: jaxrnn.gru(H, reset_after=False), nn.GRUCell, ValueError,
       "^model: expected a reset-after GRU"),
      ("mgu_reset_gate_to_no_reset_gate", lambda: jaxrnn.mgu(H),
       nn.MGUCell(H, reset_gate=False), ValueError,
       r"^cell: expected reset_gate=True .*reset_gate=False"),
      ("mgu_no_reset_gate_to_default", lambda: jaxrnn.mgu(H, reset_gate=False), nn.MGUCell,
       ValueError, r"^cell: expected reset_gate=False .*reset_gate=True"),
      ("mgu_to_gru", lambda: jaxrnn.mgu(H), nn.GRUCell, TypeError,
       "^model: expected a jaxrnn gru cell .*got mgu"),
      ("cell_type", lambda: jaxrnn.lstm(H), nn.GRUCell, TypeError,
       "^model: expected a jaxrnn gru cell .*got lstm"),
      ("relu_rnn_to_default_simple_cell", lambda: jaxrnn.rnn(H, activation="relu"), nn.SimpleCell,
       ValueError, "^cell: expected activation_fn=relu"),
      ("tanh_rnn_to_relu_simple_cell", lambda: jaxrnn.rnn(H),
       nn.SimpleCell(H, activation_fn=nn.relu), ValueError, "^cell: expected activation_fn=tanh"),
      ("features", lambda: jaxrnn.lstm(H), nn.RNN(nn.LSTMCell(H + 1)), ValueError,
       "^cell: expected features=6 .*got features=7"),
      ("stack", lambda: jaxrnn.stack([jaxrnn.lstm(H)]), nn.LSTMCell, ValueError,
       "^model: expected a single cell .*got a stack"),
      ("bidirectional", lambda: jaxrnn.bidirectional(jaxrnn.gru(H), jaxrnn.gru(H)), nn.GRUCell,
       ValueError, "^model: expected a single cell .*got a bidirectional"),
      ("learned_initial_state", lambda: jaxrnn.learned_initial_state(jaxrnn.gru(H)), nn.GRUCell,
       ValueError, "^model: expected a single cell, got a learned_initial_state"),
      ("bfloat16", lambda: jaxrnn.lstm(H, dtype=jnp.bfloat16), nn.LSTMCell, ValueError,
       "^model: expected matmuls in the parameters' dtype .*got dtype=bfloat16"),
      ("lstm_options", lambda: jaxrnn.lstm(H, peephole=True, proj_size=2), nn.LSTMCell,
       ValueError, r"^model: expected a plain lstm .*got lstm\(peephole=True, proj_size=2\)"),
      ("no_config", lambda: jaxrnn.lstm(H)._replace(config=None), nn.LSTMCell, TypeError,
       "^model: .*config=None"),
  )
  def test_models_the_cell_does_not_compute_are_rejected(self, make_model, cell, error, message):
    model = make_model()
    with self.assertRaisesRegex(error, message):
      interop.to_flax(model, model.init(jax.random.key(0), I), cell)

  @parameterized.named_parameters(
      ("cell_class", nn.GRUCell), ("cell_instance", nn.LSTMCell(H)),
      ("rnn", nn.RNN(nn.SimpleCell(H))))
  def test_custom_cell_is_rejected(self, cell):
    model = model_zoo.indrnn_without_vjp(H)
    with self.assertRaisesRegex(
        ValueError, r"^model: expected an rnn, lstm, gru or mgu cell \(config RNNConfig,"
        r" LSTMConfig, GRUConfig or MGUConfig.*got custom_cell 'indrnn' \(CustomCellConfig\)"):
      interop.to_flax(model, model.init(jax.random.key(0), I), cell)

  def test_params_of_another_model_are_rejected(self):
    with self.assertRaisesRegex(TypeError, "^params: expected GRUParams"):
      interop.to_flax(jaxrnn.gru(H), jaxrnn.lstm(H).init(jax.random.key(0), I), nn.GRUCell)
    with self.assertRaisesRegex(ValueError, "^params: expected hidden size 6"):
      interop.to_flax(jaxrnn.gru(H), jaxrnn.gru(H + 1).init(jax.random.key(0), I), nn.GRUCell)

  @parameterized.named_parameters(
      ("residual", nn.SimpleCell(H, residual=True), "residual"),
      ("activation", nn.SimpleCell(H, activation_fn=jax.nn.gelu), "activation_fn"),
      ("gate_fn", nn.LSTMCell(H, gate_fn=jax.nn.hard_sigmoid), "gate_fn"),
  )
  def test_unsupported_options_are_rejected(self, cell, message):
    rnn = nn.RNN(cell)
    variables = rnn.init(jax.random.key(0), _inputs())
    with self.assertRaisesRegex(ValueError, message):
      interop.from_flax(rnn, variables)


if __name__ == "__main__":
  absltest.main()
