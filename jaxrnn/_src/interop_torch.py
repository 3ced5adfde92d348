"""Exact weight converters between jaxrnn and PyTorch's ``nn.RNN``, ``nn.LSTM``, ``nn.GRU``.

PyTorch and jaxrnn use the same equations, gate orders (LSTM ``i, f, g, o``;
GRU ``r, z, n``, reset-after) and two biases per layer, so conversion is a
transpose: jaxrnn's ``w_x`` is ``weight_ih_l{k}.T`` and ``w_h`` is
``weight_hh_l{k}.T``; ``b_x`` is ``bias_ih_l{k}`` and ``b_h`` is
``bias_hh_l{k}``. Nothing is added or folded, so the round trip
PyTorch -> jaxrnn -> PyTorch gives back bit-identical tensors.

Model layout: ``num_layers=1`` unidirectional gives a bare cell; anything else
gives ``stack([...], dropout=module.dropout)`` with one entry per layer, each a
cell or ``bidirectional(cell, cell)``. ``batch_first`` is not part of the
model: pass ``time_major=not module.batch_first`` to `jaxrnn.unroll`.

PyTorch is imported inside the functions; it is not a dependency of jaxrnn.
"""

import collections

import jax.numpy as jnp
import numpy as np

from jaxrnn._src import cells
from jaxrnn._src import composites
from jaxrnn._src import unroll as unroll_lib

_CELL_PARAMS = (cells.RNNParams, cells.LSTMParams, cells.GRUParams)


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


def _layer_directions(params):
  """Splits converter input into ``[[forward, backward?] per layer]`` of cell params."""
  def directions(where, p):
    if isinstance(p, _CELL_PARAMS):
      return [p]
    if (isinstance(p, composites.BidirectionalParams)
        and all(isinstance(d, _CELL_PARAMS) for d in p)):
      return [p.forward, p.backward]
    raise TypeError(f"{where}: expected the parameters of a cell or of bidirectional(cell,"
                    f" cell) (what one PyTorch layer holds), got {type(p).__name__}.")

  if isinstance(params, composites.StackParams):
    return [directions(f"params.layers[{i}]", p) for i, p in enumerate(params.layers)]
  return [directions("params", params)]


def _check_uniform(layers):
  """Checks that the layers fit one PyTorch module; returns its constructor arguments."""
  first = layers[0][0]
  kind = type(first)
  hidden_size = first.w_h.shape[0]
  bias = first.b_x is not None
  num_directions = len(layers[0])
  input_size = first.w_x.shape[0]
  for l, directions in enumerate(layers):
    if len(directions) != num_directions:
      raise ValueError(f"params: layer {l} has {len(directions)} direction(s) but layer 0 has"
                       f" {num_directions}; a PyTorch module has the same number in every layer.")
    expected_in = input_size if l == 0 else hidden_size * num_directions
    for d, p in enumerate(directions):
      where = f"layer {l}" + (", backward" if d else "")
      if type(p) is not kind:
        raise ValueError(f"params: {where} is {type(p).__name__} but layer 0 is {kind.__name__};"
                         " a PyTorch module has one cell type.")
      if p.w_h.shape[0] != hidden_size:
        raise ValueError(f"params: {where} has hidden size {p.w_h.shape[0]}, layer 0 has"
                         f" {hidden_size}; a PyTorch module has one hidden size.")
      if (p.b_x is not None) != bias or (p.b_h is not None) != bias:
        raise ValueError(f"params: {where} differs from layer 0 in having biases; PyTorch's"
                         " bias= applies to every layer.")
      if p.w_x.shape[0] != expected_in:
        raise ValueError(f"params: {where} reads {p.w_x.shape[0]} features; a PyTorch layer {l}"
                         f" reads {expected_in}.")
  return dict(kind=kind, input_size=input_size, hidden_size=hidden_size,
              num_layers=len(layers), bias=bias, bidirectional=num_directions == 2)


