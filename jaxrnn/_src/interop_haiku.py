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
bias on Haiku's side.

Haiku is imported inside the functions; it is not a dependency of jaxrnn.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._src import cells
from jaxrnn._src import unroll as unroll_lib

_CORES = {"lstm": cells.LSTMParams, "gru": cells.GRUParams, "vanilla_rnn": cells.RNNParams}
_CLASS_NAMES = {"LSTM": "lstm", "GRU": "gru", "VanillaRNN": "vanilla_rnn"}


def _haiku():
  try:
    import haiku as hk  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("jaxrnn.interop's Haiku converters need dm-haiku: pip install"
                      " dm-haiku.") from e
  return hk


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
    params = cells.LSTMParams(w_x=w[:input_size, perm], w_h=w[input_size:, perm], b_x=b[perm],
                              b_h=_forget_one(hidden_size, b.dtype))
    return cells.lstm(hidden_size), params
  if kind == "gru":
    w_i, w_h, b = (_lookup(hk_params, name, f, name) for f in ("w_i", "w_h", "b"))
    hidden_size = w_h.shape[0]
    perm = _gru_permutation(hidden_size)
    sign = _z_sign(hidden_size, b.dtype)
    params = cells.GRUParams(w_x=w_i[:, perm] * sign, w_h=w_h[:, perm] * sign,
                             b_x=b[perm] * sign, b_h=jnp.zeros_like(b))
    return cells.gru(hidden_size, reset_after=False), params
  w_x = _lookup(hk_params, f"{name}/linear", "w", name)
  b_x = _lookup(hk_params, f"{name}/linear", "b", name)
  w_h = _lookup(hk_params, f"{name}/linear_1", "w", name)
  b_h = hk_params[f"{name}/linear_1"].get("b", jnp.zeros_like(b_x))
  params = cells.RNNParams(w_x=w_x, w_h=w_h, b_x=b_x, b_h=b_h)
  return cells.rnn(w_h.shape[0], activation="relu"), params


def to_haiku(model, params, *, name=None, double_bias=True, check=True):
  """Writes jaxrnn cell parameters as Haiku parameters.

  The inverse of `from_haiku`, with ``b_x + b_h`` folded into Haiku's bias
  (for the LSTM, less the 1 Haiku adds to the forget gate); a jaxrnn cell
  without biases is written with the biases that make Haiku compute the same.

  Args:
    model: the jaxrnn cell ``params`` belong to; used only by ``check``.
    params: `LSTMParams` (for ``hk.LSTM``), `GRUParams` (``hk.GRU``) or
      `RNNParams` (``hk.VanillaRNN``) of a single cell.
    name: the module path to write under; defaults to Haiku's default name.
    double_bias: for ``hk.VanillaRNN``, the core's ``double_bias`` (whether
      the recurrent ``Linear`` has a bias).
    check: run ``model`` and the Haiku core on a short random sequence and
      raise if they disagree. This is what catches a cell Haiku cannot
      represent: ``hk.GRU`` is reset-before and ``hk.VanillaRNN`` is ReLU,
      which the parameters alone don't show.

  Returns:
    A dict ``{module_path: {param_name: array}}`` for ``apply``.

  Raises:
    TypeError: ``params`` is not a single cell's parameters.
    ValueError: (with ``check``) ``model`` computes something the core does
      not.
  """
  kinds = {v: k for k, v in _CORES.items()}
  kind = kinds.get(type(params))
  if kind is None:
    raise TypeError("params: expected LSTMParams, GRUParams or RNNParams of a single cell, got"
                    f" {type(params).__name__}.")
  out = _write(kind, params, kind if name is None else name, double_bias)
  if check:
    _check_against_haiku(model, params, kind, _write(kind, params, kind, double_bias),
                         double_bias)
  return out


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


def _check_against_haiku(model, params, kind, hk_params, double_bias):
  hk = _haiku()
  hidden_size = params.w_h.shape[0]
  dtype = params.w_x.dtype
  # Three steps: a reset-before and a reset-after GRU agree on the first one (h0 = 0).
  xs = jnp.asarray(np.random.default_rng(0).standard_normal((3, 2, params.w_x.shape[0])), dtype)

  def run(xs):
    if kind == "lstm":
      core = hk.LSTM(hidden_size)
    elif kind == "gru":
      core = hk.GRU(hidden_size)
    else:
      core = hk.VanillaRNN(hidden_size, double_bias=double_bias)
    state = jax.tree.map(lambda s: s.astype(dtype), core.initial_state(xs.shape[1]))
    return hk.dynamic_unroll(core, xs, state)[0]

  theirs = hk.without_apply_rng(hk.transform(run)).apply(hk_params, xs)
  _, ours = unroll_lib.unroll(model, params, xs)
  err = float(jnp.max(jnp.abs(ours - theirs)))
  if not err <= 1e-4 * max(1.0, float(jnp.max(jnp.abs(theirs)))):
    hint = {"gru": " hk.GRU is reset-before: only a jaxrnn gru(reset_after=False) fits it.",
            "vanilla_rnn": " hk.VanillaRNN is ReLU: only a jaxrnn rnn(activation='relu') fits"
                           " it."}
    raise ValueError(f"model: Haiku's {kind} core with these weights computes different outputs"
                     f" (max abs difference {err:.3g}), so it cannot represent this model."
                     f"{hint.get(kind, '')} Pass check=False to skip this check.")
