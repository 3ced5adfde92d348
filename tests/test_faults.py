"""Faults at the edges: garbage in the padding, empty sequences, and bad arguments.

Every bad argument gets a TypeError or ValueError at trace time naming it;
padded steps may hold anything (NaN, Inf, out-of-range labels) without reaching
a loss or a gradient.
"""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import torch

import jaxrnn
import model_zoo

T, B, I, H = 5, 3, 2, 4
LENGTHS = np.array([3, 5, 0])
MODEL_NAMES = model_zoo.named(sorted(model_zoo.MODELS))
# (name, backward, reverse, remat_chunk): every route a gradient can take through `unroll`.
# The padding is zeroed once, before any model runs, so each model takes two routes and
# the remaining ones are taken by a cell and a composite.
PATHS = [("bptt", "bptt", False, None), ("autodiff_reverse_remat", "autodiff", True, 2)]
MORE_PATHS = [("bptt_reverse_remat", "bptt", True, 2), ("autodiff", "autodiff", False, None)]


def _indrnn_with_vjp(hidden_size):
  """The README's IndRNN with its hand-derived ``step_vjp``."""
  plain = model_zoo.indrnn_without_vjp(hidden_size)

  def step(p, h, x):
    h = jnp.tanh(x @ p["w"] + p["u"] * h)
    return h, h

  def step_vjp(p, h, x, h_new, d_h_new, d_y):
    delta = (d_h_new + d_y) * (1 - h_new ** 2)
    return ({"w": x.T @ delta, "u": jnp.sum(delta * h, 0)}, delta * p["u"], delta @ p["w"].T)

  return jaxrnn.custom_cell(plain.init, step, output_size=hidden_size, step_vjp=step_vjp)


FAULT_MODELS = dict(model_zoo.MODELS, indrnn=model_zoo.indrnn_without_vjp,
                    indrnn_vjp=_indrnn_with_vjp)


def _setup(name, seed=0):
  model = FAULT_MODELS[name](H)
  key = jax.random.PRNGKey(seed)
  params = model_zoo.random_params(model, key, I)
  xs = model_zoo.normal(jax.random.fold_in(key, 1), (T, B, I))
  return model, params, xs


def _garbage_padding(xs, lengths):
  """``xs`` with NaN, Inf and -Inf at the padded steps."""
  pad = np.arange(xs.shape[0])[:, None] >= lengths[None, :]
  garbage = np.array([np.nan, np.inf, -np.inf])[np.arange(xs.size) % 3].reshape(xs.shape)
  return jnp.where(pad[..., None], garbage, xs)


def _all_finite(tree):
  return all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(tree))


