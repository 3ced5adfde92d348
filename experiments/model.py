"""The experiments' model: embedding (for tokens) -> recurrent core -> dense readout."""

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

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


def takes_option(cell: str, option: str) -> bool:
  """Whether the constructor ``jaxrnn.CELLS[cell]`` has a parameter ``option``, by its signature."""
  parameters = inspect.signature(jaxrnn.CELLS[cell]).parameters.values()
  return any(p.name == option or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def make_cell(cell: str, hidden_size: int, **options: Any) -> jaxrnn.Model:
  """``jaxrnn.CELLS[cell](hidden_size, **options)``, passing each option only where it is taken.

  Options such as ``activation`` or ``dtype`` exist for some cells only; the
  others are built without them, so that one setting serves every cell.

  Args:
    cell: a name in `jaxrnn.CELLS`.
    hidden_size: H.
    **options: keyword options of the constructors.

  Returns:
    The cell, a `jaxrnn.Model`.

  Raises:
    ValueError: ``cell`` is not in `jaxrnn.CELLS`.
  """
  if cell not in jaxrnn.CELLS:
    raise ValueError(f"--cell={cell!r}: expected one of jaxrnn.CELLS: {', '.join(jaxrnn.CELLS)}.")
  taken = {name: value for name, value in options.items() if takes_option(cell, name)}
  return jaxrnn.CELLS[cell](hidden_size, **taken)


class Unroll(NamedTuple):
  """How the core runs over a sequence.

  Attributes:
    path: ``"sequential"`` (`jaxrnn.unroll`) or ``"parallel"`` (`jaxrnn.parallel_unroll`).
    method: ``parallel_unroll``'s ``method``.
    max_iters: its ``max_iters`` (None: T).
    damping: its ``damping``.
  """
  path: str = "sequential"
  method: str = "newton"
  max_iters: Optional[int] = None
  damping: float = 0.0


SEQUENTIAL = Unroll()


def sequence_model(cell: str, hidden_size: int, num_layers: int, input_size: int,
                   output_size: int, *, tokens: bool, embed_size: int = 32,
                   unroll: Unroll = SEQUENTIAL) -> SequenceModel:
  """Builds the model.

  Args:
    cell: a name in `jaxrnn.CELLS` ("rnn" is the tanh Elman RNN), built with
      its defaults.
    hidden_size: units per layer.
    num_layers: 1 gives a bare cell, more a `jaxrnn.stack`.
    input_size: feature size, or the vocabulary size when `tokens`.
    output_size: outputs per step.
    tokens: inputs are int tokens, embedded by a learned `[input_size, embed_size]` table.
    embed_size: size of the embedding.
    unroll: sequential or parallel over time (`Unroll`); the parallel path
      returns NaN outputs if its solve does not converge, so a run never goes
      on silently from an unconverged solve.

  Returns:
    A `SequenceModel`.

  Raises:
    ValueError: ``cell`` is not in `jaxrnn.CELLS`.
  """
  layers = [make_cell(cell, hidden_size) for _ in range(num_layers)]
  core = layers[0] if num_layers == 1 else jaxrnn.stack(layers)
  readout = jaxrnn.dense(output_size)
  core_input_size = embed_size if tokens else input_size

  def init(key: jax.Array) -> ModelParams:
    k_embed, k_core, k_readout = jax.random.split(key, 3)
    embedding = (jax.random.normal(k_embed, (input_size, embed_size)) if tokens else None)
    return ModelParams(embedding=embedding, core=core.init(k_core, core_input_size),
                       readout=readout.init(k_readout, core.output_size))

  def apply(params: ModelParams, inputs: jax.Array, rng=None) -> jax.Array:
    xs = _embedding(params)[inputs] if tokens else inputs
    if unroll.path == "parallel":
      _, ys, _ = jaxrnn.parallel_unroll(core, params.core, xs, method=unroll.method,
                                        max_iters=unroll.max_iters, damping=unroll.damping)
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
