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
- ``ConvLSTMCell`` (two convolutions ``ih`` and ``hh``, both with a bias,
  gate order ``i, g, f, o``, and a constant 1 added to the forget gate at
  every step): the kernels and biases are reordered to ``i, f, g, o``,
  ``b_x`` is ``ih``'s bias and ``b_h`` is ``hh``'s plus 1 on the forget
  block, so `to_flax` takes that 1 back out (exact up to float32 rounding of
  ``b + 1 - 1``).

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
from jaxrnn._src import conv_lstm
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
          mgu.MGUConfig: "mgu", conv_lstm.ConvLSTMConfig: "conv_lstm"}
# Flax's cell kinds (see `_cell_kind`): the configs and parameters of the jaxrnn cells they hold.
_CONFIGS = {"lstm": lstm.LSTMConfig, "gru": gru.GRUConfig, "mgu": mgu.MGUConfig,
            "simple": rnn.RNNConfig, "conv_lstm": conv_lstm.ConvLSTMConfig}
_PARAM_TYPES = {"lstm": lstm.LSTMParams, "gru": gru.GRUParams, "mgu": mgu.MGUParams,
                "simple": rnn.RNNParams, "conv_lstm": conv_lstm.ConvLSTMParams}
# Flax's ConvLSTMCell splits its gates i, g, f, o; jaxrnn's order i, f, g, o swaps the middle
# two blocks, a permutation that is its own inverse.
_CONV_GATE_ORDER = (0, 2, 1, 3)
_CONV_FORGET = 1  # the forget block, in jaxrnn's order


def _linen():
  try:
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("jaxrnn.interop's Flax converters need flax: pip install flax.") from e
  return nn


def _cell_kind(cell, argument):
  """``"lstm"``, ``"gru"``, ``"mgu"``, ``"simple"`` or ``"conv_lstm"`` for a Flax cell."""
  nn = _linen()
  cls = cell if isinstance(cell, type) else type(cell)
  for kind, classes in (("lstm", (nn.LSTMCell, nn.OptimizedLSTMCell)), ("gru", (nn.GRUCell,)),
                        ("mgu", (nn.MGUCell,)), ("simple", (nn.SimpleCell,)),
                        ("conv_lstm", (nn.ConvLSTMCell,))):
    if issubclass(cls, classes):
      return kind
  raise TypeError(f"{argument}: expected flax.linen LSTMCell, OptimizedLSTMCell, GRUCell,"
                  f" MGUCell, SimpleCell or ConvLSTMCell (or nn.RNN over one), got"
                  f" {cls.__name__}.")


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
  ``MGUCell`` (either ``reset_gate``), ``SimpleCell`` (tanh or relu) and
  ``ConvLSTMCell`` (stride 1, padding that keeps the spatial shape), alone or
  inside ``nn.RNN``. The result
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
    ``reset_after=True``, ``mgu`` with the cell's ``reset_gate``, ``rnn``, or
    ``conv_lstm`` with the cell's kernel size, padding and ``spatial_dims``
    the length of its ``kernel_size``) and its
    parameters, in the dtype of Flax's arrays.

  Raises:
    TypeError: ``module`` is not one of the supported cells.
    ValueError: the cell uses a nonlinearity or option jaxrnn lacks, or
      ``variables`` lacks a parameter.
  """
  cell, params = _unwrap(module, variables)
  kind = _cell_kind(cell, "module")
  if kind == "conv_lstm":
    return _conv_lstm_from_flax(cell, params)
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
    raise TypeError("model: expected a jaxrnn cell (rnn, lstm, gru, mgu or conv_lstm), whose"
                    " config says"
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
  raise ValueError("model: expected an rnn, lstm, gru, mgu or conv_lstm cell (config RNNConfig,"
                   " LSTMConfig, GRUConfig, MGUConfig or ConvLSTMConfig: the cells of Flax's"
                   " SimpleCell, LSTMCell, GRUCell, MGUCell and ConvLSTMCell), got"
                   f" {got}; the Flax converters support only those cells.")


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
      than the parameters'; a ``conv_lstm`` with the ``ConvLSTMCell``'s
      ``features``, ``kernel_size`` and padding (``use_bias=True``: Flax's
      cell without biases still adds 1 to the forget gate). The model is not
      run.
    params: `LSTMParams`, `GRUParams`, `MGUParams`, `RNNParams` or
      `ConvLSTMParams` of ``model``.
    cell: the Flax cell to write for: a class (``nn.LSTMCell``,
      ``nn.OptimizedLSTMCell``, ``nn.GRUCell``, ``nn.MGUCell``,
      ``nn.SimpleCell``, ``nn.ConvLSTMCell``; its defaults apply, so the
      ``SimpleCell`` is tanh, the ``MGUCell`` has its reset gate and the
      ``ConvLSTMCell`` pads ``"SAME"``), an instance of one, or
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
  # A ConvLSTMCell has no gate_fn or activation_fn; its options are checked on their own.
  activation = None if kind == "conv_lstm" else _check_functions(cell, kind, "cell")
  config = _cell_config(model)
  if not isinstance(config, _CONFIGS[kind]):
    raise TypeError(f"model: expected a jaxrnn {_NAMES[_CONFIGS[kind]]} cell (what Flax's"
                    f" {cell_name} computes), got {_NAMES[type(config)]}.")
  if kind == "conv_lstm":
    return _conv_lstm_to_flax(config, params, cell, wrapped)
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


def _conv_gates(a):
  """Swaps the middle two gate blocks of the last axis: Flax's ``i, g, f, o`` <-> ``i, f, g, o``."""
  n = a.shape[-1] // 4
  return jnp.concatenate([a[..., k * n:(k + 1) * n] for k in _CONV_GATE_ORDER], axis=-1)


