"""Models built from models: stacks, bidirectional pairs and learned initial states."""

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import parallel_in_time
from jaxrnn._src import unroll as unroll_lib
from jaxrnn._src import validation

PyTree = Any


class StackConfig(NamedTuple):
  """What a `stack` is made of: ``layers`` (their configs) and ``dropout``."""
  layers: tuple
  dropout: float


class BidirectionalConfig(NamedTuple):
  """What a `bidirectional` is made of: the two directions' configs and ``merge``."""
  forward: Any
  backward: Any
  merge: str


class LearnedStateConfig(NamedTuple):
  """A `learned_initial_state` around ``core`` (its config)."""
  core: Any


class StackParams(NamedTuple):
  """Parameters of `stack`.

  Attributes:
    layers: a tuple with each layer's parameters, bottom layer first.
  """
  layers: tuple


class StackState(NamedTuple):
  """State of `stack`.

  Attributes:
    layers: a tuple with each layer's state, bottom layer first.
  """
  layers: tuple


class BidirectionalParams(NamedTuple):
  """Parameters of `bidirectional`.

  Attributes:
    forward: parameters of the model that reads forwards.
    backward: parameters of the model that reads backwards.
  """
  forward: PyTree
  backward: PyTree


class BidirectionalState(NamedTuple):
  """State of `bidirectional`.

  Attributes:
    forward: state of the forward reader (after the last valid element).
    backward: state of the backward reader (after reading ``xs[0]``).
  """
  forward: PyTree
  backward: PyTree


class LearnedStateParams(NamedTuple):
  """Parameters of `learned_initial_state`.

  Attributes:
    core: the wrapped model's parameters.
    initial_state: the wrapped model's unbatched state, trained like any
      other parameter and broadcast over the batch. For a model with spatial
      axes, one value per channel (each leaf ``[Hc]`` for a `conv_lstm`),
      broadcast over the spatial axes too.
  """
  core: PyTree
  initial_state: PyTree


def _check_models(name, models):
  for i, m in enumerate(models):
    if not isinstance(m, base.Model):
      raise TypeError(f"{name}[{i}]: expected a jaxrnn Model, got {type(m).__name__}.")


def _check_same_spatial_dims(name, models):
  """Models that read each other's outputs or the same inputs need one number of spatial axes."""
  dims = [m.spatial_dims for m in models]
  if any(d != dims[0] for d in dims):
    raise ValueError(f"{name}: expected models with the same spatial_dims (the number of spatial"
                     f" axes of their inputs and states), got {dims}.")


def _sub_rng(rng, i):
  return None if rng is None else jax.random.fold_in(rng, i)


