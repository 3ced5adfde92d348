"""The explicit BPTT against autodiff and finite differences."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import optax

import jaxrnn
import model_zoo

SHAPES = [("T1", (1, 1, 1, 1)), ("T6", (6, 3, 2, 4))]  # T, B, I, H
FEATURES = {
    "plain": lambda T, B: {},
    "seq_lengths": lambda T, B: {"seq_lengths": _lengths(T, B)},
    "reverse_resets": lambda T, B: {"seq_lengths": _lengths(T, B), "reverse": True,
                                    "resets": _resets(T, B)},
    "remat_resets": lambda T, B: {"seq_lengths": _lengths(T, B), "resets": _resets(T, B),
                                  "remat_chunk": 4},
    "batch_major": lambda T, B: {"time_major": False, "seq_lengths": _lengths(T, B)},
}


def _lengths(T, B):
  if B == 1:
    return jnp.array([max(T - 1, 0)])
  return jnp.array([(T, max(T - 2, 0), 0)[b % 3] for b in range(B)])


def _resets(T, B):
  return jax.random.bernoulli(jax.random.PRNGKey(11), 0.3, (T, B))


def _problem(name, shape, features, seed=0):
  T, B, I, H = shape
  model = model_zoo.MODELS[name](H)
  key = jax.random.PRNGKey(seed)
  params = model_zoo.random_params(model, key, I)
  kwargs = FEATURES[features](T, B)
  kwargs["rng"] = jax.random.PRNGKey(5)  # dropout in the stack
  if kwargs.get("time_major", True) is False:
    kwargs["resets"] = None
    xs = model_zoo.normal(jax.random.fold_in(key, 1), (B, T, I))
  else:
    xs = model_zoo.normal(jax.random.fold_in(key, 1), (T, B, I))
  state = model_zoo.random_like(jax.random.fold_in(key, 2), model.initial_state(params, B))
  return model, params, xs, state, kwargs


def _cotangents(model, params, xs, state, kwargs):
  final, ys = jaxrnn.unroll(model, params, xs, state, **kwargs)
  return (model_zoo.random_like(jax.random.PRNGKey(3), final),
          model_zoo.random_like(jax.random.PRNGKey(4), ys))


MODEL_NAMES = model_zoo.named(sorted(model_zoo.MODELS))


class BpttTest(parameterized.TestCase):

  @parameterized.named_parameters(model_zoo.combined_named_parameters(
      MODEL_NAMES, SHAPES, model_zoo.named(sorted(FEATURES))))
  def test_bptt_equals_vjp_of_unroll_float64(self, name, shape, features):
    jax.config.update("jax_enable_x64", True)
    model, params, xs, state, kwargs = _problem(name, shape, features)
    d_final, d_ys = _cotangents(model, params, xs, state, kwargs)

    def three_ways(params, xs, state, d_final, d_ys):
      autodiff = functools.partial(jaxrnn.unroll, model, backward="autodiff", **kwargs)
      default = functools.partial(jaxrnn.unroll, model, **kwargs)
      explicit = jaxrnn.bptt(model, params, xs, state, d_ys, d_final, **kwargs)
      return (jax.vjp(autodiff, params, xs, state)[1]((d_final, d_ys)), explicit,
              jax.vjp(default, params, xs, state)[1]((d_final, d_ys)))

    want, explicit, default = model_zoo.compiled(three_ways, params, xs, state, d_final, d_ys)
    self.assertLessEqual(model_zoo.max_rel_error(explicit, want), 1e-10)
    # The default gradient path of unroll runs the same explicit backward.
    self.assertLessEqual(model_zoo.max_rel_error(default, want), 1e-10)

  @parameterized.named_parameters(model_zoo.named(["learned_state", "learned_stack", "lstm"]))
  def test_bptt_with_default_state_includes_the_initial_state_path(self, name):
    jax.config.update("jax_enable_x64", True)
    model, params, xs, _, _ = _problem(name, (5, 2, 3, 3), "plain")
    d_ys = model_zoo.random_like(jax.random.PRNGKey(1), jaxrnn.unroll(model, params, xs)[1])
    _, vjp = jax.vjp(lambda p, x: jaxrnn.unroll(model, p, x, backward="autodiff"), params, xs)
    d_params, d_xs, _ = jaxrnn.bptt(model, params, xs, None, d_ys)
    zeros = jax.tree.map(jnp.zeros_like, model.initial_state(params, 2))
    self.assertLessEqual(model_zoo.max_rel_error((d_params, d_xs), vjp((zeros, d_ys))), 1e-10)

  @parameterized.named_parameters(model_zoo.combined_named_parameters(
      MODEL_NAMES, model_zoo.named(["plain", "reverse_resets"])))
  def test_grad_through_unroll_passes_finite_differences(self, name, features):
    jax.config.update("jax_enable_x64", True)
    model, params, xs, state, kwargs = _problem(name, (4, 2, 2, 3), features)
    targets = model_zoo.random_like(jax.random.PRNGKey(9),
                                    jaxrnn.unroll(model, params, xs, **kwargs)[1])

    @jax.jit
    def loss(params, xs, state):
      final, ys = jaxrnn.unroll(model, params, xs, state, **kwargs)
      per_step = jnp.sum((ys - targets) ** 2, axis=(1, 2))   # the error at each step
      return jnp.sum(per_step) + sum(jnp.sum(f) for f in jax.tree.leaves(final))

    jax.test_util.check_grads(loss, (params, xs, state), order=1, modes=["rev"])

  @parameterized.named_parameters(MODEL_NAMES)
  def test_float32_agreement(self, name):
    """bptt and autodiff agree in float32 too, to a float32 tolerance."""
    model, params, xs, state, kwargs = _problem(name, (20, 4, 8, 16), "seq_lengths")
    d_final, d_ys = _cotangents(model, params, xs, state, kwargs)

    def both(params, xs, state, d_final, d_ys):
      autodiff = functools.partial(jaxrnn.unroll, model, backward="autodiff", **kwargs)
      return (jaxrnn.bptt(model, params, xs, state, d_ys, d_final, **kwargs),
              jax.vjp(autodiff, params, xs, state)[1]((d_final, d_ys)))

    got, want = model_zoo.compiled(both, params, xs, state, d_final, d_ys)
    self.assertLessEqual(model_zoo.max_rel_error(got, want), 2e-6)


def _truncation_problem():
  jax.config.update("jax_enable_x64", True)
  model = jaxrnn.gru(4)
  params = model_zoo.random_params(model, jax.random.PRNGKey(0), 3)
  xs = model_zoo.normal(jax.random.PRNGKey(1), (10, 2, 3))
  targets = model_zoo.normal(jax.random.PRNGKey(2), (10, 2, 4))

  def loss_fn(params, chunk, state):
    x, y = chunk
    final, ys = jaxrnn.unroll(model, params, x, state)
    return jnp.sum((ys - y) ** 2), final

  return model, params, (xs, targets), model.initial_state(params, 2), loss_fn


class TruncatedBpttTest(parameterized.TestCase):

  def test_truncation_at_full_length_is_full_bptt(self):
    model, params, data, state, loss_fn = _truncation_problem()
    (loss, final), grads = jax.jit(functools.partial(
        jaxrnn.truncated_value_and_grad, loss_fn, chunk_size=10))(params, data, state)
    (want_loss, want_final), want = jax.value_and_grad(loss_fn, has_aux=True)(
        params, data, state)
    model_zoo.assert_trees_close((loss, final, grads), (want_loss, want_final, want),
                                 1e-12, 1e-12)

  @parameterized.parameters(1, 3, 4)
  def test_truncation_sums_chunk_gradients(self, k):
    model, params, data, state, loss_fn = _truncation_problem()
    (loss, final), grads = jaxrnn.truncated_value_and_grad(loss_fn, params, data, state,
                                                           chunk_size=k)
    want_loss, want = 0.0, jax.tree.map(jnp.zeros_like, params)
    s = state
    for start in range(0, 10, k):
      chunk = jax.tree.map(lambda a: a[start:start + k], data)
      (l, s), g = jax.value_and_grad(loss_fn, has_aux=True)(params, chunk, s)
      want_loss += l
      want = jax.tree.map(jnp.add, want, g)
    model_zoo.assert_trees_close((loss, final, grads), (want_loss, s, want), 1e-12, 1e-12)
    # Truncation really cuts the gradient: it differs from full BPTT.
    full = jax.grad(lambda p: loss_fn(p, data, state)[0])(params)
    self.assertGreater(model_zoo.max_rel_error(grads, full), 1e-3)


def _clip_problem(name="lstm"):
  jax.config.update("jax_enable_x64", True)
  T, B = 25, 2
  model = model_zoo.MODELS[name](6)
  # Large parameters, so that gradients grow.
  params = model_zoo.random_params(model, jax.random.PRNGKey(0), 3, scale=1.5)
  xs = model_zoo.normal(jax.random.PRNGKey(1), (T, B, 3))
  d_ys = jnp.zeros((T, B, model.output_size)).at[-1].set(10.0)
  return model, params, xs, d_ys


class GradientsThroughTimeTest(parameterized.TestCase):
  """Gradient diagnostics and clipping through time."""

  def test_hidden_gradient_norms_obey_the_tanh_bound(self):
    """||dL/dh_t|| <= ||dL/dh_T|| * sigma_max(W_h)^(T-t), loss on the last output only."""
    jax.config.update("jax_enable_x64", True)
    T, B = 30, 3
    model = jaxrnn.rnn(8)
    params = model_zoo.random_params(model, jax.random.PRNGKey(0), 2, scale=0.5)
    xs = model_zoo.normal(jax.random.PRNGKey(1), (T, B, 2))
    d_ys = jnp.zeros((T, B, 8)).at[-1].set(model_zoo.normal(jax.random.PRNGKey(2), (B, 8)))
    *_, norms = jaxrnn.bptt(model, params, xs, None, d_ys, return_hidden_grad_norms=True)
    self.assertEqual(norms.shape, (T, B))
    sigma = float(jnp.linalg.norm(params.w_h, 2))
    bound = norms[-1] * sigma ** jnp.arange(T - 1, -1, -1)[:, None]
    self.assertTrue(bool(jnp.all(norms <= bound * (1 + 1e-12))))
    np.testing.assert_allclose(norms[-1], jnp.linalg.norm(d_ys[-1], axis=-1), rtol=1e-12)
    self.assertGreater(float(norms[0].max()), 0)

  @parameterized.named_parameters(model_zoo.named(["lstm", "gru", "rnn_tanh"]))
  def test_state_gradient_clipping_by_norm_bounds_every_message(self, name):
    model, params, xs, d_ys = _clip_problem(name)
    clip = jaxrnn.clip_state_grad_by_norm(0.5)
    d_params, _, d_state, norms = jaxrnn.bptt(model, params, xs, None, d_ys,
                                              state_grad_clip=clip,
                                              return_hidden_grad_norms=True)
    # Before the last step, dL/dh_t is exactly the message sent back from step t+1.
    self.assertLessEqual(float(norms[:-1].max()), 0.5 * (1 + 1e-12))
    state_norm = jnp.sqrt(sum(jnp.sum(d ** 2, -1) for d in jax.tree.leaves(d_state)))
    self.assertLessEqual(float(state_norm.max()), 0.5 * (1 + 1e-12))
    exact = jaxrnn.bptt(model, params, xs, None, d_ys)[0]
    # It biases the gradient, as documented.
    self.assertGreater(model_zoo.max_rel_error(d_params, exact), 1e-3)

  @parameterized.named_parameters(("by_norm", jaxrnn.clip_state_grad_by_norm),
                                  ("by_value", jaxrnn.clip_state_grad_by_value))
  def test_state_gradient_clipping_in_both_backward_paths(self, make_clip):
    model, params, xs, d_ys = _clip_problem()
    loss = lambda p, clip, backward: jnp.sum(d_ys * jaxrnn.unroll(
        model, p, xs, state_grad_clip=clip, backward=backward)[1])
    clip = make_clip(0.05)
    clipped = jax.grad(loss)(params, clip, "bptt")
    self.assertLessEqual(
        model_zoo.max_rel_error(jax.grad(loss)(params, clip, "autodiff"), clipped), 1e-10)
    self.assertLessEqual(model_zoo.max_rel_error(
        jaxrnn.bptt(model, params, xs, None, d_ys, state_grad_clip=clip)[0], clipped), 1e-10)
    _, _, d_state = jaxrnn.bptt(model, params, xs, None, d_ys, state_grad_clip=clip)
    bound = jnp.sqrt(sum(jnp.sum(d ** 2, -1) for d in jax.tree.leaves(d_state)))
    if make_clip is jaxrnn.clip_state_grad_by_value:
      bound = max(float(jnp.abs(d).max()) for d in jax.tree.leaves(d_state))
    self.assertLessEqual(float(jnp.max(bound)), 0.05 * (1 + 1e-12))
    exact = jax.grad(loss)(params, None, "autodiff")
    for backward in ("bptt", "autodiff"):
      unclipped = jax.grad(loss)(params, make_clip(float("inf")), backward)
      self.assertLessEqual(model_zoo.max_rel_error(unclipped, exact), 1e-12, msg=backward)
    self.assertGreater(model_zoo.max_rel_error(clipped, exact), 1e-3)

  def test_jax_grad_runs_the_explicit_backward_by_default(self):
    """The default time loop is a custom VJP, so jax.grad runs the explicit backward."""
    model, params, xs, _ = _clip_problem()
    loss = lambda p, backward: jnp.sum(jaxrnn.unroll(model, p, xs, backward=backward)[1])
    text_bptt = str(jax.make_jaxpr(loss, static_argnums=1)(params, "bptt"))
    text_auto = str(jax.make_jaxpr(loss, static_argnums=1)(params, "autodiff"))
    self.assertIn("custom_vjp_call", text_bptt)
    self.assertNotIn("custom_vjp_call", text_auto)
    self.assertLess(model_zoo.max_rel_error(jax.grad(loss)(params, "bptt"),
                                            jax.grad(loss)(params, "autodiff")), 1e-10)

  def test_optax_clip_on_top_of_bptt_gradients(self):
    """Clipping of the whole update stays optax's job: the chain sees the BPTT gradient."""
    model, params, xs, d_ys = _clip_problem()
    grads = jax.grad(lambda p: jnp.sum(d_ys * jaxrnn.unroll(model, p, xs)[1]))(params)
    updates, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
    self.assertGreater(float(optax.global_norm(grads)), 1.0)
    np.testing.assert_allclose(float(optax.global_norm(updates)), 1.0, rtol=1e-9)


