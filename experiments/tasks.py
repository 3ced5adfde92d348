"""Sequence tasks for the experiments: adding, copy, character-level LM and sequential digits.

A `Task` bundles a batch sampler, a fixed held-out set, the loss and the
trivial baseline that the loss is compared against. Batches are time-major and
drawn with `jax.random` from a key, so the stream of batches is a pure function
of `(data_key, step)` and a resumed run sees exactly the batches an
uninterrupted one would.

Training losses are sums over time of per-step errors, averaged over the
batch. The reported `metric` is the task's usual figure: the mean squared
error of the final prediction (adding) or the cross-entropy per step in nats
(copy, charlm), i.e. the summed loss divided by the sequence length, or the
cross-entropy of the last step's classification (digits).
"""

import functools
import math
import os
from collections.abc import Callable
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn

TASKS = ("adding", "copy", "charlm", "digits")
DEFAULT_SEQ_LEN = {"adding": 100, "copy": 20, "charlm": 100, "digits": 64}
MIN_SEQ_LEN = {"adding": 2, "copy": 1, "charlm": 1, "digits": 1}

COPY_LENGTH = 10  # symbols to remember
COPY_CATEGORIES = 8  # symbols are 1..8; 0 is the blank and 9 the delimiter
COPY_VOCAB = COPY_CATEGORIES + 2
EVAL_BATCH = 500  # sequences per evaluation batch
TEST_KEY_SEED = 2**31 - 1


class Batch(NamedTuple):
  """A time-major batch.

  Attributes:
    inputs: ``[T, B, F]`` float features or ``[T, B]`` int32 tokens.
    targets: ``[B, 1]`` float (adding), ``[B]`` int32 classes (digits) or
      ``[T, B]`` int32 labels.
  """
  inputs: jax.Array
  targets: jax.Array


class Bar(NamedTuple):
  """The held-out figure a run must reach to count as having solved its task.

  Attributes:
    text: the bar in words, e.g. "test MSE < 0.01".
    figure: the summary's key it reads: "test_loss", "loss_over_baseline" or
      "test_accuracy".
    threshold: the figure must be below it (above, if `above`).
    above: whether higher is better (accuracy).
  """
  text: str
  figure: str
  threshold: float
  above: bool = False

  def met(self, result: dict) -> bool:
    """Whether `result` (a summary, or one seed's entry of it) meets the bar."""
    value = result[self.figure]
    if value is None or not math.isfinite(value):
      return False
    return value > self.threshold if self.above else value < self.threshold


# The bars of the acceptance runs (README, "Learning results"): adding is solved below an MSE of
# 0.01, copy and charlm at a fraction of their baseline, sequential digits above 90% test
# accuracy, which the logistic regression of `digits_nonrecurrent_baselines` reaches (0.900).
BARS = {
    "adding": Bar("test MSE < 0.01", "test_loss", 0.01),
    "copy": Bar("CE < 0.5 x baseline", "loss_over_baseline", 0.5),
    "charlm": Bar("CE < 0.55 x unigram", "loss_over_baseline", 0.55),
    "digits": Bar("test accuracy > 0.9", "test_accuracy", 0.9, above=True),
}


class Task(NamedTuple):
  """A training task.

  Attributes:
    name: "adding", "copy", "charlm" or "digits".
    seq_len: the task's length parameter (the delay T for copy).
    input_size: feature size, or the vocabulary size when `tokens` is True.
    output_size: regression outputs (adding) or classes.
    tokens: whether `Batch.inputs` holds int32 tokens (embedded by the model).
    sample: ``sample(key, batch_size) -> Batch``, jitted.
    eval_batches: the fixed held-out set, a list of `Batch`es.
    loss: ``loss(outputs, batch) -> (objective, metrics)``; `outputs` are the
      readout's ``[T, B, output_size]``; metrics hold `metric` and, for the
      classification tasks, `accuracy`.
    baseline: the trivial predictor's `metric` (see each task's docstring).
    baseline_name: what the baseline predicts.
    vocab: the characters of charlm's vocabulary (empty for the others).
    targets_axis: the batch axis of `Batch.targets`: 0 for one target per
      sequence (adding, digits), 1 for one per step.
  """
  name: str
  seq_len: int
  input_size: int
  output_size: int
  tokens: bool
  sample: Callable[[jax.Array, int], Batch]
  eval_batches: list
  loss: Callable
  baseline: float
  baseline_name: str
  vocab: str = ""
  targets_axis: int = 1


