"""Exact weight converters between jaxrnn and PyTorch's ``nn.RNN``, ``nn.LSTM``, ``nn.GRU``.

PyTorch and jaxrnn use the same equations, gate orders (LSTM ``i, f, g, o``;
GRU ``r, z, n``, reset-after) and two biases per layer, so conversion is a
transpose: jaxrnn's ``w_x`` is ``weight_ih_l{k}.T`` and ``w_h`` is
``weight_hh_l{k}.T``; ``b_x`` is ``bias_ih_l{k}`` and ``b_h`` is
``bias_hh_l{k}``; an LSTM's projection (``proj_size=P``) ``w_proj`` is
``weight_hr_l{k}.T``. Nothing is added or folded, so the round trip
PyTorch -> jaxrnn -> PyTorch gives back bit-identical tensors.

Model layout: ``num_layers=1`` unidirectional gives a bare cell; anything else
gives ``stack([...], dropout=module.dropout)`` with one entry per layer, each a
cell or ``bidirectional(cell, cell)``. ``batch_first`` is not part of the
model: pass ``time_major=not module.batch_first`` to `jaxrnn.unroll`.

`to_torch` and the state converters read what a model is from its
``config``, and refuse, saying why, a model no PyTorch module computes.

PyTorch is imported inside the functions; it is not a dependency of jaxrnn.
"""

import collections

import jax.numpy as jnp
import numpy as np

from jaxrnn._src import base
from jaxrnn._src import composites
from jaxrnn._src import custom
from jaxrnn._src import gru
from jaxrnn._src import lstm
from jaxrnn._src import rnn

# The cells a PyTorch module computes, by config type: their names and parameter types.
_NAMES = {rnn.RNNConfig: "rnn", lstm.LSTMConfig: "lstm", gru.GRUConfig: "gru"}
_PARAM_TYPES = {rnn.RNNConfig: rnn.RNNParams, lstm.LSTMConfig: lstm.LSTMParams,
                gru.GRUConfig: gru.GRUParams}
_COMPOSITES = (composites.StackConfig, composites.BidirectionalConfig,
               composites.LearnedStateConfig)


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("jaxrnn.interop's PyTorch converters need torch: pip install torch.") from e
  return torch


def _to_jax(tensor):
  return jnp.asarray(tensor.detach().cpu().numpy())


def _to_tensor(array):
  torch = _torch()
  # np.array copies: the tensor must own writable memory, not alias a jax buffer.
  return torch.from_numpy(np.array(array))


def _config(model):
  if not isinstance(model, base.Model):
    raise TypeError(f"model: expected a jaxrnn Model, got {type(model).__name__}.")
  if model.config is None:
    raise TypeError("model: expected a model built from jaxrnn's cells and composites, whose"
                    " config says what it computes; got one with config=None.")
  return model.config


def _cell_name(config):
  return _NAMES[type(config)]


def _describe(config):
  """A config in the words that build it, e.g. ``bidirectional(lstm, stack)``."""
  if type(config) in _NAMES:
    return _NAMES[type(config)]
  if isinstance(config, custom.CustomCellConfig):
    return f"custom_cell {config.name!r}"
  if isinstance(config, composites.StackConfig):
    return "stack"
  if isinstance(config, composites.BidirectionalConfig):
    return f"bidirectional({_describe(config.forward)}, {_describe(config.backward)})"
  if isinstance(config, composites.LearnedStateConfig):
    return f"learned_initial_state({_describe(config.core)})"
  return type(config).__name__


