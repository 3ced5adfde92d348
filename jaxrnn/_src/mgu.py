"""The minimal gated unit (MGU), with its hand-derived backward."""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import gates
from jaxrnn._src import recurrence

Array = jax.Array


class MGUParams(NamedTuple):
  """Parameters of the MGU; gate blocks in the order ``f, n``.

  Attributes:
    w_x: ``[input_size, 2H]`` input weights.
    w_h: ``[H, 2H]`` recurrent weights.
    b_x: ``[2H]`` input-side bias, or None.
    b_h: ``[2H]`` recurrent-side bias, or None. With ``reset_gate=True`` its
      ``n`` block is multiplied by the forget gate, as in Flax's ``MGUCell``.
  """
  w_x: Array
  w_h: Array
  b_x: Optional[Array]
  b_h: Optional[Array]


class MGUConfig(NamedTuple):
  """The options an `mgu` was built with.

  Attributes:
    hidden_size: H.
    reset_gate: whether the forget gate also gates the recurrent part of the
      candidate (True: Zhou et al.'s MGU and Flax's default).
    bias: whether the cell has ``b_x`` and ``b_h``.
    dtype: the compute dtype of the matmuls, or None.
  """
  hidden_size: int
  reset_gate: bool = True
  bias: bool = True
  dtype: Any = None


