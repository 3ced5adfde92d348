"""Weight converters between jaxrnn and Flax linen's recurrent cells.

Flax keeps one bias per gate where jaxrnn keeps two (``b_x`` and ``b_h``):

- ``LSTMCell`` / ``OptimizedLSTMCell`` (gates ``i, f, g, o`` in sub-modules
  ``ii..io`` without bias and ``hi..ho`` with bias): jaxrnn's ``b_h`` is Flax's
  bias and ``b_x`` is zero.
- ``GRUCell`` (reset-after, ``r, z, n``; biases on ``ir, iz, in`` and ``hn``):
  ``b_x`` is ``[b_ir, b_iz, b_in]`` and ``b_h`` is ``[0, 0, b_hn]``.
- ``MGUCell`` (``f, n``; biases on ``if`` and ``in``, and on ``hn`` with
  ``reset_gate=True``): ``b_x`` is ``[b_if, b_in]`` and ``b_h`` is
  ``[0, b_hn]`` (``[0, 0]`` without the reset gate).
- ``SimpleCell`` (bias on ``i``): ``b_x`` is Flax's bias and ``b_h`` is zero.

So Flax -> jaxrnn -> Flax gives back identical arrays. The other way,
`to_flax` folds ``b_x + b_h`` into Flax's single bias wherever the two are
only added (every bias but the ``b_hn`` of the GRU and of the MGU with its
reset gate). The outputs stay the same (to
rounding: jaxrnn's own forward adds the two biases before the matmul results
for the RNN and the LSTM), but jaxrnn -> Flax -> jaxrnn moves the input-side
bias to the side Flax keeps, so those arrays change. Flax's kernels are laid
out for ``x @ kernel``, like jaxrnn's. `to_flax` reads what the model is from
its ``config`` and refuses, saying why, a cell the Flax cell does not compute.

Flax is imported inside the functions; it is not a dependency of jaxrnn.
"""

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import composites
from jaxrnn._src import custom
from jaxrnn._src import gru
from jaxrnn._src import lstm
from jaxrnn._src import mgu
from jaxrnn._src import rnn

_LSTM_GATES = ("i", "f", "g", "o")
_GRU_GATES = ("r", "z", "n")
_MGU_GATES = ("f", "n")
# The jaxrnn cells a Flax cell computes, by config type.
_NAMES = {rnn.RNNConfig: "rnn", lstm.LSTMConfig: "lstm", gru.GRUConfig: "gru",
          mgu.MGUConfig: "mgu"}
# Flax's cell kinds (see `_cell_kind`): the configs and parameters of the jaxrnn cells they hold.
_CONFIGS = {"lstm": lstm.LSTMConfig, "gru": gru.GRUConfig, "mgu": mgu.MGUConfig,
            "simple": rnn.RNNConfig}
_PARAM_TYPES = {"lstm": lstm.LSTMParams, "gru": gru.GRUParams, "mgu": mgu.MGUParams,
                "simple": rnn.RNNParams}


def _linen():
  try:
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("jaxrnn.interop's Flax converters need flax: pip install flax.") from e
  return nn


def _cell_kind(cell, argument):
  """``"lstm"``, ``"gru"``, ``"mgu"`` or ``"simple"`` for a Flax cell class or instance."""
  nn = _linen()
  cls = cell if isinstance(cell, type) else type(cell)
  for kind, classes in (("lstm", (nn.LSTMCell, nn.OptimizedLSTMCell)), ("gru", (nn.GRUCell,)),
                        ("mgu", (nn.MGUCell,)), ("simple", (nn.SimpleCell,))):
    if issubclass(cls, classes):
      return kind
  raise TypeError(f"{argument}: expected flax.linen LSTMCell, OptimizedLSTMCell, GRUCell,"
                  f" MGUCell or SimpleCell (or nn.RNN over one), got {cls.__name__}.")


def _activation_name(fn):
  if fn is jnp.tanh or fn is jax.nn.tanh:
    return "tanh"
  if fn is jax.nn.relu:
    return "relu"
  return None


def _check_functions(cell, kind, argument):
  """Rejects cells whose nonlinearities or options jaxrnn's cells don't have."""
  if getattr(cell, "gate_fn", jax.nn.sigmoid) is not jax.nn.sigmoid:
    raise ValueError(f"{argument}: gate_fn must be the default sigmoid; jaxrnn's gates are"
                     " sigmoids.")
  activation = _activation_name(cell.activation_fn)
  allowed = ("tanh", "relu") if kind == "simple" else ("tanh",)
  if activation is None or activation not in allowed:
    raise ValueError(f"{argument}: activation_fn must be {' or '.join(allowed)} for a jaxrnn"
                     f" {kind} cell, got {cell.activation_fn!r}.")
  if getattr(cell, "residual", False):
    raise ValueError(f"{argument}: SimpleCell(residual=True) adds h to the pre-activation, which"
                     " jaxrnn's rnn cell does not; use residual=False.")
  return activation


