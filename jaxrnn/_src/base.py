"""The model contract shared by cells and composites, and small tree helpers."""

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any


class Model(NamedTuple):
  """A recurrent model: a named tuple of pure functions.

  Cells (`rnn`, `lstm`, `gru`) and composites (`stack`, `bidirectional`,
  `learned_initial_state`) are all `Model`s, so `unroll` and `bptt` accept any
  of them.

  Attributes:
    init: ``init(key, input_size) -> params``, a pytree of named tuples of
      floating-point arrays.
    initial_state: ``initial_state(params, batch_size) -> state``; with
      ``batch_size=None`` the state is unbatched.
    step: ``step(params, state, x) -> (new_state, y)`` for ``x`` of shape
      ``[batch, input_size]`` or unbatched ``[input_size]``. With ``params``
      bound it has the signature that ``jax.lax.scan`` expects.
    output_size: size of ``y``'s last axis.
    input_size: ``input_size(params) -> int``, read from the parameters.
    forward: ``forward(params, xs, state, ctx) -> (final_state, ys)`` over a
      time-major ``[T, B, F]`` sequence read forwards (internal; `unroll` calls
      it after checking the inputs).
    backward: ``backward(params, xs, state, ctx, d_final, d_ys) ->
      (d_params, d_xs, d_state, hidden_grad_norms)``, the explicit BPTT of
      ``forward`` (internal; `bptt` calls it).
    initial_state_grad: ``initial_state_grad(params, d_state) -> d_params``,
      the hand-derived transpose of ``initial_state`` (non-zero only where the
      initial state is learned).
    config: what the model is, as data: a `CellConfig` for a cell, or the
      composite's own config naming its parts. Converters read it.
  """
  init: Callable[..., PyTree]
  initial_state: Callable[..., PyTree]
  step: Callable[..., tuple[PyTree, Array]]
  output_size: int
  input_size: Callable[[PyTree], int]
  forward: Callable[..., tuple[PyTree, Array]]
  backward: Callable[..., tuple[PyTree, Array, PyTree, Array]]
  initial_state_grad: Callable[[PyTree, PyTree], PyTree]
  config: Any = None


class CellConfig(NamedTuple):
  """The options a cell was built with.

  Attributes:
    kind: ``"rnn"``, ``"lstm"`` or ``"gru"``.
    hidden_size: H.
    bias: whether the cell has ``b_x`` and ``b_h``.
    activation: the RNN's ``"tanh"`` or ``"relu"`` (None for other cells).
    reset_after: the GRU's candidate formula (None for other cells).
    forget_bias: the LSTM's initial forget-gate bias (None for other cells).
    dtype: the compute dtype, or None.
  """
  kind: str
  hidden_size: int
  bias: bool = True
  activation: Optional[str] = None
  reset_after: Optional[bool] = None
  forget_bias: Optional[float] = None
  dtype: Any = None


# Cells are models; the alias names what `rnn`, `lstm` and `gru` return.
Cell = Model


class StateGradClip(NamedTuple):
  """Clips the gradient sent back through the recurrent state at every step.

  Attributes:
    mode: ``"value"`` clips each element to ``[-threshold, threshold]``;
      ``"norm"`` rescales each sequence's message to L2 norm ``<= threshold``.
    threshold: the bound; ``inf`` leaves the gradient exact.
  """
  mode: str
  threshold: float


class Context(NamedTuple):
  """Per-call settings that travel with a sequence through composites.

  Attributes:
    mask: ``[T, B]`` bool, True on valid steps, or None when every step is.
    resets: ``[T, B]`` bool, True where the initial state is swapped in before
      reading that step, or None.
    rng: PRNG key for dropout in composites, or None for no dropout.
    backward: ``"bptt"`` (the explicit backward as a custom VJP) or
      ``"autodiff"`` (JAX differentiates the scan).
    remat_chunk: recompute activations in chunks of this many steps in the
      backward pass instead of storing them, or None.
    scan_unroll: the ``unroll`` argument of ``lax.scan``.
    state_grad_clip: a `StateGradClip`, or None.
  """
  mask: Optional[Array] = None
  resets: Optional[Array] = None
  rng: Optional[Array] = None
  backward: str = "bptt"
  remat_chunk: Optional[int] = None
  scan_unroll: int = 1
  state_grad_clip: Optional[StateGradClip] = None


def default_float():
  """float64 when x64 is enabled, float32 otherwise."""
  return jnp.zeros(()).dtype


def batch_where(cond, on_true, on_false):
  """``where`` over pytrees, with a ``[B]`` condition broadcast over features."""
  def pick(a, b):
    c = cond.reshape(cond.shape + (1,) * (a.ndim - cond.ndim))
    return jnp.where(c, a, b)
  return jax.tree.map(pick, on_true, on_false)


def matmul(a, w, dtype):
  """``a @ w``, computed in ``dtype`` (e.g. bfloat16) with a result in ``a``'s dtype."""
  if dtype is None:
    return a @ w
  return jnp.matmul(a.astype(dtype), w.astype(dtype),
                    preferred_element_type=jnp.result_type(a, w))


def transposed(w):
  """``w.T`` as its own row-major buffer, for a matmul inside a loop.

  Left alone, XLA folds a transpose into the dot that reads it, and a dot
  whose right operand is contracted along its last axis ran about 1.4x slower
  inside `lax.scan` on XLA:CPU (LSTM H=128, B=16) than one against a
  materialised transpose. The barrier keeps the transpose a real copy, made
  once outside the loop.
  """
  return jax.lax.optimization_barrier(w.T)


def tree_add(a, b):
  return jax.tree.map(jnp.add, a, b)


def tree_zeros_like(tree):
  return jax.tree.map(jnp.zeros_like, tree)


def clip_state_grad_by_value(threshold):
  """Clips each element of the gradient sent back through the state at every step.

  This is the threshold on the gradient transmitted over time of Mikolov's
  thesis and Graves (2013): it changes, i.e. biases, the gradient, and with
  ``threshold=inf`` it is exact. Pass it as ``state_grad_clip`` to `unroll`.

  Args:
    threshold: a positive bound.

  Returns:
    A `StateGradClip`.

  References:
    Graves, *Generating sequences with recurrent neural networks*, 2013.
    Mikolov, *Statistical language models based on neural networks*, 2012.
  """
  return _state_grad_clip("value", threshold)


def clip_state_grad_by_norm(threshold):
  """Rescales each sequence's state gradient to L2 norm ``<= threshold`` at every step.

  The norm is taken over the whole state (hidden and, for the LSTM, cell)
  of each sequence. Like `clip_state_grad_by_value` it biases the gradient,
  and ``threshold=inf`` leaves it exact.

  Args:
    threshold: a positive bound.

  Returns:
    A `StateGradClip`.
  """
  return _state_grad_clip("norm", threshold)


def _state_grad_clip(mode, threshold):
  if not threshold > 0:
    raise ValueError(f"threshold: expected a positive number, got {threshold!r}.")
  return StateGradClip(mode, float(threshold))
