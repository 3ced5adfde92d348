"""jaxrnn.interop against Flax linen's LSTMCell, OptimizedLSTMCell, GRUCell, MGUCell, SimpleCell
and ConvLSTMCell."""

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
        ValueError, r"^model: expected an rnn, lstm, gru, mgu or conv_lstm cell \(config RNNConfig,"
        r" LSTMConfig, GRUConfig, MGUConfig or ConvLSTMConfig.*got custom_cell 'indrnn'"
        r" \(CustomCellConfig\)"):
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


# ConvLSTMCell: 1-D and 2-D, small. (spatial shapes of the inputs, kernel_size, padding); the
# variables of one cell serve inputs of every size, as one jaxrnn model does.
CONV_SHAPES = (
    ("1d", ((5,),), (3,), "SAME"),
    ("2d_two_sizes", ((4, 3), (2, 5)), (3, 2), "SAME"),
    ("2d_explicit_padding", ((4, 3),), (3, 3), ((2, 0), (0, 2))),
)
C, HC = 2, 3


def _conv_problem(spatial_shapes, kernel_size, padding, dtype, use_bias=True):
  """A Flax ``nn.RNN(ConvLSTMCell)`` with random variables, and inputs and initial carries
  of each spatial shape (made in one compiled call: op by op, each draw compiles)."""
  rnn = nn.RNN(nn.ConvLSTMCell(HC, kernel_size, padding=padding, use_bias=use_bias,
                               param_dtype=dtype))

  def make():
    xs = [jax.random.normal(jax.random.key(i), (B, T) + shape + (C,), dtype)
          for i, shape in enumerate(spatial_shapes)]
    variables = _randomize(rnn.init(jax.random.key(0), xs[0]), seed=1)
    carry0 = [_randomize(rnn.cell.initialize_carry(jax.random.key(0), x[:, 0].shape), seed=2 + i)
              for i, x in enumerate(xs)]
    return variables, xs, carry0

  return (rnn, *model_zoo.compiled(make))


def conv_lstm_errors(spatial_shapes, kernel_size, padding, dtype):
  """Max abs differences to Flax of (outputs and final carry, gradients), through `from_flax`.

  One converted model runs on the inputs of every shape in ``spatial_shapes``.
  The gradients are those of a random linear function of the outputs and the
  final carries with respect to Flax's variables, the inputs and the initial
  carries.
  """
  rnn, variables, xs, carry0 = _conv_problem(spatial_shapes, kernel_size, padding, dtype)

  def flax_run(variables, xs, carry0):
    return [rnn.apply(variables, x, initial_carry=c, return_carry=True)
            for x, c in zip(xs, carry0)]

  def jaxrnn_run(variables, xs, carry0):
    # Through from_flax, so that the gradients come out in Flax's layout; one model for all.
    model, params = interop.from_flax(rnn, variables)
    out = []
    for x, c in zip(xs, carry0):
      final, ys = jaxrnn.unroll(model, params, x, interop.from_flax_carry(c), time_major=False)
      out.append((interop.to_flax_carry(final), ys))
    return out

  def both(*args):  # one compilation for all four, and the differences
    d_carry = _randomize(carry0, seed=7)
    d_ys = _randomize([jnp.zeros(x.shape[:-1] + (HC,), dtype) for x in xs], seed=8)

    def loss(run, *args):
      return sum(sum(jnp.sum(a * b) for a, b in zip(carry, d_c)) + jnp.sum(ys * d_y)
                 for (carry, ys), d_c, d_y in zip(run(*args), d_carry, d_ys))

    outputs = [flax_run(*args), jaxrnn_run(*args)]
    grads = [jax.grad(functools.partial(loss, run), (0, 1, 2))(*args)
             for run in (flax_run, jaxrnn_run)]
    max_abs = lambda a, b: jnp.max(jnp.stack([jnp.max(jnp.abs(x - y)) for x, y in zip(
        jax.tree.leaves(a), jax.tree.leaves(b))]))
    dtypes.extend(leaf.dtype for leaf in jax.tree.leaves((outputs[1], grads[1])))
    return max_abs(*outputs), max_abs(*grads)

  dtypes = []  # jaxrnn's outputs and gradients, seen while tracing
  outputs, grads = model_zoo.compiled(both, variables, xs, carry0)
  assert dtypes and all(d == dtype for d in dtypes), dtypes
  return float(outputs), float(grads)