def _module_class(kind):
  nn = _torch().nn
  return {cells.RNNParams: nn.RNN, cells.LSTMParams: nn.LSTM, cells.GRUParams: nn.GRU}[kind]


def _check_module(module):
  nn = _torch().nn
  if not isinstance(module, (nn.RNN, nn.LSTM, nn.GRU)):
    raise TypeError(f"module: expected a torch.nn.RNN, nn.LSTM or nn.GRU, got"
                    f" {type(module).__name__}.")
  if getattr(module, "proj_size", 0):
    raise NotImplementedError(
        f"module: nn.LSTM with proj_size={module.proj_size} has no jaxrnn equivalent (jaxrnn's"
        " LSTM has no output projection); use proj_size=0.")


def from_torch(module):
  """Converts a PyTorch ``nn.RNN``, ``nn.LSTM`` or ``nn.GRU`` into a jaxrnn model.

  The weights are copied exactly (transposed, same dtype). With
  ``num_layers=1`` and ``bidirectional=False`` the model is a bare cell;
  otherwise it is ``jaxrnn.stack`` of ``num_layers`` layers, each a cell or
  ``jaxrnn.bidirectional(cell, cell)``, with ``dropout=module.dropout``
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
      ``torch.nn.LSTM`` or ``torch.nn.GRU``, with any ``num_layers``,
      ``bias``, ``batch_first``, ``dropout`` and ``bidirectional``.

  Returns:
    ``(model, params)``: a jaxrnn `Model` and its parameters (`RNNParams`,
    `LSTMParams` or `GRUParams`, inside `StackParams` and
    `BidirectionalParams` as described above).

  Raises:
    TypeError: ``module`` is not one of the three classes.
    NotImplementedError: an ``nn.LSTM`` with ``proj_size > 0``.
  """
  _check_module(module)
  state = module.state_dict()
  hidden_size, bias = module.hidden_size, module.bias
  if module.mode == "LSTM":
    make_cell, param_type = lambda: cells.lstm(hidden_size, bias=bias), cells.LSTMParams
  elif module.mode == "GRU":
    make_cell, param_type = lambda: cells.gru(hidden_size, bias=bias), cells.GRUParams
  else:
    activation = "relu" if module.mode == "RNN_RELU" else "tanh"
    make_cell = lambda: cells.rnn(hidden_size, activation=activation, bias=bias)
    param_type = cells.RNNParams

  def read(suffix):
    get = lambda name: _to_jax(state[f"{name}_l{suffix}"]) if bias else None
    return param_type(w_x=_to_jax(state[f"weight_ih_l{suffix}"]).T,
                      w_h=_to_jax(state[f"weight_hh_l{suffix}"]).T,
                      b_x=get("bias_ih"), b_h=get("bias_hh"))

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


def to_torch(model, params, *, check=True):
  """Writes jaxrnn parameters as a PyTorch ``state_dict``.

  The inverse of `from_torch`: tensors come back bit-identical and in the
  parameters' dtype, and the dict loads with ``load_state_dict(strict=True)``
  into a module built with the matching arguments (``nn.LSTM`` for
  `LSTMParams`, ``nn.GRU`` for `GRUParams`, ``nn.RNN`` for `RNNParams`;
  ``hidden_size``, ``num_layers``, ``bias`` and ``bidirectional`` as in
  ``params``; any ``batch_first`` and ``dropout``).

  Args:
    model: the jaxrnn model ``params`` belong to; used only by ``check``.
    params: parameters of a cell, of ``bidirectional(cell, cell)``, or of
      ``stack`` of those, where every layer has the same cell type, hidden
      size, bias setting and number of directions (what one PyTorch module
      can hold).
    check: run ``model`` and the PyTorch module on a short random sequence and
      raise if they disagree. The parameters alone cannot tell a
      reset-before GRU (``gru(reset_after=False)``, which PyTorch does not
      have) from a reset-after one, so this is what catches it. For
      `RNNParams` it accepts either ``nonlinearity``; the ``state_dict`` is the
      same for both, so build the module with the cell's ``activation``.

  Returns:
    An ``OrderedDict`` of ``torch.Tensor`` with PyTorch's names
    (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), in PyTorch's order.

  Raises:
    TypeError, ValueError: ``params`` is not a structure one PyTorch module
      can hold, or (with ``check``) ``model`` computes something else.
  """
  layers = _layer_directions(params)
  config = _check_uniform(layers)
  state_dict = collections.OrderedDict()
  for l, directions in enumerate(layers):
    for suffix, p in zip(("", "_reverse"), directions):
      state_dict[f"weight_ih_l{l}{suffix}"] = _to_tensor(p.w_x.T)
      state_dict[f"weight_hh_l{l}{suffix}"] = _to_tensor(p.w_h.T)
      if config["bias"]:
        state_dict[f"bias_ih_l{l}{suffix}"] = _to_tensor(p.b_x)
        state_dict[f"bias_hh_l{l}{suffix}"] = _to_tensor(p.b_h)
  if check:
    _check_against_torch(model, params, state_dict, config)
  return state_dict


