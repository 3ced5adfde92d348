r"""minGRU and minLSTM (Feng et al. 2024): gates that read the input only.

Both cells compute :math:`h_t = a_t \odot h_{t-1} + b_t` with :math:`a_t, b_t`
functions of :math:`x_t` alone, which `parallel_unroll` solves in one pass;
`unroll` runs the same step as a scan. Each keeps one weight matrix
``w_x [input_size, G*H]`` and one bias ``b_x [G*H]`` (there is no ``w_h``).

With ``log_space=True`` (the default, Feng et al.'s stable form) the
candidate is :math:`\tilde h = g(\cdot)` with :math:`g(v) = v + 1/2` for
:math:`v \ge 0` and :math:`\sigma(v)` otherwise, so :math:`b_t > 0` and the
parallel pass runs on :math:`\log a_t` and :math:`\log b_t` with a cumulative
log-sum-exp (Heinsen 2023); :math:`\log a_t` comes from softplus, never from
the log of a rounded gate. With ``log_space=False`` the candidate is linear
(their plain form) and the parallel path is a diagonal Newton step, also
exact in one iteration.
"""

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import gates
from jaxrnn._src import recurrence

Array = jax.Array


class MinRNNParams(NamedTuple):
  """Parameters of `min_gru` (blocks ``z, h~``, G = 2) and `min_lstm` (``f, i, h~``, G = 3).

  Attributes:
    w_x: ``[input_size, G*H]`` input weights.
    b_x: ``[G*H]`` bias, or None.
  """
  w_x: Array
  b_x: Optional[Array]


class MinGRUConfig(NamedTuple):
  r"""The options a `min_gru` was built with.

  Attributes:
    hidden_size: H.
    log_space: whether the candidate is :math:`g(\cdot) > 0` (see the module).
    bias: whether the cell has ``b_x``.
    dtype: the compute dtype of the matmul, or None.
  """
  hidden_size: int
  log_space: bool = True
  bias: bool = True
  dtype: Any = None


class MinLSTMConfig(NamedTuple):
  """The options a `min_lstm` was built with (fields as `MinGRUConfig`)."""
  hidden_size: int
  log_space: bool = True
  bias: bool = True
  dtype: Any = None


class _Res(NamedTuple):
  """What a step keeps: the mixing weight ``a`` of ``h``, the candidate and
  ``g'`` at its pre-activation, and the gates the backward needs."""
  a: Array
  cand: Array
  d_cand: Array
  gates: tuple


def _candidate(v, log_space):
  """``g(v)`` and ``g'(v)`` (``v`` and 1 without ``log_space``)."""
  if not log_space:
    return v, jnp.ones_like(v)
  s = jax.nn.sigmoid(v)
  pos = v >= 0
  return jnp.where(pos, v + 0.5, s), jnp.where(pos, 1.0, s * (1 - s)).astype(v.dtype)


def _log_candidate(v):
  """``log g(v)``, computed without rounding ``g`` first."""
  return jnp.where(v >= 0, jnp.log(jnp.maximum(v, 0) + 0.5), -jax.nn.softplus(-v))


def _check(hidden_size):
  if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size < 1:
    raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}.")


