"""Weight converters between jaxrnn and Haiku's ``hk.LSTM``, ``hk.GRU`` and ``hk.VanillaRNN``.

How Haiku's cores differ from jaxrnn's cells (``haiku/_src/recurrent.py``):

- ``hk.LSTM`` applies one ``hk.Linear`` (``w [I+H, 4H]``, ``b [4H]``) to
  ``concat([x, h])``, splits the result in the gate order ``i, g, f, o`` and
  adds a hard-coded 1 to the forget gate at every step. `from_haiku` reorders
  the blocks to ``i, f, g, o``, puts Haiku's ``b`` in ``b_x`` and the constant
  in ``b_h``: ``b_h`` is 1 on the forget block and 0 elsewhere.
- ``hk.GRU`` is reset-before (``gru(reset_after=False)``) with blocks
  ``z, r, a`` and one bias, and its update gate is the complement of jaxrnn's:
  ``h' = (1 - z) h + z a`` where jaxrnn has ``h' = (1 - z) n + z h``. Since
  ``1 - sigmoid(u) = sigmoid(-u)``, jaxrnn's ``z`` weights and bias are the
  negated Haiku ones. ``b_h`` is zero.
- ``hk.VanillaRNN`` is always ReLU (``rnn(activation="relu")``), with ``b_x``
  from its input ``Linear`` and ``b_h`` from the recurrent one (zero with
  ``double_bias=False``).

Reordering and negation are exact, so Haiku -> jaxrnn -> Haiku gives back
identical arrays. `to_haiku` folds ``b_x + b_h`` (minus the LSTM's constant
1) into Haiku's bias: same outputs to rounding, but converting back puts the
bias on Haiku's side. `to_haiku` reads what the model is from its ``config``
and refuses, saying why, a cell no Haiku core computes.

The converters read and write Haiku's parameter dicts without importing Haiku,
which is not a dependency of jaxrnn.
"""

import jax.numpy as jnp
import numpy as np

from jaxrnn._src import base
from jaxrnn._src import composites
from jaxrnn._src import custom
from jaxrnn._src import gru
from jaxrnn._src import lstm
from jaxrnn._src import rnn

# Haiku's cores (by their default module names) and the parameters of the jaxrnn cells they are.
_CORES = {"lstm": lstm.LSTMParams, "gru": gru.GRUParams, "vanilla_rnn": rnn.RNNParams}
_CLASS_NAMES = {"LSTM": "lstm", "GRU": "gru", "VanillaRNN": "vanilla_rnn"}
# The jaxrnn cells a Haiku core computes, by config type, and that core.
_CORE_OF_CONFIG = {lstm.LSTMConfig: "lstm", gru.GRUConfig: "gru", rnn.RNNConfig: "vanilla_rnn"}


def _core_kind(core):
  """``"lstm"``, ``"gru"`` or ``"vanilla_rnn"`` from a Haiku class or its name."""
  if isinstance(core, type):
    name = _CLASS_NAMES.get(core.__name__)
    if name is not None and core.__module__.startswith("haiku"):
      return name
  elif isinstance(core, str):
    name = _CLASS_NAMES.get(core, core.lower())
    if name in _CORES:
      return name
  raise TypeError(f"core: expected hk.LSTM, hk.GRU or hk.VanillaRNN (the class or its name),"
                  f" got {core!r}.")


def _lstm_permutation(hidden_size):
  """Column order that swaps the ``g`` and ``f`` blocks (``i,g,f,o`` <-> ``i,f,g,o``)."""
  blocks = np.arange(4 * hidden_size).reshape(4, hidden_size)
  return blocks[[0, 2, 1, 3]].reshape(-1)


def _gru_permutation(hidden_size):
  """Column order that swaps the first two blocks (Haiku's ``z, r, a`` <-> ``r, z, n``)."""
  blocks = np.arange(3 * hidden_size).reshape(3, hidden_size)
  return blocks[[1, 0, 2]].reshape(-1)


def _forget_one(hidden_size, dtype):
  """Haiku's per-step forget-gate constant as a jaxrnn ``b_h``."""
  return jnp.zeros(4 * hidden_size, dtype).at[hidden_size:2 * hidden_size].set(1)


def _z_sign(hidden_size, dtype):
  """+1 on the ``r`` and ``n`` blocks, -1 on ``z``: flips the GRU's update gate."""
  return jnp.ones(3 * hidden_size, dtype).at[hidden_size:2 * hidden_size].set(-1)


