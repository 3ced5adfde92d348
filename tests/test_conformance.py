"""`jaxrnn.testing.check_cell` on the model zoo, on a user's own cell, and on wrong cells."""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import model_zoo
from absl.testing import absltest
from absl.testing import parameterized

import jaxrnn
from jaxrnn import testing

_INPUT_SIZE = 2


class IndRNNParams(NamedTuple):
  """Parameters of the IndRNN, ``h' = tanh(x w + u * h + b)``.

  Attributes:
    w: ``[input_size, H]`` input weights.
    u: ``[H]`` recurrent weights, one per unit (a diagonal recurrent matrix).
    b: ``[H]`` bias.
  """
  w: jax.Array
  u: jax.Array
  b: jax.Array


def _indrnn_init(hidden_size):
  def init(key, input_size):
    k_w, k_u, k_b = jax.random.split(key, 3)
    bound = 1.0 / math.sqrt(hidden_size)
    return IndRNNParams(
        w=jax.random.uniform(k_w, (input_size, hidden_size), minval=-bound, maxval=bound),
        u=jax.random.uniform(k_u, (hidden_size,), minval=-1.0, maxval=1.0),
        b=jax.random.uniform(k_b, (hidden_size,), minval=-bound, maxval=bound))
  return init


def _indrnn_step(params, h, x):
  h = jnp.tanh(x @ params.w + params.u * h + params.b)
  return h, h


def _indrnn_vjp(params, h, x, h_new, d_h_new, d_y):
  """The backward by hand: ``d_pre = (d_h' + d_y) (1 - h'^2)``, then the chain rule."""
  d_pre = (d_h_new + d_y) * (1 - h_new ** 2)
  d_params = IndRNNParams(w=x.T @ d_pre, u=jnp.sum(d_pre * h, 0), b=jnp.sum(d_pre, 0))
  return d_params, d_pre * params.u, d_pre @ params.w.T


def _vjp_wrong_sign_on_d_u(params, h, x, h_new, d_h_new, d_y):
  d_params, d_h, d_x = _indrnn_vjp(params, h, x, h_new, d_h_new, d_y)
  return d_params._replace(u=-d_params.u), d_h, d_x


def _vjp_without_tanh_derivative_in_d_state(params, h, x, h_new, d_h_new, d_y):
  d_params, _, d_x = _indrnn_vjp(params, h, x, h_new, d_h_new, d_y)
  return d_params, (d_h_new + d_y) * params.u, d_x


def indrnn(hidden_size, step_vjp=_indrnn_vjp, initial_state=None):
  """An IndRNN (Li et al. 2018) written as a user would, with `jaxrnn.custom_cell`."""
  return jaxrnn.custom_cell(_indrnn_init(hidden_size), _indrnn_step, output_size=hidden_size,
                            initial_state=initial_state, step_vjp=step_vjp, name="indrnn")


def _skipped(report):
  return [name for name, _ in report.skipped]


class ModelZooTest(parameterized.TestCase):

  @parameterized.named_parameters((name, name) for name in sorted(model_zoo.MODELS))
  def test_every_model_passes(self, name):
    model = model_zoo.MODELS[name](3)
    # The stack's dropout is on: bptt, autodiff and finite differences all see the same masks.
    kwargs = {"unroll_kwargs": {"rng": jax.random.PRNGKey(5)}} if name == "stack" else {}
    report = testing.check_cell(model, _INPUT_SIZE, **kwargs)
    for check in ("grad_vs_finite_differences", "bptt_vs_autodiff", "grad_vs_autodiff",
                  "remat_vs_plain", "dtypes_float64", "dtypes_float32"):
      self.assertIn(check, report.passed)
    if name.startswith("bidirectional"):  # no single step to compare with
      self.assertCountEqual(_skipped(report), ["unroll_vs_step_loop", "batched_vs_unbatched_step"])
    else:
      self.assertEmpty(report.skipped)
    for check, error in report.max_errors.items():
      self.assertLessEqual(error, report.bounds[check])
    self.assertIn("passed", str(report))

  def test_mgu_without_reset_gate_passes(self):
    # The zoo's mgu has the reset gate; this is the other candidate formula.
    report = testing.check_cell(jaxrnn.mgu(3, reset_gate=False), _INPUT_SIZE)
    self.assertIn("bptt_vs_autodiff", report.passed)
    self.assertIn("grad_vs_finite_differences", report.passed)
    self.assertEmpty(report.skipped)


# Cells with options, checked here only: in model_zoo they would multiply every test.
_OPTION_CELLS = (
    ("lstm_peephole", lambda: jaxrnn.lstm(3, peephole=True)),
    ("lstm_proj", lambda: jaxrnn.lstm(4, proj_size=2)),
    ("lstm_layer_norm", lambda: jaxrnn.lstm(3, layer_norm=True)),
    ("min_gru", lambda: jaxrnn.min_gru(3)),
    ("min_lstm", lambda: jaxrnn.min_lstm(3)),
)


