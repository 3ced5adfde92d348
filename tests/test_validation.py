"""Bad input: a clear TypeError or ValueError at trace time, naming the argument."""

import jax
import jax.numpy as jnp
import pytest

import jaxrnn

T, B, I, H = 4, 3, 2, 5


@pytest.fixture(name="lstm")
def _lstm():
  model = jaxrnn.lstm(H)
  return model, model.init(jax.random.PRNGKey(0), I)


def _xs(*shape, dtype=jnp.float32):
  return jnp.zeros(shape, dtype)


def _raises(error, pattern, fn):
  with pytest.raises(error, match=pattern) as info:
    fn()
  # No XLA internals: the message is ours, raised before anything compiles.
  assert "XlaRuntimeError" not in type(info.value).__name__
  return str(info.value)


def test_wrong_feature_size(lstm):
  model, params = lstm
  msg = _raises(ValueError, r"xs: expected feature size 2", lambda: jaxrnn.unroll(
      model, params, _xs(T, B, 3)))
  assert "[4, 3, 3]" in msg


def test_wrong_feature_size_in_step(lstm):
  model, params = lstm
  _raises(ValueError, r"x: lstm.step expected shape \[batch, 2\]", lambda: model.step(
      params, model.initial_state(params, B), _xs(B, 7)))


@pytest.mark.parametrize("shape", [(T, I), (T, B, 1, I), (I,)])
def test_xs_not_rank_3(lstm, shape):
  model, params = lstm
  msg = _raises(ValueError, r"xs: expected rank 3 \[T, B, F\]", lambda: jaxrnn.unroll(
      model, params, _xs(*shape)))
  assert str(list(shape)) in msg


def test_batch_major_message_names_layout(lstm):
  model, params = lstm
  _raises(ValueError, r"\[B, T, F\]", lambda: jaxrnn.unroll(
      model, params, _xs(T, I), time_major=False))


def test_state_batch_differs_from_xs(lstm):
  model, params = lstm
  state = model.initial_state(params, B + 1)
  msg = _raises(ValueError, r"state: batch size 4 does not match the batch size of xs, 3",
                lambda: jaxrnn.unroll(model, params, _xs(T, B, I), state))
  assert "float32[3, 5]" in msg and "float32[4, 5]" in msg


def test_state_pytree_does_not_match_model(lstm):
  model, params = lstm
  _raises(ValueError, r"state: expected a pytree like model.initial_state\(params, 3\)",
          lambda: jaxrnn.unroll(model, params, _xs(T, B, I), jnp.zeros((B, H))))
  bad = jaxrnn.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, H + 1)))
  _raises(ValueError, r"state: expected shapes", lambda: jaxrnn.unroll(
      model, params, _xs(T, B, I), bad))


def test_seq_lengths_wrong_shape(lstm):
  model, params = lstm
  _raises(ValueError, r"seq_lengths: expected shape \[3\].*got \[2\]", lambda: jaxrnn.unroll(
      model, params, _xs(T, B, I), seq_lengths=jnp.array([1, 2])))
  _raises(ValueError, r"seq_lengths: expected shape \[3\].*got \[3, 1\]", lambda: jaxrnn.unroll(
      model, params, _xs(T, B, I), seq_lengths=jnp.ones((3, 1), jnp.int32)))


def test_seq_lengths_wrong_dtype(lstm):
  model, params = lstm
  _raises(TypeError, r"seq_lengths: expected an integer array.*float32", lambda: jaxrnn.unroll(
      model, params, _xs(T, B, I), seq_lengths=jnp.ones((B,))))


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_integer_or_boolean_xs(lstm, dtype):
  model, params = lstm
  _raises(TypeError, r"xs: expected a floating-point array.*embed them first",
          lambda: jaxrnn.unroll(model, params, _xs(T, B, I, dtype=dtype)))
  _raises(TypeError, r"x: expected a floating-point array", lambda: model.step(
      params, model.initial_state(params, B), _xs(B, I, dtype=dtype)))


def test_resets_wrong_shape(lstm):
  model, params = lstm
  _raises(ValueError, r"resets: expected shape \[4, 3\]", lambda: jaxrnn.unroll(
      model, params, _xs(T, B, I), resets=jnp.zeros((B, T), bool)))


def test_bptt_cotangent_shape(lstm):
  model, params = lstm
  _raises(ValueError, r"d_ys: expected shape \[4, 3, 5\]", lambda: jaxrnn.bptt(
      model, params, _xs(T, B, I), None, jnp.zeros((T, B, H + 1))))


def test_losses_never_broadcast():
  preds = _xs(T, B, 1)
  _raises(ValueError, r"targets: expected shape \[4, 3, 1\].*got \[4, 3\]",
          lambda: jaxrnn.sequence_mse(preds, _xs(T, B)))
  _raises(ValueError, r"labels: expected shape \[4, 3\]", lambda: jaxrnn.sequence_cross_entropy(
      preds, jnp.zeros((T, 1), jnp.int32)))


def test_bad_constructor_arguments():
  _raises(ValueError, r"hidden_size must be a positive int, got 0", lambda: jaxrnn.lstm(0))
  _raises(ValueError, r"activation must be 'tanh' or 'relu'", lambda: jaxrnn.rnn(3, activation="gelu"))
  _raises(ValueError, r"merge: expected one of", lambda: jaxrnn.bidirectional(
      jaxrnn.gru(2), jaxrnn.gru(2), merge="max"))
  _raises(ValueError, r"dropout: expected a probability", lambda: jaxrnn.stack(
      [jaxrnn.gru(2)], dropout=1.0))
  _raises(TypeError, r"model: expected a jaxrnn Model", lambda: jaxrnn.unroll(
      object(), None, _xs(T, B, I)))


def test_checks_run_at_trace_time_under_jit(lstm):
  """Under jit the error comes from tracing; a good call traces once and reruns without checks."""
  model, params = lstm
  traces = []

  @jax.jit
  def run(params, xs):
    traces.append(1)
    return jaxrnn.unroll(model, params, xs)[1]

  _raises(ValueError, r"xs: expected feature size", lambda: run(params, _xs(T, B, 3)))
  run(params, _xs(T, B, I))
  run(params, _xs(T, B, I) + 1)
  assert len(traces) == 2
