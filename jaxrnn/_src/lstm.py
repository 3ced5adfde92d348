"""The LSTM cell, with its hand-derived backward."""

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import gates
from jaxrnn._src import recurrence

Array = jax.Array


class LSTMParams(NamedTuple):
  """Parameters of the LSTM; gate blocks in the order ``i, f, g, o``.

  Attributes:
    w_x: ``[input_size, 4H]`` input weights.
    w_h: ``[H, 4H]`` recurrent weights.
    b_x: ``[4H]`` input-side bias (holds the initial forget bias), or None.
    b_h: ``[4H]`` recurrent-side bias, or None.
    w_peep: ``[3, H]`` diagonal peephole weights of ``i``, ``f`` and ``o``
      (``peephole=True``), or None.
    w_proj: ``[H, P]`` output projection (``proj_size=P``), or None. With it
      ``w_h`` is ``[P, 4H]``.
  """
  w_x: Array
  w_h: Array
  b_x: Optional[Array]
  b_h: Optional[Array]
  w_peep: Optional[Array] = None
  w_proj: Optional[Array] = None



class LSTMState(NamedTuple):
  """The LSTM's recurrent state.

  Attributes:
    hidden: ``[B, H]`` hidden state ``h``, also the cell's output (``[B, P]``
      with ``proj_size=P``).
    cell: ``[B, H]`` memory cell ``c``.
  """
  hidden: Array
  cell: Array



class LSTMConfig(NamedTuple):
  """The options an `lstm` was built with.

  Attributes:
    hidden_size: H.
    forget_bias: the initial forget-gate bias.
    bias: whether the cell has ``b_x`` and ``b_h``.
    dtype: the compute dtype of the matmuls, or None.
    peephole: whether the gates read the cell state (``w_peep``).
    proj_size: P, the size of the projected hidden state, or None.
  """
  hidden_size: int
  forget_bias: float = 1.0
  bias: bool = True
  dtype: Any = None
  peephole: bool = False
  proj_size: Optional[int] = None


def options_of(config):
  """The options of a cell's config beyond the plain LSTM's, as ``["peephole=True", ...]``."""
  return [f"{name}={getattr(config, name)!r}" for name, plain in _PLAIN.items()
          if getattr(config, name, plain) != plain]


_PLAIN = {"peephole": False, "proj_size": None}


