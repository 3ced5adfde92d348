"""Tests of the optimizer factory, the train state and the train/eval steps."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn


def _grads(scale):
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  return {"w": scale * jax.random.normal(keys[0], (5, 3)),
          "b": scale * jax.random.normal(keys[1], (3,))}


def _quadratic_loss(params, batch, rng):
  del rng
  loss = jnp.sum((params["w"] - batch) ** 2)
  return loss, {"half": loss / 2}


class OptimizerTest(parameterized.TestCase):

  @parameterized.parameters(0.01, 1.0, 100.0)
  def test_clip_norm_bounds_the_update(self, scale):
    grads = _grads(scale)
    opt = jaxrnn.training.make_optimizer("sgd", 1.0, clip_norm=0.5)
    updates, state = opt.update(grads, opt.init(grads), grads)
    norm = float(optax.tree.norm(updates))
    self.assertLessEqual(norm, 0.5 * (1 + 1e-6))
    raw = float(optax.tree.norm(grads))
    if raw <= 0.5:  # below the bound the gradient passes unchanged
      same = jax.tree.map(lambda u, g: np.allclose(-u, g), updates, grads)
      self.assertTrue(all(jax.tree.leaves(same)))
    np.testing.assert_allclose(float(jaxrnn.training.clipped_grad_norm(state)), min(raw, 0.5), rtol=1e-5)

  def test_clipping_twice_changes_nothing(self):
    grads = _grads(10.0)
    clip = optax.clip_by_global_norm(0.5)
    once, _ = clip.update(grads, clip.init(grads))
    opt = jaxrnn.training.make_optimizer("sgd", 1.0, clip_norm=0.5)
    updates, _ = opt.update(once, opt.init(grads), grads)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(once)):
      np.testing.assert_allclose(-u, g, rtol=1e-6)

  def test_clip_value_bounds_each_element(self):
    grads = _grads(10.0)
    opt = jaxrnn.training.make_optimizer("sgd", 1.0, clip_value=0.25)
    updates, _ = opt.update(grads, opt.init(grads), grads)
    self.assertLessEqual(max(float(jnp.max(jnp.abs(u))) for u in jax.tree.leaves(updates)), 0.25)

  def test_adaptive_clip_matches_optax(self):
    grads, params = _grads(10.0), _grads(1.0)
    opt = jaxrnn.training.make_optimizer("sgd", 1.0, adaptive_clip=0.1)
    updates, _ = opt.update(grads, opt.init(params), params)
    agc = optax.adaptive_grad_clip(0.1)
    expected, _ = agc.update(grads, agc.init(params), params)
    for u, e in zip(jax.tree.leaves(updates), jax.tree.leaves(expected)):
      np.testing.assert_allclose(-u, e, rtol=1e-6)
    self.assertLess(float(optax.tree.norm(updates)), float(optax.tree.norm(grads)))

  @parameterized.parameters("sgd", "adam", "rmsprop", "adagrad")
  def test_each_rule_descends(self, name):
    opt = jaxrnn.training.make_optimizer(name, 0.05, clip_norm=10.0,
                                momentum=0.9 if name in ("sgd", "rmsprop") else None)
    step = jaxrnn.training.make_train_step(_quadratic_loss, opt)
    state = jaxrnn.training.init_train_state({"w": jnp.ones((2,))}, opt, jax.random.PRNGKey(0))
    first = None
    for _ in range(30):
      state, metrics = step(state, jnp.zeros((2,)))
      first = float(metrics["loss"]) if first is None else first
    self.assertLess(float(metrics["loss"]), 0.5 * first)

  def test_non_finite_gradients_are_skipped_and_counted(self):
    params = _grads(1.0)
    opt = jaxrnn.training.make_optimizer("adam", 0.1, clip_norm=1.0)
    state = opt.init(params)
    nan_grads = jax.tree.map(lambda g: g.at[0].set(jnp.nan), _grads(1.0))
    for expected_skips in (1, 2):
      updates, state = opt.update(nan_grads, state, params)
      self.assertTrue(all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates)))
      self.assertEqual(int(jaxrnn.training.skipped_steps(state)), expected_skips)
    updates, state = opt.update(_grads(1.0), state, params)
    self.assertTrue(all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates)))
    self.assertGreater(float(optax.tree.norm(updates)), 0.0)
    self.assertEqual(int(jaxrnn.training.skipped_steps(state)), 2)
    # Adam's moments never saw the NaNs: its count is one step.
    self.assertEqual(int(optax.tree_utils.tree_get(state, "count")), 1)

  def test_train_step_skips_a_nan_batch(self):
    opt = jaxrnn.training.make_optimizer("sgd", 0.1, clip_norm=1.0)
    step = jaxrnn.training.make_train_step(_quadratic_loss, opt)
    state = jaxrnn.training.init_train_state({"w": jnp.ones((2,))}, opt, jax.random.PRNGKey(0))
    new, metrics = step(state, jnp.array([jnp.nan, 0.0]))
    np.testing.assert_array_equal(new.params["w"], state.params["w"])
    self.assertTrue(bool(metrics["skipped"]))
    self.assertEqual(int(metrics["skipped_steps"]), 1)
    self.assertTrue(np.isnan(metrics["clipped_grad_norm"]))
    self.assertEqual(int(new.step), 1)
    new, metrics = step(new, jnp.zeros((2,)))
    self.assertFalse(bool(metrics["skipped"]))
    self.assertEqual(int(metrics["skipped_steps"]), 1)
    self.assertLess(float(new.params["w"][0]), 1.0)

  def test_rejects_bad_settings(self):
    with self.assertRaisesRegex(ValueError, "optimizer"):
      jaxrnn.training.make_optimizer("lbfgs")
    with self.assertRaisesRegex(ValueError, "clip_norm"):
      jaxrnn.training.make_optimizer("adam", clip_norm=-1.0)
    with self.assertRaisesRegex(ValueError, "learning_rate"):
      jaxrnn.training.make_optimizer("adam", 0.0)
    with self.assertRaisesRegex(ValueError, "schedule"):
      jaxrnn.training.make_schedule(1e-3, "step")
    with self.assertRaisesRegex(ValueError, "total_steps"):
      jaxrnn.training.make_schedule(1e-3, "cosine")


class ScheduleTest(absltest.TestCase):

  def test_constant_is_a_float(self):
    self.assertEqual(jaxrnn.training.make_schedule(0.1), 0.1)

  def test_cosine_decays_to_zero(self):
    schedule = jaxrnn.training.make_schedule(0.1, "cosine", total_steps=100)
    np.testing.assert_allclose([schedule(0), schedule(50), schedule(100)], [0.1, 0.05, 0.0],
                               atol=1e-7)

  def test_warmup_rises_then_decays(self):
    schedule = jaxrnn.training.make_schedule(0.1, "warmup_cosine", total_steps=100, warmup_steps=10)
    np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(100)],
                               [0.0, 0.05, 0.1, 0.0], atol=1e-7)

  def test_schedule_drives_the_optimizer(self):
    schedule = jaxrnn.training.make_schedule(1.0, "cosine", total_steps=2)
    opt = jaxrnn.training.make_optimizer("sgd", schedule)
    params = {"w": jnp.ones(())}
    state = opt.init(params)
    sizes = []
    for _ in range(3):
      updates, state = opt.update({"w": jnp.ones(())}, state, params)
      sizes.append(float(-updates["w"]))
    np.testing.assert_allclose(sizes, [1.0, 0.5, 0.0], atol=1e-6)


class TrainStepTest(absltest.TestCase):

  def test_metrics_match_a_direct_computation(self):
    opt = jaxrnn.training.make_optimizer("sgd", 0.01, clip_norm=0.1)
    step = jaxrnn.training.make_train_step(_quadratic_loss, opt)
    params = {"w": jnp.array([3.0, -4.0])}
    state = jaxrnn.training.init_train_state(params, opt, jax.random.PRNGKey(0))
    new, metrics = step(state, jnp.zeros((2,)))
    np.testing.assert_allclose(metrics["loss"], 25.0)
    np.testing.assert_allclose(metrics["half"], 12.5)
    np.testing.assert_allclose(metrics["grad_norm"], 10.0, rtol=1e-6)
    np.testing.assert_allclose(metrics["clipped_grad_norm"], 0.1, rtol=1e-6)
    np.testing.assert_allclose(new.params["w"], [3.0 - 0.01 * 0.06, -4.0 + 0.01 * 0.08], rtol=1e-6)

  def test_state_is_pure_and_rng_advances(self):
    opt = jaxrnn.training.make_optimizer("adam", 0.1)

    def loss_fn(params, batch, rng):
      return jnp.sum(params["w"] * jax.random.normal(rng, (2,))) + 0 * batch, {}

    step = jaxrnn.training.make_train_step(loss_fn, opt)
    state = jaxrnn.training.init_train_state({"w": jnp.ones((2,))}, opt, jax.random.key(3))
    self.assertEqual(state.rng.dtype, jnp.uint32)  # typed keys are stored raw
    a, _ = step(state, 0.0)
    b, _ = step(state, 0.0)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(x, y)
    c, _ = step(a, 0.0)
    seen = [np.asarray(s.rng) for s in (state, a, c)]
    self.assertFalse(np.array_equal(seen[0], seen[1]))
    self.assertFalse(np.array_equal(seen[1], seen[2]))
    self.assertEqual(int(c.step), 2)

  def test_eval_step_has_no_rng(self):
    def loss_fn(params, batch, rng):
      self.assertIsNone(rng)
      return jnp.sum(params * batch), {"n": jnp.float32(1)}

    metrics = jaxrnn.training.make_eval_step(loss_fn)(jnp.ones(3), jnp.arange(3.0))
    self.assertEqual(float(metrics["loss"]), 3.0)
    self.assertEqual(float(metrics["n"]), 1.0)

  def test_axis_name_averages_gradients_over_devices(self):
    opt = jaxrnn.training.make_optimizer("sgd", 1.0)
    step = jaxrnn.training.make_train_step(_quadratic_loss, opt, axis_name="d", jit=False)
    state = jaxrnn.training.init_train_state({"w": jnp.zeros((2,))}, opt, jax.random.PRNGKey(0))
    batches = jnp.array([[1.0, 1.0], [3.0, 3.0]])  # two "devices" via vmap
    new, metrics = jax.vmap(step, in_axes=(None, 0), axis_name="d")(state, batches)
    # Mean gradient of sum((w - b)^2) at w=0 is -2 * mean(b) = -4.
    np.testing.assert_allclose(new.params["w"], [[4.0, 4.0], [4.0, 4.0]])
    np.testing.assert_allclose(metrics["loss"], [10.0, 10.0])


if __name__ == "__main__":
  absltest.main()