def _cell(H, blocks, params_type, config, name, dtype, bias, recur, recur_bwd, log_linear):
  """The `Model` shared by both cells: input projection, zeros state, weight gradients."""

  def init(key, input_size):
    if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 1:
      raise ValueError(f"input_size must be a positive int, got {input_size!r}.")
    bound = 1.0 / math.sqrt(H)
    k_w, k_b = jax.random.split(key)
    uniform = lambda k, shape: jax.random.uniform(k, shape, base.default_float(), -bound, bound)
    return params_type(uniform(k_w, (input_size, blocks * H)),
                       uniform(k_b, (blocks * H,)) if bias else None)

  def project(params, xs, one_step=False):
    del one_step  # the whole step is input-only: one matmul either way
    a = base.matmul(xs, params.w_x, dtype)
    if params.b_x is not None:
      a = a + params.b_x
    return tuple(a[..., k * H:(k + 1) * H] for k in range(blocks))

  def initial_state(params, batch_size):
    shape = (H,) if batch_size is None else (batch_size, H)
    return jnp.zeros(shape, params.w_x.dtype)

  def param_grads(params, xs, hs, res, d_pre):
    d_b = gates.sum_rows(d_pre) if params.b_x is not None else None
    return (params_type(gates.weight_grad(xs, d_pre), d_b),
            base.matmul(d_pre, params.w_x.T, dtype))

  def recur_jac(params, h, h_new, res, diagonal):
    if diagonal:
      return res.a
    return res.a[..., :, None] * jnp.eye(H, dtype=res.a.dtype)

  kernel = recurrence.Kernel(
      project=project, recur=recur, output=lambda h, res: h, recur_bwd=recur_bwd,
      param_grads=param_grads, transposed_weights=lambda params: None,
      grad_norm=recurrence.hidden_grad_norm(lambda h: h), recur_jac=recur_jac,
      log_linear=log_linear)
  return recurrence.kernel_cell(kernel, init=init, initial_state=initial_state,
                                input_size=gates.input_size_of, output_size=H, config=config,
                                name=name)


def min_gru(hidden_size, *, log_space=True, bias=True, dtype=None):
  r"""minGRU (Feng et al. 2024): a GRU whose gates read only the input.

  Blocks ``z, h~`` of :math:`x_t W_x + b_x`:

  .. math::
    z_t = \sigma(a^z_t), \qquad \tilde h_t = g(a^h_t), \qquad
    h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t, \qquad y_t = h_t

  with :math:`g` the positive candidate of the module docstring
  (``log_space=True``) or the identity (``False``). The state is ``h`` ``[B, H]``.
  In log space (`parallel_unroll`): :math:`\log(1 - z_t) = -\mathrm{softplus}(a^z_t)`,
  :math:`\log z_t = -\mathrm{softplus}(-a^z_t)`.

  Backward (one reverse step, :math:`g_h = \partial L/\partial h_t`):

  .. math::
    \partial L/\partial h_{t-1} = g_h \odot (1 - z_t), \quad
    \delta^z = g_h \odot (\tilde h_t - h_{t-1}) \odot z_t (1 - z_t), \quad
    \delta^h = g_h \odot z_t \odot g'(a^h_t)

  and :math:`\partial L/\partial W_x = \sum_t x_t^\top [\delta^z, \delta^h]`,
  :math:`\partial L/\partial b_x = \sum_t [\delta^z, \delta^h]`,
  :math:`\partial L/\partial x_t = [\delta^z, \delta^h] W_x^\top`. The
  Jacobian :math:`\partial h_t/\partial h_{t-1} = \mathrm{diag}(1 - z_t)`.

  Initialisation: ``w_x`` and ``b_x`` ``U(-1/sqrt(H), 1/sqrt(H))``.

  Args:
    hidden_size: H.
    log_space: the positive candidate :math:`g` and the log-space parallel
      pass (True), or a linear candidate (False).
    bias: whether to have ``b_x``.
    dtype: compute dtype of the matmul; parameters and state stay float32.

  Returns:
    A `Model` with `MinRNNParams` parameters and an array state ``[B, H]``.

  References:
    Feng, Tung, Ahmed, Bengio and Hajimirsadeghi, *Were RNNs all we needed?*,
    arXiv:2410.01201, 2024.
    Heinsen, *Efficient parallelization of a ubiquitous sequential
    computation*, arXiv:2311.06281, 2023.
  """
  _check(hidden_size)
  H = hidden_size

  def recur(params, h, gx):
    a_z, a_h = gx
    z = jax.nn.sigmoid(a_z)
    cand, d_cand = _candidate(a_h, log_space)
    return h + z * (cand - h), _Res(1 - z, cand, d_cand, (z,))

  def recur_bwd(params, w_t, h, h_new, res, d_new, d_y):
    (z,) = res.gates
    g = d_new + d_y
    d_pre = jnp.concatenate([g * (res.cand - h) * z * (1 - z), g * z * res.d_cand], axis=-1)
    return recurrence.StepGrads(g * res.a, d_pre)

  def log_linear(params, gx):
    a_z, a_h = gx
    return -jax.nn.softplus(a_z), -jax.nn.softplus(-a_z) + _log_candidate(a_h)

  return _cell(H, 2, MinRNNParams, MinGRUConfig(H, bool(log_space), bias, dtype), "min_gru",
               dtype, bias, recur, recur_bwd, log_linear if log_space else None)