def _layers(config, *, strict):
  """``(stacked, [[forward, backward?] per layer])``: the model's cells in PyTorch's layout.

  With ``strict`` it also rejects what has PyTorch's layout but not its
  function (a learned initial state, ``merge="sum"``); without, it looks
  through them, since their states are laid out like PyTorch's.
  """
  def core(where, c):
    if not isinstance(c, composites.LearnedStateConfig):
      return c
    if strict:
      raise ValueError(f"model: expected no learned_initial_state{_in(where)}, got"
                       f" {_describe(c)}; a PyTorch module holds no trained initial state."
                       " Convert the wrapped model with params.core, and pass the learned state"
                       " to the module as h_0.")
    return core(where, c.core)

  def directions(where, c):
    c = core(where, c)
    if _is_cell(where, c):
      return [c]
    if isinstance(c, composites.BidirectionalConfig):
      if strict and c.merge != "concat":
        raise ValueError(f"model: expected merge='concat'{_in(where)} (PyTorch concatenates the"
                         f" two directions), got merge={c.merge!r}.")
      wheres = [f"{where}.{d}" if where else f"the {d} direction" for d in ("forward", "backward")]
      pair = [core(w, getattr(c, d)) for w, d in zip(wheres, ("forward", "backward"))]
      if all([_is_cell(w, d) for w, d in zip(wheres, pair)]):  # A list: check both.
        return pair
    if where:
      raise ValueError(f"model: expected a cell or bidirectional(cell, cell) in {where} (what one"
                       f" PyTorch layer holds), got {_describe(c)}.")
    raise ValueError("model: expected a cell, bidirectional(cell, cell) or stack of those (what"
                     f" one PyTorch module holds), got {_describe(c)}.")

  config = core("", config)
  if isinstance(config, composites.StackConfig):
    return True, [directions(f"layers[{l}]", c) for l, c in enumerate(config.layers)]
  return False, [directions("", config)]


def _is_cell(where, config):
  """True for a cell PyTorch computes, False for a composite; raises for any other config."""
  if type(config) in _NAMES:
    return True
  if isinstance(config, _COMPOSITES):
    return False
  got = _describe(config)
  got = (f"{got} ({type(config).__name__})" if got != type(config).__name__
         else f"a config of type {got}")
  raise ValueError(f"model: expected an rnn, lstm or gru cell{_in(where)} (config RNNConfig,"
                   " LSTMConfig or GRUConfig: the cells of PyTorch's nn.RNN, nn.LSTM and"
                   f" nn.GRU), got {got}; the PyTorch converters support only those cells,"
                   " alone or in stack and bidirectional.")


def _out_size(config):
  """The size of a cell's hidden state: ``proj_size`` for a projected LSTM, else H."""
  return getattr(config, "proj_size", None) or config.hidden_size


def _in(where):
  return f" in {where}" if where else ""


def _where(stacked, l, d, num_directions):
  direction = ("forward", "backward")[d] if num_directions == 2 else None
  if stacked:
    return f"layers[{l}]" + (f".{direction}" if direction else "")
  return f"the {direction} direction" if direction else "the cell"


def _check_same(stacked, layers, what, value_of, why):
  """Raises unless ``value_of`` is the same for every cell of ``layers``."""
  first = value_of(layers[0][0])
  for l, directions in enumerate(layers):
    for d, c in enumerate(directions):
      if value_of(c) != first:
        raise ValueError(f"model: expected the {what} of {_where(stacked, 0, 0, len(layers[0]))},"
                         f" {first!r}, in {_where(stacked, l, d, len(directions))}, got"
                         f" {value_of(c)!r}; {why}")


