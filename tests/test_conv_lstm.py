"""`jaxrnn.conv_lstm` beyond `check_cell`: layouts, clipping, norms, readout and bad input.

`check_cell` (test_conformance.py) runs the cell, its stack, bidirectional pair and
learned initial state through seq_lengths, reverse, resets and remat; test_kernels.py
checks one step of its backward; test_interop_flax.py compares it with Flax. This file
covers what those do not: the batch-major layout, state-gradient clipping, the
per-step gradient norms, the readout over spatial outputs, one model at several
spatial sizes, the learned initial state per channel, and the errors.
"""

import functools

import jax
import jax.numpy as jnp
import model_zoo
import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

import jaxrnn

T, B, C, HC = 5, 3, 2, 3
SPATIAL = (4, 3)


def _problem(seed=0, spatial=SPATIAL):
  cell = jaxrnn.conv_lstm(HC, kernel_size=3, spatial_dims=len(spatial))
  k_params, k_xs = jax.random.split(jax.random.PRNGKey(seed))
  params = model_zoo.random_params(cell, k_params, C)
  xs = model_zoo.normal(k_xs, (T, B) + spatial + (C,))
  return cell, params, xs


class LayoutAndOptionsTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    jax.config.update("jax_enable_x64", True)

  def test_batch_major_is_the_transpose_of_time_major(self):
    cell, params, xs = _problem()
    lengths = jnp.array([T, 2, 0])
    final, ys = jaxrnn.unroll(cell, params, xs, seq_lengths=lengths)
    final_bm, ys_bm = jaxrnn.unroll(cell, params, jnp.swapaxes(xs, 0, 1), seq_lengths=lengths,
                                    time_major=False)
    np.testing.assert_array_equal(jnp.swapaxes(ys_bm, 0, 1), ys)
    model_zoo.assert_trees_equal(final_bm, final)
    self.assertEqual(ys.shape, (T, B) + SPATIAL + (HC,))
    np.testing.assert_array_equal(ys[2:, 1], 0.0)  # padding outputs zeros

  @parameterized.named_parameters(
      ("value", jaxrnn.clip_state_grad_by_value(0.05)),
      ("norm", jaxrnn.clip_state_grad_by_norm(0.3)))
  def test_state_grad_clip_bptt_matches_autodiff_and_changes_the_gradient(self, clip):
    cell, params, xs = _problem(seed=1)

    def loss(params, xs, backward, clip):
      _, ys = jaxrnn.unroll(cell, params, xs, backward=backward, state_grad_clip=clip)
      return jnp.sum(ys * jnp.cos(xs[..., :1]))

    grad = jax.grad(loss, (0, 1))
    clipped = grad(params, xs, "bptt", clip)
    self.assertLessEqual(model_zoo.max_rel_error(clipped, grad(params, xs, "autodiff", clip)),
                         1e-12)
    self.assertGreater(model_zoo.max_rel_error(clipped, grad(params, xs, "bptt", None)), 1e-3)

  def test_norm_clip_is_per_sequence_over_all_positions(self):
    # One sequence's large gradient must not shrink another's.
    cell, params, xs = _problem(seed=2)
    weights = jnp.zeros((T, B) + SPATIAL + (HC,)).at[:, 0].set(100.0).at[:, 1].set(1e-3)
    clip = jaxrnn.clip_state_grad_by_norm(1.0)
    loss = lambda xs, clip: jnp.sum(jaxrnn.unroll(cell, params, xs, state_grad_clip=clip)[1]
                                    * weights)
    clipped, plain = (jax.grad(loss)(xs, c) for c in (clip, None))
    np.testing.assert_allclose(clipped[:, 1], plain[:, 1], rtol=1e-12)
    self.assertGreater(float(jnp.max(jnp.abs(clipped[:-1, 0] - plain[:-1, 0]))), 1.0)

  def test_hidden_grad_norms_are_per_step_and_sequence(self):
    cell, params, xs = _problem(seed=3)
    lengths = jnp.array([T, 2, 0])
    final, ys = jaxrnn.unroll(cell, params, xs, seq_lengths=lengths)
    d_ys = model_zoo.random_like(jax.random.PRNGKey(4), ys)
    *_, norms = jaxrnn.bptt(cell, params, xs, None, d_ys, seq_lengths=lengths,
                            return_hidden_grad_norms=True)
    self.assertEqual(norms.shape, (T, B))
    # At the last step only the output's gradient reaches h_T.
    np.testing.assert_allclose(norms[-1, 0], jnp.sqrt(jnp.sum(d_ys[-1, 0] ** 2)), rtol=1e-12)
    np.testing.assert_array_equal(norms[2:, 1], 0.0)
    np.testing.assert_array_equal(norms[:, 2], 0.0)

  def test_dense_readout_acts_at_every_position(self):
    cell, params, xs = _problem(seed=5)
    _, ys = jaxrnn.unroll(cell, params, xs)
    readout = jaxrnn.dense(2)
    r_params = readout.init(jax.random.PRNGKey(6), HC)
    out = readout.apply(r_params, ys, seq_lengths=jnp.array([T, 1, 3]))
    self.assertEqual(out.shape, (T, B) + SPATIAL + (2,))
    np.testing.assert_allclose(out[0, 0], ys[0, 0] @ r_params.w + r_params.b, rtol=1e-12)
    np.testing.assert_array_equal(out[1:, 1], 0.0)

  def test_unbatched_step_reads_one_frame(self):
    cell, params, xs = _problem(seed=7)
    state, y = cell.step(params, cell.initial_state(params, None, spatial_shape=SPATIAL),
                         xs[0, 0])
    self.assertEqual(y.shape, SPATIAL + (HC,))
    self.assertEqual(state.cell.shape, SPATIAL + (HC,))
    _, ys = jaxrnn.unroll(cell, params, xs[:1, :1])
    np.testing.assert_allclose(y, ys[0, 0], rtol=1e-12)


