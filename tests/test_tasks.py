"""Tests of the task generators and their baselines."""

import collections
import math
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from experiments import tasks


class AddingTest(parameterized.TestCase):

  @parameterized.parameters(2, 7, 100)
  def test_layout_and_target(self, seq_len):
    batch = tasks.adding_batch(jax.random.PRNGKey(seq_len), 256, seq_len)
    inputs, targets = np.asarray(batch.inputs), np.asarray(batch.targets)
    self.assertEqual(inputs.shape, (seq_len, 256, 2))
    self.assertEqual(targets.shape, (256, 1))
    values, markers = inputs[..., 0], inputs[..., 1]
    self.assertTrue(np.all((values >= 0) & (values < 1)))
    self.assertTrue(np.all(np.isin(markers, [0.0, 1.0])))
    half = seq_len // 2
    np.testing.assert_array_equal(markers[:half].sum(0), 1)
    np.testing.assert_array_equal(markers[half:].sum(0), 1)
    np.testing.assert_allclose(targets[:, 0], (values * markers).sum(0), rtol=1e-6)

  def test_markers_cover_each_half(self):
    markers = np.asarray(tasks.adding_batch(jax.random.PRNGKey(0), 4000, 10).inputs[..., 1])
    positions = np.nonzero(markers)[0]
    self.assertEqual(set(positions.tolist()), set(range(10)))

  def test_baseline_matches_predicting_one(self):
    batch = tasks.adding_batch(jax.random.PRNGKey(1), 50_000, 10)
    mse = float(np.mean((np.asarray(batch.targets) - 1.0) ** 2))
    self.assertAlmostEqual(mse, tasks.ADDING_BASELINE, delta=0.005)
    self.assertAlmostEqual(tasks.ADDING_BASELINE, 0.167, places=3)
    # The task's loss scores only the final step.
    outputs = jnp.concatenate([jnp.full((9, 50_000, 1), 123.0), jnp.ones((1, 50_000, 1))])
    loss, metrics = tasks.adding_loss(outputs, batch)
    self.assertAlmostEqual(float(loss), mse, places=4)
    self.assertAlmostEqual(float(metrics["metric"]), mse, places=4)


class CopyTest(parameterized.TestCase):

  @parameterized.parameters(1, 20, 100)
  def test_layout(self, delay):
    batch = tasks.copy_batch(jax.random.PRNGKey(delay), 64, delay)
    inputs, targets = np.asarray(batch.inputs), np.asarray(batch.targets)
    self.assertEqual(inputs.shape, (delay + 20, 64))
    self.assertEqual(targets.shape, (delay + 20, 64))
    symbols = inputs[:10]
    self.assertTrue(np.all((symbols >= 1) & (symbols <= 8)))
    np.testing.assert_array_equal(inputs[10:delay + 9], 0)
    np.testing.assert_array_equal(inputs[delay + 9], 9)
    np.testing.assert_array_equal(inputs[delay + 10:], 0)
    np.testing.assert_array_equal(targets[:delay + 10], 0)
    np.testing.assert_array_equal(targets[delay + 10:], symbols)

  @parameterized.parameters(10, 20)
  def test_baseline_is_the_memoryless_entropy(self, delay):
    targets = np.asarray(tasks.copy_batch(jax.random.PRNGKey(0), 20_000, delay).targets)
    # The best memoryless predictor outputs each step's label distribution;
    # its loss is the mean over steps of that distribution's entropy.
    entropies = []
    for labels in targets:
      p = np.bincount(labels, minlength=tasks.COPY_VOCAB) / len(labels)
      entropies.append(-np.sum(p[p > 0] * np.log(p[p > 0])))
    self.assertAlmostEqual(float(np.mean(entropies)), tasks.copy_baseline(delay), delta=2e-3)
    self.assertAlmostEqual(tasks.copy_baseline(delay), 10 * math.log(8) / (delay + 20))

  def test_loss_of_the_memoryless_predictor(self):
    delay = 20
    batch = tasks.copy_batch(jax.random.PRNGKey(0), 8, delay)
    blank = jnp.full((tasks.COPY_VOCAB,), -1e9).at[0].set(0.0)
    guess = jnp.full((tasks.COPY_VOCAB,), -1e9).at[1:9].set(0.0)
    logits = jnp.concatenate([jnp.broadcast_to(blank, (delay + 10, 8, 10)),
                              jnp.broadcast_to(guess, (10, 8, 10))])
    task = tasks.make_task("copy", delay, eval_size=8)
    loss, metrics = task.loss(logits, batch)
    self.assertAlmostEqual(float(metrics["metric"]), tasks.copy_baseline(delay), places=5)
    self.assertAlmostEqual(float(loss), 10 * math.log(8), places=4)
    # Accuracy counts the ten recalled symbols only.
    perfect = jax.nn.one_hot(batch.targets, tasks.COPY_VOCAB) * 50.0
    self.assertEqual(float(task.loss(perfect, batch)[1]["accuracy"]), 1.0)
    wrong_blanks = perfect.at[:delay + 10].set(logits[:delay + 10] * -1)
    self.assertEqual(float(task.loss(wrong_blanks, batch)[1]["accuracy"]), 1.0)