def _unwrap(module, variables):
  """The cell module and its parameter dict, from a cell or ``nn.RNN`` and its variables."""
  nn = _linen()
  params = variables.get("params", variables) if hasattr(variables, "get") else None
  if params is None:
    raise TypeError(f"variables: expected a dict of Flax variables, got"
                    f" {type(variables).__name__}.")
  if isinstance(module, nn.RNN):
    module = module.cell
    if "cell" in params:
      params = params["cell"]
  return module, params


def _get(params, name, field):
  try:
    return params[name][field]
  except (KeyError, TypeError) as e:
    raise ValueError(f"variables: expected a '{name}' entry with a '{field}' array (Flax's"
                     f" parameter names), found top-level keys {sorted(params)}.") from e


def from_flax(module, variables):
  """Converts a Flax linen recurrent cell's variables into a jaxrnn cell.

  Supports ``LSTMCell``, ``OptimizedLSTMCell`` (same parameters), ``GRUCell``,
  ``MGUCell`` (either ``reset_gate``) and ``SimpleCell`` (tanh or relu),
  alone or inside ``nn.RNN``. The result
  computes what the cell computes: with ``nn.RNN``'s default
  ``time_major=False``,

  .. code-block:: python

    model, params = from_flax(rnn, variables)
    final, ys = jaxrnn.unroll(model, params, xs, time_major=False)

  gives ``ys == rnn.apply(variables, xs)``. The final state is
  `from_flax_carry` of Flax's carry (Flax's LSTM carry is ``(c, h)``).
  ``nn.RNN``'s ``time_major`` and ``reverse`` are not part of the model: pass
  them to `unroll`.

  Args:
    module: a Flax cell instance, or an ``nn.RNN`` whose ``cell`` is one.
    variables: the cell's variables, ``{"params": {...}}`` as returned by
      ``init`` (with the ``"cell"`` level that ``nn.RNN`` adds, if any), or
      the ``params`` dict itself.

  Returns:
    ``(model, params)``: a jaxrnn cell (``lstm``, ``gru`` with
    ``reset_after=True``, ``mgu`` with the cell's ``reset_gate``, or ``rnn``)
    and its parameters, in the dtype of Flax's arrays.

  Raises:
    TypeError: ``module`` is not one of the supported cells.
    ValueError: the cell uses a nonlinearity or option jaxrnn lacks, or
      ``variables`` lacks a parameter.
  """
  cell, params = _unwrap(module, variables)
  kind = _cell_kind(cell, "module")
  activation = _check_functions(cell, kind, "module")
  concat = lambda names, field: jnp.concatenate([_get(params, n, field) for n in names], axis=-1)
  if kind == "lstm":
    b_h = concat([f"h{g}" for g in _LSTM_GATES], "bias")
    p = lstm.LSTMParams(w_x=concat([f"i{g}" for g in _LSTM_GATES], "kernel"),
                        w_h=concat([f"h{g}" for g in _LSTM_GATES], "kernel"),
                        b_x=jnp.zeros_like(b_h), b_h=b_h)
    model = lstm.lstm(p.w_h.shape[0])
  elif kind == "gru":
    b_x = concat([f"i{g}" for g in _GRU_GATES], "bias")
    b_hn = _get(params, "hn", "bias")
    p = gru.GRUParams(w_x=concat([f"i{g}" for g in _GRU_GATES], "kernel"),
                      w_h=concat([f"h{g}" for g in _GRU_GATES], "kernel"),
                      b_x=b_x, b_h=jnp.concatenate([jnp.zeros_like(b_x[:-b_hn.shape[0]]), b_hn]))
    model = gru.gru(p.w_h.shape[0], reset_after=True)
  elif kind == "mgu":
    b_x = concat([f"i{g}" for g in _MGU_GATES], "bias")
    hidden_size = b_x.shape[-1] // 2
    # Without the reset gate Flax's ``hn`` has no bias: all of the n bias is in ``in``.
    b_hn = _get(params, "hn", "bias") if cell.reset_gate else jnp.zeros_like(b_x[hidden_size:])
    p = mgu.MGUParams(w_x=concat([f"i{g}" for g in _MGU_GATES], "kernel"),
                      w_h=concat([f"h{g}" for g in _MGU_GATES], "kernel"),
                      b_x=b_x, b_h=jnp.concatenate([jnp.zeros_like(b_hn), b_hn]))
    model = mgu.mgu(hidden_size, reset_gate=cell.reset_gate)
  else:
    b_x = _get(params, "i", "bias")
    p = rnn.RNNParams(w_x=_get(params, "i", "kernel"), w_h=_get(params, "h", "kernel"),
                      b_x=b_x, b_h=jnp.zeros_like(b_x))
    model = rnn.rnn(p.w_h.shape[0], activation=activation)
  return model, p


