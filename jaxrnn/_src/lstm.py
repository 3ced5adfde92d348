"""The LSTM cell, with its hand-derived backward."""

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



class LSTMConfig(NamedTuple):
  """The options an `lstm` was built with.

  Attributes:
    hidden_size: H.
    forget_bias: the initial forget-gate bias.
    bias: whether the cell has ``b_x`` and ``b_h``.
    dtype: the compute dtype of the matmuls, or None.
  """
  hidden_size: int
  forget_bias: float = 1.0
  bias: bool = True
  dtype: Any = None


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
    A `Model` with `LSTMParams` parameters and `LSTMState` states.

  References:
    Hochreiter and Schmidhuber, *Long short-term memory*, 1997.
    Gers, Schmidhuber and Cummins, *Learning to forget*, 2000.
    Jozefowicz, Zaremba and Sutskever, *An empirical exploration of recurrent
    network architectures*, ICML 2015.
  """
  gates.check_options(hidden_size, recurrent_init)
  H = hidden_size

  def init(key, input_size):
    w_x, w_h, b_x, b_h = gates.init_weights(key, input_size, H, 4, bias, recurrent_init)
    if bias:
      b_x = b_x.at[H:2 * H].set(forget_bias)
      b_h = b_h.at[H:2 * H].set(0.0)
    elif forget_bias != 0.0:
      raise ValueError("forget_bias needs bias=True; pass forget_bias=0.0 with bias=False.")
    return LSTMParams(w_x, w_h, b_x, b_h)

  def initial_state(params, batch_size):
    z = gates.zeros_state(H, params, batch_size)
    return LSTMState(z, z)

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
      output_size=H, config=LSTMConfig(H, forget_bias, bias, dtype), name="lstm")