# Each built-in cell under each regulariser, with its masks drawn (rng given), once; every
# option variant of the cells is checked against autodiff in test_regularisers.py.
_REGULARISED_CELLS = (
    ("recurrent_dropout_rnn_relu",
     lambda: jaxrnn.recurrent_dropout(jaxrnn.rnn(3, activation="relu"), 0.3)),
    ("recurrent_dropout_lstm_peephole_proj",
     lambda: jaxrnn.recurrent_dropout(jaxrnn.lstm(4, peephole=True, proj_size=2), 0.3)),
    ("recurrent_dropout_gru_reset_before",
     lambda: jaxrnn.recurrent_dropout(jaxrnn.gru(3, reset_after=False), 0.3)),
    ("recurrent_dropout_mgu", lambda: jaxrnn.recurrent_dropout(jaxrnn.mgu(3), 0.3)),
    ("zoneout_rnn", lambda: jaxrnn.zoneout(jaxrnn.rnn(3), 0.3)),
    ("zoneout_lstm_layer_norm",
     lambda: jaxrnn.zoneout(jaxrnn.lstm(3, layer_norm=True), 0.3, cell_rate=0.5)),
    ("zoneout_gru", lambda: jaxrnn.zoneout(jaxrnn.gru(3), 0.3)),
    ("zoneout_mgu_no_reset_gate", lambda: jaxrnn.zoneout(jaxrnn.mgu(3, reset_gate=False), 0.3)),
)


class OptionCellsTest(parameterized.TestCase):

  @parameterized.named_parameters(*_OPTION_CELLS)
  def test_passes(self, make):
    report = testing.check_cell(make(), _INPUT_SIZE)
    self.assertEmpty(report.skipped)
    self.assertIn("bptt_vs_autodiff", report.passed)
    self.assertIn("grad_vs_finite_differences", report.passed)

  @parameterized.named_parameters(*_REGULARISED_CELLS)
  def test_regularised_passes_with_masks_drawn(self, make):
    report = testing.check_cell(make(), _INPUT_SIZE,
                                unroll_kwargs={"rng": jax.random.PRNGKey(5)})
    self.assertEmpty(report.skipped)
    self.assertIn("bptt_vs_autodiff", report.passed)
    self.assertIn("grad_vs_finite_differences", report.passed)
    self.assertIn("remat_vs_plain", report.passed)


# The convolutional LSTM, with its input shape (*spatial, C); small so that it stays fast.
# test_kernels.py adds one-step checks of even, asymmetric and 3-D kernels.
_CONV_CELLS = (
    ("conv_lstm_1d", lambda: jaxrnn.conv_lstm(2, spatial_dims=1, kernel_size=3), (5, 2)),
    ("conv_lstm_2d", lambda: jaxrnn.conv_lstm(2, kernel_size=(3, 2)),
     (4, 3, 2)),
    ("conv_lstm_2d_learned_state_stack", lambda: jaxrnn.learned_initial_state(jaxrnn.stack([
        jaxrnn.conv_lstm(2, kernel_size=3),
        jaxrnn.conv_lstm(1, kernel_size=1, bias=False, forget_bias=0.0)])),
     (3, 3, 2)),
    ("conv_lstm_1d_bidirectional", lambda: jaxrnn.bidirectional(
        jaxrnn.conv_lstm(2, spatial_dims=1, kernel_size=4, padding=[(2, 1)]),
        jaxrnn.conv_lstm(1, spatial_dims=1, kernel_size=3)), (4, 2)),
)


# The regularisers on the convolutional LSTM, with their masks drawn ([B, H, W, Hc]).
_REGULARISED_CONV_CELLS = (
    ("recurrent_dropout_conv_lstm_2d",
     lambda: jaxrnn.recurrent_dropout(jaxrnn.conv_lstm(2, kernel_size=(3, 2)), 0.3), (3, 2, 2)),
    ("zoneout_conv_lstm_1d",
     lambda: jaxrnn.zoneout(jaxrnn.conv_lstm(2, kernel_size=3, spatial_dims=1), 0.3,
                            cell_rate=0.5), (4, 2)),
)


