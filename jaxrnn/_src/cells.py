"""The Elman RNN, LSTM and GRU cells, each with its hand-derived backward.

Every cell is described by a `recurrence.Kernel`, which splits the step into
the part that depends on the input only (``project``, hoisted out of the time
loop into one matmul) and the part that depends on the previous state
(``recur``). The same kernel also carries the cell's explicit backward:
``recur_bwd`` is one reverse-time step of BPTT and ``param_grads`` turns the
per-step gradients into weight gradients with one matmul over all ``T*B`` rows.

Weights are laid out for ``x @ w``: ``w_x`` is ``[input_size, G*H]`` and
``w_h`` is ``[H, G*H]``, the transposes of PyTorch's ``weight_ih`` and
``weight_hh``; the gate blocks follow PyTorch's order. Like PyTorch, each cell
keeps an input-side bias ``b_x`` and a recurrent-side bias ``b_h``; only their
sum matters for the RNN and the LSTM, and both are kept so that weights
converted from PyTorch round-trip exactly.
"""

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import recurrence

Array = jax.Array


class RNNParams(NamedTuple):
  """Parameters of the Elman RNN.

  Attributes:
    w_x: ``[input_size, H]`` input weights.
    w_h: ``[H, H]`` recurrent weights.
    b_x: ``[H]`` input-side bias, or None when ``bias=False``.
    b_h: ``[H]`` recurrent-side bias, or None when ``bias=False``.
  """
  w_x: Array
  w_h: Array
  b_x: Optional[Array]
  b_h: Optional[Array]


class LSTMParams(NamedTuple):
  """Parameters of the LSTM; gate blocks in the order ``i, f, g, o``.

  Attributes:
    w_x: ``[input_size, 4H]`` input weights.
    w_h: ``[H, 4H]`` recurrent weights.
    b_x: ``[4H]`` input-side bias (holds the initial forget bias), or None.
    b_h: ``[4H]`` recurrent-side bias, or None.
  """
  w_x: Array
  w_h: Array
  b_x: Optional[Array]
  b_h: Optional[Array]


class GRUParams(NamedTuple):
  """Parameters of the GRU; gate blocks in the order ``r, z, n``.

  Attributes:
    w_x: ``[input_size, 3H]`` input weights.
    w_h: ``[H, 3H]`` recurrent weights.
    b_x: ``[3H]`` input-side bias, or None.
    b_h: ``[3H]`` recurrent-side bias, or None. With ``reset_after=True`` its
      ``n`` block is multiplied by the reset gate, as in PyTorch and cuDNN.
  """
  w_x: Array
  w_h: Array
  b_x: Optional[Array]
  b_h: Optional[Array]


class LSTMState(NamedTuple):
  """The LSTM's recurrent state.

  Attributes:
    hidden: ``[B, H]`` hidden state ``h``, also the cell's output.
    cell: ``[B, H]`` memory cell ``c``.
  """
  hidden: Array
  cell: Array


_RECURRENT_INITS = ("uniform", "orthogonal")


def _check_options(hidden_size, recurrent_init):
  if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size < 1:
    raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}.")
  if recurrent_init not in _RECURRENT_INITS:
    raise ValueError(f"recurrent_init must be one of {_RECURRENT_INITS}, got {recurrent_init!r}.")


def _init_weights(key, input_size, hidden_size, gates, bias, recurrent_init):
  """PyTorch's U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias."""
  if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 1:
    raise ValueError(f"input_size must be a positive int, got {input_size!r}.")
  dtype = base.default_float()
  bound = 1.0 / math.sqrt(hidden_size)
  k_x, k_h, k_bx, k_bh = jax.random.split(key, 4)
  g = gates * hidden_size
  uniform = lambda k, shape: jax.random.uniform(k, shape, dtype, -bound, bound)
  w_x = uniform(k_x, (input_size, g))
  if recurrent_init == "orthogonal":
    blocks = [jax.nn.initializers.orthogonal()(k, (hidden_size, hidden_size), dtype)
              for k in jax.random.split(k_h, gates)]
    w_h = jnp.concatenate(blocks, axis=1)
  else:
    w_h = uniform(k_h, (hidden_size, g))
  if not bias:
    return w_x, w_h, None, None
  return w_x, w_h, uniform(k_bx, (g,)), uniform(k_bh, (g,))