def _check_fits_module(stacked, layers):
  """Raises unless the cells of ``layers`` are what one PyTorch module computes."""
  _check_same(stacked, layers, "cell type", _cell_name, "a PyTorch module has one cell type.")
  _check_same(stacked, layers, "hidden size", lambda c: c.hidden_size,
              "a PyTorch module has one hidden size.")
  for l, directions in enumerate(layers):
    if len(directions) != len(layers[0]):
      raise ValueError(f"model: expected {len(layers[0])} direction(s) in layers[{l}], like"
                       f" layers[0], got {len(directions)}; a PyTorch module has the same number"
                       " in every layer.")
  _check_same(stacked, layers, "proj_size", lambda c: getattr(c, "proj_size", None),
              "PyTorch's proj_size= applies to every layer.")
  _check_same(stacked, layers, "bias setting", lambda c: c.bias,
              "PyTorch's bias= applies to every layer.")
  _check_same(stacked, layers, "activation", lambda c: getattr(c, "activation", None),
              "PyTorch's nonlinearity= applies to every layer.")
  for l, directions in enumerate(layers):
    for d, c in enumerate(directions):
      unsupported = [o for o in lstm.options_of(c) if not o.startswith("proj_size=")] if (
          isinstance(c, lstm.LSTMConfig)) else []
      if unsupported:
        raise ValueError(f"model: expected an lstm without peepholes or layer norm in"
                         f" {_where(stacked, l, d, len(directions))} (PyTorch's nn.LSTM has"
                         f" neither), got lstm({', '.join(unsupported)}).")
      if isinstance(c, gru.GRUConfig) and not c.reset_after:
        where = _where(stacked, l, d, len(directions))
        raise ValueError(f"model: expected a reset-after GRU in {where} (PyTorch's nn.GRU is"
                         " reset-after), got gru(reset_after=False), which is reset-before and"
                         " has no PyTorch equivalent.")


def _layer_params(params, stacked, layers):
  """Splits ``params`` like ``layers`` (``[[forward, backward?] per layer]``), checking they fit."""
  def expect(where, value, cls):
    if not isinstance(value, cls):
      raise TypeError(f"params: expected {cls.__name__} in {where} (the model's), got"
                      f" {type(value).__name__}.")

  if stacked:
    expect("the model", params, composites.StackParams)
    if len(params.layers) != len(layers):
      raise ValueError(f"params: expected {len(layers)} layers (the model's), got"
                       f" {len(params.layers)}.")
    per_layer = params.layers
  else:
    per_layer = (params,)
  out, input_size = [], None
  for l, (p, directions) in enumerate(zip(per_layer, layers)):
    wheres = [_where(stacked, l, d, len(directions)) for d in range(len(directions))]
    if len(directions) == 2:
      expect(f"layers[{l}]" if stacked else "the model", p, composites.BidirectionalParams)
      p = [p.forward, p.backward]
    else:
      p = [p]
    for q, c, where in zip(p, directions, wheres):
      expect(where, q, _PARAM_TYPES[type(c)])
      if q.w_h.shape[0] != _out_size(c) or (q.b_x is not None) != c.bias:
        raise ValueError(f"params: expected hidden size {_out_size(c)} and"
                         f" {'biases' if c.bias else 'no biases'} in {where} (the model's), got"
                         f" {q.w_h.shape[0]} and {'biases' if q.b_x is not None else 'none'}.")
      input_size = q.w_x.shape[0] if input_size is None else input_size
      expected_in = input_size if l == 0 else _out_size(layers[0][0]) * len(directions)
      if q.w_x.shape[0] != expected_in:
        raise ValueError(f"params: expected {expected_in} input features in {where} (what"
                         f" PyTorch's layer {l} reads), got {q.w_x.shape[0]}.")
      if c.dtype is not None and jnp.dtype(c.dtype) != q.w_h.dtype:
        raise ValueError(f"model: expected matmuls in the parameters' dtype ({q.w_h.dtype}) in"
                         f" {where}, as PyTorch computes them, got dtype="
                         f"{jnp.dtype(c.dtype).name}. Rebuild the cell without dtype= (the"
                         " parameters are the same) to convert it.")
    out.append(p)
  return out


def _check_module(module):
  nn = _torch().nn
  if not isinstance(module, (nn.RNN, nn.LSTM, nn.GRU)):
    raise TypeError(f"module: expected a torch.nn.RNN, nn.LSTM or nn.GRU, got"
                    f" {type(module).__name__}.")


