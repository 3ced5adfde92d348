"""Sequence losses: the per-step error summed (or averaged) over time."""

import jax
import jax.numpy as jnp

from jaxrnn._src import readout
from jaxrnn._src import validation

_REDUCTIONS = ("sum", "mean")


def _reduce_over_time(per_step, seq_lengths, time_major, reduce):
  """``[T, B]`` (or ``[B, T]``) per-step losses -> batch mean of per-sequence losses."""
  if reduce not in _REDUCTIONS:
    raise ValueError(f"reduce: expected one of {_REDUCTIONS}, got {reduce!r}.")
  if not time_major:
    per_step = per_step.T
  T, B = per_step.shape
  if seq_lengths is None:
    total = per_step.sum(0)
    count = jnp.full((B,), T, per_step.dtype)
  else:
    mask = readout.sequence_mask(seq_lengths, T, B)
    total = jnp.where(mask, per_step, 0).sum(0)
    count = mask.sum(0).astype(per_step.dtype)
  if reduce == "mean":
    total = total / jnp.maximum(count, 1)
  return total.mean()


def sequence_mse(preds, targets, *, seq_lengths=None, time_major=True, reduce="sum"):
  """Squared error per step (mean over features), summed or averaged over time.

  Args:
    preds: ``[T, B, D]`` predictions (``[B, T, D]`` when not time-major).
    targets: the same shape; nothing is broadcast.
    seq_lengths: optional ``[B]`` lengths; padded steps do not count.
    time_major: layout of both arrays.
    reduce: ``"sum"`` (the total error over time, the training loss) or
      ``"mean"`` (per valid step).

  Returns:
    The mean over the batch of each sequence's loss, a scalar.
  """
  validation.check_floating("preds", preds)
  if preds.ndim != 3:
    raise ValueError(f"preds: expected rank 3, got shape {list(preds.shape)}.")
  validation.check_same_shape("targets", targets, preds.shape, "the shape of preds")
  per_step = jnp.mean((preds - targets) ** 2, axis=-1)
  return _reduce_over_time(per_step, seq_lengths, time_major, reduce)


def sequence_cross_entropy(logits, labels, *, seq_lengths=None, time_major=True, reduce="sum"):
  """Softmax cross-entropy per step, summed or averaged over time.

  Args:
    logits: ``[T, B, C]`` unnormalised log-probabilities.
    labels: ``[T, B]`` integer classes.
    seq_lengths, time_major, reduce: as in `sequence_mse`.

  Returns:
    The mean over the batch of each sequence's loss, a scalar.
  """
  validation.check_floating("logits", logits)
  if logits.ndim != 3:
    raise ValueError(f"logits: expected rank 3, got shape {list(logits.shape)}.")
  validation.check_same_shape("labels", labels, logits.shape[:2], "logits without the class axis")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"labels: expected integer classes, got dtype {labels.dtype}.")
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  per_step = -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return _reduce_over_time(per_step, seq_lengths, time_major, reduce)