class PaddingTest(parameterized.TestCase):
  """Padded steps never reach a gradient, whatever they hold."""

  @parameterized.named_parameters(
      model_zoo.combined_named_parameters(model_zoo.named(sorted(FAULT_MODELS)), PATHS)
      + model_zoo.combined_named_parameters(model_zoo.named(["gru", "stack"]), MORE_PATHS))
  def test_garbage_padding_gives_the_clean_gradient(self, name, backward, reverse, remat):
    model, params, xs = _setup(name)
    state = model_zoo.random_like(jax.random.PRNGKey(2), model.initial_state(params, B))

    @jax.jit
    def grad(params, xs, state):
      def loss(params, xs, state):
        final, ys = jaxrnn.unroll(model, params, xs, state, seq_lengths=LENGTHS,
                                  backward=backward, reverse=reverse, remat_chunk=remat)
        return jnp.sum(ys ** 2) + sum(jnp.sum(s ** 2) for s in jax.tree.leaves(final))
      return jax.grad(loss, (0, 1, 2))(params, xs, state)

    pad = np.arange(T)[:, None] >= LENGTHS[None, :]
    got = grad(params, _garbage_padding(xs, LENGTHS), state)
    self.assertTrue(_all_finite(got), f"non-finite gradient: {got}")
    model_zoo.assert_trees_equal(got, grad(params, jnp.where(pad[..., None], 0.0, xs), state))
    np.testing.assert_array_equal(np.asarray(got[1])[pad], 0.0)

  @parameterized.named_parameters(("lstm", "lstm"), ("stack", "stack"),
                                  ("bidirectional", "bidirectional"), ("indrnn_vjp", "indrnn_vjp"))
  def test_bptt_with_garbage_padding(self, name):
    model, params, xs = _setup(name)
    d_ys = model_zoo.normal(jax.random.PRNGKey(3), (T, B, model.output_size))
    run = jax.jit(lambda xs: jaxrnn.bptt(model, params, xs, None, d_ys, seq_lengths=LENGTHS))
    got = run(_garbage_padding(xs, LENGTHS))
    self.assertTrue(_all_finite(got))
    pad = np.arange(T)[:, None] >= LENGTHS[None, :]
    np.testing.assert_array_equal(np.asarray(got[1])[pad], 0.0)
    model_zoo.assert_trees_equal(got, run(jnp.where(pad[..., None], 0.0, xs)))

  @parameterized.named_parameters(("time_major", True), ("batch_major", False))
  def test_losses_ignore_garbage_padding(self, time_major):
    preds = model_zoo.normal(jax.random.PRNGKey(0), (T, B, 2))
    targets = model_zoo.normal(jax.random.PRNGKey(1), (T, B, 2))
    labels = jax.random.randint(jax.random.PRNGKey(2), (T, B), 0, 2)
    pad = np.arange(T)[:, None] >= LENGTHS[None, :]
    garbage = lambda a: _garbage_padding(a, LENGTHS)
    bad_labels = jnp.where(pad, -100, labels)
    layout = (lambda a: a) if time_major else (lambda a: jnp.swapaxes(a, 0, 1))

    def losses(preds, targets, labels):
      kw = dict(seq_lengths=LENGTHS, time_major=time_major)
      return (jaxrnn.sequence_mse(layout(preds), layout(targets), **kw)
              + jaxrnn.sequence_cross_entropy(layout(preds), layout(labels), **kw))

    grad = jax.value_and_grad(losses, (0, 1))
    got = grad(garbage(preds), garbage(targets), bad_labels)
    self.assertTrue(_all_finite(got))
    clean = lambda a: jnp.where(pad[..., None], 0.0, a)
    model_zoo.assert_trees_equal(got, grad(clean(preds), clean(targets), labels * ~pad))


  def test_dense_readout_ignores_garbage_padding(self):
    readout = jaxrnn.dense(2)
    params = readout.init(jax.random.PRNGKey(0), I)
    xs = model_zoo.normal(jax.random.PRNGKey(1), (T, B, I))
    pad = np.arange(T)[:, None] >= LENGTHS[None, :]
    grad = jax.grad(lambda p, ys: jnp.sum(readout.apply(p, ys, seq_lengths=LENGTHS) ** 2),
                    (0, 1))
    got = grad(params, _garbage_padding(xs, LENGTHS))
    self.assertTrue(_all_finite(got))
    model_zoo.assert_trees_equal(got, grad(params, jnp.where(pad[..., None], 0.0, xs)))


class EmptySequenceTest(parameterized.TestCase):
  """``T = 0`` runs on every path: the final state is the initial one, gradients are zero."""

  @parameterized.named_parameters(
      model_zoo.combined_named_parameters(model_zoo.named(sorted(FAULT_MODELS)),
                                          [("bptt", "bptt", None)])
      + model_zoo.combined_named_parameters(
          model_zoo.named(["lstm", "bidirectional"]),
          [("autodiff", "autodiff", None), ("remat", "bptt", 2)]))
  def test_grad_of_empty_sequence(self, name, backward, remat):
    model, params, _ = _setup(name)
    xs = jnp.zeros((0, B, I))
    state = model_zoo.random_like(jax.random.PRNGKey(2), model.initial_state(params, B))

    def loss(params, xs, state):
      final, ys = jaxrnn.unroll(model, params, xs, state, seq_lengths=jnp.zeros((B,), int),
                                backward=backward, remat_chunk=remat)
      return jnp.sum(ys) + sum(jnp.sum(s) for s in jax.tree.leaves(final))

    d_params, d_xs, d_state = jax.grad(loss, (0, 1, 2))(params, xs, state)
    model_zoo.assert_trees_equal(d_params, jax.tree.map(jnp.zeros_like, params))
    self.assertEqual(d_xs.shape, (0, B, I))
    model_zoo.assert_trees_equal(d_state, jax.tree.map(jnp.ones_like, state))
    if model.explicit_backward:
      d_final = jax.tree.map(jnp.ones_like, state)
      got = jaxrnn.bptt(model, params, xs, state, jnp.zeros((0, B, model.output_size)), d_final,
                        remat_chunk=remat)
      model_zoo.assert_trees_equal(got, (d_params, d_xs, d_state))