def mgu(hidden_size, *, reset_gate=True, bias=True, recurrent_init="uniform", dtype=None):
  r"""Minimal gated unit (Zhou et al. 2016), as Flax's ``nn.MGUCell`` computes it.

  One gate, the forget gate ``f``, does the work of the GRU's reset and
  update gates. Gate order ``f, n``. With
  :math:`a^f_t = x_t W^f_x + b^f_x + h_{t-1} W^f_h + b^f_h`:

  .. math::
    f_t = \sigma(a^f_t), \qquad
    h_t = (1 - f_t) \odot n_t + f_t \odot h_{t-1}, \qquad y_t = h_t

  and the candidate :math:`n_t` is, with ``reset_gate=True`` (the forget gate
  multiplies the recurrent projection and its bias)

  .. math::
    n_t = \tanh(x_t W^n_x + b^n_x + f_t \odot (h_{t-1} W^n_h + b^n_h))

  or, with ``reset_gate=False``

  .. math::
    n_t = \tanh(x_t W^n_x + b^n_x + h_{t-1} W^n_h + b^n_h).

  Biases: only :math:`b^f_x + b^f_h` matters for the gate, and without the
  reset gate only :math:`b^n_x + b^n_h`; with it, :math:`b^n_h` is scaled by
  :math:`f_t` and so is a parameter of its own. Flax keeps the biases of
  ``if`` and ``in`` (jaxrnn's ``b_x``) and, with ``reset_gate=True`` only,
  the bias of ``hn`` (jaxrnn's ``b_h``'s ``n`` block).

  The state is the array ``h``. Initialisation: ``U(-1/sqrt(H), 1/sqrt(H))``
  for every weight and bias, as the other built-in cells (Flax initialises
  its ``MGUCell`` differently, with a forget bias of 1; `jaxrnn.interop`
  converts its weights).

  Backward (one reverse step, :math:`g = \partial L/\partial h_t`, the sum of
  the gradient from step ``t+1`` and from ``y_t``):

  .. math::
    \delta^n = g \odot (1 - f_t) \odot (1 - n_t^2), \quad
    \delta^f = (g \odot (h_{t-1} - n_t) + \delta^n \odot c_t) \odot f_t (1 - f_t)

  with :math:`c_t = h_{t-1} W^n_h + b^n_h` (``reset_gate=True``) or
  :math:`c_t = 0` (``reset_gate=False``). Then

  .. math::
    \partial L/\partial h_{t-1} = g \odot f_t + [\delta^f, \delta^n_h] W_h^\top

  with :math:`\delta^n_h = f_t \odot \delta^n` (``reset_gate=True``) or
  :math:`\delta^n` (``False``). The gradients of :math:`W_x` and :math:`b_x`
  are sums over time of :math:`x_t^\top [\delta^f, \delta^n]` and
  :math:`[\delta^f, \delta^n]`, those of :math:`W_h` and :math:`b_h` of
  :math:`h_{t-1}^\top [\delta^f, \delta^n_h]` and :math:`[\delta^f,
  \delta^n_h]`, and :math:`\partial L/\partial x_t = [\delta^f, \delta^n]
  W_x^\top`.

  Jacobian (for `parallel_unroll`), with :math:`k = (1 - f_t)(1 - n_t^2)`:

  .. math::
    \partial h_t / \partial h_{t-1} = \mathrm{diag}(f_t)
      + \mathrm{diag}(f_t (1 - f_t)(h_{t-1} - n_t + k c_t)) W^{f\top}_h
      + \mathrm{diag}(k f_t) W^{n\top}_h

  (``reset_gate=True``), or with :math:`c_t = 0` and :math:`\mathrm{diag}(k)
  W^{n\top}_h` (``False``).

  Args:
    hidden_size: H.
    reset_gate: whether the forget gate multiplies the candidate's recurrent
      part (see above).
    bias: whether to have ``b_x`` and ``b_h``.
    recurrent_init: ``"uniform"`` or ``"orthogonal"`` (per gate block).
    dtype: compute dtype of the matmuls; parameters and state stay float32.

  Returns:
    A `Model` with `MGUParams` parameters and an array state ``[B, H]``.

  References:
    Zhou et al., *Minimal gated unit for recurrent neural networks*,
    International Journal of Automation and Computing 13(3), 2016.
  """
  gates.check_options(hidden_size, recurrent_init)
  H = hidden_size

  def init(key, input_size):
    return MGUParams(*gates.init_weights(key, input_size, H, 2, bias, recurrent_init))

  def project(params, xs, one_step=False):
    # Without the reset gate both of b_h's blocks only add, so they join b_x here.
    return gates.project(params, xs, dtype, fold_b_h=not reset_gate, one_step=one_step)

  def recur(params, h, gx, keep=None):
    gh = base.matmul(gates.kept(h, keep), params.w_h, dtype)
    if reset_gate and params.b_h is not None:
      gh = gh + params.b_h
    f = 0.5 * jnp.tanh(0.5 * (gx[0] + gh[..., :H])) + 0.5
    ghn = gh[..., H:]
    n = jnp.tanh(gx[1] + (f * ghn if reset_gate else ghn))
    h_new = n + f * (h - n)
    return h_new, (f, n, ghn) if reset_gate else (f, n)

  def recur_bwd(params, w_h_t, h, h_new, res, d_h_new, d_y, keep=None):
    f, n = res[:2]
    g = d_h_new + d_y
    d_an = g * (1 - f) * (1 - n * n)
    d_f = g * (h - n)
    if reset_gate:
      d_f = d_f + d_an * res[2]
    d_af = d_f * f * (1 - f)
    d_gx = jnp.concatenate([d_af, d_an], axis=-1)
    d_gh = jnp.concatenate([d_af, d_an * f], axis=-1) if reset_gate else d_gx
    d_h = g * f + gates.kept(base.matmul(d_gh, w_h_t, dtype), keep)
    return recurrence.StepGrads(d_h, (d_gx, d_gh) if reset_gate else d_gx)

  def recur_jac(params, h, h_new, res, diagonal):
    f, n = res[:2]
    k = (1 - f) * (1 - n * n)
    c_f = h - n + k * res[2] if reset_gate else h - n
    coefs = jnp.concatenate([f * (1 - f) * c_f, k * f if reset_gate else k], axis=-1)
    return gates.gate_jacobian(params.w_h, coefs, diagonal, diag=f)

  def param_grads(params, xs, hs, res, d_pre, keep=None):
    d_gx, d_gh = d_pre if reset_gate else (d_pre, d_pre)
    return gates.dense_param_grads(MGUParams, params, xs, hs, d_gx, d_gh, keep, dtype)

  return gates.array_state_cell(
      init=init, project=project, recur=recur, recur_bwd=recur_bwd, param_grads=param_grads,
      transposed_weights=gates.transposed_w_h, hidden_size=H,
      config=MGUConfig(H, reset_gate, bias, dtype), name="mgu", recur_jac=recur_jac)
