"""The model contract shared by cells and composites, its types, and small tree helpers."""

from collections.abc import Sequence
from typing import Any, NamedTuple, Optional, Protocol, Union, cast

import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any
# A model's parameters: a pytree of named tuples of floating-point arrays.
Params = Any
# A model's recurrent state: an array ``[B, H]`` or a pytree of them.
State = Any


class InitFn(Protocol):
  """``init(key, input_size) -> params``."""

  def __call__(self, key: Array, input_size: int, /) -> Params:
    ...


class InitialStateFn(Protocol):
  """``initial_state(params, batch_size) -> state``; ``batch_size=None`` is unbatched."""

  def __call__(self, params: Params, batch_size: Optional[int], /) -> State:
    ...


class SpatialInitialStateFn(Protocol):
  """``initial_state(params, batch_size, *, spatial_shape=()) -> state``.

  The initial state of a model with spatial axes (``Model.spatial_dims > 0``,
  e.g. `conv_lstm`), whose state is ``[B, *spatial_shape, ...]``: the sizes
  come from the inputs, as in Flax's ``ConvLSTMCell.initialize_carry``.
  `unroll` and `bptt` pass ``spatial_shape=xs.shape[2:-1]`` (either layout) to
  these models only, so a model over feature vectors keeps the two-argument
  `InitialStateFn`.
  """

  def __call__(self, params: Params, batch_size: Optional[int], /, *,
               spatial_shape: tuple[int, ...] = ()) -> State:
    ...


class StepFn(Protocol):
  """``step(params, state, x) -> (new_state, y)`` for one time step."""

  def __call__(self, params: Params, state: State, x: Array, /) -> tuple[State, Array]:
    ...


class InputSizeFn(Protocol):
  """``input_size(params) -> int``, read from the parameters, or None where they don't say."""

  def __call__(self, params: Params, /) -> Optional[int]:
    ...


class ForwardFn(Protocol):
  """``forward(params, xs, state, ctx) -> (final_state, ys)`` over time-major ``xs``."""

  def __call__(self, params: Params, xs: Array, state: State,
               ctx: "Context", /) -> tuple[State, Array]:
    ...


class NormProbeFn(Protocol):
  """``norm_probe(T, B, dtype) -> probe``: zeros shaped like the model's hidden-gradient norms."""

  def __call__(self, T: int, B: int, dtype: Any, /) -> PyTree:
    ...


class ParallelForwardFn(Protocol):
  """``parallel_forward(params, xs, state, mask, opts) -> (final_state, ys, info)``.

  What `parallel_unroll` calls on checked, time-major ``xs``; ``mask`` is
  ``[T, B]`` or None and ``opts`` its solver settings.
  """

  def __call__(self, params: Params, xs: Array, state: State, mask: Optional[Array],
               opts: Any, /) -> tuple[State, Array, Any]:
    ...


class Model(NamedTuple):
  """A recurrent model: a named tuple of pure functions.

  Cells (`rnn`, `lstm`, `gru`, `custom_cell`) and composites (`stack`,
  `bidirectional`, `learned_initial_state`) are all `Model`s, so `unroll`,
  `bptt` and the readouts accept any of them.

  Attributes:
    init: ``init(key, input_size) -> params``, a pytree of named tuples of
      floating-point arrays.
    initial_state: ``initial_state(params, batch_size) -> state``; with
      ``batch_size=None`` the state is unbatched. A model with
      ``spatial_dims > 0`` takes the sizes of its inputs' spatial axes too,
      ``initial_state(params, batch_size, spatial_shape=(H, W))``
      (`SpatialInitialStateFn`); `initial_state` calls either kind.
    step: ``step(params, state, x) -> (new_state, y)`` for ``x`` of shape
      ``[batch, input_size]`` or unbatched ``[input_size]``. With ``params``
      bound it has the signature that ``jax.lax.scan`` expects.
    output_size: size of ``y``'s last axis.
    input_size: ``input_size(params) -> int``, read from the parameters
      (None for a `custom_cell`, whose parameters need not say).
    forward: ``forward(params, xs, state, ctx) -> (final_state, ys)`` over a
      time-major ``[T, B, F]`` sequence read forwards (`unroll` calls it after
      checking the inputs). Its gradient is the model's backward: each cell's
      time loop is a `jax.custom_vjp` whose backward is the cell's explicit
      BPTT, and JAX differentiates the glue between cells.
    norm_probe: ``norm_probe(T, B, dtype)``: zeros shaped like the per-step
      hidden-gradient norms `bptt` reports (``[T, B]`` for a cell, a tuple
      per layer for `stack`, a pair for `bidirectional`). Passed as
      ``ctx.probe``, each cell's backward returns its norms as the probe's
      cotangent.
    explicit_backward: whether every cell in the model has a hand-derived
      backward (False for a `custom_cell` without ``step_vjp``).
    config: what the model is, as data: a cell's own config (`RNNConfig`,
      `LSTMConfig`, `GRUConfig`, `CustomCellConfig`) or the composite's config
      naming its parts. Converters dispatch on its type.
    spatial_dims: the number of spatial axes between the batch and the
      feature axis of each step's input, output and state (2 for a 2-D
      `conv_lstm`, whose inputs are ``[T, B, H, W, C]``); 0 for the models
      over feature vectors ``[T, B, F]``. Their sizes are not part of the
      model: they come from the inputs, and may differ from call to call.
    kernel: the `jaxrnn.kernel.Kernel` of a cell built with `kernel_cell`,
      which `recurrent_dropout` and `zoneout` wrap; None for other models.
    parallel_forward: the model's path for `parallel_unroll`
      (`ParallelForwardFn`), or None where it has none (`bidirectional`). A
      wrapper that changes ``step`` or ``forward`` with ``_replace`` must
      reset it.
  """
  init: InitFn
  initial_state: Union[InitialStateFn, SpatialInitialStateFn]
  step: StepFn
  output_size: int
  input_size: InputSizeFn
  forward: ForwardFn
  norm_probe: NormProbeFn
  explicit_backward: bool
  config: Any = None
  spatial_dims: int = 0
  kernel: Any = None
  parallel_forward: Optional[ParallelForwardFn] = None


