"""One step of every built-in cell's hand-derived backward, against autodiff.

A built-in cell's backward is two functions of its `jaxrnn.kernel.Kernel`:
``recur_bwd``, one reverse step, and ``param_grads``, the weight and input
gradients from the per-step gradients that ``recur_bwd`` returns. The
kernels are not exposed on the `Model`, so these tests isolate them with the
smallest sequence instead: T=1, from a random non-zero state, with random
cotangents for both the output and the final state, in float64. With one
step there is no time loop to accumulate through, so

- the gradient of the initial state is ``recur_bwd``'s ``d_state`` alone;
- the gradients of the parameters and of ``xs`` are ``param_grads`` of
  ``recur_bwd``'s ``d_pre``.

Each leaf of each is compared on its own with `jax.vjp` of
``unroll(..., backward="autodiff")``, so a failure names the function to
read: a wrong ``d_state`` is ``recur_bwd``; a right ``d_state`` beside a
wrong parameter gradient is ``param_grads`` (or the ``d_pre`` it was given).
`ElmanKernelTest` breaks each function on purpose and checks that the
comparison notices, and where. The time loop around the kernels (masks,
resets, reversal, remat) is test_bptt.py's business.
"""

import functools
from typing import NamedTuple, Optional

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn
import model_zoo

B, I, H = 3, 2, 4
RTOL = 1e-12

# Every option that changes a built-in kernel's equations. ``dtype`` is the
# matmuls' compute dtype: None multiplies as is, float64 takes the casting
# route at full precision.
OPTIONS = (
    ("rnn_no_bias", lambda: jaxrnn.rnn(H, bias=False)),
    ("rnn_relu_no_bias", lambda: jaxrnn.rnn(H, activation="relu", bias=False)),
    ("lstm_no_bias", lambda: jaxrnn.lstm(H, bias=False, forget_bias=0.0)),
    ("gru_no_bias", lambda: jaxrnn.gru(H, bias=False)),
    ("gru_reset_before_no_bias", lambda: jaxrnn.gru(H, reset_after=False, bias=False)),
    ("mgu_no_bias", lambda: jaxrnn.mgu(H, bias=False)),
    ("mgu_no_reset_gate", lambda: jaxrnn.mgu(H, reset_gate=False)),
    ("mgu_no_reset_gate_no_bias", lambda: jaxrnn.mgu(H, reset_gate=False, bias=False)),
    ("rnn_dtype_none", lambda: jaxrnn.rnn(H, dtype=None)),
    ("rnn_dtype_float64", lambda: jaxrnn.rnn(H, dtype=jnp.float64)),
    ("rnn_relu_dtype_float64", lambda: jaxrnn.rnn(H, activation="relu", dtype=jnp.float64)),
    ("lstm_dtype_float64", lambda: jaxrnn.lstm(H, dtype=jnp.float64)),
    ("gru_dtype_float64", lambda: jaxrnn.gru(H, dtype=jnp.float64)),
    ("gru_reset_before_dtype_float64",
     lambda: jaxrnn.gru(H, reset_after=False, dtype=jnp.float64)),
    ("mgu_dtype_float64", lambda: jaxrnn.mgu(H, dtype=jnp.float64)),
    ("mgu_no_reset_gate_dtype_float64",
     lambda: jaxrnn.mgu(H, reset_gate=False, dtype=jnp.float64)),
    ("lstm_peephole", lambda: jaxrnn.lstm(H, peephole=True)),
    ("lstm_proj", lambda: jaxrnn.lstm(H, proj_size=2)),
    ("lstm_peephole_proj_no_bias",
     lambda: jaxrnn.lstm(H, peephole=True, proj_size=3, bias=False, forget_bias=0.0)),
    ("lstm_peephole_proj_dtype_float64",
     lambda: jaxrnn.lstm(H, peephole=True, proj_size=2, dtype=jnp.float64)),
    ("lstm_layer_norm", lambda: jaxrnn.lstm(H, layer_norm=True)),
    ("min_gru", lambda: jaxrnn.min_gru(H)),
    ("min_gru_linear_no_bias", lambda: jaxrnn.min_gru(H, log_space=False, bias=False)),
    ("min_lstm", lambda: jaxrnn.min_lstm(H)),
    ("min_lstm_linear_dtype_float64", lambda: jaxrnn.min_lstm(H, log_space=False,
                                                              dtype=jnp.float64)),
    ("lstm_layer_norm_no_bias_dtype_float64",
     lambda: jaxrnn.lstm(H, layer_norm=True, bias=False, forget_bias=0.0, dtype=jnp.float64)),
)