def _initial_state_zeros(hidden_size, params, batch_size):
  shape = (hidden_size,) if batch_size is None else (batch_size, hidden_size)
  return jnp.zeros(shape, params.w_h.dtype)


def _input_size(params):
  return params.w_x.shape[0]


def _project(params, xs, dtype, fold_b_h, one_step=False):
  """Input projection; folds in the biases that only add.

  Returns one ``[..., H]`` block per gate. For a whole sequence (hoisted out
  of the loop) each block is its own matmul and buffer: on XLA:CPU, slicing a
  wide per-step block out of one scanned buffer and then into gates measured
  1.15x (LSTM) to 1.6x (GRU) slower than scanning separate gate buffers and
  joining them inside the step. For ``one_step`` (inside the loop) one matmul
  covers all gates and the blocks are its slices, which XLA fuses into the
  gate math.
  """
  H = params.w_h.shape[0]
  bias = None
  if params.b_x is not None:
    bias = params.b_x + params.b_h if fold_b_h else params.b_x
  if one_step:
    a = base.matmul(xs, params.w_x, dtype)
    if bias is not None:
      a = a + bias
    return tuple(a[..., k * H:(k + 1) * H] for k in range(params.w_x.shape[1] // H))
  blocks = []
  for k in range(params.w_x.shape[1] // H):
    block = base.matmul(xs, params.w_x[:, k * H:(k + 1) * H], dtype)
    blocks.append(block if bias is None else block + bias[k * H:(k + 1) * H])
  return tuple(blocks)


def _transposed_w_h(params):
  return base.transposed(params.w_h)


def _bias_grads(params, d_x, d_h):
  if params.b_x is None:
    return None, None
  return d_x, d_h


def _sum_rows(d):
  return d.reshape(-1, d.shape[-1]).sum(0)


def _weight_grad(inputs, d_pre):
  """``sum_t inputs_t^T d_pre_t`` as one matmul over all ``T*B`` rows."""
  return inputs.reshape(-1, inputs.shape[-1]).T @ d_pre.reshape(-1, d_pre.shape[-1])


# ---------------------------------------------------------------------------
# Elman RNN


def rnn(hidden_size, *, activation="tanh", bias=True, recurrent_init="uniform",
        dtype=None):
  r"""The Elman RNN (Elman 1990).

  .. math::
    h_t = \phi(x_t W_x + b_x + h_{t-1} W_h + b_h), \qquad y_t = h_t

  with :math:`\phi = \tanh` or ReLU. The state is the array ``h`` of shape
  ``[B, H]``.

  Backward (one reverse step, with :math:`g = \partial L/\partial h_t`, the
  sum of the gradient from step ``t+1`` and from ``y_t``):

  .. math::
    \delta_t = g \odot \phi'(a_t), \quad
    \partial L/\partial h_{t-1} = \delta_t W_h^\top, \quad
    \partial L/\partial W_x = \textstyle\sum_t x_t^\top \delta_t, \quad
    \partial L/\partial W_h = \textstyle\sum_t h_{t-1}^\top \delta_t

  and both biases receive :math:`\sum_t \delta_t`. :math:`\phi'` is
  :math:`1 - h_t^2` for tanh and :math:`[h_t > 0]` for ReLU.

  Initialisation: every weight and bias ``U(-1/sqrt(H), 1/sqrt(H))`` as in
  PyTorch; ``recurrent_init="orthogonal"`` makes ``W_h`` orthogonal.

  Args:
    hidden_size: H, the size of the state and the output.
    activation: ``"tanh"`` or ``"relu"``.
    bias: whether to have ``b_x`` and ``b_h``.
    recurrent_init: ``"uniform"`` or ``"orthogonal"`` for ``W_h``.
    dtype: compute dtype of the matmuls (e.g. ``jnp.bfloat16``); parameters
      and the carried state stay in float32 (float64 under x64).

  Returns:
    A `Cell` with `RNNParams` parameters.

  References:
    Elman, *Finding structure in time*, Cognitive Science 1990.
  """
  _check_options(hidden_size, recurrent_init)
  if activation not in ("tanh", "relu"):
    raise ValueError(f"activation must be 'tanh' or 'relu', got {activation!r}.")
  relu = activation == "relu"

  def init(key, input_size):
    return RNNParams(*_init_weights(key, input_size, hidden_size, 1, bias, recurrent_init))

  def project(params, xs, one_step=False):
    return _project(params, xs, dtype, fold_b_h=True, one_step=one_step)

  def recur(params, h, gx):
    a = gx[0] + base.matmul(h, params.w_h, dtype)
    h_new = jax.nn.relu(a) if relu else jnp.tanh(a)
    return h_new, ()

  def recur_bwd(params, w_h_t, h, h_new, res, d_h_new, d_y):
    g = d_h_new + d_y
    delta = g * (h_new > 0) if relu else g * (1 - h_new * h_new)
    return base.matmul(delta, w_h_t, dtype), delta

  def param_grads(params, xs, hs, res, delta):
    d_b = _sum_rows(delta)
    d_params = RNNParams(_weight_grad(xs, delta), _weight_grad(hs, delta),
                         *_bias_grads(params, d_b, d_b))
    return d_params, base.matmul(delta, params.w_x.T, dtype)

  kernel = recurrence.Kernel(project, recur, recur_bwd, param_grads, lambda h: h,
                             _transposed_w_h)
  config = base.CellConfig("rnn", hidden_size, bias, activation=activation, dtype=dtype)
  return recurrence.cell_model(
      kernel, init, lambda p, b: _initial_state_zeros(hidden_size, p, b), _input_size, config)


# ---------------------------------------------------------------------------
# LSTM


def _gate_scale(hidden_size, sigmoid_blocks, dtype):
  """Per-column scale ``s`` so that ``s*tanh(s*a) + 1 - s`` is sigmoid or tanh.

  sigmoid(a) = tanh(a/2)/2 + 1/2, so one ``tanh`` over all gates computes
  the sigmoid gates (s = 1/2) and the tanh gate (s = 1) together.
  """
  return jnp.repeat(jnp.asarray([0.5 if s else 1.0 for s in sigmoid_blocks], dtype),
                    hidden_size)


def lstm(hidden_size, *, forget_bias=1.0, bias=True, recurrent_init="uniform",
         dtype=None):
  r"""Long short-term memory (Hochreiter and Schmidhuber 1997).

  Gate order ``i, f, g, o`` (PyTorch's), with
  :math:`a_t = x_t W_x + b_x + h_{t-1} W_h + b_h` split into four blocks:

  .. math::
    i_t = \sigma(a^i_t), \quad f_t = \sigma(a^f_t), \quad
    g_t = \tanh(a^g_t), \quad o_t = \sigma(a^o_t) \\
    c_t = f_t \odot c_{t-1} + i_t \odot g_t, \qquad
    h_t = o_t \odot \tanh(c_t), \qquad y_t = h_t

  The state is `LSTMState(hidden=h, cell=c)`.

  Biases: ``forget_bias`` is the initial value of the forget-gate block of
  ``b_x`` (``b_h``'s forget block starts at 0), set once by ``init`` as in
  Keras's ``unit_forget_bias`` (Jozefowicz et al. 2015); unlike Haiku, nothing
  is added at every step. All other weights and biases start
  ``U(-1/sqrt(H), 1/sqrt(H))`` as in PyTorch.

  Backward (one reverse step, with :math:`g_h = \partial L/\partial h_t` and
  :math:`g_c = \partial L/\partial c_t` from step ``t+1``, plus the output's
  gradient in :math:`g_h`):

  .. math::
    \bar c = g_c + g_h \odot o_t \odot (1 - \tanh^2 c_t) \\
    \bar o = g_h \odot \tanh c_t, \quad \bar i = \bar c \odot g_t, \quad
    \bar g = \bar c \odot i_t, \quad \bar f = \bar c \odot c_{t-1} \\
    \delta^{i,f,o} = \bar{(\cdot)} \odot \sigma(1-\sigma), \quad
    \delta^g = \bar g \odot (1 - g_t^2) \\
    \partial L/\partial c_{t-1} = \bar c \odot f_t, \quad
    \partial L/\partial h_{t-1} = \delta_t W_h^\top

  and the weight gradients are :math:`\sum_t x_t^\top\delta_t`,
  :math:`\sum_t h_{t-1}^\top\delta_t` and :math:`\sum_t \delta_t`. The
  forward keeps :math:`h_t`, :math:`c_t` and the gate activations; the
  backward recomputes :math:`\tanh c_t` from :math:`c_t`, which costs no
  measurable time and saves one ``[T, B, H]`` buffer.

  Args:
    hidden_size: H.
    forget_bias: initial value of the forget-gate bias.
    bias: whether to have ``b_x`` and ``b_h``.
    recurrent_init: ``"uniform"`` or ``"orthogonal"`` (per gate block).
    dtype: compute dtype of the matmuls; parameters and state stay float32.

  Returns:
    A `Cell` with `LSTMParams` parameters and `LSTMState` states.

  References:
    Hochreiter and Schmidhuber, *Long short-term memory*, 1997.
    Gers, Schmidhuber and Cummins, *Learning to forget*, 2000.
    Jozefowicz, Zaremba and Sutskever, *An empirical exploration of recurrent
    network architectures*, ICML 2015.
  """
  _check_options(hidden_size, recurrent_init)
  H = hidden_size

  def init(key, input_size):
    w_x, w_h, b_x, b_h = _init_weights(key, input_size, H, 4, bias, recurrent_init)
    if bias:
      b_x = b_x.at[H:2 * H].set(forget_bias)
      b_h = b_h.at[H:2 * H].set(0.0)
    elif forget_bias != 0.0:
      raise ValueError("forget_bias needs bias=True; pass forget_bias=0.0 with bias=False.")
    return LSTMParams(w_x, w_h, b_x, b_h)

  def initial_state(params, batch_size):
    z = _initial_state_zeros(H, params, batch_size)
    return LSTMState(z, z)

  def project(params, xs, one_step=False):
    return _project(params, xs, dtype, fold_b_h=True, one_step=one_step)

  def recur(params, state, gx):
    a = jnp.concatenate(gx, axis=-1) + base.matmul(state.hidden, params.w_h, dtype)
    s = _gate_scale(H, (1, 1, 0, 1), a.dtype)
    t = jnp.tanh(a * s)
    act = s * t + (1 - s)
    i, f, g, o = act[..., :H], act[..., H:2 * H], act[..., 2 * H:3 * H], act[..., 3 * H:]
    c = f * state.cell + i * g
    h = o * jnp.tanh(c)
    return LSTMState(h, c), t

  def recur_bwd(params, w_h_t, state, new_state, t, d_state, d_y):
    tc = jnp.tanh(new_state.cell)
    s = _gate_scale(H, (1, 1, 0, 1), t.dtype)
    act = s * t + (1 - s)
    i, f, g, o = act[..., :H], act[..., H:2 * H], act[..., 2 * H:3 * H], act[..., 3 * H:]
    d_h = d_state.hidden + d_y
    d_c = d_state.cell + d_h * o * (1 - tc * tc)
    d_act = jnp.concatenate([d_c * g, d_c * state.cell, d_c * i, d_h * tc], axis=-1)
    delta = d_act * (s * s) * (1 - t * t)
    d_prev = LSTMState(base.matmul(delta, w_h_t, dtype), d_c * f)
    return d_prev, delta

  def param_grads(params, xs, states, t, delta):
    d_b = _sum_rows(delta)
    d_params = LSTMParams(_weight_grad(xs, delta), _weight_grad(states.hidden, delta),
                          *_bias_grads(params, d_b, d_b))
    return d_params, base.matmul(delta, params.w_x.T, dtype)

  kernel = recurrence.Kernel(project, recur, recur_bwd, param_grads, lambda s: s.hidden,
                             _transposed_w_h)
  config = base.CellConfig("lstm", H, bias, forget_bias=forget_bias, dtype=dtype)
  return recurrence.cell_model(kernel, init, initial_state, _input_size, config)


# ---------------------------------------------------------------------------
# GRU


def gru(hidden_size, *, reset_after=True, bias=True, recurrent_init="uniform",
        dtype=None):
  r"""Gated recurrent unit (Cho et al. 2014).

  Gate order ``r, z, n`` (PyTorch's). With
  :math:`a^r_t = x_t W^r_x + b^r_x + h_{t-1} W^r_h + b^r_h` and likewise
  :math:`a^z_t`:

  .. math::
    r_t = \sigma(a^r_t), \qquad z_t = \sigma(a^z_t), \qquad
    h_t = (1 - z_t) \odot n_t + z_t \odot h_{t-1}, \qquad y_t = h_t

  and the candidate :math:`n_t` is, with ``reset_after=True`` (PyTorch and
  cuDNN; the reset gate multiplies the recurrent projection and its bias)

  .. math::
    n_t = \tanh(x_t W^n_x + b^n_x + r_t \odot (h_{t-1} W^n_h + b^n_h))

  or, with ``reset_after=False`` (Cho et al. 2014; the reset gate multiplies
  the state before the projection)

  .. math::
    n_t = \tanh(x_t W^n_x + b^n_x + (r_t \odot h_{t-1}) W^n_h + b^n_h).

  The state is the array ``h``. Initialisation: ``U(-1/sqrt(H), 1/sqrt(H))``
  for every weight and bias, as in PyTorch.

  Backward (one reverse step, :math:`g = \partial L/\partial h_t`):

  .. math::
    \bar n = g \odot (1 - z_t), \quad \bar z = g \odot (h_{t-1} - n_t), \quad
    \delta^n = \bar n \odot (1 - n_t^2), \quad
    \delta^z = \bar z \odot z_t (1 - z_t), \quad
    \delta^r = \bar r \odot r_t (1 - r_t)

  where :math:`\bar r = \delta^n \odot (h_{t-1}W^n_h + b^n_h)` (reset-after)
  or :math:`\bar r = (\delta^n W^{n\top}_h) \odot h_{t-1}` (reset-before).
  Then :math:`\partial L/\partial h_{t-1} = g \odot z_t + [\delta^r, \delta^z,
  \delta^n_h] W_h^\top` with :math:`\delta^n_h = r_t \odot \delta^n`
  (reset-after), or :math:`g \odot z_t + [\delta^r, \delta^z] W^{rz\top}_h +
  r_t \odot (\delta^n W^{n\top}_h)` (reset-before). Weight gradients are sums
  over time of outer products with :math:`x_t`, :math:`h_{t-1}` (and
  :math:`r_t \odot h_{t-1}` for :math:`W^n_h` when reset-before).

  Args:
    hidden_size: H.
    reset_after: which candidate formula to use (see above).
    bias: whether to have ``b_x`` and ``b_h``.
    recurrent_init: ``"uniform"`` or ``"orthogonal"`` (per gate block).
    dtype: compute dtype of the matmuls; parameters and state stay float32.

  Returns:
    A `Cell` with `GRUParams` parameters.

  References:
    Cho et al., *Learning phrase representations using RNN encoder-decoder for
    statistical machine translation*, EMNLP 2014.
  """
  _check_options(hidden_size, recurrent_init)
  H = hidden_size

  def init(key, input_size):
    return GRUParams(*_init_weights(key, input_size, H, 3, bias, recurrent_init))

  def project(params, xs, one_step=False):
    return _project(params, xs, dtype, fold_b_h=False, one_step=one_step)

  def gates_rz(a):
    return 0.5 * jnp.tanh(0.5 * a) + 0.5

  def recur_after(params, h, gx):
    gh = base.matmul(h, params.w_h, dtype)
    if params.b_h is not None:
      gh = gh + params.b_h
    rz = gates_rz(jnp.concatenate(gx[:2], axis=-1) + gh[..., :2 * H])
    r, z = rz[..., :H], rz[..., H:]
    ghn = gh[..., 2 * H:]
    n = jnp.tanh(gx[2] + r * ghn)
    h_new = n + z * (h - n)
    return h_new, (rz, n, ghn)

  def recur_bwd_after(params, w_h_t, h, h_new, res, d_h_new, d_y):
    rz, n, ghn = res
    r, z = rz[..., :H], rz[..., H:]
    g = d_h_new + d_y
    d_an = g * (1 - z) * (1 - n * n)
    d_rz = jnp.concatenate([d_an * ghn, g * (h - n)], axis=-1) * rz * (1 - rz)
    d_gh = jnp.concatenate([d_rz, d_an * r], axis=-1)
    d_h = g * z + base.matmul(d_gh, w_h_t, dtype)
    return d_h, (jnp.concatenate([d_rz, d_an], axis=-1), d_gh)

  def param_grads_after(params, xs, hs, res, d_pre):
    d_gx, d_gh = d_pre
    d_params = GRUParams(_weight_grad(xs, d_gx), _weight_grad(hs, d_gh),
                         *_bias_grads(params, _sum_rows(d_gx), _sum_rows(d_gh)))
    return d_params, base.matmul(d_gx, params.w_x.T, dtype)

  def recur_before(params, h, gx):
    w_rz, w_n = params.w_h[:, :2 * H], params.w_h[:, 2 * H:]
    a_rz = jnp.concatenate(gx[:2], axis=-1) + base.matmul(h, w_rz, dtype)
    a_n = gx[2]
    if params.b_h is not None:
      a_rz = a_rz + params.b_h[:2 * H]
      a_n = a_n + params.b_h[2 * H:]
    rz = gates_rz(a_rz)
    r, z = rz[..., :H], rz[..., H:]
    n = jnp.tanh(a_n + base.matmul(r * h, w_n, dtype))
    h_new = n + z * (h - n)
    return h_new, (rz, n)

  def transposed_before(params):
    return base.transposed(params.w_h[:, :2 * H]), base.transposed(params.w_h[:, 2 * H:])

  def recur_bwd_before(params, w_h_t, h, h_new, res, d_h_new, d_y):
    rz, n = res
    r, z = rz[..., :H], rz[..., H:]
    w_rz_t, w_n_t = w_h_t
    g = d_h_new + d_y
    d_an = g * (1 - z) * (1 - n * n)
    d_rh = base.matmul(d_an, w_n_t, dtype)
    d_rz = jnp.concatenate([d_rh * h, g * (h - n)], axis=-1) * rz * (1 - rz)
    d_h = g * z + d_rh * r + base.matmul(d_rz, w_rz_t, dtype)
    return d_h, jnp.concatenate([d_rz, d_an], axis=-1)

  def param_grads_before(params, xs, hs, res, d_pre):
    rz = res[0]
    rh = rz[..., :H] * hs
    d_w_h = jnp.concatenate([_weight_grad(hs, d_pre[..., :2 * H]),
                             _weight_grad(rh, d_pre[..., 2 * H:])], axis=1)
    d_b = _sum_rows(d_pre)
    d_params = GRUParams(_weight_grad(xs, d_pre), d_w_h, *_bias_grads(params, d_b, d_b))
    return d_params, base.matmul(d_pre, params.w_x.T, dtype)

  if reset_after:
    kernel = recurrence.Kernel(project, recur_after, recur_bwd_after, param_grads_after,
                               lambda h: h, _transposed_w_h)
  else:
    kernel = recurrence.Kernel(project, recur_before, recur_bwd_before, param_grads_before,
                               lambda h: h, transposed_before)
  config = base.CellConfig("gru", H, bias, reset_after=reset_after, dtype=dtype)
  return recurrence.cell_model(
      kernel, init, lambda p, b: _initial_state_zeros(H, p, b), _input_size, config)