def _build_module(config, nonlinearity=None):
  torch = _torch()
  kwargs = dict(input_size=config["input_size"], hidden_size=config["hidden_size"],
                num_layers=config["num_layers"], bias=config["bias"],
                bidirectional=config["bidirectional"])
  if nonlinearity is not None:
    kwargs["nonlinearity"] = nonlinearity
  with torch.device("cpu"):
    return _module_class(config["kind"])(**kwargs)


def _check_against_torch(model, params, state_dict, config):
  """Raises ValueError unless ``model`` and the module agree on a random sequence."""
  torch = _torch()
  dtype = state_dict["weight_ih_l0"].dtype
  # Three steps: a reset-before and a reset-after GRU agree on the first one (h0 = 0).
  xs = np.random.default_rng(0).standard_normal((3, 2, config["input_size"]))
  xs = xs.astype(torch.empty((), dtype=dtype).numpy().dtype)
  _, ys = unroll_lib.unroll(model, params, jnp.asarray(xs))
  ys = np.asarray(ys, dtype=np.float64)
  nonlinearities = ("tanh", "relu") if config["kind"] is cells.RNNParams else (None,)
  errors = []
  for nonlinearity in nonlinearities:
    module = _build_module(config, nonlinearity).to(dtype)
    module.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
      theirs = module(torch.from_numpy(xs))[0].double().numpy()
    err = float(np.max(np.abs(ys - theirs)))
    if err <= 1e-4 * max(1.0, float(np.max(np.abs(theirs)))):
      return
    errors.append(err)
  cls = _module_class(config["kind"]).__name__
  hint = (" A jaxrnn gru(reset_after=False) (reset-before) has no PyTorch equivalent; PyTorch's"
          " GRU is reset-after." if config["kind"] is cells.GRUParams else "")
  raise ValueError(f"model: torch.nn.{cls} with these weights computes different outputs (max abs"
                   f" difference {max(errors):.3g}), so it cannot represent this model.{hint}"
                   " Pass check=False to write the state_dict anyway.")


def _directions_of_state(params, state):
  """The per-direction states of ``state``, in PyTorch's ``h_n`` order."""
  def expect(where, value, cls):
    if not isinstance(value, cls):
      raise TypeError(f"{where}: expected a {cls.__name__} (the state of these params), got"
                       f" {type(value).__name__}.")

  def bidirectional(where, s):
    expect(where, s, composites.BidirectionalState)
    return [s.forward, s.backward]

  if isinstance(params, _CELL_PARAMS):
    return [state]
  if isinstance(params, composites.BidirectionalParams):
    return bidirectional("state", state)
  expect("state", state, composites.StackState)
  if len(state.layers) != len(params.layers):
    raise ValueError(f"state: expected {len(params.layers)} layers, got {len(state.layers)}.")
  flat = []
  for l, (p, s) in enumerate(zip(params.layers, state.layers)):
    if isinstance(p, composites.BidirectionalParams):
      flat.extend(bidirectional(f"state.layers[{l}]", s))
    else:
      flat.append(s)
  return flat


