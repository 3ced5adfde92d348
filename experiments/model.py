"""The experiments' model: embedding (for tokens) -> recurrent core -> dense readout."""

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple, Optional, cast

import jax
import jax.numpy as jnp

import jaxrnn


class ModelParams(NamedTuple):
  """Parameters of `SequenceModel`.

  Attributes:
    embedding: ``[vocab, embed_size]`` token embeddings, or None for float inputs.
    core: the recurrent core's parameters (a cell's or `StackParams`).
    readout: `DenseParams` of the per-step readout.
  """
  embedding: Optional[jax.Array]
  core: Any
  readout: Any


class SequenceModel(NamedTuple):
  """A sequence-to-sequence model as pure functions.

  Attributes:
    init: ``init(key) -> ModelParams``.
    apply: ``apply(params, inputs, rng=None) -> outputs [T, B, output_size]``.
    core: the recurrent core (a `jaxrnn` model), for stepping it by hand.
    readout: the `jaxrnn.dense` readout.
  """
  init: Callable[[jax.Array], ModelParams]
  apply: Callable[..., jax.Array]
  core: Any
  readout: Any


def _embedding(params: ModelParams) -> jax.Array:
  """The token embeddings of a token model's parameters."""
  if params.embedding is None:
    raise ValueError("params.embedding is None: a model built with tokens=False reads"
                     " float features, not tokens.")
  return params.embedding


# The convolutional LSTM is not in `jaxrnn.CELLS`: its constructor needs a kernel size and the
# number of spatial axes, not just H. `sequence_model` builds it itself (see `conv_lstm_core`).
CONV_CELL = "conv_lstm"
CELL_NAMES = (*jaxrnn.CELLS, CONV_CELL)
# The options of `make_cell` that `conv_lstm_core` takes too.
_CONV_OPTIONS = ("recurrent_dropout", "zoneout", "zoneout_cell")


def conv_lstm_core(hidden_channels: int, num_layers: int, input_size: int,
                   kernel_size: int, *, recurrent_dropout: float = 0.0, zoneout: float = 0.0,
                   zoneout_cell: Optional[float] = None) -> jaxrnn.Model:
  """`jaxrnn.conv_lstm` layers over feature vectors, each read as a 1-D grid.

  A step's ``F`` features become ``F`` positions of one channel (``[B, F] ->
  [B, F, 1]``); every layer is a `jaxrnn.conv_lstm` with ``hidden_channels``
  channels at each of the ``F`` positions and a ``kernel_size`` kernel with
  "SAME" padding; the output ``[B, F, Hc]`` is flattened to ``[B, F * Hc]``
  for the readout. The result is a `jaxrnn.Model` over ``[T, B, F]`` like the
  other cores (its ``output_size`` is ``F * Hc``); the reshapes around the
  cells are differentiated by JAX, the cells run their own backward.

  Args:
    hidden_channels: Hc, channels per position of each layer.
    num_layers: 1 gives one cell, more a `jaxrnn.stack`.
    input_size: F, the features per step (the grid's length).
    kernel_size: the 1-D kernel size.
    recurrent_dropout, zoneout, zoneout_cell: each layer's regulariser, as
      in `make_cell` (``zoneout_cell`` is the rate of the cell state ``c``).

  Returns:
    The core, a `jaxrnn.Model`.
  """
  layers = [_regularised(jaxrnn.conv_lstm(hidden_channels, kernel_size=kernel_size,
                                          spatial_dims=1),
                         recurrent_dropout, zoneout, zoneout_cell) for _ in range(num_layers)]
  conv = layers[0] if num_layers == 1 else jaxrnn.stack(layers)
  flat = lambda y: y.reshape(y.shape[:-2] + (-1,))

  def step(params, state, x):
    state, y = conv.step(params, state, x[..., None])
    return state, flat(y)

  def forward(params, xs, state, ctx):
    final, ys = conv.forward(params, xs[..., None], state, ctx)
    return final, flat(ys)

  spatial_initial_state = cast(jaxrnn.SpatialInitialStateFn, conv.initial_state)  # spatial_dims=1

  def initial_state(params, batch_size):
    return spatial_initial_state(params, batch_size, spatial_shape=(input_size,))

  return conv._replace(
      init=lambda key, size: conv.init(key, 1), initial_state=initial_state, step=step,
      forward=forward, output_size=input_size * hidden_channels,
      input_size=lambda params: input_size, spatial_dims=0)


