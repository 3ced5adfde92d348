"""Bad input: a clear TypeError or ValueError at trace time, naming the argument."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp

import jaxrnn

T, B, I, H = 4, 3, 2, 5


def _xs(*shape, dtype=jnp.float32):
  return jnp.zeros(shape, dtype)


class ValidationTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.model = jaxrnn.lstm(H)
    self.params = self.model.init(jax.random.PRNGKey(0), I)

  def assertRaisesOurs(self, error, pattern, fn):
    """``fn()`` raises ``error`` matching ``pattern``; returns the message."""
    with self.assertRaisesRegex(error, pattern) as info:
      fn()
    # No XLA internals: the message is ours, raised before anything compiles.
    self.assertNotIn("XlaRuntimeError", type(info.exception).__name__)
    return str(info.exception)

  def test_wrong_feature_size(self):
    msg = self.assertRaisesOurs(ValueError, r"xs: expected feature size 2", lambda: jaxrnn.unroll(
        self.model, self.params, _xs(T, B, 3)))
    self.assertIn("[4, 3, 3]", msg)

  def test_wrong_feature_size_in_step(self):
    model, params = self.model, self.params
    self.assertRaisesOurs(
        ValueError, r"x: lstm.step expected shape \[batch, 2\]",
        lambda: model.step(params, model.initial_state(params, B), _xs(B, 7)))

  @parameterized.named_parameters(("rank_2", (T, I)), ("rank_4", (T, B, 1, I)), ("rank_1", (I,)))
  def test_xs_not_rank_3(self, shape):
    msg = self.assertRaisesOurs(ValueError, r"xs: expected rank 3 \[T, B, F\]",
                                lambda: jaxrnn.unroll(self.model, self.params, _xs(*shape)))
    self.assertIn(str(list(shape)), msg)

  def test_batch_major_message_names_layout(self):
    self.assertRaisesOurs(ValueError, r"\[B, T, F\]", lambda: jaxrnn.unroll(
        self.model, self.params, _xs(T, I), time_major=False))

  def test_state_batch_differs_from_xs(self):
    state = self.model.initial_state(self.params, B + 1)
    msg = self.assertRaisesOurs(
        ValueError, r"state: batch size 4 does not match the batch size of xs, 3",
        lambda: jaxrnn.unroll(self.model, self.params, _xs(T, B, I), state))
    self.assertIn("float32[3, 5]", msg)
    self.assertIn("float32[4, 5]", msg)

  def test_state_pytree_does_not_match_model(self):
    model, params = self.model, self.params
    self.assertRaisesOurs(
        ValueError, r"state: expected a pytree like model.initial_state\(params, 3\)",
        lambda: jaxrnn.unroll(model, params, _xs(T, B, I), jnp.zeros((B, H))))
    bad = jaxrnn.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, H + 1)))
    self.assertRaisesOurs(ValueError, r"state: expected shapes", lambda: jaxrnn.unroll(
        model, params, _xs(T, B, I), bad))

  def test_seq_lengths_wrong_shape(self):
    model, params = self.model, self.params
    self.assertRaisesOurs(
        ValueError, r"seq_lengths: expected shape \[3\].*got \[2\]", lambda: jaxrnn.unroll(
            model, params, _xs(T, B, I), seq_lengths=jnp.array([1, 2])))
    self.assertRaisesOurs(
        ValueError, r"seq_lengths: expected shape \[3\].*got \[3, 1\]", lambda: jaxrnn.unroll(
            model, params, _xs(T, B, I), seq_lengths=jnp.ones((3, 1), jnp.int32)))

  def test_seq_lengths_wrong_dtype(self):
    self.assertRaisesOurs(
        TypeError, r"seq_lengths: expected an integer array.*float32", lambda: jaxrnn.unroll(
            self.model, self.params, _xs(T, B, I), seq_lengths=jnp.ones((B,))))

  @parameterized.named_parameters(("int32", jnp.int32), ("bool", jnp.bool_))
  def test_integer_or_boolean_xs(self, dtype):
    model, params = self.model, self.params
    self.assertRaisesOurs(TypeError, r"xs: expected a floating-point array.*embed them first",
                          lambda: jaxrnn.unroll(model, params, _xs(T, B, I, dtype=dtype)))
    self.assertRaisesOurs(TypeError, r"x: expected a floating-point array", lambda: model.step(
        params, model.initial_state(params, B), _xs(B, I, dtype=dtype)))

  def test_resets_wrong_shape(self):
    self.assertRaisesOurs(ValueError, r"resets: expected shape \[4, 3\]", lambda: jaxrnn.unroll(
        self.model, self.params, _xs(T, B, I), resets=jnp.zeros((B, T), bool)))

  def test_bptt_cotangent_shape(self):
    self.assertRaisesOurs(ValueError, r"d_ys: expected shape \[4, 3, 5\]", lambda: jaxrnn.bptt(
        self.model, self.params, _xs(T, B, I), None, jnp.zeros((T, B, H + 1))))

  def test_losses_never_broadcast(self):
    preds = _xs(T, B, 1)
    self.assertRaisesOurs(ValueError, r"targets: expected shape \[4, 3, 1\].*got \[4, 3\]",
                          lambda: jaxrnn.sequence_mse(preds, _xs(T, B)))
    self.assertRaisesOurs(
        ValueError, r"labels: expected shape \[4, 3\]",
        lambda: jaxrnn.sequence_cross_entropy(preds, jnp.zeros((T, 1), jnp.int32)))

  def test_bad_constructor_arguments(self):
    self.assertRaisesOurs(ValueError, r"hidden_size must be a positive int, got 0",
                          lambda: jaxrnn.lstm(0))
    self.assertRaisesOurs(ValueError, r"activation must be 'tanh' or 'relu'",
                          lambda: jaxrnn.rnn(3, activation="gelu"))
    self.assertRaisesOurs(ValueError, r"merge: expected one of", lambda: jaxrnn.bidirectional(
        jaxrnn.gru(2), jaxrnn.gru(2), merge="max"))
    self.assertRaisesOurs(ValueError, r"dropout: expected a probability", lambda: jaxrnn.stack(
        [jaxrnn.gru(2)], dropout=1.0))
    self.assertRaisesOurs(TypeError, r"model: expected a jaxrnn Model", lambda: jaxrnn.unroll(
        object(), None, _xs(T, B, I)))

  def test_checks_run_at_trace_time_under_jit(self):
    """Under jit the error comes from tracing; a good call traces once and reruns without checks."""
    model, params = self.model, self.params
    traces = []

    @jax.jit
    def run(params, xs):
      traces.append(1)
      return jaxrnn.unroll(model, params, xs)[1]

    self.assertRaisesOurs(ValueError, r"xs: expected feature size",
                          lambda: run(params, _xs(T, B, 3)))
    run(params, _xs(T, B, I))
    run(params, _xs(T, B, I) + 1)
    self.assertLen(traces, 2)


if __name__ == "__main__":
  absltest.main()