def _lookup(hk_params, key, field, name):
  try:
    return hk_params[key][field]
  except (KeyError, TypeError) as e:
    raise ValueError(f"hk_params: expected '{key}' with a '{field}' array; found keys"
                     f" {sorted(hk_params)}. Pass name= with the core's module path (e.g."
                     f" 'my_net/~/{name}') if it is not the default.") from e


def from_haiku(core, hk_params, *, name=None):
  """Converts a Haiku recurrent core's parameters into a jaxrnn cell.

  The result computes what the core computes (see the module docstring for
  how the gates are mapped): with ``hk.dynamic_unroll(core, xs, state)`` on a
  time-major ``xs``, ``jaxrnn.unroll(model, params, xs)`` gives the same
  outputs, and Haiku's final state is jaxrnn's (``LSTMState(hidden, cell)``
  in both; convert with ``jaxrnn.LSTMState(*hk_state)``).

  Args:
    core: ``hk.LSTM``, ``hk.GRU`` or ``hk.VanillaRNN`` (the class, or its name
      as a string).
    hk_params: Haiku's parameter mapping, as returned by ``init``; other
      modules' entries are ignored.
    name: the core's module path in ``hk_params``; defaults to Haiku's default
      name (``"lstm"``, ``"gru"``, ``"vanilla_rnn"``).

  Returns:
    ``(model, params)``: ``lstm``, ``gru(reset_after=False)`` or
    ``rnn(activation="relu")``, and its parameters in Haiku's dtype.

  Raises:
    TypeError: ``core`` is not one of the three.
    ValueError: ``hk_params`` lacks the core's parameters.
  """
  kind = _core_kind(core)
  name = kind if name is None else name
  if kind == "lstm":
    w = _lookup(hk_params, f"{name}/linear", "w", name)
    b = _lookup(hk_params, f"{name}/linear", "b", name)
    hidden_size = b.shape[0] // 4
    perm = _lstm_permutation(hidden_size)
    input_size = w.shape[0] - hidden_size
    params = lstm.LSTMParams(w_x=w[:input_size, perm], w_h=w[input_size:, perm], b_x=b[perm],
                             b_h=_forget_one(hidden_size, b.dtype))
    return lstm.lstm(hidden_size), params
  if kind == "gru":
    w_i, w_h, b = (_lookup(hk_params, name, f, name) for f in ("w_i", "w_h", "b"))
    hidden_size = w_h.shape[0]
    perm = _gru_permutation(hidden_size)
    sign = _z_sign(hidden_size, b.dtype)
    params = gru.GRUParams(w_x=w_i[:, perm] * sign, w_h=w_h[:, perm] * sign,
                           b_x=b[perm] * sign, b_h=jnp.zeros_like(b))
    return gru.gru(hidden_size, reset_after=False), params
  w_x = _lookup(hk_params, f"{name}/linear", "w", name)
  b_x = _lookup(hk_params, f"{name}/linear", "b", name)
  w_h = _lookup(hk_params, f"{name}/linear_1", "w", name)
  b_h = hk_params[f"{name}/linear_1"].get("b", jnp.zeros_like(b_x))
  params = rnn.RNNParams(w_x=w_x, w_h=w_h, b_x=b_x, b_h=b_h)
  return rnn.rnn(w_h.shape[0], activation="relu"), params


def _core_for(model):
  """The Haiku core kind that computes ``model``; raises, saying why, where there is none."""
  if not isinstance(model, base.Model):
    raise TypeError(f"model: expected a jaxrnn cell, got {type(model).__name__}.")
  config = model.config
  if config is None:
    raise TypeError("model: expected a jaxrnn cell (rnn, lstm or gru), whose config says what it"
                    " computes; got a model with config=None.")
  if isinstance(config, composites.LearnedStateConfig):
    raise ValueError("model: expected a single cell, got a learned_initial_state; Haiku's"
                     " parameters hold no trained initial state. Convert the wrapped cell with"
                     " params.core, and pass params.initial_state (broadcast over the batch) as"
                     " the core's initial state.")
  name = {composites.StackConfig: "stack",
          composites.BidirectionalConfig: "bidirectional"}.get(type(config))
  if name is not None:
    raise ValueError(f"model: expected a single cell (what one Haiku core is), got a {name};"
                     " convert each of its cells separately.")
  kind = _CORE_OF_CONFIG.get(type(config))
  if kind is None:
    got = f"a config of type {type(config).__name__}"
    if isinstance(config, custom.CustomCellConfig):
      got = f"custom_cell {config.name!r} ({type(config).__name__})"
    raise ValueError("model: expected an rnn, lstm or gru cell (config RNNConfig, LSTMConfig or"
                     f" GRUConfig: the cells of hk.VanillaRNN, hk.LSTM and hk.GRU), got {got};"
                     " the Haiku converters support only those cells.")
  if kind == "lstm" and lstm.options_of(config):
    raise ValueError(f"model: expected a plain lstm (hk.LSTM has no such option), got"
                     f" lstm({', '.join(lstm.options_of(config))}).")
  if kind == "gru" and config.reset_after:
    raise ValueError("model: expected a reset-before GRU (hk.GRU is reset-before), got"
                     " gru(reset_after=True), which has no Haiku equivalent.")
  if kind == "vanilla_rnn" and config.activation != "relu":
    raise ValueError(f"model: expected an rnn with activation='relu' (hk.VanillaRNN is ReLU),"
                     f" got activation={config.activation!r}.")
  return kind, config