def stack(layers, *, dropout=0.0):
  """Stacks models so that each reads the previous one's outputs.

  Under `unroll` each layer runs over the whole sequence before the next one
  starts (as cuDNN does), which lets every layer hoist its input projection.
  ``step`` runs the layers one after the other for a single time step.

  Dropout (inverted: kept units are scaled by ``1/(1-dropout)``) is applied to
  the outputs of every layer but the last, as in PyTorch's ``nn.LSTM``. It is
  active only when `unroll` or `bptt` is given an ``rng`` key; layer ``l``'s
  mask is drawn from ``fold_in(fold_in(rng, l), 0)`` over the whole
  ``[T, B, H]`` output, and nested composites get ``fold_in(rng, l)``.
  ``step`` never drops.

  Args:
    layers: a non-empty sequence of models.
    dropout: drop probability between layers, in ``[0, 1)``.

  Returns:
    A `Model` with `StackParams` parameters and `StackState` states.
  """
  layers = tuple(layers)
  if not layers:
    raise ValueError("layers: expected at least one model, got an empty sequence.")
  _check_models("layers", layers)
  _check_same_spatial_dims("layers", layers)
  if (isinstance(dropout, bool) or not isinstance(dropout, numbers.Real)
      or not 0.0 <= dropout < 1.0):
    raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}.")

  def init(key, input_size):
    params = []
    for layer, k in zip(layers, jax.random.split(key, len(layers))):
      params.append(layer.init(k, input_size))
      input_size = layer.output_size
    return StackParams(tuple(params))

  def initial_state(params, batch_size, *, spatial_shape=()):
    return StackState(tuple(base.initial_state(l, p, batch_size, spatial_shape)
                            for l, p in zip(layers, params.layers)))

  def step(params, state, x):
    state, x = validation.check_step(model, "stack", params, state, x)
    states = []
    for layer, p, s in zip(layers, params.layers, state.layers):
      s, x = layer.step(p, s, x)
      states.append(s)
    return StackState(tuple(states)), x

  def keep_scale(rng, l, shape, dtype):
    if dropout == 0.0 or rng is None or l == len(layers) - 1:
      return None
    keep = jax.random.bernoulli(jax.random.fold_in(jax.random.fold_in(rng, l), 0),
                                1.0 - dropout, shape)
    return keep.astype(dtype) / (1.0 - dropout)

  def forward(params, xs, state, ctx):
    finals, h = [], xs
    for l, (layer, p, s) in enumerate(zip(layers, params.layers, state.layers)):
      probe = None if ctx.probe is None else ctx.probe[l]
      final, h = layer.forward(p, h, s, ctx._replace(rng=_sub_rng(ctx.rng, l), probe=probe))
      scale = keep_scale(ctx.rng, l, h.shape, h.dtype)
      if scale is not None:
        h = h * scale
      finals.append(final)
    return StackState(tuple(finals)), h

  def norm_probe(T, B, dtype):
    return tuple(layer.norm_probe(T, B, dtype) for layer in layers)

  def parallel_forward(params, xs, state, mask, opts):
    """Layer by layer, each in parallel over time; no dropout, as `unroll` without ``rng``."""
    finals, infos, h = [], [], xs
    for layer, p, s in zip(layers, params.layers, state.layers):
      final, h, info = layer.parallel_forward(p, h, s, mask, opts)
      finals.append(final)
      infos.append(info)
    return StackState(tuple(finals)), h, parallel_in_time.stack_infos(infos)

  parallel = all(layer.parallel_forward is not None for layer in layers)
  model = base.Model(
      init=init, initial_state=initial_state, step=step,
      output_size=layers[-1].output_size,
      input_size=lambda params: layers[0].input_size(params.layers[0]),
      forward=forward, norm_probe=norm_probe,
      explicit_backward=all(layer.explicit_backward for layer in layers),
      config=StackConfig(tuple(l.config for l in layers), dropout),
      spatial_dims=layers[0].spatial_dims,
      parallel_forward=parallel_forward if parallel else None)
  return model


_MERGES = ("concat", "sum")