def _cell_config(model):
  """``model``'s cell config; raises unless it is a single cell a Flax cell computes."""
  if not isinstance(model, base.Model):
    raise TypeError(f"model: expected a jaxrnn cell, got {type(model).__name__}.")
  config = model.config
  if type(config) in _NAMES:
    if lstm.options_of(config):
      raise ValueError(f"model: expected a plain lstm (Flax's LSTMCell has no such option), got"
                       f" lstm({', '.join(lstm.options_of(config))}).")
    return config
  if config is None:
    raise TypeError("model: expected a jaxrnn cell (rnn, lstm, gru or mgu), whose config says"
                    " what it computes; got a model with config=None.")
  if isinstance(config, composites.LearnedStateConfig):
    raise ValueError("model: expected a single cell, got a learned_initial_state; Flax's"
                     " variables hold no trained initial state. Convert the wrapped cell with"
                     " params.core, and pass to_flax_carry(params.initial_state) (broadcast over"
                     " the batch) as the initial carry.")
  name = {composites.StackConfig: "stack",
          composites.BidirectionalConfig: "bidirectional"}.get(type(config))
  if name is not None:
    raise ValueError(f"model: expected a single cell (a Flax cell is one layer read one way), got"
                     f" a {name}; convert each of its cells separately.")
  got = f"a config of type {type(config).__name__}"
  if isinstance(config, custom.CustomCellConfig):
    got = f"custom_cell {config.name!r} ({type(config).__name__})"
  raise ValueError("model: expected an rnn, lstm, gru or mgu cell (config RNNConfig, LSTMConfig,"
                   " GRUConfig or MGUConfig: the cells of Flax's SimpleCell, LSTMCell, GRUCell"
                   f" and MGUCell), got {got}; the Flax converters support only those cells.")