# --- adding ---------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(1, 2))
def adding_batch(key: jax.Array, batch_size: int, seq_len: int) -> Batch:
  """The adding problem (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

  Channel 0 holds values drawn from U[0, 1]; channel 1 is zero except for
  exactly one 1 in the first half (``t < seq_len // 2``) and one in the second.
  The target is the sum of the two marked values.

  Args:
    key: PRNG key.
    batch_size: B.
    seq_len: T >= 2.

  Returns:
    `Batch(inputs [T, B, 2] float32, targets [B, 1] float32)`.

  References:
    Hochreiter & Schmidhuber, Long Short-Term Memory, 1997.
    Arjovsky, Shah & Bengio, Unitary Evolution Recurrent Neural Networks, 2016.
  """
  half = seq_len // 2
  k_values, k_first, k_second = jax.random.split(key, 3)
  values = jax.random.uniform(k_values, (seq_len, batch_size))
  first = jax.random.randint(k_first, (batch_size,), 0, half)
  second = jax.random.randint(k_second, (batch_size,), half, seq_len)
  steps = jnp.arange(seq_len)[:, None]
  markers = ((steps == first) | (steps == second)).astype(values.dtype)
  targets = jnp.sum(values * markers, axis=0)[:, None]
  return Batch(jnp.stack([values, markers], axis=-1), targets)


def adding_loss(outputs: jax.Array, batch: Batch):
  """Squared error of the last step's prediction; earlier outputs are free."""
  mse = jaxrnn.sequence_mse(outputs[-1:], batch.targets[None], reduce="sum")
  return mse, {"metric": mse}


# Predicting 1 = E[target] everywhere has MSE Var(U + U') = 2/12.
ADDING_BASELINE = 1.0 / 6.0


# --- copy -----------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(1, 2))
def copy_batch(key: jax.Array, batch_size: int, delay: int) -> Batch:
  """The copy memory task of Arjovsky et al. (2016), sequences of delay + 20 steps.

  Input: 10 symbols from {1..8}, then ``delay - 1`` blanks (0), the delimiter
  (9) and 10 more blanks. Target: blanks for ``delay + 10`` steps, then the 10
  symbols.

  Args:
    key: PRNG key.
    batch_size: B.
    delay: T >= 1.

  Returns:
    `Batch(inputs [T+20, B] int32, targets [T+20, B] int32)`.

  References:
    Arjovsky, Shah & Bengio, Unitary Evolution Recurrent Neural Networks, 2016.
  """
  symbols = jax.random.randint(
      key, (COPY_LENGTH, batch_size), 1, COPY_CATEGORIES + 1, dtype=jnp.int32)
  blanks = lambda n: jnp.zeros((n, batch_size), jnp.int32)
  delimiter = jnp.full((1, batch_size), COPY_VOCAB - 1, jnp.int32)
  inputs = jnp.concatenate([symbols, blanks(delay - 1), delimiter, blanks(COPY_LENGTH)])
  targets = jnp.concatenate([blanks(delay + COPY_LENGTH), symbols])
  return Batch(inputs, targets)


def copy_baseline(delay: int) -> float:
  """Cross-entropy per step of the memoryless strategy.

  It predicts blank for the first ``delay + 10`` steps (loss 0) and a uniform
  guess over the 8 symbols for the last 10 (loss ln 8 each), so the mean over
  ``delay + 20`` steps is ``10 ln 8 / (delay + 20)``.
  """
  return COPY_LENGTH * math.log(COPY_CATEGORIES) / (delay + 2 * COPY_LENGTH)


# --- charlm ---------------------------------------------------------------


def builtin_corpus() -> str:
  """The text of Python's interactive help topics (`pydoc_data.topics`), ~465K chars."""
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  return "".join(topics.topics[name] for name in sorted(topics.topics))


def read_corpus(data_path: Optional[str]) -> str:
  """The built-in corpus, or the UTF-8 text at `data_path`.

  Raises:
    ValueError: the file is missing, a directory, unreadable, not UTF-8 or empty.
  """
  if not data_path:
    return builtin_corpus()
  if os.path.isdir(data_path):
    raise ValueError(f"--data_path={data_path} is a directory; give a UTF-8 text file.")
  if not os.path.isfile(data_path):
    raise ValueError(f"--data_path={data_path}: no such file.")
  try:
    with open(data_path, encoding="utf-8") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise ValueError(
        f"--data_path={data_path}: not UTF-8 text ({e.reason} at byte {e.start}).") from e
  except OSError as e:
    raise ValueError(f"--data_path={data_path}: cannot read it ({e.strerror}).") from e
  if not text:
    raise ValueError(f"--data_path={data_path}: the file is empty.")
  return text