def from_torch(module):
  """Converts a PyTorch ``nn.RNN``, ``nn.LSTM`` or ``nn.GRU`` into a jaxrnn model.

  The weights are copied exactly (transposed, same dtype). With
  ``num_layers=1`` and ``bidirectional=False`` the model is a bare cell;
  otherwise it is ``jaxrnn.stack`` of ``num_layers`` layers, each a cell or
  ``jaxrnn.bidirectional(cell, cell)``, with ``dropout=module.dropout``. An
  ``nn.LSTM(proj_size=P)`` gives ``lstm(H, proj_size=P)`` cells, with
  ``w_proj = weight_hr_l{k}.T``,
  (applied only when `unroll` gets an ``rng``, as PyTorch applies it only in
  training mode). Then

  .. code-block:: python

    model, params = from_torch(module)
    final, ys = jaxrnn.unroll(model, params, xs, model.initial_state(params, B),
                              time_major=not module.batch_first)

  gives ``ys`` equal to ``module(xs)[0]`` and ``final`` equal to its
  ``h_n`` (and ``c_n``) through `from_torch_state` / `to_torch_state`.

  Float64 modules give float64 parameters when JAX's x64 mode is on (else
  JAX stores them as float32).

  Args:
    module: a ``torch.nn.RNN`` (``nonlinearity`` ``"tanh"`` or ``"relu"``),
      ``torch.nn.LSTM`` (any ``proj_size``) or ``torch.nn.GRU``, with any
      ``num_layers``, ``bias``, ``batch_first``, ``dropout`` and
      ``bidirectional``.

  Returns:
    ``(model, params)``: a jaxrnn `Model` and its parameters (`RNNParams`,
    `LSTMParams` or `GRUParams`, inside `StackParams` and
    `BidirectionalParams` as described above).

  Raises:
    TypeError: ``module`` is not one of the three classes.
  """
  _check_module(module)
  state = module.state_dict()
  hidden_size, bias = module.hidden_size, module.bias
  proj_size = getattr(module, "proj_size", 0) or None
  if module.mode == "LSTM":
    make_cell = lambda: lstm.lstm(hidden_size, bias=bias, proj_size=proj_size)
    param_type = lstm.LSTMParams
  elif module.mode == "GRU":
    make_cell, param_type = lambda: gru.gru(hidden_size, bias=bias), gru.GRUParams
  else:
    activation = "relu" if module.mode == "RNN_RELU" else "tanh"
    make_cell = lambda: rnn.rnn(hidden_size, activation=activation, bias=bias)
    param_type = rnn.RNNParams

  def read(suffix):
    get = lambda name: _to_jax(state[f"{name}_l{suffix}"]) if bias else None
    params = param_type(w_x=_to_jax(state[f"weight_ih_l{suffix}"]).T,
                        w_h=_to_jax(state[f"weight_hh_l{suffix}"]).T,
                        b_x=get("bias_ih"), b_h=get("bias_hh"))
    if proj_size is not None:
      params = params._replace(w_proj=_to_jax(state[f"weight_hr_l{suffix}"]).T)
    return params

  layers, layer_params = [], []
  for l in range(module.num_layers):
    if module.bidirectional:
      layers.append(composites.bidirectional(make_cell(), make_cell()))
      layer_params.append(composites.BidirectionalParams(read(f"{l}"), read(f"{l}_reverse")))
    else:
      layers.append(make_cell())
      layer_params.append(read(f"{l}"))
  if len(layers) == 1 and not module.bidirectional:
    return layers[0], layer_params[0]
  return (composites.stack(layers, dropout=float(module.dropout)),
          composites.StackParams(tuple(layer_params)))