def lstm(hidden_size, *, peephole=False, proj_size=None, forget_bias=1.0, bias=True,
         recurrent_init="uniform", dtype=None):
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

  ``peephole=True`` (Gers and Schmidhuber 2000) lets the gates read the cell
  state through diagonal weights ``w_peep = [p_i; p_f; p_o]`` (``[3, H]``,
  initialised to zeros, so a new peephole LSTM starts as the plain one):

  .. math::
    i_t = \sigma(a^i_t + p_i \odot c_{t-1}), \quad
    f_t = \sigma(a^f_t + p_f \odot c_{t-1}), \quad
    o_t = \sigma(a^o_t + p_o \odot c_t)

  ``proj_size=P`` (Sak et al. 2014; PyTorch's ``nn.LSTM(proj_size=P)``)
  projects the hidden state, :math:`h_t = (o_t \odot \tanh c_t) W_{proj}`,
  with ``w_proj`` ``[H, P]`` (PyTorch's ``weight_hr.T``, initialised
  ``U(-1/sqrt(H), 1/sqrt(H))``); the state is ``LSTMState(h [B, P], c [B, H])``,
  ``w_h`` is ``[P, 4H]`` and the output size is P. The two combine.

  Their backward, with :math:`m_t = o_t \odot \tanh c_t` and
  :math:`g_m = g_h W_{proj}^\top` (:math:`g_m = g_h` without projection):

  .. math::
    \delta^o = g_m \odot \tanh c_t \odot o_t(1 - o_t), \quad
    \bar c = g_c + g_m \odot o_t \odot (1 - \tanh^2 c_t) + p_o \odot \delta^o \\
    \partial L/\partial c_{t-1} = \bar c \odot f_t + p_i \odot \delta^i
      + p_f \odot \delta^f \\
    \partial L/\partial p_i = \textstyle\sum_t \delta^i_t \odot c_{t-1}, \quad
    \partial L/\partial p_f = \sum_t \delta^f_t \odot c_{t-1}, \quad
    \partial L/\partial p_o = \sum_t \delta^o_t \odot c_t, \quad
    \partial L/\partial W_{proj} = \sum_t m_t^\top g_{h,t}

  with :math:`\delta^{i,f,g}` as above. These options run their own step
  functions, chosen when the cell is built; the plain LSTM's are unchanged.

  Args:
    hidden_size: H.
    peephole: whether to add the diagonal peephole weights ``w_peep``.
    proj_size: P, a positive int, to project the hidden state to P units; or
      None.
    forget_bias: initial value of the forget-gate bias.
    bias: whether to have ``b_x`` and ``b_h``.
    recurrent_init: ``"uniform"`` or ``"orthogonal"`` (per gate block).
    dtype: compute dtype of the matmuls; parameters and state stay float32.

  Returns:
    A `Model` with `LSTMParams` parameters and `LSTMState` states.

  References:
    Hochreiter and Schmidhuber, *Long short-term memory*, 1997.
    Gers, Schmidhuber and Cummins, *Learning to forget*, 2000.
    Jozefowicz, Zaremba and Sutskever, *An empirical exploration of recurrent
    network architectures*, ICML 2015.
    Gers and Schmidhuber, *Recurrent nets that time and count*, IJCNN 2000.
    Sak, Senior and Beaufays, *Long short-term memory recurrent neural network
    architectures for large scale acoustic modeling*, Interspeech 2014.
  """
  gates.check_options(hidden_size, recurrent_init)
  if proj_size is not None and (not isinstance(proj_size, int) or isinstance(proj_size, bool)
                                or proj_size < 1):
    raise ValueError(f"proj_size must be a positive int or None (no projection), got"
                     f" {proj_size!r}.")
  H = hidden_size
  config = LSTMConfig(H, forget_bias, bias, dtype, peephole=bool(peephole), proj_size=proj_size)

  def init(key, input_size):
    w_x, w_h, b_x, b_h = gates.init_weights(key, input_size, H, 4, bias, recurrent_init)
    if b_x is not None and b_h is not None:  # bias=True
      b_x = b_x.at[H:2 * H].set(forget_bias)
      b_h = b_h.at[H:2 * H].set(0.0)
    elif forget_bias != 0.0:
      raise ValueError("forget_bias needs bias=True; pass forget_bias=0.0 with bias=False.")
    params = LSTMParams(w_x, w_h, b_x, b_h)
    if peephole:
      params = params._replace(w_peep=jnp.zeros((3, H), w_h.dtype))
    if proj_size is not None:
      params = params._replace(**_projection_init(key, H, proj_size, recurrent_init, w_h.dtype))
    return params

  def initial_state(params, batch_size):
    c = gates.zeros_state(H, params, batch_size)
    h = c if proj_size is None else gates.zeros_state(proj_size, params, batch_size)
    return LSTMState(h, c)

  if peephole or proj_size is not None:
    return recurrence.kernel_cell(
        _options_kernel(H, peephole, proj_size, dtype), init=init, initial_state=initial_state,
        input_size=gates.input_size_of, output_size=proj_size or H, config=config, name="lstm")

  def project(params, xs, one_step=False):
    return gates.project(params, xs, dtype, fold_b_h=True, one_step=one_step)

  def recur(params, state, gx):
    a = jnp.concatenate(gx, axis=-1) + base.matmul(state.hidden, params.w_h, dtype)
    s = gates.gate_scale(H, (1, 1, 0, 1), a.dtype)
    t = jnp.tanh(a * s)
    act = s * t + (1 - s)
    i, f, g, o = act[..., :H], act[..., H:2 * H], act[..., 2 * H:3 * H], act[..., 3 * H:]
    c = f * state.cell + i * g
    h = o * jnp.tanh(c)
    return LSTMState(h, c), t

  def recur_bwd(params, w_h_t, state, new_state, t, d_state, d_y):
    tc = jnp.tanh(new_state.cell)
    s = gates.gate_scale(H, (1, 1, 0, 1), t.dtype)
    act = s * t + (1 - s)
    i, f, g, o = act[..., :H], act[..., H:2 * H], act[..., 2 * H:3 * H], act[..., 3 * H:]
    d_h = d_state.hidden + d_y
    d_c = d_state.cell + d_h * o * (1 - tc * tc)
    d_act = jnp.concatenate([d_c * g, d_c * state.cell, d_c * i, d_h * tc], axis=-1)
    delta = d_act * (s * s) * (1 - t * t)
    d_prev = LSTMState(base.matmul(delta, w_h_t, dtype), d_c * f)
    return recurrence.StepGrads(d_prev, delta)

  def param_grads(params, xs, states, t, delta):
    d_b = gates.sum_rows(delta)
    d_params = LSTMParams(gates.weight_grad(xs, delta), gates.weight_grad(states.hidden, delta),
                          *gates.bias_grads(params, d_b, d_b))
    return d_params, base.matmul(delta, params.w_x.T, dtype)

  kernel = recurrence.Kernel(
      project=project, recur=recur, output=lambda s, res: s.hidden, recur_bwd=recur_bwd,
      param_grads=param_grads, transposed_weights=gates.transposed_w_h,
      grad_norm=recurrence.hidden_grad_norm(lambda s: s.hidden))
  return recurrence.kernel_cell(
      kernel, init=init, initial_state=initial_state, input_size=gates.input_size_of,
      output_size=H, config=config, name="lstm")


def _projection_init(key, H, P, recurrent_init, dtype):
  """``w_h [P, 4H]`` and ``w_proj [H, P]``, PyTorch's ``U(-1/sqrt(H), 1/sqrt(H))``."""
  k_h, k_proj = jax.random.split(jax.random.fold_in(key, 1))
  bound = 1.0 / math.sqrt(H)
  if recurrent_init == "orthogonal":
    w_h = jnp.concatenate([jax.nn.initializers.orthogonal()(k, (P, H), dtype)
                           for k in jax.random.split(k_h, 4)], axis=1)
  else:
    w_h = jax.random.uniform(k_h, (P, 4 * H), dtype, -bound, bound)
  return dict(w_h=w_h, w_proj=jax.random.uniform(k_proj, (H, P), dtype, -bound, bound))


class _Residuals(NamedTuple):
  """What a step of `_options_kernel` keeps: the gate activations ``[i, f, g, o]``
  and, with a projection, ``m = o * tanh(c)`` (the projection's input)."""
  act: Array
  m: Optional[Array]


class _PerStep(NamedTuple):
  """The per-step gradients `_options_kernel`'s ``param_grads`` reads: the gate
  pre-activation gradients ``delta``, ``delta_o * c_t`` (peephole) and the
  gradient of the projected ``h_t`` (projection)."""
  delta: Array
  peep_o: Optional[Array]
  d_h: Optional[Array]


def _split(a, H):
  return a[..., :H], a[..., H:2 * H], a[..., 2 * H:3 * H], a[..., 3 * H:]


def _options_kernel(H, peephole, proj_size, dtype):
  """The kernel of an LSTM with peepholes and/or a projection (see `lstm`)."""
  projected = proj_size is not None

  def project(params, xs, one_step=False):
    del one_step  # one matmul over all gates either way
    a = base.matmul(xs, params.w_x, dtype)
    return a if params.b_x is None else a + (params.b_x + params.b_h)

  def recur(params, state, a_x):
    a_i, a_f, a_g, a_o = _split(a_x + base.matmul(state.hidden, params.w_h, dtype), H)
    if peephole:
      a_i = a_i + params.w_peep[0] * state.cell
      a_f = a_f + params.w_peep[1] * state.cell
    i, f, g = jax.nn.sigmoid(a_i), jax.nn.sigmoid(a_f), jnp.tanh(a_g)
    c = f * state.cell + i * g
    if peephole:
      a_o = a_o + params.w_peep[2] * c
    o = jax.nn.sigmoid(a_o)
    m = o * jnp.tanh(c)
    h = base.matmul(m, params.w_proj, dtype) if projected else m
    return LSTMState(h, c), _Residuals(jnp.concatenate([i, f, g, o], axis=-1),
                                       m if projected else None)

  def transposed_weights(params):
    w_proj_t = base.transposed(params.w_proj) if projected else None
    return gates.transposed_w_h(params), w_proj_t

  def recur_bwd(params, w_t, state, new_state, res, d_state, d_y):
    w_h_t, w_proj_t = w_t
    i, f, g, o = _split(res.act, H)
    tc = jnp.tanh(new_state.cell)
    d_h = d_state.hidden + d_y
    d_m = base.matmul(d_h, w_proj_t, dtype) if projected else d_h
    delta_o = d_m * tc * o * (1 - o)
    d_c = d_state.cell + d_m * o * (1 - tc * tc)
    if peephole:
      d_c = d_c + params.w_peep[2] * delta_o
    delta_i = d_c * g * i * (1 - i)
    delta_f = d_c * state.cell * f * (1 - f)
    delta_g = d_c * i * (1 - g * g)
    d_c_prev = d_c * f
    if peephole:
      d_c_prev = d_c_prev + params.w_peep[0] * delta_i + params.w_peep[1] * delta_f
    delta = jnp.concatenate([delta_i, delta_f, delta_g, delta_o], axis=-1)
    d_prev = LSTMState(base.matmul(delta, w_h_t, dtype), d_c_prev)
    per_step = _PerStep(delta, delta_o * new_state.cell if peephole else None,
                        d_h if projected else None)
    return recurrence.StepGrads(d_prev, per_step)

  def param_grads(params, xs, states, res, per_step):
    delta = per_step.delta
    d_b = gates.sum_rows(delta)
    d_params = LSTMParams(gates.weight_grad(xs, delta), gates.weight_grad(states.hidden, delta),
                          *gates.bias_grads(params, d_b, d_b))
    if peephole:
      delta_i, delta_f = delta[..., :H], delta[..., H:2 * H]
      d_params = d_params._replace(w_peep=jnp.stack([
          gates.sum_rows(delta_i * states.cell), gates.sum_rows(delta_f * states.cell),
          gates.sum_rows(per_step.peep_o)]))
    if projected:
      d_params = d_params._replace(w_proj=gates.weight_grad(res.m, per_step.d_h))
    return d_params, base.matmul(delta, params.w_x.T, dtype)

  return recurrence.Kernel(
      project=project, recur=recur, output=lambda s, res: s.hidden, recur_bwd=recur_bwd,
      param_grads=param_grads, transposed_weights=transposed_weights,
      grad_norm=recurrence.hidden_grad_norm(lambda s: s.hidden))