def _wrap_state(params, flat):
  """Inverse of `_directions_of_state`: nests per-direction states like ``params``."""
  if isinstance(params, _CELL_PARAMS):
    return flat[0]
  if isinstance(params, composites.BidirectionalParams):
    return composites.BidirectionalState(flat[0], flat[1])
  layers, i = [], 0
  for p in params.layers:
    if isinstance(p, composites.BidirectionalParams):
      layers.append(composites.BidirectionalState(flat[i], flat[i + 1]))
      i += 2
    else:
      layers.append(flat[i])
      i += 1
  return composites.StackState(tuple(layers))


def from_torch_state(params, h_n, c_n=None):
  """Converts PyTorch's final ``h_n`` (and ``c_n``) into a jaxrnn state.

  PyTorch stacks the final states of all layers and directions on one axis,
  ``[num_layers * num_directions, B, H]`` (``[L*D, H]`` for unbatched input),
  with layer ``l``'s direction ``d`` at index ``l * D + d``. jaxrnn nests them:
  a cell's state, ``StackState(layers=...)`` over layers and
  ``BidirectionalState(forward, backward)`` within a bidirectional layer,
  `LSTMState(hidden=h, cell=c)` for LSTMs. Used the other way round, it also
  turns PyTorch's ``(h_0, c_0)`` into the ``state`` argument of `unroll`.

  Args:
    params: the model's parameters (they fix the nesting), as returned by
      `from_torch`.
    h_n: ``[L*D, B, H]`` or ``[L*D, H]`` array or tensor.
    c_n: the LSTM's cell states, same shape as ``h_n``; required for
      `LSTMParams` and not allowed otherwise.

  Returns:
    The jaxrnn state that `unroll` returns as ``final_state``.
  """
  layers = _layer_directions(params)
  is_lstm = isinstance(layers[0][0], cells.LSTMParams)
  if is_lstm != (c_n is not None):
    raise ValueError("c_n: required for LSTM parameters and only for them; got"
                     f" {'None' if c_n is None else 'an array'} for"
                     f" {type(layers[0][0]).__name__}.")
  as_jax = lambda a: _to_jax(a) if hasattr(a, "detach") else jnp.asarray(a)
  h_n = as_jax(h_n)
  n = sum(len(d) for d in layers)
  if h_n.ndim not in (2, 3) or h_n.shape[0] != n:
    raise ValueError(f"h_n: expected shape [{n}, B, H] or [{n}, H] (num_layers * num_directions"
                     f" first), got {h_n.shape}.")
  if is_lstm:
    c_n = as_jax(c_n)
    if c_n.shape != h_n.shape:
      raise ValueError(f"c_n: expected the shape of h_n, {h_n.shape}, got {c_n.shape}.")
    flat = [cells.LSTMState(hidden=h_n[k], cell=c_n[k]) for k in range(n)]
  else:
    flat = [h_n[k] for k in range(n)]
  return _wrap_state(params, flat)


def to_torch_state(params, state):
  """Converts a jaxrnn state into PyTorch's ``h_n`` (and ``c_n``) layout.

  The inverse of `from_torch_state`; the result also serves as the ``h_0``
  (``(h_0, c_0)``) argument of the PyTorch module.

  Args:
    params: the model's parameters (they fix the nesting).
    state: a state of the model, e.g. ``final_state`` from `unroll`.

  Returns:
    A jax array ``h_n`` of shape ``[L*D, B, H]`` (``[L*D, H]`` when unbatched),
    or the pair ``(h_n, c_n)`` for an LSTM.
  """
  layers = _layer_directions(params)
  flat = _directions_of_state(params, state)
  if isinstance(layers[0][0], cells.LSTMParams):
    return (jnp.stack([s.hidden for s in flat]), jnp.stack([s.cell for s in flat]))
  return jnp.stack(flat)