class SpatialSizeTest(parameterized.TestCase):
  """The spatial sizes come from the inputs: one model runs at any of them."""

  def setUp(self):
    super().setUp()
    jax.config.update("jax_enable_x64", True)

  def test_one_model_at_two_sizes_is_the_same_cell_at_each_position(self):
    # A 1x1 kernel makes every position an independent LSTM with the same weights, so the
    # outputs at any size are those of jaxrnn.lstm run on each position as a sequence.
    cell = jaxrnn.conv_lstm(HC, kernel_size=1)
    params = model_zoo.random_params(cell, jax.random.PRNGKey(0), C)
    lstm = jaxrnn.lstm(HC)
    dense = jaxrnn.LSTMParams(params.w_x[0, 0], params.w_h[0, 0], params.b_x, params.b_h)
    for seed, spatial in enumerate(((2, 3), (3, 1))):
      xs = model_zoo.normal(jax.random.PRNGKey(seed + 1), (T, B) + spatial + (C,))
      final, ys = jaxrnn.unroll(cell, params, xs)
      flat = xs.reshape(T, -1, C)
      want_final, want_ys = jaxrnn.unroll(lstm, dense, flat)
      np.testing.assert_allclose(ys.reshape(T, -1, HC), want_ys, rtol=1e-12, atol=1e-12)
      np.testing.assert_allclose(final.cell.reshape(-1, HC), want_final.cell, rtol=1e-12,
                                 atol=1e-12)

  def test_state_follows_the_inputs(self):
    cell, params, _ = _problem()
    for spatial in ((2, 5), (1, 1)):
      xs = jnp.ones((2, 1) + spatial + (C,))
      final, ys = jaxrnn.unroll(cell, params, xs)
      self.assertEqual(final.hidden.shape, (1,) + spatial + (HC,))
      self.assertEqual(ys.shape, (2, 1) + spatial + (HC,))