class SeqLengthsRangeTest(parameterized.TestCase):

  @parameterized.named_parameters(("above_T", [T + 1, 2, 0], r"seq_lengths\[0\]=6"),
                                  ("negative", [1, -1, 2], r"seq_lengths\[1\]=-1"))
  def test_concrete_lengths_out_of_range(self, lengths, entry):
    model, params, xs = _setup("lstm")
    lengths = jnp.array(lengths)
    pattern = r"seq_lengths: expected lengths in \[0, T=5\].*" + entry
    with self.assertRaisesRegex(ValueError, pattern):
      jaxrnn.unroll(model, params, xs, seq_lengths=lengths)
    with self.assertRaisesRegex(ValueError, pattern):
      jaxrnn.bptt(model, params, xs, None, jnp.zeros((T, B, H)), seq_lengths=lengths)
    with self.assertRaisesRegex(ValueError, pattern):
      jaxrnn.sequence_mse(xs, xs, seq_lengths=lengths)
    with self.assertRaisesRegex(ValueError, pattern):
      jaxrnn.dense(2).apply(jaxrnn.dense(2).init(jax.random.PRNGKey(0), I), xs,
                            seq_lengths=lengths)

  def test_traced_lengths_are_clipped_as_documented(self):
    model, params, xs = _setup("gru")
    run = jax.jit(lambda lengths: jaxrnn.unroll(model, params, xs, seq_lengths=lengths))
    model_zoo.assert_trees_equal(run(jnp.array([T + 3, -2, 2])), run(jnp.array([T, 0, 2])))


class ParamsTest(parameterized.TestCase):
  """Parameters that do not belong to the model are named as ``params``, with both structures."""

  def setUp(self):
    super().setUp()
    self.key = jax.random.PRNGKey(0)
    self.xs = jnp.zeros((T, B, I))

  def _wrong_params(self):
    lstm = jaxrnn.lstm(H)
    params = lstm.init(self.key, I)
    stack = jaxrnn.stack([jaxrnn.lstm(H), jaxrnn.lstm(H)])
    return [
        ("other_cell", lstm, jaxrnn.gru(H).init(self.key, I), TypeError, "GRUParams"),
        ("other_size", lstm, jaxrnn.lstm(H + 1).init(self.key, I), ValueError,
         r"params.w_h: expected \[4, 16\], got \[5, 20\]"),
        ("composite_to_cell", lstm, stack.init(self.key, I), TypeError, "StackParams"),
        ("cell_to_composite", stack, params, TypeError, "StackParams"),
        ("dict", lstm, params._asdict(), TypeError, "LSTMParams"),
        ("weight_shape", lstm, params._replace(b_h=jnp.zeros((3 * H,))), ValueError,
         r"params.b_h: expected \[16\], got \[12\]"),
    ]

  def test_unroll_bptt_and_step_name_params(self):
    for case, model, params, error, detail in self._wrong_params():
      with self.subTest(case):
        pattern = r"params: .*" + detail
        with self.assertRaisesRegex(error, pattern):
          jaxrnn.unroll(model, params, self.xs)
        with self.assertRaisesRegex(error, pattern):
          jax.jit(lambda p, m=model: jaxrnn.unroll(m, p, self.xs))(params)
        with self.assertRaisesRegex(error, pattern):
          jaxrnn.bptt(model, params, self.xs, None, jnp.zeros((T, B, model.output_size)))
        state = model.initial_state(model.init(self.key, I), B)
        with self.assertRaisesRegex(error, pattern):
          model.step(params, state, self.xs[0])

  def test_dense_readout_params(self):
    readout = jaxrnn.dense(2)
    params = readout.init(self.key, I)
    with self.assertRaisesRegex(TypeError, r"params: expected .*DenseParams.*got \{'b'"):
      readout.apply(params._asdict(), self.xs)
    with self.assertRaisesRegex(ValueError, r"params.b: expected \[2\], got \[3\]"):
      readout.apply(params._replace(b=jnp.zeros((3,))), self.xs)

  def test_custom_cell_params(self):
    model = model_zoo.indrnn_without_vjp(H)
    params = model.init(self.key, I)
    with self.assertRaisesRegex(TypeError, r"params: expected .*'u'.*got \{'w'"):
      jaxrnn.unroll(model, {"w": params["w"]}, self.xs)
    with self.assertRaisesRegex(ValueError, r"params\['u'\]: expected \[4\], got \[5\]"):
      model.step(dict(params, u=jnp.zeros((H + 1,))), jnp.zeros((B, H)), self.xs[0])

  def test_feature_size_still_names_xs(self):
    model = jaxrnn.stack([jaxrnn.gru(H), jaxrnn.rnn(H)])
    with self.assertRaisesRegex(ValueError, r"xs: expected feature size 2"):
      jaxrnn.unroll(model, model.init(self.key, I), jnp.zeros((T, B, I + 1)))