def _forget_one(hidden_channels, dtype):
  """``[4Hc]``: 1 on the forget block (jaxrnn's order), 0 elsewhere; Flax adds it at each step."""
  return jnp.zeros((4 * hidden_channels,), dtype).at[
      _CONV_FORGET * hidden_channels:(_CONV_FORGET + 1) * hidden_channels].set(1)


def _conv_cell_padding(cell, argument):
  """A Flax ``ConvLSTMCell``'s ``(low, high)`` pads; refuses strides and shape-changing padding."""
  strides = cell.strides
  if strides is not None and any(s != 1 for s in (
      strides if isinstance(strides, (tuple, list)) else (strides,))):
    raise ValueError(f"{argument}: expected a ConvLSTMCell with strides=None (1), got"
                     f" strides={strides!r}; a strided cell changes the state's spatial shape.")
  try:
    return conv_lstm.resolve_padding(cell.padding, tuple(cell.kernel_size))
  except ValueError as e:
    raise ValueError(f"{argument}: the ConvLSTMCell's {e}") from None


def _conv_lstm_from_flax(cell, params):
  pads = _conv_cell_padding(cell, "module")
  w_x = _conv_gates(_get(params, "ih", "kernel"))
  w_h = _conv_gates(_get(params, "hh", "kernel"))
  hidden_channels = w_h.shape[-2]
  one = _forget_one(hidden_channels, w_h.dtype)
  if cell.use_bias:
    b_x = _conv_gates(_get(params, "ih", "bias"))
    b_h = _conv_gates(_get(params, "hh", "bias")) + one
  else:
    b_x, b_h = jnp.zeros_like(one), one
  kernel_size = tuple(cell.kernel_size)
  model = conv_lstm.conv_lstm(hidden_channels, kernel_size=kernel_size,
                              spatial_dims=len(kernel_size), padding=pads)
  return model, conv_lstm.ConvLSTMParams(w_x, w_h, b_x, b_h)


def _conv_lstm_to_flax(config, params, cell, wrapped):
  hidden_channels = config.hidden_channels
  if not isinstance(params, conv_lstm.ConvLSTMParams):
    raise TypeError(f"params: expected ConvLSTMParams (the model's), got"
                    f" {type(params).__name__}.")
  if tuple(params.w_h.shape[-2:]) != (hidden_channels, 4 * hidden_channels):
    raise ValueError(f"params: expected hidden channels {hidden_channels} (the model's), got"
                     f" w_h of shape {list(params.w_h.shape)}.")
  if isinstance(cell, type):  # Flax's defaults: padding "SAME"
    pads = conv_lstm.resolve_padding("SAME", config.kernel_size)
    where = "the class's default padding 'SAME'"
  else:
    if cell.features != hidden_channels:
      raise ValueError(f"cell: expected features={hidden_channels} (the model's hidden"
                       f" channels), got features={cell.features}.")
    if tuple(cell.kernel_size) != config.kernel_size:
      raise ValueError(f"cell: expected kernel_size={config.kernel_size} (the model's), got"
                       f" kernel_size={tuple(cell.kernel_size)}.")
    if not cell.use_bias:
      raise ValueError("cell: expected use_bias=True: Flax's ConvLSTMCell without biases still"
                       " adds 1 to the forget gate, and has nowhere to hold the model's biases.")
    pads = _conv_cell_padding(cell, "cell")
    where = f"padding={cell.padding!r}"
  if pads != config.padding:
    raise ValueError(f"cell: expected padding {[list(p) for p in config.padding]} (the model's"
                     f" (low, high) pairs), got {where}, which pads {[list(p) for p in pads]};"
                     f" pass nn.ConvLSTMCell(..., padding={[tuple(p) for p in config.padding]}).")
  one = _forget_one(hidden_channels, params.w_h.dtype)
  b_x = params.b_x if params.b_x is not None else jnp.zeros_like(one)
  b_h = params.b_h if params.b_h is not None else jnp.zeros_like(one)
  out = {"ih": {"kernel": _conv_gates(params.w_x), "bias": _conv_gates(b_x)},
         "hh": {"kernel": _conv_gates(params.w_h), "bias": _conv_gates(b_h - one)}}
  return {"params": {"cell": out} if wrapped else out}


def from_flax_carry(carry):
  """Converts a Flax cell's carry into the jaxrnn cell's state.

  Flax's LSTM and ConvLSTM carry is the pair ``(c, h)``, cell first; jaxrnn's is
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