class CharLMTest(absltest.TestCase):

  def test_builtin_corpus(self):
    text = tasks.builtin_corpus()
    self.assertGreater(len(text), 400_000)
    self.assertIn("lambda", text)

  def test_windows_and_baseline(self):
    rng = np.random.default_rng(0)
    p = np.array([8, 4, 2, 1, 1, 1, 1]) / 18
    text = "".join(rng.choice(list("gfedcba"), size=3000, p=p))
    task = tasks.charlm_task(text, seq_len=20)
    self.assertEqual(task.vocab, "abcdefg")
    batch = task.sample(jax.random.PRNGKey(0), 16)
    inputs, targets = np.asarray(batch.inputs), np.asarray(batch.targets)
    self.assertEqual(inputs.shape, (20, 16))
    np.testing.assert_array_equal(inputs[1:], targets[:-1])
    train_text = text[:2700]
    for b in range(16):
      window = "".join(task.vocab[i] for i in list(inputs[:, b]) + [targets[-1, b]])
      self.assertIn(window, train_text)
    valid = np.concatenate([np.asarray(v.inputs).T for v in task.eval_batches]).ravel()
    self.assertEqual("".join(task.vocab[i] for i in valid), text[2700:2700 + len(valid)])
    self.assertEqual(len(valid), (300 - 1) // 20 * 20)
    counts = collections.Counter(train_text)
    total = len(train_text) + len(task.vocab)
    expected = -np.mean([math.log((counts[c] + 1) / total) for c in text[2700:]])
    self.assertAlmostEqual(task.baseline, expected, places=6)
    self.assertLess(task.baseline, math.log(len(task.vocab)))

  def test_rejects_a_corpus_too_short(self):
    with self.assertRaisesRegex(ValueError, "too few"):
      tasks.charlm_task("abcdefghij" * 10, seq_len=50)

  def test_read_corpus_errors(self):
    with tempfile.TemporaryDirectory() as tmp:
      with self.assertRaisesRegex(ValueError, "no such file"):
        tasks.read_corpus(os.path.join(tmp, "missing.txt"))
      empty = os.path.join(tmp, "empty.txt")
      open(empty, "w").close()
      with self.assertRaisesRegex(ValueError, "empty"):
        tasks.read_corpus(empty)
      binary = os.path.join(tmp, "bin.txt")
      with open(binary, "wb") as f:
        f.write(b"\xff\xfe\x00abc")
      with self.assertRaisesRegex(ValueError, "UTF-8"):
        tasks.read_corpus(binary)
      good = os.path.join(tmp, "good.txt")
      with open(good, "w", encoding="utf-8") as f:
        f.write("héllo")
      self.assertEqual(tasks.read_corpus(good), "héllo")


class MakeTaskTest(parameterized.TestCase):

  @parameterized.parameters(("adding", 1), ("copy", 0), ("charlm", 0))
  def test_rejects_short_sequences(self, name, seq_len):
    with self.assertRaisesRegex(ValueError, "too short"):
      tasks.make_task(name, seq_len)

  def test_rejects_unknown_task(self):
    with self.assertRaisesRegex(ValueError, "unknown task"):
      tasks.make_task("parity")

  def test_held_out_set_is_fixed_and_sized(self):
    a = tasks.make_task("adding", 10, eval_size=1200)
    b = tasks.make_task("adding", 10, eval_size=1200)
    self.assertEqual([x.inputs.shape[1] for x in a.eval_batches], [500, 500, 200])
    for x, y in zip(a.eval_batches, b.eval_batches):
      np.testing.assert_array_equal(x.inputs, y.inputs)

  def test_sampling_is_a_function_of_the_key(self):
    task = tasks.make_task("copy", 5, eval_size=4)
    x = task.sample(jax.random.PRNGKey(7), 3)
    y = task.sample(jax.random.PRNGKey(7), 3)
    z = task.sample(jax.random.PRNGKey(8), 3)
    np.testing.assert_array_equal(x.inputs, y.inputs)
    self.assertFalse(np.array_equal(x.inputs, z.inputs))


if __name__ == "__main__":
  absltest.main()