class StepDerivativesTest(absltest.TestCase):
  """The factors the LSTM's and GRU's forward steps keep are the step's own derivatives.

  Each is checked against `jax.jvp` of the step along a tangent of ones on
  one gate block: every gate reads its block elementwise, so the jvp is that
  derivative, element by element.
  """

  def test_lstm_gate_residuals(self):
    jax.config.update("jax_enable_x64", True)
    from jaxrnn._src import lstm  # pylint: disable=g-import-not-at-top
    B, H = 3, 4
    ka, kc = jax.random.split(jax.random.PRNGKey(0))
    a = model_zoo.normal(ka, (B, 4 * H), jnp.float64)
    cell = model_zoo.normal(kc, (B, H), jnp.float64)
    _, res = lstm.gate_update(a, cell, H)
    block = lambda k: jnp.zeros_like(a).at[:, k * H:(k + 1) * H].set(1.0)
    for k, name in enumerate("ifgo"):
      _, (d_h, d_c) = jax.jvp(lambda a: lstm.gate_update(a, cell, H)[0], (a,), (block(k),))
      want = d_h if name == "o" else d_c  # dh/da^o; dc/da^i, f, g
      np.testing.assert_allclose(res.d_gates[:, k * H:(k + 1) * H], want, rtol=1e-12,
                                 err_msg=f"gate {name}")
    _, (d_h, d_c) = jax.jvp(lambda c: lstm.gate_update(a, c, H)[0], (cell,),
                            (jnp.ones_like(cell),))
    np.testing.assert_allclose(res.forget, d_c, rtol=1e-12)  # dc_t/dc_{t-1} = f
    np.testing.assert_allclose(res.d_cell * res.forget, d_h, rtol=1e-12)  # dh_t/dc_t * f

  def test_reset_after_gru_residuals(self):
    jax.config.update("jax_enable_x64", True)
    B, H = 3, 4
    model = jaxrnn.gru(H)
    params = jax.tree.map(lambda p: p.astype(jnp.float64) * 3.0,
                          model.init(jax.random.PRNGKey(0), 2))
    kh, kx = jax.random.split(jax.random.PRNGKey(1))
    h = model_zoo.normal(kh, (B, H), jnp.float64)
    gx = model.kernel.project(params, model_zoo.normal(kx, (B, 2), jnp.float64), one_step=True)
    recur = model.kernel.recur
    _, res = recur(params, h, gx)
    ones = jnp.ones((B, H), jnp.float64)
    for k, name in enumerate("rzn"):
      # Along the input side's block k: r and z read it as they read h W_h + b_h.
      tangent = tuple(ones if j == k else jnp.zeros_like(g) for j, g in enumerate(gx))
      _, d_h = jax.jvp(lambda gx: recur(params, h, gx)[0], (gx,), (tangent,))
      want = res.d_n if name == "n" else res.d_gh[:, k * H:(k + 1) * H]
      np.testing.assert_allclose(want, d_h, rtol=1e-12, err_msg=f"input side, gate {name}")
      # Along the recurrent side's bias block k (it adds to h W_h).
      d_b_h = jnp.zeros_like(params.b_h).at[k * H:(k + 1) * H].set(1.0)
      _, d_h = jax.jvp(lambda b: recur(params._replace(b_h=b), h, gx)[0], (params.b_h,),
                       (d_b_h,))
      np.testing.assert_allclose(res.d_gh[:, k * H:(k + 1) * H], d_h, rtol=1e-12,
                                 err_msg=f"recurrent side, gate {name}")
    # With W_h = 0 the state reaches h_t only through z * h_{t-1}.
    no_w_h = params._replace(w_h=jnp.zeros_like(params.w_h))
    _, res0 = recur(no_w_h, h, gx)
    _, d_h = jax.jvp(lambda h: recur(no_w_h, h, gx)[0], (h,), (ones,))
    np.testing.assert_allclose(res0.z, d_h, rtol=1e-12)


if __name__ == "__main__":
  absltest.main()