class ConvLSTMFlaxTest(parameterized.TestCase):

  @parameterized.named_parameters(*CONV_SHAPES)
  def test_outputs_states_and_gradients_match_in_float64(self, spatial_shapes, kernel_size,
                                                         padding):
    jax.config.update("jax_enable_x64", True)
    outputs, grads = conv_lstm_errors(spatial_shapes, kernel_size, padding, jnp.float64)
    self.assertLessEqual(outputs, 1e-10)
    self.assertLessEqual(grads, 1e-10)

  def test_outputs_states_and_gradients_match_in_float32(self):
    outputs, grads = conv_lstm_errors(((4, 3),), (3, 2), "SAME", jnp.float32)
    self.assertLessEqual(outputs, 1e-5)
    self.assertLessEqual(grads, 1e-4)

  def test_cell_without_bias_matches(self):
    rnn, variables, (xs,), (carry0,) = _conv_problem(((4, 3),), (3, 3), "SAME", jnp.float32,
                                                     use_bias=False)
    carry, ys = jax.jit(functools.partial(rnn.apply, return_carry=True))(
        variables, xs, initial_carry=carry0)
    model, params = interop.from_flax(rnn, variables)
    final, our_ys = jaxrnn.unroll(model, params, xs, interop.from_flax_carry(carry0),
                                  time_major=False)
    np.testing.assert_allclose(our_ys, ys, **TOL)
    model_zoo.assert_trees_close(interop.to_flax_carry(final), carry, **TOL)
    np.testing.assert_array_equal(params.b_h, np.repeat([0.0, 1.0, 0.0, 0.0], HC))

  def test_round_trip_moves_only_the_constant_one(self):
    rnn, variables, _, _ = _conv_problem(((4, 3),), (3, 2), "SAME", jnp.float32)
    model, params = interop.from_flax(rnn, variables)
    self.assertEqual(model.spatial_dims, 2)
    back = interop.to_flax(model, params, rnn)["params"]["cell"]
    cell = variables["params"]["cell"]
    model_zoo.assert_trees_equal(back["ih"], cell["ih"])
    np.testing.assert_array_equal(back["hh"]["kernel"], cell["hh"]["kernel"])
    # Flax's forget bias (its third block) went through + 1 - 1 in float32; the rest is exact.
    np.testing.assert_array_equal(back["hh"]["bias"][:2 * HC], cell["hh"]["bias"][:2 * HC])
    np.testing.assert_array_equal(back["hh"]["bias"][3 * HC:], cell["hh"]["bias"][3 * HC:])
    np.testing.assert_allclose(back["hh"]["bias"], cell["hh"]["bias"], rtol=0, atol=1e-7)

  @parameterized.named_parameters(
      ("2d_no_bias", (4, 3), (3, 2), "SAME", False, lambda: nn.ConvLSTMCell(HC, (3, 2))),
      ("2d_causal", (4, 3), 3, [(2, 0), (2, 0)], True,
       lambda: nn.ConvLSTMCell(HC, (3, 3), padding=[(2, 0), (2, 0)])),
  )
  def test_jaxrnn_cell_runs_the_same_in_flax(self, spatial_shape, kernel_size, padding, bias,
                                             cell):
    model = jaxrnn.conv_lstm(HC, kernel_size=kernel_size, padding=padding, bias=bias,
                             forget_bias=1.0 if bias else 0.0)
    params = _randomize(model.init(jax.random.key(0), C), seed=3)
    rnn = nn.RNN(cell())
    xs = jax.random.normal(jax.random.key(4), (B, T) + spatial_shape + (C,))
    ys = jax.jit(rnn.apply)(interop.to_flax(model, params, rnn), xs)
    _, our_ys = jaxrnn.unroll(model, params, xs, time_major=False)
    np.testing.assert_allclose(our_ys, ys, **TOL)

  @parameterized.named_parameters(
      ("features", nn.ConvLSTMCell(HC + 1, (3, 3)), "^cell: expected features=3"),
      ("kernel_size", nn.ConvLSTMCell(HC, (3, 1)), r"^cell: expected kernel_size=\(3, 3\)"),
      ("padding", nn.ConvLSTMCell(HC, (3, 3), padding=[(2, 0), (1, 1)]),
       r"^cell: expected padding \[\[1, 1\], \[1, 1\]\]"),
      ("no_bias", nn.ConvLSTMCell(HC, (3, 3), use_bias=False), "^cell: expected use_bias=True"),
      ("strides", nn.ConvLSTMCell(HC, (3, 3), strides=(2, 2)), "^cell: expected a ConvLSTMCell"
       " with strides=None"),
      ("valid", nn.ConvLSTMCell(HC, (3, 3), padding="VALID"),
       "^cell: the ConvLSTMCell's padding: 'VALID' with kernel_size .* changes the spatial"),
      ("lstm_cell", nn.LSTMCell(HC), "^model: expected a jaxrnn lstm cell .*got conv_lstm"),
  )
  def test_cells_that_compute_something_else_are_rejected(self, cell, message):
    model = jaxrnn.conv_lstm(HC, kernel_size=3)
    error = TypeError if message.startswith("^model") else ValueError
    with self.assertRaisesRegex(error, message):
      interop.to_flax(model, model.init(jax.random.key(0), C), cell)

  def test_from_flax_refuses_a_circular_padding(self):
    cell = nn.ConvLSTMCell(HC, (3,), padding="CIRCULAR")
    with self.assertRaisesRegex(ValueError, "^module: the ConvLSTMCell's padding: expected"):
      interop.from_flax(cell, {"params": {}})


if __name__ == "__main__":
  absltest.main()
