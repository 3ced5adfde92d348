"""Training utilities: an optimizer factory, a train state and jitted steps.

The optimizer is a plain `optax.GradientTransformation`:

    apply_if_finite(chain(clip_by_value?, adaptive_grad_clip?, clip_by_global_norm?,
                          record_update_norm(), <sgd|adam|rmsprop|adagrad>))

`apply_if_finite` drops any update with a NaN or Inf in it, so one bad batch
does not destroy the parameters; the count of dropped steps lives in its state
and `skipped_steps` reads it. `record_update_norm` keeps the global norm of the
clipped gradient in the optimizer state, which is how `make_train_step` reports
the norm after clipping without knowing which clipping was chosen.

A training step is a pure function of `(TrainState, batch)`, so it can be
jitted, vmapped over seeds or wrapped for data parallelism as it is.
"""

from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad")
SCHEDULES = ("constant", "cosine", "warmup_cosine")

# Loss functions take `(params, batch, rng)` and return `(loss, metrics)`, where
# `metrics` is a dict of scalars (it may be empty). `rng` is None at evaluation.
LossFn = Callable[[Any, Any, Optional[jax.Array]], tuple[jax.Array, dict]]


class TrainState(NamedTuple):
  """Everything a training run needs to continue exactly where it stopped.

  Attributes:
    params: the model parameters (any pytree).
    opt_state: the optimizer state built by `optimizer.init(params)`.
    step: int32 scalar, the number of train steps taken (skipped ones included).
    rng: a raw uint32 PRNG key (`jax.random.PRNGKey`), split at every step for
      the step's randomness (dropout); raw keys checkpoint like any array.
  """

  params: Any
  opt_state: Any
  step: jax.Array
  rng: jax.Array


class UpdateNormState(NamedTuple):
  """State of `record_update_norm`: the global norm of the last updates seen."""

  update_norm: jax.Array


def record_update_norm() -> optax.GradientTransformation:
  """An identity transformation that remembers the global norm of its input.

  Placed after the clipping transforms, it records the gradient norm after
  clipping; `clipped_grad_norm(opt_state)` reads it back.

  Returns:
    An `optax.GradientTransformation` with state `UpdateNormState`.
  """

  def init(params):
    del params
    return UpdateNormState(update_norm=jnp.zeros([], jnp.float32))

  def update(updates, state, params=None):
    del state, params
    norm = optax.tree.norm(updates).astype(jnp.float32)
    return updates, UpdateNormState(update_norm=norm)

  return optax.GradientTransformation(init, update)


def make_schedule(
    learning_rate: float,
    schedule: str = "constant",
    *,
    total_steps: Optional[int] = None,
    warmup_steps: int = 0,
) -> optax.ScalarOrSchedule:
  """A learning rate, constant or as a schedule over steps.

  Args:
    learning_rate: the peak (or constant) learning rate.
    schedule: "constant"; "cosine" (decay from `learning_rate` to 0 over
      `total_steps`, Loshchilov & Hutter 2017); or "warmup_cosine" (linear warmup
      from 0 over `warmup_steps`, then cosine decay to 0 at `total_steps`).
    total_steps: length of the decay; required by the cosine schedules.
    warmup_steps: length of the linear warmup of "warmup_cosine".

  Returns:
    A float for "constant", otherwise an `optax.Schedule`.

  References:
    Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts, 2017.
  """
  if not learning_rate > 0:
    raise ValueError(f"learning_rate must be positive, got {learning_rate}.")
  if schedule not in SCHEDULES:
    raise ValueError(f"Unknown schedule {schedule!r}; choose one of {SCHEDULES}.")
  if schedule == "constant":
    return learning_rate
  if total_steps is None or total_steps < 1:
    raise ValueError(f"schedule={schedule!r} needs total_steps >= 1, got {total_steps}.")
  if schedule == "cosine":
    return optax.cosine_decay_schedule(learning_rate, decay_steps=total_steps)
  if not 0 <= warmup_steps < total_steps:
    raise ValueError(
        f"warmup_steps must be in [0, total_steps={total_steps}), got {warmup_steps}.")
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps,
      decay_steps=total_steps)