def to_haiku(model, params, *, name=None, double_bias=True):
  """Writes jaxrnn cell parameters as Haiku parameters.

  The inverse of `from_haiku`, with ``b_x + b_h`` folded into Haiku's bias
  (for the LSTM, less the 1 Haiku adds to the forget gate); a jaxrnn cell
  without biases is written with the biases that make Haiku compute the same.

  Args:
    model: the jaxrnn cell ``params`` belong to; its ``config`` picks the
      core and must be one Haiku has: ``lstm`` (``hk.LSTM``),
      ``gru(reset_after=False)`` (``hk.GRU``) or ``rnn(activation="relu")``
      (``hk.VanillaRNN``), with no compute ``dtype`` other than the
      parameters'. The model is not run.
    params: ``model``'s `LSTMParams`, `GRUParams` or `RNNParams`.
    name: the module path to write under; defaults to Haiku's default name.
    double_bias: for ``hk.VanillaRNN``, the core's ``double_bias`` (whether
      the recurrent ``Linear`` has a bias).

  Returns:
    A dict ``{module_path: {param_name: array}}`` for ``apply``.

  Raises:
    TypeError: ``model`` has no config, or ``params`` are not its parameters.
    ValueError: no Haiku core computes ``model`` (a reset-after GRU, a tanh
      RNN, a composite, a compute dtype, a cell other than ``rnn``, ``lstm``
      and ``gru`` such as a ``custom_cell``), or ``params`` have another
      hidden size.
  """
  kind, config = _core_for(model)
  expected = _CORES[kind]
  if not isinstance(params, expected):
    raise TypeError(f"params: expected {expected.__name__} (the model's), got"
                    f" {type(params).__name__}.")
  if params.w_h.shape[0] != config.hidden_size:
    raise ValueError(f"params: expected hidden size {config.hidden_size} (the model's), got"
                     f" {params.w_h.shape[0]}.")
  if config.dtype is not None and jnp.dtype(config.dtype) != params.w_h.dtype:
    raise ValueError(f"model: expected matmuls in the parameters' dtype ({params.w_h.dtype}), as"
                     f" Haiku computes them, got dtype={jnp.dtype(config.dtype).name}. Rebuild"
                     " the cell without dtype= (the parameters are the same) to convert it.")
  return _write(kind, params, kind if name is None else name, double_bias)


def _write(kind, params, name, double_bias):
  hidden_size = params.w_h.shape[0]
  dtype = params.w_h.dtype
  zeros = jnp.zeros(params.w_h.shape[1], dtype)
  b_x = zeros if params.b_x is None else params.b_x
  b_h = zeros if params.b_h is None else params.b_h
  if kind == "lstm":
    perm = _lstm_permutation(hidden_size)
    # Written as b_x + (b_h - 1) so that b_h == 1 (from from_haiku) gives back b_x exactly.
    b = b_x + (b_h - _forget_one(hidden_size, dtype))
    w = jnp.concatenate([params.w_x, params.w_h], axis=0)
    return {f"{name}/linear": {"w": w[:, perm], "b": b[perm]}}
  if kind == "gru":
    perm = _gru_permutation(hidden_size)
    sign = _z_sign(hidden_size, dtype)
    return {name: {"w_i": (params.w_x * sign)[:, perm], "w_h": (params.w_h * sign)[:, perm],
                   "b": ((b_x + b_h) * sign)[perm]}}
  if double_bias:
    return {f"{name}/linear": {"w": params.w_x, "b": b_x},
            f"{name}/linear_1": {"w": params.w_h, "b": b_h}}
  return {f"{name}/linear": {"w": params.w_x, "b": b_x + b_h},
          f"{name}/linear_1": {"w": params.w_h}}