def one_step_errors(model, seed=0, spatial_shape=()):
  """``{gradient leaf: relative error}`` of `bptt` against autodiff over one step.

  All in one compiled call: op by op, every new shape would compile on its own.
  """
  def errors():
    k_params, k_xs, k_state, k_final, k_ys = jax.random.split(jax.random.PRNGKey(seed), 5)
    params = model_zoo.random_params(model, k_params, I)
    xs = jax.random.normal(k_xs, (1, B) + tuple(spatial_shape) + (I,))
    spatial = {"spatial_shape": tuple(spatial_shape)} if model.spatial_dims else {}
    state = model_zoo.random_like(k_state, model.initial_state(params, B, **spatial))
    autodiff = functools.partial(jaxrnn.unroll, model, backward="autodiff")
    (final, ys), vjp = jax.vjp(autodiff, params, xs, state)
    d_final = model_zoo.random_like(k_final, final)
    d_ys = model_zoo.random_like(k_ys, ys)
    got = jaxrnn.bptt(model, params, xs, state, d_ys, d_final)
    want = vjp((d_final, d_ys))
    out = {}
    for name, g, w in zip(("d_params", "d_xs", "d_state"), got, want):
      got_leaves, _ = jax.tree_util.tree_flatten_with_path(g)
      want_leaves, want_def = jax.tree_util.tree_flatten_with_path(w)
      if jax.tree.structure(g) != want_def:
        raise AssertionError(f"{name}: structure {jax.tree.structure(g)} != {want_def}")
      for (path, a), (_, b) in zip(got_leaves, want_leaves):
        scale = jnp.maximum(jnp.max(jnp.abs(b)), 1e-300)
        out[name + jax.tree_util.keystr(path)] = jnp.max(jnp.abs(a - b)) / scale
    return out

  return {name: float(err) for name, err in model_zoo.compiled(errors).items()}


def assert_one_step_backward_matches_autodiff(model, spatial_shape=()):
  errors = one_step_errors(model, spatial_shape=spatial_shape)
  bad = {name: err for name, err in errors.items() if not err <= RTOL}
  if bad:
    raise AssertionError(f"relative errors above {RTOL}: {bad} (all: {errors})")


class BuiltInKernelTest(parameterized.TestCase):

  @parameterized.named_parameters(model_zoo.named(sorted(model_zoo.CELLS)))
  def test_one_step(self, name):
    jax.config.update("jax_enable_x64", True)
    assert_one_step_backward_matches_autodiff(model_zoo.CELLS[name](H))

  @parameterized.named_parameters(*OPTIONS)
  def test_one_step_with_option(self, make):
    jax.config.update("jax_enable_x64", True)
    assert_one_step_backward_matches_autodiff(make())


# The convolutional LSTM: the transposed convolution (d_state, d_xs) and the kernel gradients
# as convolutions, on 1, 2 and 3 spatial axes, with odd, even and asymmetric paddings, each
# with the spatial shape of its inputs.
CONV_OPTIONS = (
    ("conv_1d", lambda: jaxrnn.conv_lstm(H, spatial_dims=1, kernel_size=3), (5,)),
    ("conv_1d_causal_padding",
     lambda: jaxrnn.conv_lstm(H, spatial_dims=1, kernel_size=3, padding=[(2, 0)]), (5,)),
    ("conv_2d_even_kernel_no_bias", lambda: jaxrnn.conv_lstm(
        H, kernel_size=(2, 3), bias=False, forget_bias=0.0), (4, 3)),
    ("conv_3d", lambda: jaxrnn.conv_lstm(2, spatial_dims=3, kernel_size=(3, 1, 2)), (3, 2, 3)),
)


class ConvLSTMKernelTest(parameterized.TestCase):

  @parameterized.named_parameters(*CONV_OPTIONS)
  def test_one_step(self, make, spatial_shape):
    jax.config.update("jax_enable_x64", True)
    assert_one_step_backward_matches_autodiff(make(), spatial_shape)


