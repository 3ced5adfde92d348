"""Regularisers of the recurrence: `recurrent_dropout` and `zoneout`.

Each wraps a built-in cell's `recurrence.Kernel` into another kernel, so the
wrapped cell keeps its time loop and its hand-derived backward; the
regulariser's own backward (multiplications by the masks) is written here by
hand. The masks are drawn once per call, before the time loop, from the
``rng`` that `unroll` or `bptt` was given, and travel through the loop as
data, so the forward, the explicit backward, ``backward="autodiff"`` and
``remat_chunk``'s recomputation all see the same ones.
"""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import conv_lstm
from jaxrnn._src import lstm
from jaxrnn._src import recurrence
from jaxrnn._src import validation

Array = jax.Array

# Folded into a cell's key so that its masks differ from a `stack`'s dropout
# (which folds in 0) and from each other.
_DROPOUT_STREAM, _ZONEOUT_STREAM = 1, 2


class RecurrentDropoutConfig(NamedTuple):
  """A `recurrent_dropout` around ``cell`` (its config), dropping at ``rate``."""
  cell: Any
  rate: float


class ZoneoutConfig(NamedTuple):
  """A `zoneout` around ``cell`` (its config).

  Attributes:
    cell: the wrapped cell's config.
    rate: the probability that a unit of the hidden state keeps its value.
    cell_rate: the same for the cell state of the LSTM and the ConvLSTM, or
      None for cells without one.
  """
  cell: Any
  rate: float
  cell_rate: Optional[float]


class KeptParams(NamedTuple):
  """What the kernel of `recurrent_dropout` reads as its parameters.

  Attributes:
    params: the wrapped cell's parameters.
    keep: ``[B, O]`` (``[B, *spatial, O]`` for a `conv_lstm`) multiplier of
      the hidden state where the recurrent weights read it: 0 or
      ``1/(1-rate)``. A constant: its gradient is zero.
  """
  params: base.Params
  keep: Array


def recurrent_dropout(cell: base.Model, rate: float) -> base.Model:
  r"""Variational dropout on the hidden state that the recurrence reads (Gal and Ghahramani 2016).

  With an ``rng`` given to `unroll` or `bptt`, each sequence draws one mask
  :math:`m` over the units of the hidden state (shape ``[B, O]``, ``O`` the
  cell's output size), the same at every step, and the recurrent weights
  read :math:`h_{t-1} \odot m / (1 - p)` instead of :math:`h_{t-1}`:

  .. math::
    m_{b,j} \sim \mathrm{Bernoulli}(1 - p), \qquad
    \tilde h_{t-1} = h_{t-1} \odot m / (1 - p)

  (inverted dropout, so the expectation is unchanged). The mask is applied
  only where the state meets the recurrent weights ``w_h``, as Keras's
  ``recurrent_dropout`` does: the LSTM's ``h`` in :math:`h_{t-1} W_h` (not its
  cell :math:`c`, nor :math:`c` in the peepholes), the ConvLSTM's ``h`` in the
  recurrent convolution :math:`W_h * h_{t-1}` (one mask ``[B, *spatial, Hc]``
  per sequence, a unit per position and channel, like Keras's
  ``ConvLSTM2D(recurrent_dropout=...)``), the RNN's :math:`h_{t-1}`,
  and for the GRU and MGU :math:`h_{t-1}` in the recurrent matmul (the GRU's
  :math:`(r_t \odot \tilde h_{t-1}) W^n_h` with ``reset_after=False``) but not
  in the carry :math:`z_t \odot h_{t-1}` (:math:`f_t \odot h_{t-1}`), which
  stays exact. One mask serves all gate blocks, as in Keras 3 (Keras 2's
  ``implementation=1`` draws one per gate). The outputs :math:`y_t = h_t` are
  not masked: dropout between layers is `stack`'s ``dropout``.

  Without ``rng`` (evaluation, ``step``) the cell is unchanged. With one, the
  mask is drawn from ``fold_in(rng, 1)`` (`stack` and `bidirectional` give
  each layer and direction its own ``rng``); a sequence keeps its mask across
  ``resets``. The backward is the cell's own with the mask applied to the
  gradient that leaves through :math:`\tilde h_{t-1}`,
  :math:`\partial L/\partial h_{t-1} \mathrel{+}= (\delta_t W_h^\top) \odot
  m / (1 - p)`, and ``w_h``'s gradient is :math:`\sum_t \tilde h_{t-1}^\top
  \delta_t` (for the ConvLSTM, the transposed convolution of
  :math:`\delta_t` masked likewise, and ``w_h``'s gradient the convolution
  of :math:`\tilde h_{t-1}` with :math:`\delta_t`).

  Args:
    cell: a built-in cell (`rnn`, `lstm` with any options, `gru`, `mgu`,
      `conv_lstm`).
    rate: the drop probability ``p``, in ``[0, 1)``.

  Returns:
    A `Model` with the cell's parameters and states and a
    `RecurrentDropoutConfig`.

  Raises:
    ValueError: a bad ``rate``, or a model that is not a built-in cell.

  References:
    Gal and Ghahramani, *A theoretically grounded application of dropout in
    recurrent neural networks*, NeurIPS 2016.
  """
  _check_rate("rate", rate)
  kernel, hooks = _kernel_of("recurrent_dropout", cell)
  rate = float(rate)

  def forward(params, xs, state, ctx):
    if ctx.rng is None:
      return cell.forward(params, xs, state, ctx)
    B = xs.shape[1]
    shape = (B,) + xs.shape[2:-1] + (cell.output_size,)  # spatial axes, if any
    draw = jax.random.bernoulli(jax.random.fold_in(ctx.rng, _DROPOUT_STREAM), 1.0 - rate, shape)
    dtype = jax.tree.leaves(state)[0].dtype
    keep = jnp.where(draw, jnp.asarray(1.0 / (1.0 - rate), dtype), jnp.zeros((), dtype))
    return recurrence.run_time_loop(_dropout_kernel(kernel, hooks), KeptParams(params, keep),
                                    xs, state, ctx)

  # No parallel-in-time path: its masks are drawn for the sequential loop.
  return cell._replace(forward=forward, config=RecurrentDropoutConfig(cell.config, rate),
                       kernel=None, parallel_forward=None)