def takes_option(cell: str, option: str) -> bool:
  """Whether the constructor ``jaxrnn.CELLS[cell]`` has a parameter ``option``, by its signature."""
  parameters = inspect.signature(jaxrnn.CELLS[cell]).parameters.values()
  return any(p.name == option or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def make_cell(cell: str, hidden_size: int, *, recurrent_dropout: float = 0.0,
              zoneout: float = 0.0, zoneout_cell: Optional[float] = None,
              **options: Any) -> jaxrnn.Model:
  """``jaxrnn.CELLS[cell](hidden_size, **options)``, passing each option only where it is taken.

  Options such as ``activation`` or ``dtype`` exist for some cells only; the
  others are built without them, so that one setting serves every cell.

  Args:
    cell: a name in `jaxrnn.CELLS`.
    hidden_size: H.
    recurrent_dropout: if positive, the cell is wrapped in
      `jaxrnn.recurrent_dropout` with this rate.
    zoneout: if positive (or ``zoneout_cell`` is given), the cell is wrapped
      in `jaxrnn.zoneout` with this rate.
    zoneout_cell: the LSTM's cell-state zoneout rate, or None for ``zoneout``.
    **options: keyword options of the constructors.

  Returns:
    The cell, a `jaxrnn.Model`.

  Raises:
    ValueError: ``cell`` is not in `jaxrnn.CELLS`, or a bad option.
  """
  if cell not in jaxrnn.CELLS:
    raise ValueError(f"--cell={cell!r}: expected one of jaxrnn.CELLS ({', '.join(jaxrnn.CELLS)})"
                     f" or {CONV_CELL}.")
  taken = {name: value for name, value in options.items() if takes_option(cell, name)}
  return _regularised(jaxrnn.CELLS[cell](hidden_size, **taken), recurrent_dropout, zoneout,
                      zoneout_cell)


def _regularised(model: jaxrnn.Model, recurrent_dropout: float, zoneout: float,
                 zoneout_cell: Optional[float]) -> jaxrnn.Model:
  """``model`` wrapped in `jaxrnn.recurrent_dropout` or `jaxrnn.zoneout` where their rates ask."""
  if recurrent_dropout:
    model = jaxrnn.recurrent_dropout(model, recurrent_dropout)
  if zoneout or zoneout_cell is not None:
    model = jaxrnn.zoneout(model, zoneout, cell_rate=zoneout_cell)
  return model


class Unroll(NamedTuple):
  """How the core runs over a sequence.

  Attributes:
    path: ``"sequential"`` (`jaxrnn.unroll`) or ``"parallel"`` (`jaxrnn.parallel_unroll`).
    method: ``parallel_unroll``'s ``method``.
    max_iters: its ``max_iters`` (None: T).
    damping: its ``damping``.
    tol: its ``tol`` (None: its default, 1024 machine epsilons).
  """
  path: str = "sequential"
  method: str = "newton"
  max_iters: Optional[int] = None
  damping: float = 0.0
  tol: Optional[float] = None


SEQUENTIAL = Unroll()


def sequence_model(cell: str, hidden_size: int, num_layers: int, input_size: int,
                   output_size: int, *, tokens: bool, embed_size: int = 32,
                   conv_kernel_size: int = 3, unroll: Unroll = SEQUENTIAL,
                   **cell_options: Any) -> SequenceModel:
  """Builds the model.

  Args:
    cell: a name in `jaxrnn.CELLS` ("rnn" is the tanh Elman RNN), built with
      its defaults and ``cell_options``, or ``"conv_lstm"`` (`conv_lstm_core`:
      each step's features read as a 1-D grid of one channel).
    hidden_size: units per layer (for ``conv_lstm``, channels per position).
    num_layers: 1 gives a bare cell, more a `jaxrnn.stack`.
    input_size: feature size, or the vocabulary size when `tokens`.
    output_size: outputs per step.
    tokens: inputs are int tokens, embedded by a learned `[input_size, embed_size]` table.
    embed_size: size of the embedding.
    conv_kernel_size: the kernel size of ``conv_lstm``.
    unroll: sequential or parallel over time (`Unroll`); the parallel path
      returns NaN outputs if its solve does not converge, so a run never goes
      on silently from an unconverged solve.
    **cell_options: options of `make_cell` (e.g. ``peephole=True``,
      ``zoneout=0.1``), for every layer; ``conv_lstm`` takes only the
      regularisers (``recurrent_dropout``, ``zoneout``, ``zoneout_cell``).

  Returns:
    A `SequenceModel`.

  Raises:
    ValueError: ``cell`` is not in `CELL_NAMES`, or a bad option.
  """
  core_input_size = embed_size if tokens else input_size
  if cell == CONV_CELL:
    other = sorted(set(cell_options) - set(_CONV_OPTIONS))
    if other:
      raise ValueError(f"--cell={CONV_CELL} takes none of the options {other}; it takes"
                       f" {', '.join(_CONV_OPTIONS)}.")
    core = conv_lstm_core(hidden_size, num_layers, core_input_size, conv_kernel_size,
                          **cell_options)
  else:
    layers = [make_cell(cell, hidden_size, **cell_options) for _ in range(num_layers)]
    core = layers[0] if num_layers == 1 else jaxrnn.stack(layers)
  readout = jaxrnn.dense(output_size)

  def init(key: jax.Array) -> ModelParams:
    k_embed, k_core, k_readout = jax.random.split(key, 3)
    embedding = (jax.random.normal(k_embed, (input_size, embed_size)) if tokens else None)
    return ModelParams(embedding=embedding, core=core.init(k_core, core_input_size),
                       readout=readout.init(k_readout, core.output_size))

  def apply(params: ModelParams, inputs: jax.Array, rng=None) -> jax.Array:
    xs = _embedding(params)[inputs] if tokens else inputs
    if unroll.path == "parallel":
      _, ys, _ = jaxrnn.parallel_unroll(core, params.core, xs, method=unroll.method,
                                        max_iters=unroll.max_iters, damping=unroll.damping,
                                        tol=unroll.tol)
    else:
      _, ys = jaxrnn.unroll(core, params.core, xs, rng=rng)
    return readout.apply(params.readout, ys)

  return SequenceModel(init=init, apply=apply, core=core, readout=readout)


def sample_text(model: SequenceModel, params: ModelParams, vocab: str, prompt: str,
                length: int, key: jax.Array, temperature: float = 0.8) -> str:
  """Continues `prompt` with `length` characters sampled from a character model.

  Args:
    model: a token model over `vocab`.
    params: its parameters.
    vocab: the characters, in token order.
    prompt: non-empty text made of `vocab`'s characters; read before sampling.
    length: characters to sample.
    key: PRNG key.
    temperature: softmax temperature; lower is more conservative.

  Returns:
    `prompt` followed by the sampled characters.
  """
  lookup = {c: i for i, c in enumerate(vocab)}
  prompt_ids = jnp.asarray([[lookup[c]] for c in prompt], jnp.int32)  # [T, 1]
  embedding = _embedding(params)
  state, ys = jaxrnn.unroll(model.core, params.core, embedding[prompt_ids])
  logits = model.readout.apply(params.readout, ys[-1:])[0]

  def step(carry, step_key):
    state, logits = carry
    token = jax.random.categorical(step_key, logits / temperature)
    state, y = model.core.step(params.core, state, embedding[token])
    return (state, model.readout.apply(params.readout, y[None])[0]), token[0]

  _, tokens = jax.lax.scan(step, (state, logits), jax.random.split(key, length))
  return prompt + "".join(vocab[int(t)] for t in tokens)