class DtypeTest(parameterized.TestCase):
  """The policy: ``xs`` and ``state`` are cast to the parameters' floating dtype."""

  def test_integer_state_is_refused(self):
    model = jaxrnn.lstm(H)
    params = model.init(jax.random.PRNGKey(0), I)
    state = jax.tree.map(lambda s: s.astype(jnp.int32), model.initial_state(params, B))
    with self.assertRaisesRegex(TypeError, r"state: expected floating-point.*int32\[3, 4\]"):
      jaxrnn.unroll(model, params, jnp.zeros((T, B, I)), state)
    with self.assertRaisesRegex(TypeError, r"state: expected floating-point.*int32\[3, 4\]"):
      model.step(params, state, jnp.zeros((B, I)))

  @parameterized.named_parameters(
      ("f32_state_f64_params", jnp.float64, jnp.float64, jnp.float32),
      ("f64_xs_f32_params", jnp.float32, jnp.float64, jnp.float32),
      ("f32_xs_bf16_params", jnp.bfloat16, jnp.float32, jnp.float32))
  def test_inputs_are_cast_to_the_params_dtype(self, params_dtype, xs_dtype, state_dtype):
    jax.config.update("jax_enable_x64", True)
    model = jaxrnn.stack([jaxrnn.lstm(H), jaxrnn.gru(H)])
    params = jax.tree.map(lambda a: a.astype(params_dtype),
                          model_zoo.random_params(model, jax.random.PRNGKey(0), I))
    xs = np.asarray(model_zoo.normal(jax.random.PRNGKey(1), (T, B, I)), xs_dtype)
    state = jax.tree.map(lambda s: s.astype(state_dtype), model.initial_state(params, B))
    cast = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, params_dtype), tree)
    want = jaxrnn.unroll(model, params, cast(xs), cast(state))
    got = jaxrnn.unroll(model, params, xs, state)
    model_zoo.assert_trees_equal(got, want)
    model_zoo.assert_trees_equal(model.step(params, state, xs[0]),
                                 model.step(params, cast(state), cast(xs[0])))

    def loss(xs, state):
      final, ys = jaxrnn.unroll(model, params, xs, state)
      return jnp.sum(ys.astype(jnp.float32))
    d_xs, d_state = jax.grad(loss, (0, 1))(jnp.asarray(xs), state)
    self.assertEqual(d_xs.dtype, xs_dtype)
    self.assertEqual({a.dtype for a in jax.tree.leaves(d_state)}, {jnp.dtype(state_dtype)})
    _, d_xs, d_state = jaxrnn.bptt(model, params, xs, state, jnp.ones(got[1].shape))
    self.assertEqual(d_xs.dtype, xs_dtype)
    self.assertEqual({a.dtype for a in jax.tree.leaves(d_state)}, {jnp.dtype(state_dtype)})

  def test_from_torch_params_with_float64_numpy_data(self):
    jax.config.update("jax_enable_x64", True)
    torch.manual_seed(0)
    model, params = jaxrnn.interop.from_torch(torch.nn.LSTM(I, H))
    xs = np.random.default_rng(0).normal(size=(T, B, I))
    _, ys = jaxrnn.unroll(model, params, xs)
    self.assertEqual(ys.dtype, jnp.float32)
    _, want = jaxrnn.unroll(model, params, xs.astype(np.float32))
    model_zoo.assert_trees_equal(ys, want)


class ArgumentsTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.model = jaxrnn.stack([jaxrnn.lstm(H), jaxrnn.gru(H)], dropout=0.5)
    self.params = self.model.init(jax.random.PRNGKey(0), I)
    self.xs = jnp.zeros((T, B, I))

  def test_step_state_of_the_wrong_size(self):
    for model in (jaxrnn.lstm(H), jaxrnn.gru(H), self.model, model_zoo.indrnn_without_vjp(H)):
      params = model.init(jax.random.PRNGKey(0), I)
      state = model.initial_state(params, B + 1)
      with self.subTest(model.config):
        with self.assertRaisesRegex(ValueError, r"state: batch size 4 does not match the batch"
                                    r" size of x, 3"):
          model.step(params, state, self.xs[0])
      wide = jax.tree.map(lambda s: jnp.zeros(s.shape[:-1] + (s.shape[-1] + 1,)),
                          model.initial_state(params, B))
      with self.subTest(model.config):
        with self.assertRaisesRegex(ValueError, r"state: expected shapes"):
          model.step(params, wide, self.xs[0])

  @parameterized.named_parameters(("string", "no"), ("int", 1), ("none", None))
  def test_flags_that_are_not_bools(self, value):
    model, params, xs = self.model, self.params, self.xs
    with self.assertRaisesRegex(TypeError, r"time_major: expected a Python bool"):
      jaxrnn.unroll(model, params, xs, time_major=value)
    with self.assertRaisesRegex(TypeError, r"reverse: expected a Python bool"):
      jaxrnn.unroll(model, params, xs, reverse=value)
    with self.assertRaisesRegex(TypeError, r"time_major: expected a Python bool"):
      jaxrnn.sequence_mse(xs, xs, time_major=value)
    with self.assertRaisesRegex(TypeError, r"return_hidden_grad_norms: expected a Python bool"):
      jaxrnn.bptt(model, params, xs, None, jnp.zeros((T, B, H)), return_hidden_grad_norms=value)

  @parameterized.named_parameters(("int", 3), ("float_array", jnp.zeros((2,))),
                                  ("wrong_rank", jnp.zeros((2, 2), jnp.uint32)))
  def test_rng_that_is_not_a_key(self, rng):
    with self.assertRaisesRegex(TypeError, r"rng: expected a PRNG key"):
      jaxrnn.unroll(self.model, self.params, self.xs, rng=rng)

  def test_rng_keys_are_accepted(self):
    for rng in (jax.random.PRNGKey(1), jax.random.key(1)):
      jaxrnn.unroll(self.model, self.params, self.xs, rng=rng)

  def test_loop_settings(self):
    with self.assertRaisesRegex(ValueError, r"remat_chunk: expected a positive int"):
      jaxrnn.unroll(self.model, self.params, self.xs, remat_chunk=True)
    with self.assertRaisesRegex(ValueError, r"scan_unroll: expected a positive int"):
      jaxrnn.unroll(self.model, self.params, self.xs, scan_unroll=0)
    with self.assertRaisesRegex(ValueError, r"dropout: expected a probability"):
      jaxrnn.stack([jaxrnn.gru(H)], dropout="0.5")

  def test_labels_out_of_range(self):
    logits = jnp.zeros((T, B, 3))
    labels = jnp.ones((T, B), jnp.int32).at[1, 2].set(3).at[4, 0].set(-1)
    with self.assertRaisesRegex(ValueError, r"labels: expected classes in \[0, 3\).*"
                                r"labels\[1, 2\]=3, labels\[4, 0\]=-1\."):
      jaxrnn.sequence_cross_entropy(logits, labels)
    # Padded steps may hold any label (here -1 at t=4 of a sequence of length 4).
    jaxrnn.sequence_cross_entropy(logits, labels.at[1, 2].set(0),
                                  seq_lengths=jnp.array([4, 5, 5]))
    # Under jit the labels cannot be read: an out-of-range label makes the loss NaN.
    loss = jax.jit(jaxrnn.sequence_cross_entropy)(logits, labels)
    self.assertTrue(np.isnan(loss))
    self.assertTrue(np.isfinite(jax.jit(jaxrnn.sequence_cross_entropy)(logits, labels * 0)))

  def test_lstm_without_bias(self):
    key = jax.random.PRNGKey(0)
    params = jaxrnn.lstm(H, bias=False).init(key, I)
    self.assertIsNone(params.b_x)
    model, _ = jaxrnn.interop.from_torch(torch.nn.LSTM(I, H, bias=False))
    self.assertIsNone(model.init(key, I).b_x)
    jaxrnn.unroll(jaxrnn.lstm(H, bias=False), params, jnp.zeros((T, B, I)))
    with self.assertRaisesRegex(ValueError, r"forget_bias: bias=False has no bias"):
      jaxrnn.lstm(H, bias=False, forget_bias=2.0)


if __name__ == "__main__":
  absltest.main()