@functools.partial(jax.jit, static_argnums=(2, 3))
def _random_windows(ids: jax.Array, key: jax.Array, batch_size: int, seq_len: int) -> Batch:
  starts = jax.random.randint(key, (batch_size,), 0, ids.shape[0] - seq_len)
  windows = ids[starts[None, :] + jnp.arange(seq_len + 1)[:, None]]
  return Batch(windows[:-1], windows[1:])


def _fixed_windows(ids: np.ndarray, seq_len: int) -> list[Batch]:
  """Consecutive non-overlapping windows covering `ids`, in batches of EVAL_BATCH."""
  count = (len(ids) - 1) // seq_len
  starts = np.arange(count) * seq_len
  windows = ids[starts[None, :] + np.arange(seq_len + 1)[:, None]]
  return [Batch(jnp.asarray(windows[:-1, i:i + EVAL_BATCH]),
                jnp.asarray(windows[1:, i:i + EVAL_BATCH]))
          for i in range(0, count, EVAL_BATCH)]


def unigram_cross_entropy(train_ids: np.ndarray, eval_ids: np.ndarray, vocab_size: int) -> float:
  """Cross-entropy (nats/char) of `eval_ids` under the add-one unigram of `train_ids`."""
  counts = np.bincount(train_ids, minlength=vocab_size) + 1.0
  log_p = np.log(counts / counts.sum())
  return float(-log_p[eval_ids].mean())


def cross_entropy_loss(outputs: jax.Array, batch: Batch, *, scored_steps: Optional[int] = None):
  """Cross-entropy summed over all steps; its per-step mean and the accuracy as metrics.

  Args:
    outputs: ``[T, B, classes]`` logits.
    batch: the batch with ``[T, B]`` int labels.
    scored_steps: count accuracy on the last `scored_steps` steps only (None: all).
  """
  total = jaxrnn.sequence_cross_entropy(outputs, batch.targets, reduce="sum")
  scored = slice(None) if scored_steps is None else slice(-scored_steps, None)
  correct = jnp.argmax(outputs[scored], axis=-1) == batch.targets[scored]
  return total, {"metric": total / outputs.shape[0], "accuracy": jnp.mean(correct)}


def charlm_task(text: str, seq_len: int, valid_fraction: float = 0.1) -> Task:
  """Next-character prediction on `text`; the last `valid_fraction` is held out.

  The vocabulary is every character of `text`. Training windows of `seq_len`
  characters start at random offsets of the training part; the validation set
  is the held-out part cut into consecutive windows, each read from a zero
  state. The baseline is the held-out cross-entropy of the training text's
  unigram distribution.

  Raises:
    ValueError: the text is too short for `seq_len`.
  """
  vocab = "".join(sorted(set(text)))
  lookup = {c: i for i, c in enumerate(vocab)}
  ids = np.fromiter((lookup[c] for c in text), np.int32, len(text))
  split = int(len(ids) * (1 - valid_fraction))
  train_ids, valid_ids = ids[:split], ids[split:]
  if min(len(train_ids), len(valid_ids)) < seq_len + 1:
    raise ValueError(
        f"the corpus has {len(text)} characters, too few for --seq_len={seq_len}: both the "
        f"training ({len(train_ids)}) and validation ({len(valid_ids)}) parts need "
        f"at least seq_len + 1 characters.")
  train_device = jnp.asarray(train_ids)
  return Task(
      name="charlm", seq_len=seq_len, input_size=len(vocab), output_size=len(vocab),
      tokens=True,
      sample=lambda key, batch_size: _random_windows(train_device, key, batch_size, seq_len),
      eval_batches=_fixed_windows(valid_ids, seq_len),
      loss=cross_entropy_loss,
      baseline=unigram_cross_entropy(train_ids, valid_ids, len(vocab)),
      baseline_name="unigram", vocab=vocab)


# --- digits -------------------------------------------------------------------

