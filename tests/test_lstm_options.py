"""The LSTM's options: what they start as, what they reduce to, and what they refuse.

Their backward is checked in test_kernels.py and test_conformance.py, and the
projection against PyTorch in test_interop_torch.py.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn
import model_zoo

T, B, I, H, P = 5, 3, 2, 4, 3


class PeepholeTest(parameterized.TestCase):

  def test_starts_at_zero(self):
    params = jaxrnn.lstm(H, peephole=True).init(jax.random.PRNGKey(0), I)
    np.testing.assert_array_equal(params.w_peep, np.zeros((3, H)))

  def test_zero_peepholes_give_the_plain_lstm(self):
    jax.config.update("jax_enable_x64", True)
    plain = jaxrnn.lstm(H)
    params = model_zoo.random_params(plain, jax.random.PRNGKey(1), I)
    xs = model_zoo.normal(jax.random.PRNGKey(2), (T, B, I))
    state = model_zoo.random_like(jax.random.PRNGKey(3), plain.initial_state(params, B))
    peephole = jaxrnn.lstm(H, peephole=True)
    with_peep = params._replace(w_peep=jnp.zeros((3, H)))
    lengths = jnp.array([T, 2, 0])
    want = jaxrnn.unroll(plain, params, xs, state, seq_lengths=lengths)
    got = jaxrnn.unroll(peephole, with_peep, xs, state, seq_lengths=lengths)
    model_zoo.assert_trees_close(got, want, rtol=1e-14, atol=1e-14)

  def test_nonzero_peepholes_change_the_outputs(self):
    model = jaxrnn.lstm(H, peephole=True)
    params = model.init(jax.random.PRNGKey(0), I)
    xs = model_zoo.normal(jax.random.PRNGKey(2), (T, B, I))
    _, ys = jaxrnn.unroll(model, params, xs)
    _, ys_peep = jaxrnn.unroll(model, params._replace(w_peep=params.w_peep + 0.5), xs)
    self.assertGreater(float(jnp.max(jnp.abs(ys - ys_peep))), 1e-4)


class ProjectionTest(parameterized.TestCase):

  @parameterized.named_parameters(("uniform", "uniform"), ("orthogonal", "orthogonal"))
  def test_shapes(self, recurrent_init):
    model = jaxrnn.lstm(H, proj_size=P, recurrent_init=recurrent_init)
    params = model.init(jax.random.PRNGKey(0), I)
    self.assertEqual(params.w_x.shape, (I, 4 * H))
    self.assertEqual(params.w_h.shape, (P, 4 * H))
    self.assertEqual(params.w_proj.shape, (H, P))
    self.assertEqual(model.output_size, P)
    state = model.initial_state(params, B)
    self.assertEqual((state.hidden.shape, state.cell.shape), ((B, P), (B, H)))
    final, ys = jaxrnn.unroll(model, params, jnp.ones((T, B, I)))
    self.assertEqual(ys.shape, (T, B, P))
    np.testing.assert_array_equal(final.hidden, ys[-1])

  def test_stacks_and_reads_in_both_directions(self):
    model = jaxrnn.stack([jaxrnn.bidirectional(jaxrnn.lstm(H, proj_size=P),
                                               jaxrnn.lstm(H, proj_size=P)),
                          jaxrnn.lstm(H, proj_size=2)])
    params = model.init(jax.random.PRNGKey(0), I)
    self.assertEqual(params.layers[1].w_x.shape, (2 * P, 4 * H))
    _, ys = jaxrnn.unroll(model, params, jnp.ones((T, B, I)))
    self.assertEqual(ys.shape, (T, B, 2))


class LayerNormTest(parameterized.TestCase):

  def test_starts_as_gains_of_one_and_offsets_of_zero(self):
    params = jaxrnn.lstm(H, layer_norm=True).init(jax.random.PRNGKey(0), I)
    for ln, n in ((params.ln_x, 4 * H), (params.ln_h, 4 * H), (params.ln_c, H)):
      np.testing.assert_array_equal(ln.scale, np.ones(n))
      np.testing.assert_array_equal(ln.offset, np.zeros(n))
    np.testing.assert_array_equal(params.b_x[H:2 * H], 1.0)

  @parameterized.named_parameters(("w_x", "w_x"), ("w_h", "w_h"))
  def test_scaling_a_weight_matrix_changes_nothing(self, name):
    jax.config.update("jax_enable_x64", True)
    model = jaxrnn.lstm(H, layer_norm=True)
    params = model_zoo.random_params(model, jax.random.PRNGKey(1), I, scale=1.0)
    xs = model_zoo.normal(jax.random.PRNGKey(2), (T, B, I))
    state = model_zoo.random_like(jax.random.PRNGKey(3), model.initial_state(params, B))
    # Exact but for the epsilon inside the square root (var + eps against var + eps / 9):
    # weights 10 times larger make the variances large beside it.
    params = params._replace(**{name: 10.0 * getattr(params, name)})
    scaled = params._replace(**{name: 3.0 * getattr(params, name)})
    want = jaxrnn.unroll(model, params, xs, state)
    model_zoo.assert_trees_close(jaxrnn.unroll(model, scaled, xs, state), want, rtol=0,
                                 atol=1e-4)
    # Without normalisation the same scaling does change the outputs.
    plain = jaxrnn.lstm(H)
    plain_params = jaxrnn.LSTMParams(params.w_x, params.w_h, params.b_x, params.b_h)
    _, ys = jaxrnn.unroll(plain, plain_params, xs, state)
    _, ys_scaled = jaxrnn.unroll(plain, plain_params._replace(**{name: 3.0 * getattr(params, name)}),
                                 xs, state)
    self.assertGreater(float(jnp.max(jnp.abs(ys - ys_scaled))), 1e-2)


class OptionErrorsTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("layer_norm_and_peephole", dict(layer_norm=True, peephole=True),
       "layer_norm=True does not combine with peephole=True"),
      ("layer_norm_and_proj_size", dict(layer_norm=True, proj_size=2),
       "layer_norm=True does not combine with .*proj_size=2"),
      ("proj_size_zero", dict(proj_size=0), "proj_size"),
      ("proj_size_float", dict(proj_size=2.0), "proj_size"),
  )
  def test_refused(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      jaxrnn.lstm(H, **kwargs)


if __name__ == "__main__":
  absltest.main()