def to_torch(model, params):
  """Writes jaxrnn parameters as a PyTorch ``state_dict``.

  The inverse of `from_torch`: tensors come back bit-identical and in the
  parameters' dtype, and the dict loads with ``load_state_dict(strict=True)``
  into a module built with the matching arguments (``nn.LSTM``, ``nn.GRU`` or
  ``nn.RNN`` with ``nonlinearity`` the cells' ``activation``;
  ``hidden_size``, ``num_layers``, ``bias``, ``bidirectional`` and the
  LSTM's ``proj_size`` as in ``model``; any ``batch_first`` and ``dropout``).

  Args:
    model: an ``rnn``, ``lstm`` or ``gru`` cell, ``bidirectional(cell, cell)``
      or ``stack`` of those (what one PyTorch module computes; a
      ``custom_cell`` or any other cell is refused): every cell of the same
      type, hidden size, bias setting, activation and ``proj_size``, LSTMs
      without peepholes, GRUs reset-after, the
      same number of directions in every layer, ``merge="concat"``, no
      ``learned_initial_state`` and no compute ``dtype`` other than the
      parameters'. Its ``config`` says all this; the model is not run.
    params: ``model``'s parameters.

  Returns:
    An ``OrderedDict`` of ``torch.Tensor`` with PyTorch's names
    (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), in PyTorch's order.

  Raises:
    TypeError: ``model`` has no config, or ``params`` are not its parameters.
    ValueError: ``model`` is not something one PyTorch module computes (a
      cell other than ``rnn``, ``lstm`` and ``gru``, or a layout or option
      PyTorch lacks), or ``params`` do not have its sizes.
  """
  stacked, layers = _layers(_config(model), strict=True)
  _check_fits_module(stacked, layers)
  bias = layers[0][0].bias
  state_dict = collections.OrderedDict()
  for l, directions in enumerate(_layer_params(params, stacked, layers)):
    for suffix, p in zip(("", "_reverse"), directions):
      state_dict[f"weight_ih_l{l}{suffix}"] = _to_tensor(p.w_x.T)
      state_dict[f"weight_hh_l{l}{suffix}"] = _to_tensor(p.w_h.T)
      if bias:
        state_dict[f"bias_ih_l{l}{suffix}"] = _to_tensor(p.b_x)
        state_dict[f"bias_hh_l{l}{suffix}"] = _to_tensor(p.b_h)
      if getattr(p, "w_proj", None) is not None:
        state_dict[f"weight_hr_l{l}{suffix}"] = _to_tensor(p.w_proj.T)
  return state_dict


def _state_layers(model):
  """``(stacked, layers)`` for the state converters, which need one cell type and hidden size."""
  stacked, layers = _layers(_config(model), strict=False)
  _check_same(stacked, layers, "cell type", _cell_name,
              "PyTorch's h_n holds the states of one cell type.")
  _check_same(stacked, layers, "hidden size", lambda c: c.hidden_size,
              "PyTorch's h_n holds states of one hidden size.")
  _check_same(stacked, layers, "proj_size", lambda c: getattr(c, "proj_size", None),
              "PyTorch's h_n holds states of one size.")
  return stacked, layers


def _directions_of_state(stacked, layers, state):
  """The per-direction states of ``state``, in PyTorch's ``h_n`` order."""
  def expect(where, value, cls):
    if not isinstance(value, cls):
      raise TypeError(f"state: expected a {cls.__name__} in {where} (the model's state), got"
                      f" {type(value).__name__}.")

  if stacked:
    expect("the model", state, composites.StackState)
    if len(state.layers) != len(layers):
      raise ValueError(f"state: expected {len(layers)} layers, got {len(state.layers)}.")
    per_layer = state.layers
  else:
    per_layer = (state,)
  flat = []
  for l, (s, directions) in enumerate(zip(per_layer, layers)):
    if len(directions) == 2:
      expect(f"layers[{l}]" if stacked else "the model", s, composites.BidirectionalState)
      flat.extend([s.forward, s.backward])
    else:
      flat.append(s)
  return flat


def _wrap_state(stacked, layers, flat):
  """Inverse of `_directions_of_state`: nests per-direction states like the model's."""
  nested, i = [], 0
  for directions in layers:
    if len(directions) == 2:
      nested.append(composites.BidirectionalState(flat[i], flat[i + 1]))
    else:
      nested.append(flat[i])
    i += len(directions)
  return composites.StackState(tuple(nested)) if stacked else nested[0]


