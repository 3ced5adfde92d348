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


class DigitsTest(parameterized.TestCase):

  def test_split_is_fixed(self):
    split = tasks.digits_split()
    again = tasks.digits_split.__wrapped__()  # Read from scikit-learn once more, past the cache.
    for got, want in zip(again, split):
      np.testing.assert_array_equal(got, want, strict=True)
    self.assertEqual([a.shape for a in split], [(1437, 64), (1437,), (360, 64), (360,)])
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
    images, labels = datasets.load_digits(return_X_y=True)
    # The file's order, no shuffling: the first 1437 train, the last 360 test.
    np.testing.assert_array_equal(split.test_images * 16, images[1437:])
    np.testing.assert_array_equal(split.train_labels, labels[:1437])
    self.assertEqual(split.test_images.min(), 0.0)
    self.assertEqual(split.test_images.max(), 1.0)
    # Every class in both parts, none with under 8% of the test images.
    self.assertGreater(np.bincount(split.test_labels, minlength=10).min(), 0.08 * 360)
    self.assertEqual(set(split.train_labels.tolist()), set(range(10)))

  @parameterized.parameters((64, 1), (8, 8), (16, 4))
  def test_images_are_read_in_seq_len_steps(self, seq_len, features):
    task = tasks.make_task("digits", seq_len)
    self.assertEqual((task.seq_len, task.input_size, task.output_size), (seq_len, features, 10))
    split = tasks.digits_split()
    test = np.concatenate([np.asarray(b.inputs) for b in task.eval_batches], axis=1)
    self.assertEqual(test.shape, (seq_len, 360, features))
    image = split.test_images[3].reshape(8, 8)
    if seq_len == 8:  # One row per step.
      np.testing.assert_array_equal(test[:, 3], image)
    np.testing.assert_array_equal(test[:, 3].ravel(), image.ravel())  # Row-major pixels.
    np.testing.assert_array_equal(
        np.concatenate([np.asarray(b.targets) for b in task.eval_batches]), split.test_labels)
    batch = task.sample(jax.random.PRNGKey(0), 5)
    np.testing.assert_array_equal(batch.inputs, task.sample(jax.random.PRNGKey(0), 5).inputs)
    train = np.asarray(batch.inputs).transpose(1, 0, 2).reshape(5, 64)
    for row, label in zip(train, np.asarray(batch.targets)):
      # Training batches come from the training part only, each image with its label.
      self.assertTrue(np.any((split.train_images == row).all(axis=1)
                             & (split.train_labels == label)))

  def test_loss_scores_the_last_step_and_the_baseline_is_the_class_frequencies(self):
    task = tasks.make_task("digits")
    batch = task.eval_batches[0]
    labels = np.asarray(batch.targets)
    right = jax.nn.one_hot(labels, 10) * 30.0
    outputs = jnp.concatenate([jnp.full((63, 360, 10), 7.0), right[None]])
    loss, metrics = task.loss(outputs, batch)
    self.assertLess(float(loss), 1e-6)
    self.assertEqual(float(metrics["accuracy"]), 1.0)
    _, metrics = task.loss(outputs[:, :, ::-1], batch)
    self.assertLess(float(metrics["accuracy"]), 0.2)
    prior = np.log((np.bincount(tasks.digits_split().train_labels, minlength=10) + 1) / 1447)
    uniform_loss, _ = task.loss(jnp.broadcast_to(jnp.asarray(prior), (64, 360, 10)), batch)
    self.assertAlmostEqual(float(uniform_loss), task.baseline, places=5)

  @parameterized.parameters(5, 63, 128)
  def test_seq_len_must_divide_the_pixels(self, seq_len):
    with self.assertRaisesRegex(ValueError, f"--seq_len={seq_len} does not divide the 64"):
      tasks.make_task("digits", seq_len)


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