def to_flax(model, params, cell):
  """Writes jaxrnn cell parameters as Flax linen variables.

  ``b_x + b_h`` is folded into Flax's single bias where the two are only added
  (see the module docstring): outputs are unchanged, and converting back
  gives the same function with the bias on Flax's side. A jaxrnn cell without
  biases is written with zero biases.

  Args:
    model: the jaxrnn cell ``params`` belong to. Its ``config`` must be what
      ``cell`` computes: an ``lstm`` for ``LSTMCell`` and
      ``OptimizedLSTMCell``, a reset-after ``gru`` for ``GRUCell``, an ``mgu``
      with the same ``reset_gate`` for ``MGUCell``, an ``rnn``
      with the ``SimpleCell``'s activation for ``SimpleCell``, with
      ``cell``'s ``features`` as hidden size and no compute ``dtype`` other
      than the parameters'. The model is not run.
    params: `LSTMParams`, `GRUParams`, `MGUParams` or `RNNParams` of ``model``.
    cell: the Flax cell to write for: a class (``nn.LSTMCell``,
      ``nn.OptimizedLSTMCell``, ``nn.GRUCell``, ``nn.MGUCell``,
      ``nn.SimpleCell``; its defaults apply, so the ``SimpleCell`` is tanh and
      the ``MGUCell`` has its reset gate), an instance of one, or
      an ``nn.RNN`` over one (then the result has ``nn.RNN``'s ``"cell"``
      level).

  Returns:
    ``{"params": {...}}`` with Flax's parameter names, ready for ``apply``.

  Raises:
    TypeError: ``cell`` is not a supported Flax cell, ``model`` is not a cell
      of its kind, or ``params`` are not ``model``'s.
    ValueError: ``model`` computes something ``cell`` does not (a
      reset-before GRU, another ``reset_gate``, activation, hidden size or
      compute dtype, a composite, a cell other than ``rnn``, ``lstm``, ``gru``
      and ``mgu`` such as a ``custom_cell``), or ``cell`` has an option jaxrnn
      lacks.
  """
  nn = _linen()
  wrapped = isinstance(cell, nn.RNN)
  if wrapped:
    cell = cell.cell
  kind = _cell_kind(cell, "cell")
  cell_name = (cell if isinstance(cell, type) else type(cell)).__name__
  activation = _check_functions(cell, kind, "cell")
  config = _cell_config(model)
  if not isinstance(config, _CONFIGS[kind]):
    raise TypeError(f"model: expected a jaxrnn {_NAMES[_CONFIGS[kind]]} cell (what Flax's"
                    f" {cell_name} computes), got {_NAMES[type(config)]}.")
  if kind == "gru" and not config.reset_after:
    raise ValueError("model: expected a reset-after GRU (Flax's GRUCell is reset-after), got"
                     " gru(reset_after=False), which is reset-before and has no Flax"
                     " equivalent.")
  if kind == "mgu" and config.reset_gate != cell.reset_gate:
    raise ValueError(f"cell: expected reset_gate={config.reset_gate} (the model's), got the"
                     f" {cell_name}'s reset_gate={cell.reset_gate}; pass"
                     f" nn.MGUCell({config.hidden_size}, reset_gate={config.reset_gate}).")
  if kind == "simple" and config.activation != activation:
    raise ValueError(f"cell: expected activation_fn={config.activation} (the model's"
                     f" activation), got the {cell_name}'s {activation}; pass"
                     f" nn.SimpleCell({config.hidden_size}, activation_fn=nn.{config.activation}).")
  features = getattr(cell, "features", None)
  if not isinstance(cell, type) and features != config.hidden_size:
    raise ValueError(f"cell: expected features={config.hidden_size} (the model's hidden size),"
                     f" got features={features}.")
  expected = _PARAM_TYPES[kind]
  if not isinstance(params, expected):
    raise TypeError(f"params: expected {expected.__name__} (the model's), got"
                    f" {type(params).__name__}.")
  hidden_size = params.w_h.shape[0]
  if hidden_size != config.hidden_size:
    raise ValueError(f"params: expected hidden size {config.hidden_size} (the model's), got"
                     f" {hidden_size}.")
  if config.dtype is not None and jnp.dtype(config.dtype) != params.w_h.dtype:
    raise ValueError(f"model: expected matmuls in the parameters' dtype ({params.w_h.dtype}), as"
                     f" Flax's {cell_name} computes them, got dtype={jnp.dtype(config.dtype).name}."
                     " Rebuild the cell without dtype= (the parameters are the same) to convert"
                     " it.")
  bias = params.b_x is not None
  zeros = jnp.zeros(params.w_h.shape[1], params.w_h.dtype)
  total = params.b_x + params.b_h if bias else zeros
  block = lambda a, k: a[..., k * hidden_size:(k + 1) * hidden_size]
  out = {}
  if kind == "lstm":
    for k, g in enumerate(_LSTM_GATES):
      out[f"i{g}"] = {"kernel": block(params.w_x, k)}
      out[f"h{g}"] = {"kernel": block(params.w_h, k), "bias": block(total, k)}
  elif kind == "gru":
    b_x = params.b_x if bias else zeros
    b_h = params.b_h if bias else zeros
    for k, g in enumerate(_GRU_GATES):
      out[f"i{g}"] = {"kernel": block(params.w_x, k),
                      "bias": block(b_x, k) if g == "n" else block(total, k)}
      out[f"h{g}"] = {"kernel": block(params.w_h, k)}
    out["hn"]["bias"] = block(b_h, 2)
  elif kind == "mgu":
    b_x = params.b_x if bias else zeros
    b_h = params.b_h if bias else zeros
    out["if"] = {"kernel": block(params.w_x, 0), "bias": block(total, 0)}
    out["hf"] = {"kernel": block(params.w_h, 0)}
    out["in"] = {"kernel": block(params.w_x, 1),
                 "bias": block(b_x if config.reset_gate else total, 1)}
    out["hn"] = {"kernel": block(params.w_h, 1)}
    if config.reset_gate:
      out["hn"]["bias"] = block(b_h, 1)
  else:
    out["i"] = {"kernel": params.w_x, "bias": total}
    out["h"] = {"kernel": params.w_h}
  if wrapped:
    out = {"cell": out}
  return {"params": out}


def from_flax_carry(carry):
  """Converts a Flax cell's carry into the jaxrnn cell's state.

  Flax's LSTM carry is the pair ``(c, h)``, cell first; jaxrnn's is
  ``LSTMState(hidden=h, cell=c)``. GRU, MGU and simple-cell carries are the
  hidden array in both.

  Args:
    carry: a Flax carry, e.g. from ``nn.RNN(..., return_carry=True)``.

  Returns:
    The jaxrnn state.
  """
  if isinstance(carry, lstm.LSTMState):
    raise TypeError("carry: got a jaxrnn LSTMState, which is already a jaxrnn state.")
  if isinstance(carry, (tuple, list)):
    if len(carry) != 2:
      raise ValueError(f"carry: expected an LSTM's (c, h) pair or an array, got a sequence of"
                       f" {len(carry)}.")
    c, h = carry
    return lstm.LSTMState(hidden=h, cell=c)
  return carry


def to_flax_carry(state):
  """Converts a jaxrnn cell state into a Flax carry (the inverse of `from_flax_carry`).

  Args:
    state: a jaxrnn `LSTMState` or hidden-state array.

  Returns:
    ``(c, h)`` for an LSTM, else the array; usable as ``initial_carry``.
  """
  if isinstance(state, lstm.LSTMState):
    return (state.cell, state.hidden)
  return state