DIGITS_PIXELS = 64  # 8 x 8 images, read row by row
DIGITS_CLASSES = 10
DIGITS_TEST = 360  # the last 360 of scikit-learn's 1797 digits are held out


class DigitsSplit(NamedTuple):
  """scikit-learn's handwritten digits, split into training and test images.

  Attributes:
    train_images: ``[1437, 64]`` float32 pixels in [0, 1], row-major.
    train_labels: ``[1437]`` int32 classes 0..9.
    test_images: ``[360, 64]``, likewise.
    test_labels: ``[360]``.
  """
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray


@functools.cache
def digits_split() -> DigitsSplit:
  """The digits of `sklearn.datasets.load_digits`, with a fixed split.

  1797 8x8 images of handwritten digits with grey levels 0..16 (the UCI
  optdigits test set, Alpaydin & Kaynak 1998) ship inside scikit-learn, so
  nothing is downloaded. Pixels are scaled to [0, 1]. The split keeps the
  file's order, as scikit-learn's own digits example does: the first 1437
  images train, the last 360 test. It draws no random numbers, so no seed and
  no library version can move it.

  Raises:
    ValueError: scikit-learn is not installed.

  References:
    Alpaydin & Kaynak, Cascading classifiers, Kybernetika, 1998.
  """
  try:
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError("--task=digits reads the digits that ship with scikit-learn: "
                     "pip install scikit-learn (or jaxrnn[experiments]).") from e
  images, labels = datasets.load_digits(return_X_y=True)
  images = np.asarray(images, np.float32) / 16.0
  labels = np.asarray(labels, np.int32)
  split = len(labels) - DIGITS_TEST
  arrays = (images[:split], labels[:split], images[split:], labels[split:])
  for array in arrays:
    array.setflags(write=False)
  return DigitsSplit(*arrays)


def digits_sequences(images, seq_len: int):
  """``[N, 64]`` images as ``[T, N, 64 / T]`` sequences: T chunks of pixels, row-major.

  ``seq_len=64`` reads one pixel per step (sequential digits, as sequential
  MNIST reads its images); ``seq_len=8`` one row per step.
  """
  return images.reshape(images.shape[0], seq_len, -1).transpose(1, 0, 2)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _digits_batch(images: jax.Array, labels: jax.Array, key: jax.Array, batch_size: int,
                  seq_len: int) -> Batch:
  rows = jax.random.randint(key, (batch_size,), 0, images.shape[0])
  return Batch(digits_sequences(images[rows], seq_len), labels[rows])


def last_step_cross_entropy(outputs: jax.Array, batch: Batch):
  """Cross-entropy of the last step's logits against each sequence's class.

  Earlier outputs are free, as in `adding_loss`.
  """
  loss = jaxrnn.sequence_cross_entropy(outputs[-1:], batch.targets[None], reduce="sum")
  correct = jnp.argmax(outputs[-1], axis=-1) == batch.targets
  return loss, {"metric": loss, "accuracy": jnp.mean(correct)}


def digits_task(seq_len: int) -> Task:
  """Sequential digits: classify an 8x8 digit read in `seq_len` steps.

  Each training batch draws images of the training split uniformly with
  replacement; the held-out set is the whole test split. The model's last
  output is the class's logits. The baseline is the test cross-entropy of the
  training split's class frequencies (add-one smoothed); the non-recurrent
  classifiers of `digits_nonrecurrent_baselines` are the bar to compare with.

  Raises:
    ValueError: `seq_len` does not divide the 64 pixels, or no scikit-learn.
  """
  if seq_len < 1 or DIGITS_PIXELS % seq_len:
    raise ValueError(
        f"--seq_len={seq_len} does not divide the {DIGITS_PIXELS} pixels of a digit; use 64 "
        "(one pixel per step, the default), 8 (one row per step), or 32, 16, 4, 2, 1.")
  split = digits_split()
  images, labels = jnp.asarray(split.train_images), jnp.asarray(split.train_labels)
  test = digits_sequences(split.test_images, seq_len)
  return Task(
      name="digits", seq_len=seq_len, input_size=DIGITS_PIXELS // seq_len,
      output_size=DIGITS_CLASSES, tokens=False,
      sample=lambda key, batch_size: _digits_batch(images, labels, key, batch_size, seq_len),
      eval_batches=[Batch(jnp.asarray(test[:, i:i + EVAL_BATCH]),
                          jnp.asarray(split.test_labels[i:i + EVAL_BATCH]))
                    for i in range(0, DIGITS_TEST, EVAL_BATCH)],
      loss=last_step_cross_entropy,
      baseline=unigram_cross_entropy(split.train_labels, split.test_labels, DIGITS_CLASSES),
      baseline_name="class frequencies", targets_axis=0)


