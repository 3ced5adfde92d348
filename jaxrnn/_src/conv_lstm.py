"""The convolutional LSTM cell, with its hand-derived backward."""

import math
from collections.abc import Sequence
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
from jax import lax

from jaxrnn._src import base
from jaxrnn._src import gates
from jaxrnn._src import lstm
from jaxrnn._src import recurrence
from jaxrnn._src import validation

Array = jax.Array


class ConvLSTMParams(NamedTuple):
  """Parameters of `conv_lstm`; gate blocks in the order ``i, f, g, o``.

  Attributes:
    w_x: ``[*kernel_size, C, 4Hc]`` input-to-hidden kernel (HWIO for 2-D).
    w_h: ``[*kernel_size, Hc, 4Hc]`` hidden-to-hidden kernel.
    b_x: ``[4Hc]`` input-side bias (holds the initial forget bias), or None.
    b_h: ``[4Hc]`` hidden-side bias, or None.
  """
  w_x: Array
  w_h: Array
  b_x: Optional[Array]
  b_h: Optional[Array]


class ConvLSTMConfig(NamedTuple):
  """The options a `conv_lstm` was built with.

  Attributes:
    hidden_channels: Hc.
    spatial_dims: the number of spatial axes (1, 2 or 3).
    kernel_size: one size per spatial axis.
    padding: ``(low, high)`` per spatial axis, each summing to its kernel
      size minus one (``"SAME"`` resolved as `jax.lax` resolves it).
    forget_bias: the initial forget-gate bias.
    bias: whether the cell has ``b_x`` and ``b_h``.
  """
  hidden_channels: int
  spatial_dims: int
  kernel_size: tuple[int, ...]
  padding: tuple[tuple[int, int], ...]
  forget_bias: float = 1.0
  bias: bool = True


def _positive_ints(name, value, n):
  """``value`` (an int or ``n`` ints) as a tuple of ``n`` positive ints."""
  values = None
  if isinstance(value, int) and not isinstance(value, bool):
    values = (value,) * n
  elif isinstance(value, (tuple, list)):
    values = tuple(value)
  if (values is None or len(values) != n or not all(
      isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)):
    raise ValueError(f"{name}: expected a positive int or {n} positive ints (one per spatial"
                     f" axis, spatial_dims={n}), got {value!r}.")
  return values


def resolve_padding(padding, kernel_size):
  """``((low, high), ...)`` for ``"SAME"``, ``"VALID"`` or explicit pairs; refuses any
  padding that would change the state's spatial shape."""
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"padding: expected 'SAME', 'VALID' or one (low, high) pair per spatial"
                       f" axis, got {padding!r}.")
    pads = tuple((int(low), int(high)) for low, high in lax.padtype_to_pads(
        kernel_size, kernel_size, (1,) * len(kernel_size), padding.upper()))
  else:
    try:
      pads = tuple((int(low), int(high)) for low, high in padding)
    except (TypeError, ValueError):
      raise ValueError(f"padding: expected 'SAME', 'VALID' or one (low, high) pair per spatial"
                       f" axis, got {padding!r}.") from None
  keeps = len(pads) == len(kernel_size) and all(
      low >= 0 and high >= 0 and low + high == k - 1 for (low, high), k in zip(pads, kernel_size))
  if not keeps:
    raise ValueError(
        f"padding: {padding!r} with kernel_size {list(kernel_size)} changes the spatial shape,"
        " but the state must keep it from step to step; expected 'SAME' or one (low, high) pair"
        f" per axis with low + high = kernel size - 1, i.e. {[k - 1 for k in kernel_size]}.")
  return pads