def _dropout_kernel(kernel, hooks):
  """``kernel`` reading the hidden state through ``keep`` (`KeptParams`)."""

  def param_grads(kept, xs, states, res, d_pre):
    d_params, d_xs = hooks.param_grads(kept.params, xs, states, res, d_pre, kept.keep)
    return KeptParams(d_params, jnp.zeros_like(kept.keep)), d_xs

  return kernel._replace(
      project=lambda kept, xs, one_step=False: kernel.project(kept.params, xs, one_step),
      recur=lambda kept, state, gx: hooks.recur(kept.params, state, gx, kept.keep),
      recur_bwd=lambda kept, w_t, *args: hooks.recur_bwd(kept.params, w_t, *args, kept.keep),
      param_grads=param_grads,
      transposed_weights=lambda kept: kernel.transposed_weights(kept.params),
      mask_hooks=None)


def zoneout(cell: base.Model, rate: float, *, cell_rate: Optional[float] = None) -> base.Model:
  r"""Zoneout (Krueger et al. 2017): units of the state keep their previous value at random.

  With an ``rng`` given to `unroll` or `bptt` (training), each unit of the
  state, at each step, keeps its previous value with probability ``rate``
  and otherwise takes the cell's update :math:`h'_t`, with a fresh mask every
  step:

  .. math::
    m_t \sim \mathrm{Bernoulli}(\mathrm{rate}), \qquad
    h_t = m_t \odot h_{t-1} + (1 - m_t) \odot h'_t.

  Without ``rng`` (evaluation, and ``step``) the mask is replaced by its
  expectation, :math:`h_t = \mathrm{rate}\, h_{t-1} + (1 - \mathrm{rate})\,
  h'_t`, as in the paper. For the LSTM and the ConvLSTM both :math:`h` and
  :math:`c` are zoned out (for the ConvLSTM each position and channel on its
  own), :math:`c` with ``cell_rate`` (default: ``rate``) and its own mask;
  for the RNN, GRU and MGU the state is :math:`h`. The output is the
  zoned-out hidden state, :math:`y_t = h_t`, as in the paper. At a reset the
  previous state is the initial state.

  The masks are drawn from ``fold_in(rng, 2)`` for the whole sequence, ``[T,
  B, ...]`` per state field. The backward, with :math:`g = \partial L /
  \partial h_t` (from step ``t+1`` and from :math:`y_t`): the cell's own
  backward of :math:`h'_t` with :math:`(1 - m_t) \odot g`, and
  :math:`\partial L/\partial h_{t-1} \mathrel{+}= m_t \odot g`.

  Args:
    cell: a built-in cell (`rnn`, `lstm` with any options, `gru`, `mgu`,
      `conv_lstm`).
    rate: the probability of keeping the previous hidden state, in ``[0, 1)``.
    cell_rate: the cell-state rate of the LSTM or ConvLSTM, in ``[0, 1)``;
      None uses ``rate``. Only for those two.

  Returns:
    A `Model` with the cell's parameters and states and a `ZoneoutConfig`.

  Raises:
    ValueError: a bad rate, ``cell_rate`` for a cell without a cell state, or
      a model that is not a built-in cell.

  References:
    Krueger et al., *Zoneout: regularizing RNNs by randomly preserving hidden
    activations*, ICLR 2017.
  """
  _check_rate("rate", rate)
  kernel, hooks = _kernel_of("zoneout", cell)
  has_cell = isinstance(cell.config, (lstm.LSTMConfig, conv_lstm.ConvLSTMConfig))
  if cell_rate is not None:
    if not has_cell:
      raise ValueError(f"cell_rate: {_name(cell)} has no cell state (only the LSTM and the"
                       " ConvLSTM have one);"
                       f" pass rate alone, got cell_rate={cell_rate!r}.")
    _check_rate("cell_rate", cell_rate)
  rate = float(rate)
  cell_rate = (rate if cell_rate is None else float(cell_rate)) if has_cell else None
  rates = lambda state: state._replace(hidden=rate, cell=cell_rate) if has_cell else rate
  wrapped = _zoneout_kernel(kernel, hooks)

  def expected(state, shape):
    """The expectation of the masks, shaped ``shape + state's``."""
    return jax.tree.map(lambda s, r: jnp.full(shape + s.shape, r, s.dtype), state, rates(state))

  def sampled(rng, state, T):
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.fold_in(rng, _ZONEOUT_STREAM), len(leaves))
    draws = [jax.random.bernoulli(k, r, (T,) + s.shape).astype(s.dtype)
             for k, s, r in zip(keys, leaves, jax.tree.leaves(rates(state)))]
    return jax.tree.unflatten(treedef, draws)

  def forward(params, xs, state, ctx):
    T = xs.shape[0]
    masks = expected(state, (T,)) if ctx.rng is None else sampled(ctx.rng, state, T)
    return recurrence.run_time_loop(wrapped, params, xs, state, ctx, noise=masks)

  def step(params, state, x):
    validation.check_step_input("zoneout", x, cell.input_size(params), cell.spatial_dims)
    gx = kernel.project(params, x, one_step=True)
    new_state, res = wrapped.recur(params, state, (gx, expected(state, ())))
    return new_state, wrapped.output(new_state, res)

  return cell._replace(step=step, forward=forward,
                       config=ZoneoutConfig(cell.config, rate, cell_rate), kernel=None,
                       parallel_forward=None)