def bidirectional(forward_model, backward_model, *, merge="concat"):
  """Reads each sequence both ways and merges the two outputs step by step.

  The backward model reads each sequence from its last valid element back to
  its first (``seq_lengths``-aware, as `unroll` with ``reverse=True``), so at
  step ``t`` both outputs belong to ``xs[t]``. ``merge="concat"`` gives
  ``[forward, backward]`` on the last axis, as PyTorch does; ``"sum"`` adds
  them (both models must then have the same output size). Padded outputs are
  zero. A bidirectional model needs the whole sequence, so it has no
  single-step ``step``: use `unroll`.

  Args:
    forward_model: the model that reads forwards.
    backward_model: the model that reads backwards.
    merge: ``"concat"`` or ``"sum"``.

  Returns:
    A `Model` with `BidirectionalParams` and `BidirectionalState`.
  """
  _check_models("bidirectional", (forward_model, backward_model))
  _check_same_spatial_dims("bidirectional", (forward_model, backward_model))
  if merge not in _MERGES:
    raise ValueError(f"merge: expected one of {_MERGES}, got {merge!r}.")
  f_size, b_size = forward_model.output_size, backward_model.output_size
  if merge == "sum" and f_size != b_size:
    raise ValueError(f"merge='sum' needs equal output sizes, got forward {f_size} and"
                     f" backward {b_size}.")

  def init(key, input_size):
    k_f, k_b = jax.random.split(key)
    return BidirectionalParams(forward_model.init(k_f, input_size),
                               backward_model.init(k_b, input_size))

  def initial_state(params, batch_size, *, spatial_shape=()):
    return BidirectionalState(
        base.initial_state(forward_model, params.forward, batch_size, spatial_shape),
        base.initial_state(backward_model, params.backward, batch_size, spatial_shape))

  def step(params, state, x):
    raise NotImplementedError(
        "bidirectional models read the whole sequence, so they have no single step; use"
        " jaxrnn.unroll(model, params, xs).")

  def forward(params, xs, state, ctx):
    probe = ctx.probe or BidirectionalState(None, None)
    f_final, f_ys = unroll_lib.run(
        forward_model, params.forward, xs, state.forward,
        ctx._replace(rng=_sub_rng(ctx.rng, 0), probe=probe.forward), reverse=False)
    b_final, b_ys = unroll_lib.run(
        backward_model, params.backward, xs, state.backward,
        ctx._replace(rng=_sub_rng(ctx.rng, 1), probe=probe.backward), reverse=True)
    ys = jnp.concatenate([f_ys, b_ys], axis=-1) if merge == "concat" else f_ys + b_ys
    return BidirectionalState(f_final, b_final), ys

  def norm_probe(T, B, dtype):
    return BidirectionalState(forward_model.norm_probe(T, B, dtype),
                              backward_model.norm_probe(T, B, dtype))

  return base.Model(
      init=init, initial_state=initial_state, step=step,
      output_size=f_size + b_size if merge == "concat" else f_size,
      input_size=lambda params: forward_model.input_size(params.forward),
      forward=forward, norm_probe=norm_probe,
      explicit_backward=forward_model.explicit_backward and backward_model.explicit_backward,
      config=BidirectionalConfig(forward_model.config, backward_model.config, merge),
      spatial_dims=forward_model.spatial_dims)


def learned_initial_state(model):
  """Makes ``model``'s initial state a trained parameter.

  The initial state is one unbatched state (zeros at ``init``) held in
  `LearnedStateParams`, broadcast over the batch by ``initial_state``. With
  ``state=None``, `unroll` starts from it, so `jax.grad` and `bptt` both send
  it the sum over the batch of the gradient that reaches the initial state.
  Resets swap it in too.

  For a model with spatial axes (`conv_lstm`), whose spatial sizes come from
  the inputs, the learned state is one vector per state field over the
  channels (``[Hc]`` for ``h`` and for ``c``), the same at every position:
  translation-invariant like the convolutions, and valid at any spatial size.
  Its gradient is then the sum over the batch and the spatial positions.

  Args:
    model: any `Model`.

  Returns:
    A `Model` with `LearnedStateParams` parameters and ``model``'s states.
  """
  _check_models("learned_initial_state", (model,))

  S = model.spatial_dims

  def init(key, input_size):
    core = model.init(key, input_size)
    state = base.initial_state(model, core, None, (1,) * S)
    return LearnedStateParams(core, jax.tree.map(lambda s: s[(0,) * S], state))

  def initial_state(params, batch_size, *, spatial_shape=()):
    spatial = validation.check_spatial_shape(spatial_shape, S, "learned_initial_state") if S else ()
    lead = spatial if batch_size is None else (batch_size,) + spatial
    return jax.tree.map(lambda s: jnp.broadcast_to(s, lead + s.shape), params.initial_state)

  def step(params, state, x):
    state, x = validation.check_step(learned, "learned_initial_state", params, state, x)
    return model.step(params.core, state, x)

  learned = base.Model(
      init=init, initial_state=initial_state, step=step,
      output_size=model.output_size,
      input_size=lambda params: model.input_size(params.core),
      forward=lambda params, xs, state, ctx: model.forward(params.core, xs, state, ctx),
      norm_probe=model.norm_probe, explicit_backward=model.explicit_backward,
      config=LearnedStateConfig(model.config), spatial_dims=S,
      parallel_forward=None if model.parallel_forward is None else (
          lambda params, xs, state, mask, opts: model.parallel_forward(
              params.core, xs, state, mask, opts)))
  return learned