def min_lstm(hidden_size, *, log_space=True, bias=True, dtype=None):
  r"""minLSTM (Feng et al. 2024): an LSTM whose gates read only the input.

  Blocks ``f, i, h~`` of :math:`x_t W_x + b_x`; the two gates are normalised
  to sum to one, which makes the scale of :math:`h` independent of time:

  .. math::
    f_t = \sigma(a^f_t), \quad i_t = \sigma(a^i_t), \quad
    f'_t = \frac{f_t}{f_t + i_t}, \quad i'_t = \frac{i_t}{f_t + i_t} \\
    h_t = f'_t \odot h_{t-1} + i'_t \odot g(a^h_t), \qquad y_t = h_t

  with :math:`g` as in `min_gru`. It is computed as
  :math:`f'_t = \sigma(-u_t)`, :math:`u_t = \mathrm{softplus}(-a^f_t) -
  \mathrm{softplus}(-a^i_t)`, so that in log space
  :math:`\log f'_t = -\mathrm{softplus}(u_t)` and
  :math:`\log i'_t = -\mathrm{softplus}(-u_t)`. The state is ``h`` ``[B, H]``.

  Backward (one reverse step, :math:`g_h = \partial L/\partial h_t`):

  .. math::
    \partial L/\partial h_{t-1} = g_h \odot f'_t, \quad
    \bar u = -g_h \odot (h_{t-1} - \tilde h_t) \odot f'_t i'_t \\
    \delta^f = -\bar u \odot (1 - f_t), \quad
    \delta^i = \bar u \odot (1 - i_t), \quad
    \delta^h = g_h \odot i'_t \odot g'(a^h_t)

  and the weight, bias and input gradients from :math:`[\delta^f, \delta^i,
  \delta^h]` as in `min_gru`. The Jacobian is :math:`\mathrm{diag}(f'_t)`.

  Args:
    hidden_size: H.
    log_space: as in `min_gru`.
    bias: whether to have ``b_x``.
    dtype: compute dtype of the matmul; parameters and state stay float32.

  Returns:
    A `Model` with `MinRNNParams` parameters and an array state ``[B, H]``.

  References:
    Feng, Tung, Ahmed, Bengio and Hajimirsadeghi, *Were RNNs all we needed?*,
    arXiv:2410.01201, 2024.
  """
  _check(hidden_size)
  H = hidden_size

  def mix(a_f, a_i):
    return jax.nn.softplus(-a_f) - jax.nn.softplus(-a_i)

  def recur(params, h, gx):
    a_f, a_i, a_h = gx
    f_norm = jax.nn.sigmoid(-mix(a_f, a_i))
    cand, d_cand = _candidate(a_h, log_space)
    gates_fi = (jax.nn.sigmoid(a_f), jax.nn.sigmoid(a_i))
    return cand + f_norm * (h - cand), _Res(f_norm, cand, d_cand, gates_fi)

  def recur_bwd(params, w_t, h, h_new, res, d_new, d_y):
    f, i = res.gates
    f_norm = res.a
    g = d_new + d_y
    d_u = -g * (h - res.cand) * f_norm * (1 - f_norm)
    d_pre = jnp.concatenate([-d_u * (1 - f), d_u * (1 - i), g * (1 - f_norm) * res.d_cand],
                            axis=-1)
    return recurrence.StepGrads(g * f_norm, d_pre)

  def log_linear(params, gx):
    a_f, a_i, a_h = gx
    u = mix(a_f, a_i)
    return -jax.nn.softplus(u), -jax.nn.softplus(-u) + _log_candidate(a_h)

  return _cell(H, 3, MinRNNParams, MinLSTMConfig(H, bool(log_space), bias, dtype), "min_lstm",
               dtype, bias, recur, recur_bwd, log_linear if log_space else None)
