"""unroll against independent routes to the same answer."""

import functools
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import hypothesis
import hypothesis.strategies as st
import jax
import jax.test_util
import jax.numpy as jnp
import numpy as np

import jaxrnn
from jaxrnn._src import recurrence
import model_zoo

SHAPES = [("T1", (1, 1, 1, 1)), ("T5", (5, 3, 2, 4)), ("B1_H1", (4, 1, 3, 1))]  # T, B, I, H
STEPPABLE = [m for m in model_zoo.MODELS if not m.startswith("bidirectional")]
MODEL_NAMES = model_zoo.named(sorted(model_zoo.MODELS))
REVERSE = [("forward", False), ("reverse", True)]


def setup(name, shape, seed=0):
  T, B, I, H = shape
  model = model_zoo.MODELS[name](H)
  key = jax.random.PRNGKey(seed)
  params = model_zoo.random_params(model, key, I)
  xs = model_zoo.normal(jax.random.fold_in(key, 1), (T, B, I))
  return model, params, xs


def _batch_slice(tree, b):
  return jax.tree.map(lambda a: a[b:b + 1], tree)


class UnrollTest(parameterized.TestCase):

  @parameterized.named_parameters(model_zoo.combined_named_parameters(
      model_zoo.named(STEPPABLE), SHAPES))
  def test_matches_python_loop_over_step(self, name, shape):
    model, params, xs = setup(name, shape)
    state = model.initial_state(params, xs.shape[1])
    want = model_zoo.python_loop(model.step, params, xs, state)
    got = jaxrnn.unroll(model, params, xs)
    model_zoo.assert_trees_close(got, want, rtol=1e-5, atol=1e-6)

  @hypothesis.settings(max_examples=12, deadline=None)
  @hypothesis.given(name=st.sampled_from(sorted(model_zoo.CELLS)), T=st.integers(1, 6),
                    B=st.integers(1, 4), I=st.integers(1, 5), H=st.integers(1, 6),
                    seed=st.integers(0, 2**16))
  def test_matches_python_loop_random_shapes(self, name, T, B, I, H, seed):
    model, params, xs = setup(name, (T, B, I, H), seed)
    state = model_zoo.random_like(jax.random.PRNGKey(seed + 1), model.initial_state(params, B))
    want = model_zoo.python_loop(model.step, params, xs, state)
    model_zoo.assert_trees_close(jaxrnn.unroll(model, params, xs, state), want,
                                 rtol=1e-5, atol=1e-6)

  @parameterized.named_parameters(MODEL_NAMES)
  def test_time_major_equals_batch_major(self, name):
    model, params, xs = setup(name, (6, 3, 2, 3))
    lengths = jnp.array([6, 2, 0])
    resets = jnp.zeros((6, 3), bool).at[3, 0].set(True).at[1, 1].set(True)
    rng = jax.random.PRNGKey(3)
    f_tm, y_tm = jaxrnn.unroll(model, params, xs, seq_lengths=lengths, resets=resets, rng=rng)
    f_bm, y_bm = jaxrnn.unroll(model, params, jnp.swapaxes(xs, 0, 1), seq_lengths=lengths,
                               resets=resets.T, rng=rng, time_major=False)
    self.assertEqual(y_bm.shape, (3, 6, model.output_size))
    model_zoo.assert_trees_close((f_tm, y_tm), (f_bm, jnp.swapaxes(y_bm, 0, 1)), rtol=0, atol=0)

  @parameterized.named_parameters(model_zoo.combined_named_parameters(MODEL_NAMES, REVERSE))
  def test_seq_lengths_match_each_sequence_alone(self, name, reverse):
    model, params, xs = setup(name, (6, 4, 2, 3))
    lengths = jnp.array([6, 3, 0, 1])
    state = model_zoo.random_like(jax.random.PRNGKey(7), model.initial_state(params, 4))
    final, ys = jaxrnn.unroll(model, params, xs, state, seq_lengths=lengths, reverse=reverse)
    for b, length in enumerate(lengths.tolist()):
      state_b = _batch_slice(state, b)
      if length == 0:
        want_final, want_ys = state_b, jnp.zeros((0, 1, model.output_size))
      else:
        want_final, want_ys = jaxrnn.unroll(model, params, xs[:length, b:b + 1], state_b,
                                            reverse=reverse)
      model_zoo.assert_trees_close(_batch_slice(final, b), want_final, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(ys[:length, b:b + 1], want_ys, rtol=1e-5, atol=1e-6)
      np.testing.assert_array_equal(ys[length:, b], 0.0)

  @parameterized.named_parameters(
      model_zoo.named(sorted(model_zoo.CELLS) + ["stack", "learned_state"]))
  def test_reverse_equals_flipped_input(self, name):
    model, params, xs = setup(name, (5, 3, 2, 3))
    final, ys = jaxrnn.unroll(model, params, xs, reverse=True)
    want_final, want_ys = jaxrnn.unroll(model, params, xs[::-1])
    model_zoo.assert_trees_close((final, ys), (want_final, want_ys[::-1]), rtol=1e-6, atol=1e-6)

  @parameterized.named_parameters(MODEL_NAMES)
  def test_vmap_over_batch_axis_of_unroll(self, name):
    model, params, xs = setup(name, (4, 3, 2, 3))
    want = jaxrnn.unroll(model, params, xs)
    # vmap a single-sequence unroll ([T, 1, F]) over the batch.
    one = lambda x: jaxrnn.unroll(model, params, x[:, None])
    final, ys = jax.vmap(one, in_axes=1, out_axes=(0, 1))(xs)
    got = (jax.tree.map(lambda a: a[:, 0], final), ys[:, :, 0])
    model_zoo.assert_trees_close(got, want, rtol=1e-5, atol=1e-6)

  @parameterized.named_parameters(model_zoo.named(STEPPABLE))
  def test_vmap_of_unbatched_step_equals_batched_step(self, name):
    model, params, xs = setup(name, (1, 4, 3, 2))
    state = model_zoo.random_like(jax.random.PRNGKey(1), model.initial_state(params, 4))
    unbatched = model.initial_state(params, None)
    self.assertEqual(jax.tree.map(jnp.shape, unbatched),
                     jax.tree.map(lambda a: a.shape[1:], state))
    want = model.step(params, state, xs[0])
    got = jax.vmap(model.step, in_axes=(None, 0, 0))(params, state, xs[0])
    model_zoo.assert_trees_close(got, want, rtol=1e-6, atol=1e-6)

  @parameterized.named_parameters(MODEL_NAMES)
  def test_jit_equals_no_jit(self, name):
    model, params, xs = setup(name, (5, 2, 3, 2))
    kwargs = dict(seq_lengths=jnp.array([5, 3]), reverse=True, rng=jax.random.PRNGKey(0))
    want = jaxrnn.unroll(model, params, xs, **kwargs)
    got = jax.jit(functools.partial(jaxrnn.unroll, model, **kwargs))(params, xs)
    model_zoo.assert_trees_close(got, want, rtol=1e-6, atol=1e-6)

  @parameterized.named_parameters(MODEL_NAMES)
  def test_float64(self, name):
    jax.config.update("jax_enable_x64", True)
    model, params, xs = setup(name, (4, 2, 3, 2))
    self.assertTrue(all(a.dtype == jnp.float64 for a in jax.tree.leaves(params)))
    final, ys = jaxrnn.unroll(model, params, xs)
    self.assertEqual(ys.dtype, jnp.float64)
    self.assertTrue(all(a.dtype == jnp.float64 for a in jax.tree.leaves(final)))
    if name in STEPPABLE:
      state = model.initial_state(params, 2)
      model_zoo.assert_trees_close(
          (final, ys), model_zoo.python_loop(model.step, params, xs, state), 1e-12, 1e-12)

  @parameterized.named_parameters(MODEL_NAMES)
  def test_remat_chunks_change_nothing_but_memory(self, name):
    model, params, xs = setup(name, (7, 2, 2, 3))
    kwargs = dict(seq_lengths=jnp.array([7, 4]),
                  resets=jnp.zeros((7, 2), bool).at[2, 0].set(True), rng=jax.random.PRNGKey(1))
    loss = lambda p, chunk: jnp.sum(
        jaxrnn.unroll(model, p, xs, remat_chunk=chunk, **kwargs)[1] ** 2)
    # Both paths and their gradients in one compiled function: op by op, each compile cost
    # more than the comparison.
    (chunked, d_chunked), (whole, d_whole) = model_zoo.compiled(
        lambda p: (jax.value_and_grad(loss)(p, 3), jax.value_and_grad(loss)(p, None)), params)
    model_zoo.assert_trees_close(chunked, whole, rtol=1e-6, atol=1e-6)
    model_zoo.assert_trees_close(d_chunked, d_whole, 1e-5, 1e-6)


class ResetsTest(parameterized.TestCase):

  @parameterized.named_parameters(model_zoo.combined_named_parameters(
      model_zoo.named(sorted(model_zoo.CELLS) + ["stack"]), REVERSE))
  def test_resets_match_separate_episodes(self, name, reverse):
    """A reset at t=3 of a length-6 sequence is two episodes, [0, 3) and [3, 6)."""
    model, params, xs = setup(name, (8, 2, 2, 3))
    state = model_zoo.random_like(jax.random.PRNGKey(4), model.initial_state(params, 2))
    lengths = jnp.array([6, 8])
    resets = jnp.zeros((8, 2), bool).at[3, 0].set(True).at[7, 0].set(True)  # t=7 is padding
    final, ys = jaxrnn.unroll(model, params, xs, state, seq_lengths=lengths, resets=resets,
                              reverse=reverse)
    s0 = _batch_slice(state, 0)
    f1, y1 = jaxrnn.unroll(model, params, xs[:3, :1], s0, reverse=reverse)
    f2, y2 = jaxrnn.unroll(model, params, xs[3:6, :1], s0, reverse=reverse)
    np.testing.assert_allclose(ys[:6, :1], jnp.concatenate([y1, y2]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ys[6:, 0], 0.0)
    # Reading forwards the last episode ends the sequence; backwards, the first does.
    model_zoo.assert_trees_close(_batch_slice(final, 0), f1 if reverse else f2,
                                 rtol=1e-5, atol=1e-6)
    # The sequence without resets is untouched by its neighbour's.
    want = jaxrnn.unroll(model, params, xs[:, 1:], _batch_slice(state, 1), reverse=reverse)
    model_zoo.assert_trees_close((_batch_slice(final, 1), ys[:, 1:]), want, rtol=1e-5, atol=1e-6)

  def test_reset_swaps_in_learned_initial_state(self):
    model, params, xs = setup("learned_state", (4, 1, 2, 3))
    resets = jnp.zeros((4, 1), bool).at[2, 0].set(True)
    _, ys = jaxrnn.unroll(model, params, xs, resets=resets)
    _, tail = jaxrnn.unroll(model, params, xs[2:])
    np.testing.assert_allclose(ys[2:], tail, rtol=1e-6, atol=1e-6)


class CompositesTest(parameterized.TestCase):

  def test_stack_with_dropout_equals_layers_by_hand(self):
    T, B, I, H = 5, 3, 2, 4
    lower, upper = jaxrnn.lstm(H), jaxrnn.gru(3)
    model = jaxrnn.stack([lower, upper], dropout=0.5)
    params = model_zoo.random_params(model, jax.random.PRNGKey(0), I)
    xs = model_zoo.normal(jax.random.PRNGKey(1), (T, B, I))
    rng = jax.random.PRNGKey(2)
    lengths = jnp.array([5, 2, 4])
    final, ys = jaxrnn.unroll(model, params, xs, seq_lengths=lengths, rng=rng)
    f0, h = jaxrnn.unroll(lower, params.layers[0], xs, seq_lengths=lengths)
    keep = jax.random.bernoulli(jax.random.fold_in(jax.random.fold_in(rng, 0), 0), 0.5, h.shape)
    self.assertBetween(int(keep.sum()), 1, keep.size - 1)
    f1, want = jaxrnn.unroll(upper, params.layers[1], h * keep / 0.5, seq_lengths=lengths)
    model_zoo.assert_trees_close((final, ys), (jaxrnn.StackState((f0, f1)), want),
                                 rtol=1e-6, atol=1e-6)
    # Without a key there is no dropout, and step agrees with unroll.
    state = model.initial_state(params, B)
    model_zoo.assert_trees_close(jaxrnn.unroll(model, params, xs),
                                 model_zoo.python_loop(model.step, params, xs, state),
                                 rtol=1e-5, atol=1e-6)

  @parameterized.named_parameters(model_zoo.named(["concat", "sum"]))
  def test_bidirectional_equals_two_directions_by_hand(self, merge):
    fwd, bwd = jaxrnn.lstm(3), jaxrnn.gru(3)
    model = jaxrnn.bidirectional(fwd, bwd, merge=merge)
    params = model_zoo.random_params(model, jax.random.PRNGKey(0), 2)
    xs = model_zoo.normal(jax.random.PRNGKey(1), (6, 2, 2))
    lengths = jnp.array([4, 6])
    final, ys = jaxrnn.unroll(model, params, xs, seq_lengths=lengths)
    ff, yf = jaxrnn.unroll(fwd, params.forward, xs, seq_lengths=lengths)
    fb, yb = jaxrnn.unroll(bwd, params.backward, xs, seq_lengths=lengths, reverse=True)
    want = jnp.concatenate([yf, yb], -1) if merge == "concat" else yf + yb
    self.assertEqual(model.output_size, 6 if merge == "concat" else 3)
    model_zoo.assert_trees_close((final, ys), (jaxrnn.BidirectionalState(ff, fb), want),
                                 1e-6, 1e-6)
    with self.assertRaisesRegex(NotImplementedError, "unroll"):
      model.step(params, model.initial_state(params, 2), xs[0])

  def test_learned_initial_state_receives_the_batch_sum_of_state_gradients(self):
    model, params, xs = setup("learned_state", (4, 3, 2, 3))
    loss = lambda p, s: jnp.sum(jaxrnn.unroll(model, p, xs, s)[1] ** 2)
    g_params = jax.grad(lambda p: loss(p, None))(params)
    g_state = jax.grad(loss, argnums=1)(params, model.initial_state(params, 3))
    self.assertGreater(float(jnp.abs(g_params.initial_state.hidden).sum()), 0)
    model_zoo.assert_trees_close(g_params.initial_state,
                                 jax.tree.map(lambda g: g.sum(0), g_state), 1e-5, 1e-6)

  def test_initial_state_encoded_from_side_information(self):
    """The initial state is computed from side information and trained through unroll."""
    jax.config.update("jax_enable_x64", True)
    cell, encoder = jaxrnn.lstm(3), jaxrnn.dense(6)
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {"cell": cell.init(k[0], 2), "encoder": encoder.init(k[1], 5)}
    side = model_zoo.normal(k[2], (4, 5))  # e.g. features of a speaker's earlier speeches
    xs = model_zoo.normal(k[3], (6, 4, 2))

    def loss(params):
      h_c = jnp.tanh(encoder.apply(params["encoder"], side))
      state = jaxrnn.LSTMState(hidden=h_c[:, :3], cell=h_c[:, 3:])
      return jnp.sum(jaxrnn.unroll(cell, params["cell"], xs, state)[1] ** 2)

    grads = jax.grad(loss)(params)
    self.assertGreater(float(jnp.abs(grads["encoder"].w).sum()), 0)
    jax.test_util.check_grads(loss, (params,), order=1, modes=["rev"])


class ReadoutPrecisionAndInitTest(parameterized.TestCase):
  """Readout, losses, precision and initialisation."""

  def test_readout_and_losses_honour_seq_lengths(self):
    readout = jaxrnn.dense(2)
    rp = readout.init(jax.random.PRNGKey(0), 3)
    ys = model_zoo.normal(jax.random.PRNGKey(1), (5, 2, 3))
    lengths = jnp.array([5, 2])
    out = readout.apply(rp, ys, seq_lengths=lengths)
    np.testing.assert_array_equal(out[2:, 1], 0.0)
    np.testing.assert_allclose(out[:2, 1], ys[:2, 1] @ rp.w + rp.b, rtol=1e-6)
    targets = model_zoo.normal(jax.random.PRNGKey(2), out.shape)
    junk = out.at[3:, 1].set(100.0)
    per_step = ((out - targets) ** 2).mean(-1)
    want_sum = (per_step[:, 0].sum() + per_step[:2, 1].sum()) / 2
    want_mean = (per_step[:, 0].mean() + per_step[:2, 1].mean()) / 2
    for preds in (out, junk):
      np.testing.assert_allclose(jaxrnn.sequence_mse(preds, targets, seq_lengths=lengths),
                                 want_sum, rtol=1e-6)
      np.testing.assert_allclose(
          jaxrnn.sequence_mse(preds, targets, seq_lengths=lengths, reduce="mean"), want_mean,
          1e-6)
    labels = jnp.array([[0, 1]] * 5)
    logp = jax.nn.log_softmax(out)
    want_ce = (-logp[:, 0, 0].sum() - logp[:2, 1, 1].sum()) / 2
    np.testing.assert_allclose(
        jaxrnn.sequence_cross_entropy(junk, labels, seq_lengths=lengths), want_ce, rtol=1e-6)
    bm = jaxrnn.sequence_cross_entropy(jnp.swapaxes(junk, 0, 1), labels.T, seq_lengths=lengths,
                                       time_major=False)
    np.testing.assert_allclose(bm, want_ce, rtol=1e-6)

  @parameterized.named_parameters(("rnn", jaxrnn.rnn), ("lstm", jaxrnn.lstm),
                                  ("gru", jaxrnn.gru))
  def test_bfloat16_compute_keeps_float32_params_and_state(self, make):
    model32, model16 = make(8), make(8, dtype=jnp.bfloat16)
    params = model16.init(jax.random.PRNGKey(0), 4)
    self.assertTrue(all(a.dtype == jnp.float32 for a in jax.tree.leaves(params)))
    xs = model_zoo.normal(jax.random.PRNGKey(1), (10, 3, 4))
    final, ys = jaxrnn.unroll(model16, params, xs)
    self.assertTrue(all(a.dtype == jnp.float32 for a in jax.tree.leaves(final)))
    _, ys32 = jaxrnn.unroll(model32, params, xs)
    err = float(jnp.max(jnp.abs(ys - ys32)))
    # bfloat16 has an 8-bit mantissa: different, but close.
    self.assertGreater(err, 0)
    self.assertLess(err, 5e-2)

  @parameterized.named_parameters(
      ("rnn", jaxrnn.rnn), ("lstm", jaxrnn.lstm), ("gru", jaxrnn.gru),
      ("lstm_layer_norm", functools.partial(jaxrnn.lstm, layer_norm=True)))
  def test_bfloat16_gradient_error_is_the_models_own_sensitivity(self, make):
    # bfloat16 compute is sound when its gradient is no further from float32's
    # than the float32 gradient moves when only the parameters and inputs are
    # rounded to bfloat16. The layer-normalised LSTM amplifies such rounding over
    # time (its bfloat16 error grows to 0.68 at T=100 in the benchmark, and so
    # does this reference), so the bound is relative, not absolute.
    T, B, I, H = 8, 4, 8, 32
    params = make(H).init(jax.random.PRNGKey(0), I)
    xs = model_zoo.normal(jax.random.PRNGKey(1), (T, B, I))
    targets = model_zoo.normal(jax.random.PRNGKey(2), (T, B, H))

    def grad(model, params, xs):
      loss = lambda p: jnp.mean(jnp.square(jaxrnn.unroll(model, p, xs)[1] - targets))
      return jax.jit(jax.grad(loss))(params)

    rounded = lambda tree: jax.tree.map(
        lambda a: a.astype(jnp.bfloat16).astype(a.dtype), tree)
    g32 = grad(make(H), params, xs)
    norm = lambda tree: jnp.sqrt(sum(jnp.sum(jnp.square(a)) for a in jax.tree.leaves(tree)))
    error = lambda g: float(norm(jax.tree.map(jnp.subtract, g, g32)) / norm(g32))
    bf16 = error(grad(make(H, dtype=jnp.bfloat16), params, xs))
    reference = error(grad(make(H), rounded(params), rounded(xs)))
    self.assertGreater(reference, 0)
    self.assertLess(bf16, 2 * reference)

  def test_initialisation_conventions(self):
    H, I = 16, 5
    lstm = jaxrnn.lstm(H, forget_bias=2.5).init(jax.random.PRNGKey(0), I)
    np.testing.assert_array_equal(lstm.b_x[H:2 * H], 2.5)
    np.testing.assert_array_equal(lstm.b_h[H:2 * H], 0.0)
    bound = 1 / np.sqrt(H)
    for leaf in (lstm.w_x, lstm.w_h, lstm.b_x[:H], lstm.b_h[2 * H:]):
      self.assertLessEqual(float(jnp.max(jnp.abs(leaf))), bound)
      self.assertGreater(float(jnp.max(jnp.abs(leaf))), 0.8 * bound)
    self.assertEqual(lstm.w_x.shape, (I, 4 * H))
    self.assertEqual(lstm.w_h.shape, (H, 4 * H))
    gru = jaxrnn.gru(H, recurrent_init="orthogonal").init(jax.random.PRNGKey(1), I)
    for g in range(3):
      block = gru.w_h[:, g * H:(g + 1) * H]
      np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
    nobias = jaxrnn.rnn(H, bias=False).init(jax.random.PRNGKey(2), I)
    self.assertIsNone(nobias.b_x)
    self.assertIsNone(nobias.b_h)
    self.assertTrue(all(jnp.issubdtype(a.dtype, jnp.floating) for a in jax.tree.leaves(lstm)))


class ForwardProjectionTest(parameterized.TestCase):
  """Forward-only runs project inside the loop on the CPU and hoist elsewhere: same outputs."""

  @parameterized.named_parameters(*[(name, name) for name in model_zoo.MODELS])
  def test_hoisted_forward_equals_in_loop_forward(self, name):
    jax.config.update("jax_enable_x64", True)
    model = model_zoo.MODELS[name](4)
    params = model_zoo.random_params(model, jax.random.key(0), 3)
    xs = model_zoo.normal(jax.random.key(1), (6, 2, 3))
    kwargs = dict(seq_lengths=jnp.array([6, 3]), resets=jnp.zeros((6, 2), bool).at[2, 0].set(True))
    with mock.patch.object(recurrence, "_project_in_loop", lambda: True):
      in_loop = jaxrnn.unroll(model, params, xs, **kwargs)
    with mock.patch.object(recurrence, "_project_in_loop", lambda: False):
      hoisted = jaxrnn.unroll(model, params, xs, **kwargs)
    model_zoo.assert_trees_close(hoisted, in_loop, rtol=1e-12, atol=1e-12)


if __name__ == "__main__":
  absltest.main()