# --- the check catches a broken kernel -----------------------------------------


class ElmanParams(NamedTuple):
  """Parameters of `_elman`: ``h' = tanh(x w_x + h w_h + b)``.

  Attributes:
    w_x: ``[input_size, H]`` input weights.
    w_h: ``[H, H]`` recurrent weights.
    b: ``[H]`` bias.
  """
  w_x: jax.Array
  w_h: jax.Array
  b: jax.Array


class ElmanConfig(NamedTuple):
  """What `_elman` was built with: its size and which function it breaks."""
  hidden_size: int
  bug: Optional[str]


def _elman(hidden_size, *, bug=None):
  """A tanh RNN as a `jaxrnn.kernel.Kernel`, built with the public kit only.

  ``bug="recur_bwd"`` drops tanh's derivative ``1 - h^2`` from the reverse
  step; ``bug="param_grads"`` takes ``dL/dW_h`` as ``delta^T h`` instead of
  ``h^T delta`` (the right shape, the wrong matrix).
  """

  def init(key, input_size):
    k_x, k_h, k_b = jax.random.split(key, 3)
    bound = 1 / np.sqrt(hidden_size)
    uniform = lambda k, shape: jax.random.uniform(k, shape, minval=-bound, maxval=bound)
    return ElmanParams(uniform(k_x, (input_size, hidden_size)),
                       uniform(k_h, (hidden_size, hidden_size)), uniform(k_b, (hidden_size,)))

  def initial_state(params, batch_size):
    shape = (hidden_size,) if batch_size is None else (batch_size, hidden_size)
    return jnp.zeros(shape, params.w_h.dtype)

  def project(params, xs, one_step=False):
    del one_step  # the same matmul for one step and for a whole sequence
    return xs @ params.w_x + params.b

  def recur(params, h, gx):
    return jnp.tanh(gx + h @ params.w_h), ()

  def recur_bwd(params, w_h_t, h, h_new, res, d_h_new, d_y):
    g = d_h_new + d_y
    delta = g if bug == "recur_bwd" else g * (1 - h_new * h_new)
    return jaxrnn.kernel.StepGrads(d_state=delta @ w_h_t, d_pre=delta)

  def param_grads(params, xs, hs, res, delta):
    if bug == "param_grads":
      d_w_h = jnp.einsum("tbh,tbk->hk", delta, hs)
    else:
      d_w_h = jnp.einsum("tbh,tbk->hk", hs, delta)
    d_params = ElmanParams(jnp.einsum("tbi,tbh->ih", xs, delta), d_w_h, delta.sum((0, 1)))
    return d_params, delta @ params.w_x.T

  kernel = jaxrnn.kernel.Kernel(
      project=project, recur=recur, output=lambda h, res: h, recur_bwd=recur_bwd,
      param_grads=param_grads, transposed_weights=lambda params: params.w_h.T,
      grad_norm=jaxrnn.kernel.hidden_grad_norm(lambda h: h))
  return jaxrnn.kernel.kernel_cell(
      kernel, init=init, initial_state=initial_state, input_size=lambda p: p.w_x.shape[0],
      output_size=hidden_size, config=ElmanConfig(hidden_size, bug), name="elman")


class ElmanKernelTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    jax.config.update("jax_enable_x64", True)

  def test_correct_kernel_passes(self):
    assert_one_step_backward_matches_autodiff(_elman(H))

  def test_recur_bwd_without_tanh_derivative_is_caught_in_d_state(self):
    errors = one_step_errors(_elman(H, bug="recur_bwd"))
    self.assertGreater(errors["d_state"], 1e-3, errors)
    with self.assertRaisesRegex(AssertionError, r"relative errors above"):
      assert_one_step_backward_matches_autodiff(_elman(H, bug="recur_bwd"))

  def test_transposed_weight_gradient_is_caught_in_param_grads_only(self):
    errors = one_step_errors(_elman(H, bug="param_grads"))
    self.assertGreater(errors["d_params.w_h"], 1e-3, errors)
    right = {name: err for name, err in errors.items() if name != "d_params.w_h"}
    self.assertLessEqual(max(right.values()), RTOL, errors)


if __name__ == "__main__":
  absltest.main()