def _dimension_numbers(S, kernel_grad=False):
  """Dimension numbers of the three convolutions, for ``S`` spatial axes.

  Arrays are channels-last (``[N, *spatial, C]``, NHWC) and kernels
  ``[*K, I, O]`` (HWIO). For the kernel gradient the batch axis ``N`` is
  contracted: the input is read as ``[C (batch), *spatial, N (feature)]`` and
  the output gradient as a kernel ``[O, N, *spatial]``, giving ``[*K, C, O]``.
  """
  spatial = tuple(range(1, S + 1))
  kernel_spatial = tuple(range(S))
  if kernel_grad:
    return lax.ConvDimensionNumbers((S + 1, 0) + spatial, (S + 1, 0) + spatial,
                                    (S, S + 1) + kernel_spatial)
  return lax.ConvDimensionNumbers((0, S + 1) + spatial, (S + 1, S) + kernel_spatial,
                                  (0, S + 1) + spatial)


def conv(x, w, pads):
  """``x [..., *spatial, I]`` convolved with ``w [*K, I, O]``: ``[..., *spatial, O]``.

  Any number of leading axes (time, batch, or none for an unbatched step)
  are folded into the convolution's batch axis.
  """
  S = len(pads)
  lead = x.shape[:x.ndim - S - 1]
  out = lax.conv_general_dilated(x.reshape((-1,) + x.shape[len(lead):]), w, (1,) * S, pads,
                                 dimension_numbers=_dimension_numbers(S))
  return out.reshape(lead + out.shape[1:])


def transposed_kernel(w):
  """``w [*K, I, O]`` as the kernel ``[*K, O, I]`` of its transposed convolution (flipped)."""
  S = w.ndim - 2
  return jnp.swapaxes(lax.rev(w, tuple(range(S))), -1, -2)


def transposed_pads(pads):
  """The padding of the transposed convolution: ``(high, low)`` per axis."""
  return tuple((high, low) for low, high in pads)


def kernel_grad(x, d_out, pads):
  """``sum_{n, p} x[n, p + k] d_out[n, p]`` over all leading axes: the kernel's gradient."""
  S = len(pads)
  fold = lambda a: a.reshape((-1,) + a.shape[a.ndim - S - 1:])
  return lax.conv_general_dilated(fold(x), fold(d_out), (1,) * S, pads,
                                  dimension_numbers=_dimension_numbers(S, kernel_grad=True))


