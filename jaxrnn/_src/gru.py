"""The GRU cell (reset-after and reset-before), with its hand-derived backward."""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import gates
from jaxrnn._src import recurrence

Array = jax.Array


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



class GRUConfig(NamedTuple):
  """The options a `gru` was built with.

  Attributes:
    hidden_size: H.
    reset_after: the candidate formula (True: PyTorch's and cuDNN's).
    bias: whether the cell has ``b_x`` and ``b_h``.
    dtype: the compute dtype of the matmuls, or None.
  """
  hidden_size: int
  reset_after: bool = True
  bias: bool = True
  dtype: Any = None


class AfterResiduals(NamedTuple):
  """What a step of the reset-after GRU keeps for its backward: its own derivatives.

  Computed in the forward step, where ``r``, ``z`` and ``n`` are at hand, so
  that the reverse step is one multiply, its matmul and one multiply-add
  (BUILD.md, issue 17, has the measurement).

  Attributes:
    d_gh: ``[..., 3H]``: ``dh_t`` over the recurrent pre-activations
      ``h_{t-1} W_h + b_h``, blocks ``r, z, n``: ``d_n ghn r (1 - r)``,
      ``(h_{t-1} - n) z (1 - z)`` and ``d_n r``, with ``ghn`` the n block
      of ``h_{t-1} W_h + b_h``. The r and z blocks are also those of the
      input side.
    d_n: ``[..., H]``: ``dh_t/da^n = (1 - z)(1 - n^2)``, the n block of the
      input side.
    z: ``[..., H]``: the update gate, ``dh_t/dh_{t-1}`` outside the matmul.
  """
  d_gh: jax.Array
  d_n: jax.Array
  z: jax.Array


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
  With ``reset_after=True``, :math:`\delta^r`, :math:`\delta^z`,
  :math:`\delta^n` and :math:`r_t \odot \delta^n` are each :math:`g` times
  an elementwise factor of the step: the forward step computes those factors
  (`AfterResiduals`), the reverse step multiplies :math:`g` by them for its
  matmul and keeps only :math:`g`, and the gate gradients of all steps are
  formed from it after the loop.

  Jacobian (for `parallel_unroll`), with :math:`k = (1 - z_t)(1 - n_t^2)`:

  .. math::
    \partial h_t / \partial h_{t-1} = \mathrm{diag}(z_t)
      + \mathrm{diag}((h_{t-1} - n_t) z_t (1 - z_t)) W^{z\top}_h + \mathrm{diag}(k) N

  with :math:`N = \mathrm{diag}(c_t r_t (1 - r_t)) W^{r\top}_h + \mathrm{diag}(r_t)
  W^{n\top}_h`, :math:`c_t = h_{t-1} W^n_h + b^n_h` (reset-after), or
  :math:`N = W^{n\top}_h (\mathrm{diag}(r_t) + \mathrm{diag}(h_{t-1} r_t (1 - r_t))
  W^{r\top}_h)` (reset-before).

  Args:
    hidden_size: H.
    reset_after: which candidate formula to use (see above).
    bias: whether to have ``b_x`` and ``b_h``.
    recurrent_init: ``"uniform"`` or ``"orthogonal"`` (per gate block).
    dtype: compute dtype of the matmuls; parameters and state stay float32.

  Returns:
    A `Model` with `GRUParams` parameters and an array state ``[B, H]``.

  References:
    Cho et al., *Learning phrase representations using RNN encoder-decoder for
    statistical machine translation*, EMNLP 2014.
  """
  gates.check_options(hidden_size, recurrent_init)
  H = hidden_size

  def init(key, input_size):
    return GRUParams(*gates.init_weights(key, input_size, H, 3, bias, recurrent_init))

  def project(params, xs, one_step=False):
    return gates.project(params, xs, dtype, fold_b_h=False, one_step=one_step)

  def gates_rz(a):
    return 0.5 * jnp.tanh(0.5 * a) + 0.5

  def recur_after(params, h, gx, keep=None):
    gh = base.matmul(gates.kept(h, keep), params.w_h, dtype)
    if params.b_h is not None:
      gh = gh + params.b_h
    rz = gates_rz(jnp.concatenate(gx[:2], axis=-1) + gh[..., :2 * H])
    r, z = rz[..., :H], rz[..., H:]
    ghn = gh[..., 2 * H:]
    n = jnp.tanh(gx[2] + r * ghn)
    h_new = n + z * (h - n)
    # The step's derivatives, while r, z and n are at hand (`AfterResiduals`).
    d_n = (1 - z) * (1 - n * n)
    d_gh = jnp.concatenate([d_n * ghn * r * (1 - r), (h - n) * z * (1 - z), d_n * r], axis=-1)
    return h_new, AfterResiduals(d_gh, d_n, z)

  def recurrent_side_grad(g, res):
    """dL/d(h_{t-1} W_h + b_h) from ``g = dL/dh_t``, one step or stacked over time."""
    return jnp.concatenate([g, g, g], axis=-1) * res.d_gh

  def recur_bwd_after(params, w_h_t, h, h_new, res, d_h_new, d_y, keep=None):
    g = d_h_new + d_y
    d_gh = recurrent_side_grad(g, res)
    d_h = g * res.z + gates.kept(base.matmul(d_gh, w_h_t, dtype), keep)
    # Only dL/dh_t leaves the loop; `param_grads_after` rebuilds both gate
    # gradients from it over all steps at once, which saves writing a
    # [T, B, 3H] buffer per step.
    return recurrence.StepGrads(d_h, g)

  def jac_after(params, h, h_new, res, diagonal):
    return gates.gate_jacobian(params.w_h, res.d_gh, diagonal, diag=res.z)

  def param_grads_after(params, xs, hs, res, g, keep=None):
    d_gh = recurrent_side_grad(g, res)
    d_gx = jnp.concatenate([d_gh[..., :2 * H], g * res.d_n], axis=-1)
    return gates.dense_param_grads(GRUParams, params, xs, hs, d_gx, d_gh, keep, dtype)

  def recur_before(params, h, gx, keep=None):
    w_rz, w_n = params.w_h[:, :2 * H], params.w_h[:, 2 * H:]
    h_in = gates.kept(h, keep)
    a_rz = jnp.concatenate(gx[:2], axis=-1) + base.matmul(h_in, w_rz, dtype)
    a_n = gx[2]
    if params.b_h is not None:
      a_rz = a_rz + params.b_h[:2 * H]
      a_n = a_n + params.b_h[2 * H:]
    rz = gates_rz(a_rz)
    r, z = rz[..., :H], rz[..., H:]
    n = jnp.tanh(a_n + base.matmul(r * h_in, w_n, dtype))
    h_new = n + z * (h - n)
    return h_new, (rz, n)

  def transposed_before(params):
    return base.transposed(params.w_h[:, :2 * H]), base.transposed(params.w_h[:, 2 * H:])

  def recur_bwd_before(params, w_h_t, h, h_new, res, d_h_new, d_y, keep=None):
    rz, n = res
    r, z = rz[..., :H], rz[..., H:]
    w_rz_t, w_n_t = w_h_t
    g = d_h_new + d_y
    d_an = g * (1 - z) * (1 - n * n)
    d_rh = base.matmul(d_an, w_n_t, dtype)
    d_rz = jnp.concatenate([d_rh * gates.kept(h, keep), g * (h - n)], axis=-1) * rz * (1 - rz)
    d_h = g * z + gates.kept(d_rh * r + base.matmul(d_rz, w_rz_t, dtype), keep)
    return recurrence.StepGrads(d_h, jnp.concatenate([d_rz, d_an], axis=-1))

  def jac_before(params, h, h_new, res, diagonal):
    rz, n = res
    r, z = rz[..., :H], rz[..., H:]
    k = (1 - z) * (1 - n * n)
    w_r, w_n = params.w_h[:, :H], params.w_h[:, 2 * H:]
    q = h * r * (1 - r)
    coefs = jnp.concatenate([jnp.zeros_like(z), (h - n) * z * (1 - z), jnp.zeros_like(z)], -1)
    jac = gates.gate_jacobian(params.w_h, coefs, diagonal, diag=z)
    hi = jax.lax.Precision.HIGHEST
    if diagonal:  # N_ii = W_n[i, i] r_i + sum_k W_n[k, i] q_k W_r[i, k]
      n_ii = jnp.diagonal(w_n) * r + jnp.einsum("ki,nk,ik->ni", w_n, q, w_r, precision=hi)
      return jac + k * n_ii
    n_ij = w_n.T * r[..., None, :] + jnp.einsum("ki,nk,jk->nij", w_n, q, w_r, precision=hi)
    return jac + k[..., :, None] * n_ij

  def param_grads_before(params, xs, hs, res, d_pre, keep=None):
    rz = res[0]
    hs = gates.kept(hs, keep)
    rh = rz[..., :H] * hs
    d_w_h = jnp.concatenate([gates.weight_grad(hs, d_pre[..., :2 * H]),
                             gates.weight_grad(rh, d_pre[..., 2 * H:])], axis=1)
    d_b = gates.sum_rows(d_pre)
    d_params = GRUParams(gates.weight_grad(xs, d_pre), d_w_h, *gates.bias_grads(params, d_b, d_b))
    return d_params, base.matmul(d_pre, params.w_x.T, dtype)

  if reset_after:
    recur, recur_bwd, param_grads, transposed, recur_jac = (
        recur_after, recur_bwd_after, param_grads_after, gates.transposed_w_h, jac_after)
  else:
    recur, recur_bwd, param_grads, transposed, recur_jac = (
        recur_before, recur_bwd_before, param_grads_before, transposed_before, jac_before)
  return gates.array_state_cell(
      init=init, project=project, recur=recur, recur_bwd=recur_bwd, param_grads=param_grads,
      transposed_weights=transposed, hidden_size=H,
      config=GRUConfig(H, reset_after, bias, dtype), name="gru", recur_jac=recur_jac)

