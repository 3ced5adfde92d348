"""`recurrent_dropout` and `zoneout`: their masks, their limits and their hand-written backward.

`check_cell` runs one wrapped cell of each kind in test_conformance.py; here
the regularised forward is compared with reference loops written from the
docstrings' equations, the explicit backward of every built-in cell variant
with autodiff over a few steps, and the masks with the keys they are drawn
from.
"""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn
import model_zoo

T, B, I, H = 5, 3, 2, 4
RATE = 0.4
RTOL = 1e-12

# Every built-in cell variant whose equations differ where the masks apply, under the
# regulariser that test_conformance.py's check_cell does not run it with.
VARIANTS = (
    ("dropout", lambda: jaxrnn.rnn(H, bias=False)),
    ("dropout", lambda: jaxrnn.lstm(H)),
    ("dropout", lambda: jaxrnn.lstm(H, layer_norm=True)),
    ("dropout", lambda: jaxrnn.gru(H)),
    ("dropout", lambda: jaxrnn.mgu(H, reset_gate=False)),
    ("zoneout", lambda: jaxrnn.rnn(H, activation="relu")),
    ("zoneout", lambda: jaxrnn.lstm(H)),
    ("zoneout", lambda: jaxrnn.lstm(H, peephole=True, proj_size=3)),
    ("zoneout", lambda: jaxrnn.gru(H, reset_after=False)),
    ("zoneout", lambda: jaxrnn.mgu(H)),
)


def _problem(model, seed=0, T=T, spatial=()):
  k_params, k_xs, k_state = jax.random.split(jax.random.PRNGKey(seed), 3)
  params = model_zoo.random_params(model, k_params, I)
  xs = model_zoo.normal(k_xs, (T, B) + spatial + (I,))
  kwargs = {"spatial_shape": spatial} if spatial else {}
  state = model_zoo.random_like(k_state, model.initial_state(params, B, **kwargs))
  return params, xs, state


# A ConvLSTM's hidden state meets the recurrence only in W_h * h, like the LSTM's in h W_h.
CONV_SPATIAL = (2, 3)


def _conv_lstm():
  return jaxrnn.conv_lstm(H, kernel_size=(3, 2))


def _dropout_keep(rng, shape, rate, dtype):
  """The mask of `recurrent_dropout`, drawn as its docstring says."""
  draw = jax.random.bernoulli(jax.random.fold_in(rng, 1), 1.0 - rate, shape)
  return jnp.where(draw, 1.0 / (1.0 - rate), 0.0).astype(dtype)


def _zoneout_masks(rng, state, rates):
  """The per-step masks of `zoneout`, ``[T, B, ...]`` per state field, drawn as documented."""
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.fold_in(rng, 2), len(leaves))
  return jax.tree.unflatten(treedef, [
      jax.random.bernoulli(k, r, (T,) + s.shape).astype(s.dtype)
      for k, s, r in zip(keys, leaves, rates)])


def _sigmoid(a):
  return 1 / (1 + jnp.exp(-a))


def _dropped_step(name, params, h, x, keep):
  """One step with ``keep`` on the hidden state where ``w_h`` reads it, from the equations."""
  if name in ("rnn", "lstm", "conv_lstm"):  # h meets the state only through w_h
    cell = {"rnn": jaxrnn.rnn(H), "lstm": jaxrnn.lstm(H), "conv_lstm": _conv_lstm()}[name]
    masked = h * keep if name == "rnn" else h._replace(hidden=h.hidden * keep)
    return cell.step(params, masked, x)[0]
  gx = x @ params.w_x + params.b_x
  gh = (h * keep) @ params.w_h + params.b_h
  if name == "gru":
    r = _sigmoid(gx[:, :H] + gh[:, :H])
    z = _sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
    n = jnp.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
    return (1 - z) * n + z * h  # the carry reads h unmasked
  f = _sigmoid(gx[:, :H] + gh[:, :H])  # mgu
  n = jnp.tanh(gx[:, H:] + f * gh[:, H:])
  return (1 - f) * n + f * h


class RecurrentDropoutTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    jax.config.update("jax_enable_x64", True)

  @parameterized.named_parameters(
      ("lstm", "lstm", lambda: jaxrnn.lstm(H), ()), ("gru", "gru", lambda: jaxrnn.gru(H), ()),
      ("mgu", "mgu", lambda: jaxrnn.mgu(H), ()),
      ("conv_lstm", "conv_lstm", _conv_lstm, CONV_SPATIAL))
  def test_one_mask_per_sequence_at_every_step(self, name, make, spatial):
    cell = make()
    params, xs, state = _problem(cell, spatial=spatial)
    rng = jax.random.PRNGKey(7)
    final, ys = jaxrnn.unroll(jaxrnn.recurrent_dropout(cell, RATE), params, xs, state, rng=rng)
    keep = _dropout_keep(rng, (B,) + spatial + (H,), RATE, xs.dtype)
    # Each sequence (and, for the ConvLSTM, each position) has its own mask.
    rows = np.asarray(keep).reshape(-1, H).tolist()
    self.assertGreater(len({tuple(row) for row in rows[::max(1, len(rows) // B)]}), 1)
    self.assertGreater(len({tuple(row) for row in rows[:max(1, len(rows) // B)]}),
                       1 if spatial else 0)
    h, want_ys = state, []
    for t in range(T):
      h = _dropped_step(name, params, h, xs[t], keep)
      want_ys.append(h if name in ("gru", "mgu") else h.hidden)
    model_zoo.assert_trees_close((final, ys), (h, jnp.stack(want_ys)), rtol=1e-13, atol=1e-13)

  def test_without_rng_it_is_the_cell(self):
    cell = jaxrnn.gru(H)
    params, xs, state = _problem(cell)
    model_zoo.assert_trees_equal(
        jaxrnn.unroll(jaxrnn.recurrent_dropout(cell, RATE), params, xs, state),
        jaxrnn.unroll(cell, params, xs, state))


class ZoneoutTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    jax.config.update("jax_enable_x64", True)

  def _reference(self, cell, params, xs, state, masks):
    """``h_t = m_t h_{t-1} + (1 - m_t) h'_t``, ``h'_t`` from the cell's own step."""
    h, ys = state, []
    for t in range(xs.shape[0]):
      update, _ = cell.step(params, h, xs[t])
      m_t = jax.tree.map(lambda m: m[t], masks)
      h = jax.tree.map(lambda m, old, new: m * old + (1 - m) * new, m_t, h, update)
      ys.append(h.hidden if isinstance(h, jaxrnn.LSTMState) else h)
    return h, jnp.stack(ys)

  @parameterized.named_parameters(
      ("gru", lambda: jaxrnn.gru(H), None), ("lstm_proj", lambda: jaxrnn.lstm(H, proj_size=3), 0.7))
  def test_without_rng_is_the_expectation(self, make, cell_rate):
    cell = make()
    params, xs, state = _problem(cell)
    rates = [RATE, RATE if cell_rate is None else cell_rate]
    masks = jax.tree.map(lambda s, r: jnp.full((T,) + s.shape, r), state,
                         jax.tree.unflatten(jax.tree.structure(state),
                                            rates[:len(jax.tree.leaves(state))]))
    got = jaxrnn.unroll(jaxrnn.zoneout(cell, RATE, cell_rate=cell_rate), params, xs, state)
    model_zoo.assert_trees_close(got, self._reference(cell, params, xs, state, masks),
                                 rtol=1e-14, atol=1e-14)

  @parameterized.named_parameters(
      ("mgu", lambda: jaxrnn.mgu(H), None, ()), ("lstm", lambda: jaxrnn.lstm(H), 0.1, ()),
      ("conv_lstm", _conv_lstm, 0.1, CONV_SPATIAL))
  def test_with_rng_a_fresh_mask_every_step(self, make, cell_rate, spatial):
    cell = make()
    params, xs, state = _problem(cell, spatial=spatial)
    rng = jax.random.PRNGKey(3)
    rates = [RATE, cell_rate][:len(jax.tree.leaves(state))]
    masks = _zoneout_masks(rng, state, rates)
    first = jax.tree.leaves(masks)[0]
    self.assertFalse(np.array_equal(first[0], first[1]))
    got = jaxrnn.unroll(jaxrnn.zoneout(cell, RATE, cell_rate=cell_rate), params, xs, state,
                        rng=rng)
    model_zoo.assert_trees_close(got, self._reference(cell, params, xs, state, masks),
                                 rtol=1e-14, atol=1e-14)

  def test_step_is_the_expectation(self):
    cell = jaxrnn.lstm(H)
    params, xs, state = _problem(cell)
    model = jaxrnn.zoneout(cell, RATE)
    update, _ = cell.step(params, state, xs[0])
    want = jax.tree.map(lambda old, new: RATE * old + (1 - RATE) * new, state, update)
    got, y = model.step(params, state, xs[0])
    model_zoo.assert_trees_close((got, y), (want, want.hidden), rtol=1e-14, atol=1e-14)


def _regularised(kind, cell, rate):
  return jaxrnn.recurrent_dropout(cell, rate) if kind == "dropout" else jaxrnn.zoneout(cell, rate)


class RateZeroTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("dropout_gru_reset_before", "dropout", lambda: jaxrnn.gru(H, reset_after=False)),
      ("zoneout_lstm_layer_norm", "zoneout", lambda: jaxrnn.lstm(H, layer_norm=True)))
  def test_equals_the_cell(self, kind, make):
    # The outputs are bitwise equal; the gradients come from another XLA program, whose
    # fusions may round the last bit differently.
    jax.config.update("jax_enable_x64", True)
    cell = make()
    params, xs, state = _problem(cell)
    lengths = jnp.array([T, 2, 0])
    run = lambda model, rng: functools.partial(jaxrnn.unroll, model, seq_lengths=lengths,
                                               rng=rng)
    plain = run(cell, None)
    regularised = run(_regularised(kind, cell, 0.0), jax.random.PRNGKey(1))
    model_zoo.assert_trees_equal(regularised(params, xs, state), plain(params, xs, state))
    loss = lambda f: lambda *a: jnp.sum(f(*a)[1] ** 2)
    self.assertLessEqual(
        model_zoo.max_rel_error(jax.grad(loss(regularised), (0, 1, 2))(params, xs, state),
                                jax.grad(loss(plain), (0, 1, 2))(params, xs, state)), 1e-14)


def _bptt_and_autodiff(model, params, xs, rng, **options):
  """``(d_params, d_xs)`` of `bptt` and of autodiff's vjp, for one random cotangent."""
  outputs = jax.eval_shape(lambda p, x: jaxrnn.unroll(model, p, x), params, xs)
  d_final, d_ys = model_zoo.random_like(
      jax.random.PRNGKey(5), jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), outputs))

  def both(params, xs, d_final, d_ys):
    autodiff = functools.partial(jaxrnn.unroll, model, rng=rng, backward="autodiff", **options)
    want = jax.vjp(autodiff, params, xs)[1]((d_final, d_ys))
    return jaxrnn.bptt(model, params, xs, None, d_ys, d_final, rng=rng, **options)[:2], want

  return model_zoo.compiled(both, params, xs, d_final, d_ys)


def _layer_errors(model, rng, T):
  """``{leaf: relative error}`` of `bptt` against autodiff's vjp, with ``rng``."""
  params = model_zoo.random_params(model, jax.random.PRNGKey(T), I)
  xs = model_zoo.normal(jax.random.PRNGKey(T + 1), (T, B, I))
  got, want = _bptt_and_autodiff(model, params, xs, rng)
  errors = {}
  for name, g, w in zip(("d_params", "d_xs"), got, want):
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(g)[0], jax.tree.leaves(w)):
      errors[name + jax.tree_util.keystr(path)] = model_zoo.max_rel_error(a, b)
  return errors


class BackwardTest(parameterized.TestCase):
  """The explicit backward of every variant against autodiff, each a layer of one stack.

  ``d_params.layers[i]`` is layer ``i``'s, and a layer's ``d_xs`` carries an error on
  to the layers below, so the highest layer with a wrong gradient is the broken one.
  Over two steps each layer runs one reverse step of the wrapped kernel from
  the final state's and the outputs' gradients, and one more from the
  gradient it passed back; test_conformance.py checks longer sequences.
  """

  def test_every_variant_matches_autodiff(self):
    jax.config.update("jax_enable_x64", True)
    layers = [_regularised(kind, make(), RATE) for kind, make in VARIANTS]
    errors = _layer_errors(jaxrnn.stack(layers), jax.random.PRNGKey(11), 2)
    bad = {name: err for name, err in errors.items() if not err <= RTOL}
    self.assertEmpty(bad, f"relative errors above {RTOL}")

  def test_conv_lstm_stack_with_lengths_matches_autodiff(self):
    # The masks [B, H, W, Hc] in the transposed and the kernel-gradient convolutions.
    jax.config.update("jax_enable_x64", True)
    model = jaxrnn.stack([
        jaxrnn.recurrent_dropout(_conv_lstm(), RATE),
        jaxrnn.zoneout(jaxrnn.conv_lstm(2, kernel_size=(2, 3)), RATE, cell_rate=0.2)])
    params = model_zoo.random_params(model, jax.random.PRNGKey(2), I)
    xs = model_zoo.normal(jax.random.PRNGKey(3), (3, B) + CONV_SPATIAL + (I,))
    got, want = _bptt_and_autodiff(model, params, xs, jax.random.PRNGKey(4),
                                   seq_lengths=jnp.array([3, 2, 0]))
    for name, g, w in zip(("d_params", "d_xs"), got, want):
      for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(g)[0], jax.tree.leaves(w)):
        self.assertLessEqual(model_zoo.max_rel_error(a, b), RTOL,
                             name + jax.tree_util.keystr(path))

  def test_bidirectional_with_lengths_matches_autodiff(self):
    jax.config.update("jax_enable_x64", True)
    model = jaxrnn.bidirectional(jaxrnn.zoneout(jaxrnn.lstm(H), RATE, cell_rate=0.2),
                                 jaxrnn.recurrent_dropout(jaxrnn.gru(H), RATE))
    params = model_zoo.random_params(model, jax.random.PRNGKey(2), I)
    xs = model_zoo.normal(jax.random.PRNGKey(3), (T, B, I))
    got, want = _bptt_and_autodiff(model, params, xs, jax.random.PRNGKey(4),
                                   seq_lengths=jnp.array([T, 3, 0]))
    self.assertLessEqual(model_zoo.max_rel_error(got, want), RTOL)


class KeysTest(parameterized.TestCase):

  def test_each_stack_layer_draws_its_own_masks(self):
    jax.config.update("jax_enable_x64", True)
    cell = jaxrnn.zoneout(jaxrnn.rnn(H), RATE)
    model = jaxrnn.stack([cell, cell])
    params = model_zoo.random_params(model, jax.random.PRNGKey(0), I)
    xs = model_zoo.normal(jax.random.PRNGKey(1), (T, B, I))
    rng = jax.random.PRNGKey(9)
    _, ys = jaxrnn.unroll(model, params, xs, rng=rng)
    _, h = jaxrnn.unroll(cell, params.layers[0], xs, rng=jax.random.fold_in(rng, 0))
    _, want = jaxrnn.unroll(cell, params.layers[1], h, rng=jax.random.fold_in(rng, 1))
    np.testing.assert_array_equal(ys, want)
    _, same_key = jaxrnn.unroll(cell, params.layers[1], h, rng=jax.random.fold_in(rng, 0))
    self.assertFalse(np.allclose(ys, same_key))

  def test_jit_and_vmap_over_keys(self):
    model = jaxrnn.stack([jaxrnn.recurrent_dropout(jaxrnn.rnn(H), RATE),
                          jaxrnn.zoneout(jaxrnn.lstm(H), RATE)])
    params, xs, state = _problem(model)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    run = lambda k: jaxrnn.unroll(model, params, xs, state, rng=k)[1]
    batched = jax.jit(jax.vmap(run))(keys)
    for i, k in enumerate(keys):
      np.testing.assert_allclose(batched[i], run(k), rtol=1e-5, atol=1e-6)
    self.assertFalse(np.allclose(batched[0], batched[1]))


class ValidationTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("negative", -0.1), ("one", 1.0), ("above_one", 1.5), ("bool", True), ("string", "0.1"),
      ("nan", float("nan")))
  def test_bad_rate(self, rate):
    for regulariser in (jaxrnn.recurrent_dropout, jaxrnn.zoneout):
      with self.assertRaisesRegex(ValueError, r"rate: expected a probability in \[0, 1\)"):
        regulariser(jaxrnn.lstm(H), rate)

  def test_cell_rate(self):
    with self.assertRaisesRegex(ValueError, r"cell_rate: expected a probability"):
      jaxrnn.zoneout(jaxrnn.lstm(H), 0.1, cell_rate=1.0)
    with self.assertRaisesRegex(ValueError, "cell_rate: GRUConfig has no cell state"):
      jaxrnn.zoneout(jaxrnn.gru(H), 0.1, cell_rate=0.2)

  @parameterized.named_parameters(
      ("stack", lambda: jaxrnn.stack([jaxrnn.lstm(H)]), "StackConfig"),
      ("custom_cell", lambda: model_zoo.indrnn_without_vjp(H), "indrnn"),
      ("nested", lambda: jaxrnn.zoneout(jaxrnn.lstm(H), 0.1), "already wrapped in ZoneoutConfig"))
  def test_refuses(self, make, what):
    for regulariser in (jaxrnn.recurrent_dropout, jaxrnn.zoneout):
      with self.assertRaisesRegex(ValueError, what):
        regulariser(make(), 0.1)


if __name__ == "__main__":
  absltest.main()