def from_torch_state(model, h_n, c_n=None):
  """Converts PyTorch's final ``h_n`` (and ``c_n``) into a jaxrnn state.

  PyTorch stacks the final states of all layers and directions on one axis,
  ``[num_layers * num_directions, B, H]`` (``[L*D, H]`` for unbatched input;
  an LSTM with ``proj_size=P`` has ``h_n`` ``[L*D, B, P]`` and ``c_n``
  ``[L*D, B, H]``),
  with layer ``l``'s direction ``d`` at index ``l * D + d``. jaxrnn nests them:
  a cell's state, ``StackState(layers=...)`` over layers and
  ``BidirectionalState(forward, backward)`` within a bidirectional layer,
  `LSTMState(hidden=h, cell=c)` for LSTMs. Used the other way round, it also
  turns PyTorch's ``(h_0, c_0)`` into the ``state`` argument of `unroll`.

  Args:
    model: the model, e.g. as returned by `from_torch`; its ``config`` fixes
      the nesting. Its cells must share one type and hidden size (a
      ``learned_initial_state`` is looked through: its state is its core's).
    h_n: ``[L*D, B, H]`` or ``[L*D, H]`` array or tensor.
    c_n: the LSTM's cell states, ``[L*D, B, H]`` or ``[L*D, H]`` (the shape
      of ``h_n`` unless the LSTM has a projection); required for an LSTM model
      and not allowed otherwise.

  Returns:
    The jaxrnn state that `unroll` returns as ``final_state``.

  Raises:
    TypeError: ``model`` has no config.
    ValueError: ``model`` holds a cell other than ``rnn``, ``lstm`` and
      ``gru``, mixes cell types or hidden sizes, or ``h_n`` / ``c_n`` do not
      fit it.
  """
  stacked, layers = _state_layers(model)
  first = layers[0][0]
  is_lstm = isinstance(first, lstm.LSTMConfig)
  if is_lstm != (c_n is not None):
    raise ValueError(f"c_n: expected {'an array' if is_lstm else 'None'} for a model of"
                     f" {_cell_name(first)} cells (c_n is the LSTM's cell state), got"
                     f" {'None' if c_n is None else 'an array'}.")
  as_jax = lambda a: _to_jax(a) if hasattr(a, "detach") else jnp.asarray(a)
  h_n = as_jax(h_n)
  n = sum(len(d) for d in layers)
  out = _out_size(first)
  last = "hidden size" if out == first.hidden_size else "proj_size"
  if h_n.ndim not in (2, 3) or h_n.shape[0] != n or h_n.shape[-1] != out:
    raise ValueError(f"h_n: expected shape [{n}, B, {out}] or [{n}, {out}] (num_layers *"
                     f" num_directions first, {last} last), got {h_n.shape}.")
  if is_lstm:
    c_n = as_jax(c_n)
    want = h_n.shape[:-1] + (first.hidden_size,)
    if c_n.shape != want:
      raise ValueError(f"c_n: expected shape {want} (h_n's, with the hidden size last), got"
                       f" {c_n.shape}.")
    flat = [lstm.LSTMState(hidden=h_n[k], cell=c_n[k]) for k in range(n)]
  else:
    flat = [h_n[k] for k in range(n)]
  return _wrap_state(stacked, layers, flat)


def to_torch_state(model, state):
  """Converts a jaxrnn state into PyTorch's ``h_n`` (and ``c_n``) layout.

  The inverse of `from_torch_state`; the result also serves as the ``h_0``
  (``(h_0, c_0)``) argument of the PyTorch module.

  Args:
    model: the model; its ``config`` fixes the nesting, as in
      `from_torch_state`.
    state: a state of the model, e.g. ``final_state`` from `unroll`.

  Returns:
    A jax array ``h_n`` of shape ``[L*D, B, H]`` (``[L*D, H]`` when unbatched),
    or the pair ``(h_n, c_n)`` for an LSTM.

  Raises:
    TypeError: ``model`` has no config, or ``state`` is not nested like its
      states.
    ValueError: ``model`` holds a cell other than ``rnn``, ``lstm`` and
      ``gru``, or mixes cell types or hidden sizes.
  """
  stacked, layers = _state_layers(model)
  flat = _directions_of_state(stacked, layers, state)
  if isinstance(layers[0][0], lstm.LSTMConfig):
    return (jnp.stack([s.hidden for s in flat]), jnp.stack([s.cell for s in flat]))
  return jnp.stack(flat)