def make_optimizer(
    optimizer: str = "adam",
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    *,
    momentum: Optional[float] = None,
    clip_norm: Optional[float] = None,
    clip_value: Optional[float] = None,
    adaptive_clip: Optional[float] = None,
    max_consecutive_skips: int = 2**30,
) -> optax.GradientTransformation:
  """Builds the optimizer: clipping, then the update rule, skipping non-finite steps.

  Clipping transforms run in the order value, adaptive, global norm; any subset
  (or none) may be enabled.

  Args:
    optimizer: "sgd", "adam", "rmsprop" or "adagrad".
    learning_rate: a float or an `optax.Schedule` (see `make_schedule`).
    momentum: momentum for "sgd" and "rmsprop" (None: no momentum).
    clip_norm: clip the gradient to this global L2 norm (Pascanu et al. 2013).
    clip_value: clip each gradient element to `[-clip_value, clip_value]`.
    adaptive_clip: clip each unit's gradient to `adaptive_clip` times its
      parameter norm (`optax.adaptive_grad_clip`, Brock et al. 2021).
    max_consecutive_skips: after this many non-finite updates in a row,
      `optax.apply_if_finite` gives up and applies the next one anyway.

  Returns:
    An `optax.GradientTransformation`; its update needs `params` when
    `adaptive_clip` is set.

  References:
    Pascanu, Mikolov & Bengio, On the difficulty of training recurrent neural
    networks, 2013. Brock et al., High-Performance Large-Scale Image Recognition
    Without Normalization, 2021.
  """
  for name, value in (("clip_norm", clip_norm), ("clip_value", clip_value),
                      ("adaptive_clip", adaptive_clip)):
    if value is not None and not value > 0:
      raise ValueError(f"{name} must be positive or None, got {value}.")
  if not callable(learning_rate) and not learning_rate > 0:
    raise ValueError(f"learning_rate must be positive, got {learning_rate}.")

  if optimizer == "sgd":
    rule = optax.sgd(learning_rate, momentum=momentum)
  elif optimizer == "adam":
    rule = optax.adam(learning_rate)
  elif optimizer == "rmsprop":
    rule = optax.rmsprop(learning_rate, momentum=momentum)
  elif optimizer == "adagrad":
    rule = optax.adagrad(learning_rate)
  else:
    raise ValueError(f"Unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}.")

  clipping = []
  if clip_value is not None:
    clipping.append(optax.clip(clip_value))
  if adaptive_clip is not None:
    clipping.append(optax.adaptive_grad_clip(adaptive_clip))
  if clip_norm is not None:
    clipping.append(optax.clip_by_global_norm(clip_norm))
  inner = optax.chain(*clipping, record_update_norm(), rule)
  return optax.apply_if_finite(inner, max_consecutive_errors=max_consecutive_skips)


def skipped_steps(opt_state) -> jax.Array:
  """Total number of updates `apply_if_finite` has skipped so far."""
  return optax.tree_utils.tree_get(opt_state, "total_notfinite")


def clipped_grad_norm(opt_state) -> jax.Array:
  """Global norm of the gradient after clipping, at the last applied step."""
  return optax.tree_utils.tree_get(opt_state, "update_norm")


def init_train_state(params, optimizer: optax.GradientTransformation,
                     rng: jax.Array) -> TrainState:
  """A fresh `TrainState` at step 0.

  Args:
    params: initial model parameters.
    optimizer: the transformation built by `make_optimizer`.
    rng: a raw uint32 key (`jax.random.PRNGKey(seed)`); typed keys are converted.

  Returns:
    A `TrainState`.
  """
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  return TrainState(params=params, opt_state=optimizer.init(params),
                    step=jnp.zeros([], jnp.int32), rng=rng)


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    axis_name: Optional[str] = None,
    jit: bool = True,
) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
  """A training step `(state, batch) -> (state, metrics)`.

  Args:
    loss_fn: `(params, batch, rng) -> (loss, metrics)`; the gradient is taken of
      `loss`.
    optimizer: a transformation from `make_optimizer` (it must contain
      `apply_if_finite` and `record_update_norm` for the metrics below).
    axis_name: when the step runs under `pmap`/`shard_map`, the mapped axis to
      average loss, metrics and gradients over (data parallelism); the rng is
      then folded with the axis index so devices draw different randomness.
    jit: wrap the step in `jax.jit` (turn off to wrap it in a mapping yourself).

  Returns:
    The step function. Its metrics: `loss`, `grad_norm` (before clipping),
    `clipped_grad_norm` (after clipping; NaN on a skipped step),
    `skipped_steps` (total so far), `skipped` (this step), plus the loss
    function's own metrics.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
    rng, step_rng = jax.random.split(state.rng)
    if axis_name is not None:
      step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))
    (loss, aux), grads = grad_fn(state.params, batch, step_rng)
    if axis_name is not None:
      loss, aux, grads = jax.lax.pmean((loss, aux, grads), axis_name)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    skipped = jnp.logical_not(optax.tree_utils.tree_get(opt_state, "last_finite"))
    metrics = dict(aux)
    metrics.update(
        loss=loss,
        grad_norm=optax.tree.norm(grads),
        clipped_grad_norm=jnp.where(skipped, jnp.nan, clipped_grad_norm(opt_state)),
        skipped=skipped,
        skipped_steps=skipped_steps(opt_state),
    )
    new_state = TrainState(params=params, opt_state=opt_state,
                           step=state.step + 1, rng=rng)
    return new_state, metrics

  return jax.jit(train_step) if jit else train_step


def make_eval_step(loss_fn: LossFn, *, jit: bool = True) -> Callable[[Any, Any], dict]:
  """An evaluation step `(params, batch) -> metrics`, with `rng=None` (no dropout).

  Args:
    loss_fn: the same function given to `make_train_step`.
    jit: wrap the step in `jax.jit`.

  Returns:
    A function returning `{"loss": loss, **metrics}`.
  """

  def eval_step(params, batch) -> dict:
    loss, aux = loss_fn(params, batch, None)
    return dict(aux, loss=loss)

  return jax.jit(eval_step) if jit else eval_step
