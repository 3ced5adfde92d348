"""Sequence losses: the per-step error summed (or averaged) over time."""

import jax
import jax.numpy as jnp

from jaxrnn._src import readout
from jaxrnn._src import validation

_REDUCTIONS = ("sum", "mean")


def _valid_mask(seq_lengths, shape, time_major):
  """``[T, B]`` (or ``[B, T]``) valid steps for arrays of ``shape``, or None."""
  validation.check_bool("time_major", time_major)
  if seq_lengths is None:
    return None
  T, B = shape[:2] if time_major else shape[1::-1]
  return readout.sequence_mask(seq_lengths, T, B, time_major)


def _where_valid(mask, a, fill=0):
  """``a`` with padded steps set to ``fill``, before any arithmetic reads them.

  Padding may hold anything (NaN, Inf, -100 labels); `where` keeps it out of
  the loss and its gradient is exactly 0 there.
  """
  if mask is None:
    return a
  return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim)), a,
                   jnp.asarray(fill, a.dtype))


def _reduce_over_time(per_step, mask, time_major, reduce):
  """``[T, B]`` (or ``[B, T]``) per-step losses -> batch mean of per-sequence losses."""
  if reduce not in _REDUCTIONS:
    raise ValueError(f"reduce: expected one of {_REDUCTIONS}, got {reduce!r}.")
  if not time_major:
    per_step = per_step.T
    mask = None if mask is None else mask.T
  T, B = per_step.shape
  if mask is None:
    total = per_step.sum(0)
    count = jnp.full((B,), T, per_step.dtype)
  else:
    total = jnp.where(mask, per_step, 0).sum(0)
    count = mask.sum(0).astype(per_step.dtype)
  if reduce == "mean":
    total = total / jnp.maximum(count, 1)
  return total.mean()


def sequence_mse(preds, targets, *, seq_lengths=None, time_major=True, reduce="sum"):
  """Squared error per step (mean over features), summed or averaged over time.

  Padded steps may hold anything, NaN included: they are set to zero before
  the error is computed, so they reach neither the loss nor its gradient.

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
  mask = _valid_mask(seq_lengths, preds.shape, time_major)
  preds, targets = _where_valid(mask, preds), _where_valid(mask, jnp.asarray(targets))
  per_step = jnp.mean((preds - targets) ** 2, axis=-1)
  return _reduce_over_time(per_step, mask, time_major, reduce)


def sequence_cross_entropy(logits, labels, *, seq_lengths=None, time_major=True, reduce="sum"):
  """Softmax cross-entropy per step, summed or averaged over time.

  Labels at valid steps must lie in ``[0, C)``. Concrete labels are checked
  (a `ValueError` names the offending entries); under `jit` they cannot be
  read, and an out-of-range label at a valid step makes that step's loss,
  and so the loss, NaN (never a silently wrapped class; `make_optimizer`
  then skips the update). Padded steps may hold anything (e.g. PyTorch's
  ``-100``): they are read as class 0 and do not count.

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
  mask = _valid_mask(seq_lengths, logits.shape, time_major)
  num_classes = logits.shape[-1]
  validation.check_labels(labels, num_classes, mask)
  logits, labels = _where_valid(mask, logits), _where_valid(mask, jnp.asarray(labels))
  in_range = (labels >= 0) & (labels < num_classes)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(
      log_probs, jnp.where(in_range, labels, 0)[..., None].astype(jnp.int32), axis=-1)[..., 0]
  per_step = jnp.where(in_range, -picked, jnp.nan)
  return _reduce_over_time(per_step, mask, time_major, reduce)