def conv_lstm(hidden_channels: int, *, kernel_size: Union[int, Sequence[int]],
              spatial_dims: int = 2, padding: Union[str, Sequence[tuple[int, int]]] = "SAME",
              forget_bias: float = 1.0, bias: bool = True) -> base.Model:
  r"""Convolutional LSTM (Shi et al. 2015, without peepholes), as Flax's ``ConvLSTMCell``.

  The LSTM of `lstm` with convolutions in place of the matmuls, over inputs
  ``x_t`` ``[B, *spatial, C]`` and states ``[B, *spatial, Hc]`` (channels
  last: NWC, NHWC or NDHWC, for ``spatial_dims`` 1, 2 or 3). With ``*`` the
  convolution (a cross-correlation, stride 1, padding that keeps the spatial
  shape) and :math:`a_t = W_x * x_t + b_x + W_h * h_{t-1} + b_h` split along
  the channels into four blocks, gate order ``i, f, g, o``:

  .. math::
    i_t = \sigma(a^i_t), \quad f_t = \sigma(a^f_t), \quad
    g_t = \tanh(a^g_t), \quad o_t = \sigma(a^o_t) \\
    c_t = f_t \odot c_{t-1} + i_t \odot g_t, \qquad
    h_t = o_t \odot \tanh(c_t), \qquad y_t = h_t

  The state is `LSTMState(hidden=h, cell=c)`, each ``[B, *spatial, Hc]``.
  The spatial sizes are not part of the model: like Flax's
  ``ConvLSTMCell.initialize_carry(rng, input_shape)``, they come from the
  inputs, so one model (and one set of parameters) runs on inputs of any
  spatial size. `unroll` and `bptt` read them from ``xs``; to build a state
  yourself, pass them to ``initial_state(params, batch_size,
  spatial_shape=(H, W))``.
  Kernels are ``[*kernel_size, in, 4Hc]`` (HWIO in 2-D, Flax's ``nn.Conv``
  layout); each bias adds one value per channel at every position.

  Biases: ``forget_bias`` is the initial value of the forget block of
  ``b_x`` (``b_h``'s forget block starts at 0), set once by ``init``; nothing
  is added at each step. Flax's ``ConvLSTMCell`` (gate order ``i, g, f, o``,
  zero-initialised biases) adds a constant 1 to the forget gate at every
  step; `jaxrnn.interop.from_flax` moves that 1 into ``b_h``. All other
  weights and biases start ``U(-1/sqrt(n), 1/sqrt(n))`` with
  ``n = Hc * prod(kernel_size)``, the fan-in of the recurrent convolution
  (PyTorch's RNN rule with the convolution's fan-in for ``H``).

  Backward: the per-position gate gradients :math:`\delta_t` are the LSTM's
  (see `lstm`); the convolutions then give

  .. math::
    \partial L/\partial h_{t-1} = \delta_t \star \tilde W_h, \qquad
    \partial L/\partial x_t = \delta_t \star \tilde W_x \\
    \partial L/\partial W_h[k] = \textstyle\sum_{t,b,p} h_{t-1}[b, p + k]^\top \delta_t[b, p],
    \quad \partial L/\partial W_x[k] = \sum_{t,b,p} x_t[b, p + k]^\top \delta_t[b, p]

  where :math:`\tilde W` is the kernel flipped in space with its in and out
  channels swapped and :math:`\star` the convolution padded ``(high, low)``
  (the transposed convolution), and the bias gradients are
  :math:`\sum_{t,b,p} \delta_t`. The input projection of all steps is one
  convolution before the time loop, the reverse scan runs one transposed
  convolution per step, and the kernel gradients are one convolution each
  over all ``T*B`` frames after it (`jax.lax.conv_general_dilated`).

  `recurrent_dropout` masks :math:`h_{t-1}` where it enters :math:`W_h *
  h_{t-1}` (one mask ``[B, *spatial, Hc]`` per sequence) and `zoneout` acts on
  :math:`h` and :math:`c`; their masks are read by this backward too.

  Args:
    hidden_channels: Hc, the channels of the state and output.
    kernel_size: an int (the same on every axis) or one int per spatial axis.
    spatial_dims: the number of spatial axes of the inputs, 1, 2 or 3
      (inputs ``[T, B, *spatial, C]`` with ``len(spatial) == spatial_dims``).
    padding: ``"SAME"`` (as `jax.lax` and Flax pad it; an even kernel gets
      the extra row on the high side), or one ``(low, high)`` pair per axis
      with ``low + high = kernel_size - 1``. The state must keep its spatial
      shape from step to step, so padding that changes it is refused here,
      at construction: ``"VALID"`` is accepted only where it pads nothing and
      keeps the sizes, a kernel of 1 on every axis.
    forget_bias: initial value of the forget-gate bias.
    bias: whether to have ``b_x`` and ``b_h``.

  Returns:
    A `Model` with `ConvLSTMParams` parameters and `LSTMState` states, whose
    inputs are ``[T, B, *spatial, C]`` (``input_size`` is ``C``) and outputs
    ``[T, B, *spatial, Hc]``; ``model.spatial_dims`` is ``spatial_dims``.

  Raises:
    ValueError: a bad option, or padding that changes the spatial shape.

  References:
    Shi, Chen, Wang, Yeung, Wong and Woo, *Convolutional LSTM network: a
    machine learning approach for precipitation nowcasting*, NeurIPS 2015.
    Hochreiter and Schmidhuber, *Long short-term memory*, 1997.
  """
  if (not isinstance(hidden_channels, int) or isinstance(hidden_channels, bool)
      or hidden_channels < 1):
    raise ValueError(f"hidden_channels must be a positive int, got {hidden_channels!r}.")
  if isinstance(spatial_dims, bool) or spatial_dims not in (1, 2, 3):
    raise ValueError(f"spatial_dims: expected 1, 2 or 3 (the number of spatial axes of the"
                     f" inputs [T, B, *spatial, C]), got {spatial_dims!r}.")
  S = int(spatial_dims)
  kernel_size = _positive_ints("kernel_size", kernel_size, S)
  pads = resolve_padding(padding, kernel_size)
  Hc = hidden_channels
  if not bias and forget_bias != 0.0:
    raise ValueError("forget_bias needs bias=True; pass forget_bias=0.0 with bias=False.")
  config = ConvLSTMConfig(Hc, S, kernel_size, pads, forget_bias, bias)

  def init(key, input_size):
    if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 1:
      raise ValueError(f"input_size: expected a positive int (the input channels C), got"
                       f" {input_size!r}.")
    dtype = jnp.zeros(()).dtype
    bound = 1.0 / math.sqrt(Hc * math.prod(kernel_size))
    k_x, k_h, k_bx, k_bh = jax.random.split(key, 4)
    uniform = lambda k, shape: jax.random.uniform(k, shape, dtype, -bound, bound)
    w_x = uniform(k_x, kernel_size + (input_size, 4 * Hc))
    w_h = uniform(k_h, kernel_size + (Hc, 4 * Hc))
    if not bias:
      return ConvLSTMParams(w_x, w_h, None, None)
    b_x = uniform(k_bx, (4 * Hc,)).at[Hc:2 * Hc].set(forget_bias)
    b_h = uniform(k_bh, (4 * Hc,)).at[Hc:2 * Hc].set(0.0)
    return ConvLSTMParams(w_x, w_h, b_x, b_h)

  def initial_state(params, batch_size, *, spatial_shape=()):
    shape = validation.check_spatial_shape(spatial_shape, S, "conv_lstm") + (Hc,)
    if batch_size is not None:
      shape = (batch_size,) + shape
    zeros = jnp.zeros(shape, params.w_h.dtype)
    return lstm.LSTMState(zeros, zeros)

  def project(params, xs, one_step=False):
    del one_step  # one convolution over all gates either way
    a = conv(xs, params.w_x, pads)
    return a if params.b_x is None else a + (params.b_x + params.b_h)

  def recur(params, state, a_x, keep=None):
    a = a_x + conv(gates.kept(state.hidden, keep), params.w_h, pads)
    return lstm.gate_update(a, state.cell, Hc)

  back = transposed_pads(pads)

  def recur_bwd(params, w_h_t, state, new_state, res, d_state, d_y, keep=None):
    delta, d_c_prev = lstm.gate_update_bwd(res, d_state, d_y)
    d_h_prev = gates.kept(conv(delta, w_h_t, back), keep)
    return recurrence.StepGrads(lstm.LSTMState(d_h_prev, d_c_prev), delta)

  def param_grads(params, xs, states, res, delta, keep=None):
    d_b = gates.sum_rows(delta)
    d_params = ConvLSTMParams(kernel_grad(xs, delta, pads),
                              kernel_grad(gates.kept(states.hidden, keep), delta, pads),
                              *gates.bias_grads(params, d_b, d_b))
    return d_params, conv(delta, transposed_kernel(params.w_x), back)

  kernel = recurrence.Kernel(
      project=project, recur=recur, output=lambda s, res: s.hidden, recur_bwd=recur_bwd,
      param_grads=param_grads,
      transposed_weights=lambda params: transposed_kernel(params.w_h),
      grad_norm=recurrence.hidden_grad_norm(lambda s: s.hidden),
      mask_hooks=recurrence.MaskHooks(
          recur, recur_bwd, param_grads,
          output_grad=lambda d_y, s: lstm.LSTMState(d_y, jnp.zeros_like(s.cell))))
  return recurrence.kernel_cell(
      kernel, init=init, initial_state=initial_state,
      input_size=lambda params: params.w_x.shape[-2], output_size=Hc, config=config,
      name="conv_lstm", spatial_dims=S)