class _ZoneoutResiduals(NamedTuple):
  """A step's activations: the cell's own, its update ``h'`` and the mask."""
  res: Any
  update: base.State
  mask: base.State


def _zoneout_kernel(kernel, hooks):
  """``kernel`` whose ``recur`` reads ``(gx_t, mask_t)`` and mixes old and new states."""

  def recur(params, state, gx_and_mask):
    gx, mask = gx_and_mask
    update, res = kernel.recur(params, state, gx)
    new_state = jax.tree.map(lambda m, old, new: m * old + (1 - m) * new, mask, state, update)
    return new_state, _ZoneoutResiduals(res, update, mask)

  def recur_bwd(params, w_t, state, new_state, zres, d_new_state, d_y):
    g = base.tree_add(d_new_state, hooks.output_grad(d_y, new_state))
    d_update = jax.tree.map(lambda m, d: (1 - m) * d, zres.mask, g)
    grads = kernel.recur_bwd(params, w_t, state, zres.update, zres.res, d_update,
                             jnp.zeros_like(d_y))
    d_state = jax.tree.map(lambda d, m, d_g: d + m * d_g, grads.d_state, zres.mask, g)
    return grads._replace(d_state=d_state)

  def param_grads(params, xs, states, zres, d_pre):
    return kernel.param_grads(params, xs, states, zres.res, d_pre)

  return kernel._replace(
      recur=recur, recur_bwd=recur_bwd, param_grads=param_grads,
      output=lambda new_state, zres: kernel.output(new_state, zres.res), mask_hooks=None)


def _check_rate(name, rate):
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
    raise ValueError(f"{name}: expected a probability in [0, 1), got {rate!r}.")


def _name(model):
  config = model.config
  return getattr(config, "name", None) or type(config).__name__


def _kernel_of(regulariser, cell):
  """The kernel and `MaskHooks` of a built-in cell, or a clear refusal."""
  if not isinstance(cell, base.Model):
    raise TypeError(f"{regulariser}: expected a jaxrnn cell, got {type(cell).__name__}.")
  kernel = cell.kernel
  if isinstance(cell.config, (RecurrentDropoutConfig, ZoneoutConfig)):
    raise ValueError(f"{regulariser}: the cell is already wrapped in"
                     f" {type(cell.config).__name__}; apply one regulariser per cell.")
  if kernel is None or kernel.mask_hooks is None:
    raise ValueError(
        f"{regulariser}: expected a built-in cell (jaxrnn.rnn, lstm, gru, mgu, conv_lstm), got"
        f" {_name(cell)}. Composites are regularised per layer (wrap each cell before"
        " stack or bidirectional); a custom_cell or a kernel without MaskHooks cannot be"
        " wrapped: write the regulariser into its step.")
  return kernel, kernel.mask_hooks