class LearnedInitialStateTest(parameterized.TestCase):
  """`learned_initial_state` of a conv_lstm learns one state per channel."""

  def setUp(self):
    super().setUp()
    jax.config.update("jax_enable_x64", True)

  def _model(self):
    model = jaxrnn.learned_initial_state(jaxrnn.conv_lstm(HC, kernel_size=(3, 2)))
    params = model_zoo.random_params(model, jax.random.PRNGKey(0), C)  # a nonzero state
    return model, params

  def test_state_is_per_channel_and_broadcast_over_space(self):
    model, params = self._model()
    self.assertEqual(params.initial_state.hidden.shape, (HC,))
    self.assertEqual(params.initial_state.cell.shape, (HC,))
    state = model.initial_state(params, B, spatial_shape=(2, 5))
    self.assertEqual(state.hidden.shape, (B, 2, 5, HC))
    np.testing.assert_array_equal(state.cell[1, 1, 4], params.initial_state.cell)
    with self.assertRaisesRegex(ValueError, r"spatial_shape: learned_initial_state.initial_state"
                                r" expected the sizes of the 2 spatial axes .*got \(\)"):
      model.initial_state(params, B)

  def test_gradient_is_the_sum_over_batch_and_space(self):
    model, params = self._model()
    xs = model_zoo.normal(jax.random.PRNGKey(1), (3, 2, 3, 2, C))
    lengths = jnp.array([3, 1])
    loss = lambda p, s: jnp.sum(jnp.sin(jaxrnn.unroll(model, p, xs, s, seq_lengths=lengths)[1]))
    learned = lambda s: loss(params._replace(initial_state=s), None)
    directions = [model_zoo.random_like(jax.random.PRNGKey(k), params.initial_state)
                  for k in (2, 3)]
    eps = 1e-5

    def grads(s0):
      state = model.initial_state(params._replace(initial_state=s0), 2, spatial_shape=(3, 2))
      shifted = lambda v, h: jax.tree.map(lambda a, b: a + h * b, s0, v)
      central = [(learned(shifted(v, eps)) - learned(shifted(v, -eps))) / (2 * eps)
                 for v in directions]
      return jax.grad(learned)(s0), jax.grad(loss, argnums=1)(params, state), central

    g_learned, g_state, central = model_zoo.compiled(grads, params.initial_state)
    self.assertGreater(float(jnp.abs(g_learned.hidden).sum()), 0)
    # The gradient that reaches the broadcast state, summed over the batch and the positions.
    model_zoo.assert_trees_close(g_learned, jax.tree.map(lambda g: g.sum((0, 1, 2)), g_state),
                                 1e-12, 1e-12)
    for v, c in zip(directions, central):  # against central differences along two directions
      along = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree.leaves(g_learned),
                                                       jax.tree.leaves(v)))
      self.assertAlmostEqual(along, float(c), delta=1e-7 * max(1.0, abs(along)))


class BadInputTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("valid_padding", dict(kernel_size=3, padding="VALID"), r"padding: 'VALID' with kernel_size"
       r" \[3, 3\] changes the spatial shape.*low \+ high = kernel size - 1, i.e. \[2, 2\]"),
      ("wide_padding", dict(kernel_size=3, padding=[(1, 2), (1, 1)]),
       r"padding: .* changes the spatial shape"),
      ("circular_padding", dict(kernel_size=3, padding="CIRCULAR"),
       "padding: expected 'SAME', 'VALID' or one"),
      ("kernel_size", dict(kernel_size=(3,)), r"kernel_size: expected a positive int or 2"
       r" positive ints \(one per spatial axis, spatial_dims=2\), got \(3,\)"),
      ("zero_kernel", dict(kernel_size=0), "kernel_size: expected a positive int"),
      ("spatial_dims_zero", dict(kernel_size=3, spatial_dims=0),
       r"spatial_dims: expected 1, 2 or 3 \(the number of spatial axes of the inputs"
       r" \[T, B, \*spatial, C\]\), got 0"),
      ("spatial_dims_four", dict(kernel_size=3, spatial_dims=4), "spatial_dims: expected 1, 2 or 3"),
      ("spatial_dims_bool", dict(kernel_size=3, spatial_dims=True),
       "spatial_dims: expected 1, 2 or 3"),
      ("forget_bias_without_bias", dict(kernel_size=3, bias=False), "forget_bias needs bias=True"),
  )
  def test_construction_refuses(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      jaxrnn.conv_lstm(HC, **kwargs)

  def test_hidden_channels_must_be_positive(self):
    with self.assertRaisesRegex(ValueError, "hidden_channels must be a positive int, got 0"):
      jaxrnn.conv_lstm(0, kernel_size=3)

  def test_valid_padding_with_a_1x1_kernel_keeps_the_shape(self):
    cell = jaxrnn.conv_lstm(HC, kernel_size=1, padding="VALID")
    self.assertEqual(cell.config.padding, ((0, 0), (0, 0)))

  @parameterized.named_parameters(
      ("missing", {}, r"got \(\)"),
      ("rank", dict(spatial_shape=(4,)), r"got \(4,\)"),
      ("zero", dict(spatial_shape=(4, 0)), r"got \(4, 0\)"),
      ("not_ints", dict(spatial_shape=4), "got 4"),
  )
  def test_initial_state_needs_the_spatial_shape(self, kwargs, got):
    cell, params, _ = _problem()
    with self.assertRaisesRegex(ValueError, r"spatial_shape: conv_lstm.initial_state expected the"
                                r" sizes of the 2 spatial axes of the inputs \(2 positive ints,"
                                r" e.g. spatial_shape=xs.shape\[2:-1\] .*" + got):
      cell.initial_state(params, B, **kwargs)

  @parameterized.named_parameters(
      ("rank", (T, B, 4, C), r"xs: expected rank 5 \[T, B, H, W, C\] \(time_major=True, the"
       r" model's spatial_dims=2\), got shape \[5, 3, 4, 2\] of rank 4"),
      ("channels", (T, B, 4, 3, C + 1), r"xs: expected feature size 2 \(read from params\)"),
      ("empty_axis", (T, B, 0, 3, C), r"xs: expected spatial axes of size 1 or more"),
  )
  def test_unroll_refuses_xs(self, shape, message):
    cell, params, _ = _problem()
    with self.assertRaisesRegex(ValueError, message):
      jaxrnn.unroll(cell, params, jnp.zeros(shape))

  def test_step_refuses_x(self):
    cell, params, _ = _problem()
    state = cell.initial_state(params, None, spatial_shape=SPATIAL)
    with self.assertRaisesRegex(ValueError, r"x: conv_lstm.step expected shape \[batch, H, W, 2\]"
                                r" or \[H, W, 2\] .*got \[4, 2\]"):
      cell.step(params, state, jnp.zeros((4, 2)))

  def test_state_of_another_spatial_shape_is_refused(self):
    cell, params, xs = _problem()
    other = cell.initial_state(params, B, spatial_shape=(3, 3))
    with self.assertRaisesRegex(ValueError, r"^state: spatial shape \[3, 3\] does not match the"
                                r" spatial shape of xs, \[4, 3\]"):
      jaxrnn.unroll(cell, params, xs, other)
    with self.assertRaisesRegex(ValueError, r"^state: spatial shape \[3, 3\] does not match the"
                                r" spatial shape of x, \[4, 3\]"):
      cell.step(params, other, xs[0])

  @parameterized.named_parameters(
      ("stack", functools.partial(jaxrnn.stack), "layers: expected models with the same"
       r" spatial_dims .*got \[2, 0\]"),
      ("bidirectional", lambda ms: jaxrnn.bidirectional(*ms), "bidirectional: expected models"
       r" with the same spatial_dims"),
  )
  def test_composites_refuse_mixed_spatial_dims(self, make, message):
    with self.assertRaisesRegex(ValueError, message):
      make([jaxrnn.conv_lstm(HC, kernel_size=3), jaxrnn.lstm(HC)])
    with self.assertRaisesRegex(ValueError, r"got \[2, 1\]"):
      make([jaxrnn.conv_lstm(HC, kernel_size=3), jaxrnn.conv_lstm(HC, kernel_size=3,
                                                                   spatial_dims=1)])


if __name__ == "__main__":
  absltest.main()