class ConvLSTMTest(parameterized.TestCase):

  @parameterized.named_parameters(*_CONV_CELLS)
  def test_passes(self, make, input_shape):
    model = make()
    report = testing.check_cell(model, input_shape, seq_len=5)
    self.assertIn("bptt_vs_autodiff", report.passed)
    self.assertIn("grad_vs_finite_differences", report.passed)
    self.assertIn("dtypes_float32", report.passed)
    if isinstance(model.config, jaxrnn.BidirectionalConfig):
      self.assertCountEqual(_skipped(report), ["unroll_vs_step_loop", "batched_vs_unbatched_step"])
    else:
      self.assertEmpty(report.skipped)

  @parameterized.named_parameters(*_REGULARISED_CONV_CELLS)
  def test_regularised_passes_with_masks_drawn(self, make, input_shape):
    report = testing.check_cell(make(), input_shape, seq_len=4,
                                unroll_kwargs={"rng": jax.random.PRNGKey(5)})
    self.assertEmpty(report.skipped)
    self.assertIn("bptt_vs_autodiff", report.passed)
    self.assertIn("grad_vs_finite_differences", report.passed)

  def test_refuses_a_bad_input_shape(self):
    with self.assertRaisesRegex(ValueError, r"input_size: expected a positive int, or a shape"):
      testing.check_cell(jaxrnn.conv_lstm(2, spatial_dims=1, kernel_size=3), (4, 0))
    with self.assertRaisesRegex(ValueError, r"input_size: expected a shape \(\*spatial, C\) with 2"
                                r" spatial axes \(model.spatial_dims\), got \(4, 2\)"):
      testing.check_cell(jaxrnn.conv_lstm(2, kernel_size=3), (4, 2))


class CheckCellTest(parameterized.TestCase):

  def test_runs_in_float64_with_x64_off_and_turns_it_off_again(self):
    # Not `with jax.enable_x64(False)`, which JAX < 0.8 lacks; the conftest restores the flag.
    jax.config.update("jax_enable_x64", False)
    report = testing.check_cell(jaxrnn.rnn(2), 1, seq_len=3, batch_size=2)
    self.assertEqual(jnp.zeros(()).dtype, jnp.float32)
    self.assertIn("x64 was off", " ".join(report.notes))
    self.assertIn("grad_vs_finite_differences", report.passed)

  def test_a_step_that_disagrees_with_unroll_fails(self):
    cell = jaxrnn.rnn(3)

    def step(params, state, x):
      state, y = cell.step(params, state, x)
      return state * (1 + 1e-6), y

    with self.assertRaisesRegex(AssertionError, r"unroll_vs_step_loop \(.*relative error"):
      testing.check_cell(cell._replace(step=step), _INPUT_SIZE)

  def test_refuses_options_it_varies_itself(self):
    with self.assertRaisesRegex(ValueError, "reverse"):
      testing.check_cell(jaxrnn.lstm(2), 1, unroll_kwargs={"reverse": True})


class CustomCellTest(parameterized.TestCase):

  def test_indrnn_with_its_backward_passes(self):
    report = testing.check_cell(indrnn(4), _INPUT_SIZE)
    self.assertIn("bptt_vs_autodiff", report.passed)
    self.assertIn("batched_vs_unbatched_step", report.passed)
    self.assertEmpty(report.skipped)

  def test_indrnn_without_a_backward_passes_and_skips_bptt(self):
    report = testing.check_cell(indrnn(4, step_vjp=None), _INPUT_SIZE)
    self.assertEqual(_skipped(report), ["bptt_vs_autodiff"])
    self.assertIn("grad_vs_autodiff", report.passed)
    self.assertIn("grad_vs_finite_differences", report.passed)

  def test_indrnn_in_a_stack(self):
    report = testing.check_cell(jaxrnn.stack([indrnn(4), indrnn(3, step_vjp=None)]),
                                _INPUT_SIZE)
    self.assertEqual(_skipped(report), ["bptt_vs_autodiff"])  # one layer has no backward

  def test_indrnn_in_a_bidirectional_pair(self):
    report = testing.check_cell(jaxrnn.bidirectional(indrnn(4), indrnn(3)), _INPUT_SIZE)
    self.assertIn("bptt_vs_autodiff", report.passed)

  @parameterized.named_parameters(
      ("wrong_sign_on_d_u", _vjp_wrong_sign_on_d_u),
      ("missing_tanh_derivative", _vjp_without_tanh_derivative_in_d_state))
  def test_a_wrong_backward_fails(self, step_vjp):
    with self.assertRaisesRegex(AssertionError, r"bptt_vs_autodiff \(.*relative error") as cm:
      testing.check_cell(indrnn(4, step_vjp=step_vjp), _INPUT_SIZE)
    # jax.grad runs the same backward, so it disagrees with finite differences as well.
    self.assertIn("grad_vs_finite_differences", str(cm.exception))
    self.assertNotIn("unroll_vs_step_loop", str(cm.exception))

  def test_a_cell_that_upcasts_float32_fails_the_dtype_check(self):
    # A common slip: zeros in the default dtype, float64 under x64 whatever the parameters.
    zeros = lambda params, batch_size: jnp.zeros((4,) if batch_size is None else (batch_size, 4))
    with self.assertRaisesRegex(AssertionError, "dtypes_float32.*float64") as cm:
      testing.check_cell(indrnn(4, initial_state=zeros), _INPUT_SIZE)
    self.assertNotIn("bptt_vs_autodiff", str(cm.exception))


if __name__ == "__main__":
  absltest.main()
