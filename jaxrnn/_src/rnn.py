"""The Elman RNN cell, with its hand-derived backward."""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import gates
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



class RNNConfig(NamedTuple):
  """The options an `rnn` was built with.

  Attributes:
    hidden_size: H.
    activation: ``"tanh"`` or ``"relu"``.
    bias: whether the cell has ``b_x`` and ``b_h``.
    dtype: the compute dtype of the matmuls, or None.
  """
  hidden_size: int
  activation: str = "tanh"
  bias: bool = True
  dtype: Any = None


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

  Jacobian (for `parallel_unroll`):
  :math:`\partial h_t / \partial h_{t-1} = \mathrm{diag}(\phi'(a_t)) W_h^\top`.

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
    A `Model` with `RNNParams` parameters and an array state ``[B, H]``.

  References:
    Elman, *Finding structure in time*, Cognitive Science 1990.
  """
  gates.check_options(hidden_size, recurrent_init)
  if activation not in ("tanh", "relu"):
    raise ValueError(f"activation must be 'tanh' or 'relu', got {activation!r}.")
  relu = activation == "relu"

  def init(key, input_size):
    return RNNParams(*gates.init_weights(key, input_size, hidden_size, 1, bias, recurrent_init))

  def project(params, xs, one_step=False):
    return gates.project(params, xs, dtype, fold_b_h=True, one_step=one_step)

  def recur(params, h, gx, keep=None):
    a = gx[0] + base.matmul(gates.kept(h, keep), params.w_h, dtype)
    h_new = jax.nn.relu(a) if relu else jnp.tanh(a)
    return h_new, ()

  def recur_bwd(params, w_h_t, h, h_new, res, d_h_new, d_y, keep=None):
    g = d_h_new + d_y
    delta = g * (h_new > 0) if relu else g * (1 - h_new * h_new)
    return recurrence.StepGrads(gates.kept(base.matmul(delta, w_h_t, dtype), keep), delta)

  def recur_jac(params, h, h_new, res, diagonal):
    return gates.gate_jacobian(params.w_h, (h_new > 0).astype(h_new.dtype) if relu
                               else 1 - h_new * h_new, diagonal)

  def param_grads(params, xs, hs, res, delta, keep=None):
    return gates.dense_param_grads(RNNParams, params, xs, hs, delta, delta, keep, dtype)

  return gates.array_state_cell(
      init=init, project=project, recur=recur, recur_bwd=recur_bwd, param_grads=param_grads,
      transposed_weights=gates.transposed_w_h, hidden_size=hidden_size,
      config=RNNConfig(hidden_size, activation, bias, dtype), name="rnn", recur_jac=recur_jac)