def initial_state(model: Model, params: Params, batch_size: Optional[int],
                  spatial_shape: Sequence[int] = ()) -> State:
  """``model.initial_state(params, batch_size)``, with ``spatial_shape`` for spatial models.

  The one place that calls a model's ``initial_state`` for inputs of a known
  shape: a model over feature vectors (``spatial_dims == 0``, e.g. a user's
  `custom_cell`) is called with two arguments, as its contract says, and
  ``spatial_shape`` is ignored.
  """
  if model.spatial_dims:
    spatial_fn = cast(SpatialInitialStateFn, model.initial_state)
    return spatial_fn(params, batch_size, spatial_shape=tuple(spatial_shape))
  return model.initial_state(params, batch_size)


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
    rng: PRNG key for dropout in composites and the masks of the recurrent
      regularisers, or None for none.
    backward: ``"bptt"`` (the explicit backward as a custom VJP) or
      ``"autodiff"`` (JAX differentiates the scan).
    remat_chunk: recompute activations in chunks of this many steps in the
      backward pass instead of storing them, or None.
    scan_unroll: the ``unroll`` argument of ``lax.scan``.
    state_grad_clip: a `StateGradClip`, or None.
    probe: None, or zeros shaped like ``model.norm_probe(T, B, dtype)``
      whose cotangent is the per-step hidden-gradient norms (see `bptt`).
  """
  mask: Optional[Array] = None
  resets: Optional[Array] = None
  rng: Optional[Array] = None
  backward: str = "bptt"
  remat_chunk: Optional[int] = None
  scan_unroll: int = 1
  state_grad_clip: Optional[StateGradClip] = None
  probe: Optional[PyTree] = None


def default_float() -> Any:
  """float64 when x64 is enabled, float32 otherwise."""
  return jnp.zeros(()).dtype


def matmul(a: Array, w: Array, dtype: Any) -> Array:
  """``a @ w``, computed in ``dtype`` (e.g. bfloat16) with a result in ``a``'s dtype."""
  if dtype is None:
    return a @ w
  return jnp.matmul(a.astype(dtype), w.astype(dtype),
                    preferred_element_type=jnp.result_type(a, w))


def transposed(w: Array) -> Array:
  """``w.T`` as its own row-major buffer, for a matmul inside a loop.

  Left alone, XLA folds a transpose into the dot that reads it, and inside
  `lax.scan` on XLA:CPU a dot whose right operand is contracted along its last
  axis ran slower than one against a materialised transpose (BUILD.md has the
  measurement). The barrier keeps the transpose a real copy, made once outside
  the loop.
  """
  return jax.lax.optimization_barrier(w.T)


def tree_add(a: PyTree, b: PyTree) -> PyTree:
  return jax.tree.map(jnp.add, a, b)


def tree_zeros_like(tree: PyTree) -> PyTree:
  return jax.tree.map(jnp.zeros_like, tree)


def clip_state_grad_by_value(threshold: float) -> StateGradClip:
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


def clip_state_grad_by_norm(threshold: float) -> StateGradClip:
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


def _state_grad_clip(mode: str, threshold: float) -> StateGradClip:
  if not threshold > 0:
    raise ValueError(f"threshold: expected a positive number, got {threshold!r}.")
  return StateGradClip(mode, float(threshold))