def digits_nonrecurrent_baselines() -> dict:
  """Two non-recurrent classifiers of the 64 pixels, trained and tested on `digits_split`.

  ``logistic_regression`` is scikit-learn's L2-regularised multinomial
  logistic regression (C=1, lbfgs); ``mlp`` its `MLPClassifier` with one hidden
  layer of 128 ReLU units (adam, ``random_state=0``). Both run on one thread,
  which makes them deterministic and, next to JAX's threads, fast (~1 s).

  Returns:
    ``{name: {"test_accuracy": ..., "test_loss": cross-entropy in nats}}``.
  """
  import threadpoolctl  # pylint: disable=g-import-not-at-top
  from sklearn import linear_model  # pylint: disable=g-import-not-at-top
  from sklearn import neural_network  # pylint: disable=g-import-not-at-top

  split = digits_split()
  classifiers = {
      "logistic_regression": linear_model.LogisticRegression(max_iter=2000),
      "mlp": neural_network.MLPClassifier((128,), max_iter=1000, random_state=0),
  }
  results = {}
  with threadpoolctl.threadpool_limits(limits=1):
    for name, classifier in classifiers.items():
      classifier.fit(split.train_images, split.train_labels)
      probs = classifier.predict_proba(split.test_images)
      picked = probs[np.arange(DIGITS_TEST), split.test_labels]
      results[name] = {
          "test_accuracy": float(np.mean(np.argmax(probs, -1) == split.test_labels)),
          "test_loss": float(-np.mean(np.log(np.maximum(picked, 1e-12))))}
  return results


# --- construction -----------------------------------------------------------


def make_task(name: str, seq_len: Optional[int] = None, *, eval_size: int = 1000,
              eval_key: Optional[jax.Array] = None, data_path: Optional[str] = None) -> Task:
  """Builds a task.

  Args:
    name: "adding", "copy", "charlm" or "digits".
    seq_len: the length parameter (None: `DEFAULT_SEQ_LEN[name]`); for digits
      the steps an image is read in, a divisor of 64.
    eval_size: sequences in the held-out set of the synthetic tasks (charlm and
      digits hold out a fixed part of their data).
    eval_key: key drawing that held-out set (default: `TEST_KEY_SEED`, a key
      that no seed's training stream uses).
    data_path: charlm's corpus (None: the built-in one).

  Raises:
    ValueError: unknown task, `seq_len` too short, or a bad corpus.
  """
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}.")
  seq_len = DEFAULT_SEQ_LEN[name] if seq_len is None else seq_len
  if seq_len < MIN_SEQ_LEN[name]:
    raise ValueError(f"--seq_len={seq_len} is too short for {name}: it needs at least "
                     f"{MIN_SEQ_LEN[name]}.")
  if name == "charlm":
    return charlm_task(read_corpus(data_path), seq_len)
  if name == "digits":
    return digits_task(seq_len)
  eval_key = jax.random.PRNGKey(TEST_KEY_SEED) if eval_key is None else eval_key
  keys = jax.random.split(eval_key, -(-eval_size // EVAL_BATCH))
  sizes = [min(EVAL_BATCH, eval_size - i * EVAL_BATCH) for i in range(len(keys))]
  if name == "adding":
    sample = lambda key, batch_size: adding_batch(key, batch_size, seq_len)
    return Task(name="adding", seq_len=seq_len, input_size=2, output_size=1, tokens=False,
                sample=sample, eval_batches=[sample(k, n) for k, n in zip(keys, sizes)],
                loss=adding_loss, baseline=ADDING_BASELINE, baseline_name="predict 1",
                targets_axis=0)
  sample = lambda key, batch_size: copy_batch(key, batch_size, seq_len)
  return Task(name="copy", seq_len=seq_len, input_size=COPY_VOCAB, output_size=COPY_VOCAB,
              tokens=True, sample=sample,
              eval_batches=[sample(k, n) for k, n in zip(keys, sizes)],
              loss=functools.partial(cross_entropy_loss, scored_steps=COPY_LENGTH),
              baseline=copy_baseline(seq_len),
              baseline_name="memoryless")
