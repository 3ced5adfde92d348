"""The LSTM cell, with its hand-derived backward."""

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import gates
from jaxrnn._src import recurrence

Array = jax.Array


LAYER_NORM_EPS = 1e-5


class LayerNormParams(NamedTuple):
  """The gain and offset of one layer normalisation.

  Attributes:
    scale: ``[N]`` gain, initialised to ones.
    offset: ``[N]`` offset, initialised to zeros.
  """
  scale: Array
  offset: Array


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
    ln_x: `LayerNormParams` (``[4H]``) of ``LN(x W_x)`` (``layer_norm=True``), or None.
    ln_h: `LayerNormParams` (``[4H]``) of ``LN(h W_h)``, or None.
    ln_c: `LayerNormParams` (``[H]``) of ``LN(c)``, or None.
  """
  w_x: Array
  w_h: Array
  b_x: Optional[Array]
  b_h: Optional[Array]
  w_peep: Optional[Array] = None
  w_proj: Optional[Array] = None
  ln_x: Optional[LayerNormParams] = None
  ln_h: Optional[LayerNormParams] = None
  ln_c: Optional[LayerNormParams] = None



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
    layer_norm: whether the cell is layer-normalised (``ln_x``, ``ln_h``, ``ln_c``).
  """
  hidden_size: int
  forget_bias: float = 1.0
  bias: bool = True
  dtype: Any = None
  peephole: bool = False
  proj_size: Optional[int] = None
  layer_norm: bool = False


def options_of(config):
  """The options of a cell's config beyond the plain LSTM's, as ``["peephole=True", ...]``."""
  return [f"{name}={getattr(config, name)!r}" for name, plain in _PLAIN.items()
          if getattr(config, name, plain) != plain]


_PLAIN = {"peephole": False, "proj_size": None, "layer_norm": False}


def lstm(hidden_size, *, peephole=False, layer_norm=False, proj_size=None, forget_bias=None,
         bias=True, recurrent_init="uniform", dtype=None):
  r"""Long short-term memory (Hochreiter and Schmidhuber 1997).

  Gate order ``i, f, g, o`` (PyTorch's), with
  :math:`a_t = x_t W_x + b_x + h_{t-1} W_h + b_h` split into four blocks:

  .. math::
    i_t = \sigma(a^i_t), \quad f_t = \sigma(a^f_t), \quad
    g_t = \tanh(a^g_t), \quad o_t = \sigma(a^o_t) \\
    c_t = f_t \odot c_{t-1} + i_t \odot g_t, \qquad
    h_t = o_t \odot \tanh(c_t), \qquad y_t = h_t

  The state is `LSTMState(hidden=h, cell=c)`.

  Biases: ``forget_bias`` (default 1.0) is the initial value of the
  forget-gate block of ``b_x`` (``b_h``'s forget block starts at 0), set once
  by ``init`` as in Keras's ``unit_forget_bias`` (Jozefowicz et al. 2015);
  unlike Haiku, nothing is added at every step. With ``bias=False`` there is
  no forget bias (a non-zero ``forget_bias`` is refused). All other weights
  and biases start ``U(-1/sqrt(H), 1/sqrt(H))`` as in PyTorch.

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
  forward keeps :math:`h_t` and the step's own derivatives
  (`GateResiduals`: :math:`\partial c_t/\partial a^{i,f,g}`,
  :math:`\partial h_t/\partial a^o`, :math:`o_t (1 - \tanh^2 c_t)` and
  :math:`f_t`), computed where the activations are at hand, so the reverse
  step is the two lines above for :math:`\bar c` and :math:`\delta` and its
  matmul.

  Jacobian of the state :math:`s = [h, c]` (2H, for `parallel_unroll`), with
  :math:`k = o_t (1 - \tanh^2 c_t)` and
  :math:`G = \mathrm{diag}(g_t i_t (1 - i_t)) W^{i\top}_h
  + \mathrm{diag}(c_{t-1} f_t (1 - f_t)) W^{f\top}_h
  + \mathrm{diag}(i_t (1 - g_t^2)) W^{g\top}_h = \partial c_t / \partial h_{t-1}`:

  .. math::
    \frac{\partial s_t}{\partial s_{t-1}} = \begin{bmatrix}
      \mathrm{diag}(k) G + \mathrm{diag}(\tanh c_t\, o_t (1 - o_t)) W^{o\top}_h &
      \mathrm{diag}(k f_t) \\ G & \mathrm{diag}(f_t) \end{bmatrix}

  With ``peephole``, ``proj_size`` or ``layer_norm`` it is derived by hand
  too, in ``_options_jacobian``.

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

  with :math:`\delta^{i,f,g}` as above.

  ``layer_norm=True`` (Ba et al. 2016, their LSTM) normalises the two
  projections, each over all ``4H`` gate units, and the cell state:

  .. math::
    a_t = \mathrm{LN}_x(x_t W_x) + \mathrm{LN}_h(h_{t-1} W_h) + b_x + b_h, \qquad
    h_t = o_t \odot \tanh(\mathrm{LN}_c(c_t)) \\
    \mathrm{LN}(z) = \gamma \odot \hat z + \beta, \quad
    \hat z = (z - \mu) / \sqrt{\sigma^2 + \epsilon}

  with :math:`\mu, \sigma^2` the mean and variance over the last axis and
  :math:`\epsilon` = ``LAYER_NORM_EPS`` = 1e-5. The parameters are
  ``ln_x`` and ``ln_h`` (`LayerNormParams`, gain ``scale`` and offset
  ``offset``, ``[4H]``) and ``ln_c`` (``[H]``); gains start at ones, offsets
  at zeros; ``b_x`` keeps the forget bias. Backward, for
  :math:`y = \mathrm{LN}(z)` and :math:`\bar y = \partial L/\partial y`:

  .. math::
    \partial L/\partial z = \frac{1}{\sqrt{\sigma^2 + \epsilon}}\,
      (u - \mathrm{mean}(u) - \hat z\, \mathrm{mean}(u \odot \hat z)), \quad
    u = \gamma \odot \bar y, \quad
    \partial L/\partial\gamma = \textstyle\sum \bar y \odot \hat z, \quad
    \partial L/\partial\beta = \sum \bar y

  applied to :math:`\bar y = g_h \odot o_t \odot (1 - \tanh^2 \mathrm{LN}_c(c_t))`
  for ``ln_c`` and to :math:`\bar y = \delta_t` for ``ln_h`` (in the reverse
  step, before :math:`\delta_t W_h^\top`) and ``ln_x`` (over all ``T*B``
  rows after the loop, recomputing :math:`x_t W_x` with one matmul).
  ``layer_norm`` does not combine with ``peephole`` or ``proj_size``.

  These options run their own step
  functions, chosen when the cell is built; the plain LSTM's are unchanged.

  Args:
    hidden_size: H.
    peephole: whether to add the diagonal peephole weights ``w_peep``.
    layer_norm: whether to layer-normalise the gate projections and the cell
      state.
    proj_size: P, a positive int, to project the hidden state to P units; or
      None.
    forget_bias: initial value of the forget-gate bias; None means 1.0 with
      ``bias=True`` and none without.
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
    Ba, Kiros and Hinton, *Layer normalization*, arXiv:1607.06450, 2016.
  """
  gates.check_options(hidden_size, recurrent_init)
  if proj_size is not None and (not isinstance(proj_size, int) or isinstance(proj_size, bool)
                                or proj_size < 1):
    raise ValueError(f"proj_size must be a positive int or None (no projection), got"
                     f" {proj_size!r}.")
  if layer_norm and (peephole or proj_size is not None):
    raise ValueError(f"layer_norm=True does not combine with peephole={peephole!r} or"
                     f" proj_size={proj_size!r}; use layer_norm alone, or peephole and proj_size"
                     " without it.")
  if forget_bias is None:
    forget_bias = 1.0 if bias else 0.0
  elif not bias and forget_bias != 0.0:
    raise ValueError(f"forget_bias: bias=False has no bias to hold forget_bias={forget_bias!r};"
                     " leave forget_bias unset (or 0.0) with bias=False.")
  H = hidden_size
  config = LSTMConfig(H, forget_bias, bias, dtype, peephole=bool(peephole), proj_size=proj_size,
                      layer_norm=bool(layer_norm))

  def init(key, input_size):
    w_x, w_h, b_x, b_h = gates.init_weights(key, input_size, H, 4, bias, recurrent_init)
    if b_x is not None and b_h is not None:  # bias=True
      b_x = b_x.at[H:2 * H].set(forget_bias)
      b_h = b_h.at[H:2 * H].set(0.0)
    params = LSTMParams(w_x, w_h, b_x, b_h)
    if peephole:
      params = params._replace(w_peep=jnp.zeros((3, H), w_h.dtype))
    if proj_size is not None:
      params = params._replace(**_projection_init(key, H, proj_size, recurrent_init, w_h.dtype))
    if layer_norm:
      ln = lambda n: LayerNormParams(jnp.ones((n,), w_h.dtype), jnp.zeros((n,), w_h.dtype))
      params = params._replace(ln_x=ln(4 * H), ln_h=ln(4 * H), ln_c=ln(H))
    return params

  def initial_state(params, batch_size):
    c = gates.zeros_state(H, params, batch_size)
    h = c if proj_size is None else gates.zeros_state(proj_size, params, batch_size)
    return LSTMState(h, c)

  if peephole or proj_size is not None or layer_norm:
    return recurrence.kernel_cell(
        _options_kernel(H, peephole, proj_size, layer_norm, dtype), init=init,
        initial_state=initial_state, input_size=gates.input_size_of,
        output_size=proj_size or H, config=config, name="lstm")

  def project(params, xs, one_step=False):
    return gates.project(params, xs, dtype, fold_b_h=True, one_step=one_step)

  def recur(params, state, gx, keep=None):
    a = jnp.concatenate(gx, axis=-1) + base.matmul(gates.kept(state.hidden, keep), params.w_h,
                                                   dtype)
    return gate_update(a, state.cell, H)

  def recur_bwd(params, w_h_t, state, new_state, res, d_state, d_y, keep=None):
    delta, d_c_prev = gate_update_bwd(res, d_state, d_y)
    d_prev = LSTMState(gates.kept(base.matmul(delta, w_h_t, dtype), keep), d_c_prev)
    return recurrence.StepGrads(d_prev, delta)

  def param_grads(params, xs, states, res, delta, keep=None):
    return gates.dense_param_grads(LSTMParams, params, xs, states.hidden, delta, delta, keep,
                                   dtype)

  def recur_jac(params, state, new_state, res, diagonal):
    d_gates, k, f = res
    d_c = d_gates[..., :3 * H]  # d c_t / d a^{i, f, g}
    j_ch = gates.gate_jacobian(
        params.w_h, jnp.concatenate([d_c, jnp.zeros_like(k)], -1), diagonal)
    j_hh = gates.gate_jacobian(
        params.w_h, jnp.concatenate([jnp.tile(k, 3) * d_c, d_gates[..., 3 * H:]], -1),
        diagonal)
    if diagonal:
      return jnp.concatenate([j_hh, f], axis=-1)
    return jnp.concatenate([jnp.concatenate([j_hh, _diag(k * f)], -1),
                            jnp.concatenate([j_ch, _diag(f)], -1)], axis=-2)

  kernel = recurrence.Kernel(
      project=project, recur=recur, output=lambda s, res: s.hidden, recur_bwd=recur_bwd,
      param_grads=param_grads, transposed_weights=gates.transposed_w_h,
      grad_norm=recurrence.hidden_grad_norm(lambda s: s.hidden),
      mask_hooks=recurrence.MaskHooks(recur, recur_bwd, param_grads, _output_grad),
      recur_jac=recur_jac)
  return recurrence.kernel_cell(
      kernel, init=init, initial_state=initial_state, input_size=gates.input_size_of,
      output_size=H, config=config, name="lstm")


class GateResiduals(NamedTuple):
  """What an LSTM step keeps for its backward: the step's own derivatives.

  With ``a`` the gate pre-activations (blocks ``i, f, g, o``), computed in
  the forward step where its activations are at hand, so that the reverse
  step is a few multiplies and its matmul (BUILD.md, issue 17, has the
  measurement).

  Attributes:
    d_gates: ``[..., 4H]``: ``dc_t/da^i = g i (1 - i)``, ``dc_t/da^f =
      c_{t-1} f (1 - f)``, ``dc_t/da^g = i (1 - g^2)`` and ``dh_t/da^o =
      tanh(c_t) o (1 - o)``.
    d_cell: ``[..., H]``: ``dh_t/dc_t = o (1 - tanh^2 c_t)``.
    forget: ``[..., H]``: ``f_t = dc_t/dc_{t-1}``.
  """
  d_gates: Array
  d_cell: Array
  forget: Array


def gate_update(a, cell, H):
  """The LSTM's step from its gate pre-activations ``a`` (``[..., 4H]``, blocks ``i, f, g, o``).

  Returns ``(LSTMState(h, c), GateResiduals)``, the residuals for
  `gate_update_bwd`. One ``tanh`` computes all four gates
  (`gates.gate_scale`). Shared by `lstm` and `conv_lstm`, whose
  pre-activations differ.
  """
  s = gates.gate_scale(H, (1, 1, 0, 1), a.dtype)
  t = jnp.tanh(a * s)
  act = s * t + (1 - s)
  i, f, g, o = _split(act, H)
  c = f * cell + i * g
  tc = jnp.tanh(c)
  h = o * tc
  # The derivative of each activation: s^2 (1 - t^2) is sigma (1 - sigma) on the
  # sigmoid blocks (s = 1/2) and 1 - tanh^2 on g (s = 1).
  d_gates = jnp.concatenate([g, cell, i, tc], axis=-1) * (s * s) * (1 - t * t)
  return LSTMState(h, c), GateResiduals(d_gates, o * (1 - tc * tc), f)


def gate_update_bwd(res, d_state, d_y):
  """The reverse of `gate_update`: ``(delta, d_cell)``.

  ``delta`` is the gradient of the pre-activations ``a`` and ``d_cell`` that
  of the cell state read, given the step's `GateResiduals` and the
  gradients of the new state and output (the equations are in `lstm`'s
  docstring).
  """
  d_h = d_state.hidden + d_y
  d_c = d_state.cell + d_h * res.d_cell
  delta = jnp.concatenate([d_c, d_c, d_c, d_h], axis=-1) * res.d_gates
  return delta, d_c * res.forget


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
  """What a step of `_options_kernel` keeps: the gate activations ``[i, f, g, o]``;
  with a projection, ``m = o * tanh(c)`` (the projection's input); with layer
  norm, the normalised ``h W_h`` and ``c`` and their ``1 / sqrt(var + eps)``."""
  act: Array
  m: Optional[Array]
  z_h: Optional[Array] = None
  rstd_h: Optional[Array] = None
  z_c: Optional[Array] = None
  rstd_c: Optional[Array] = None


class _PerStep(NamedTuple):
  """The per-step gradients `_options_kernel`'s ``param_grads`` reads: the gate
  pre-activation gradients ``delta``, ``delta_o * c_t`` (peephole) and the
  gradient of the projected ``h_t`` (projection)."""
  delta: Array
  peep_o: Optional[Array]
  d_h: Optional[Array]
  d_a_h: Optional[Array] = None
  d_ln_c: Optional[Array] = None


def _split(a, H):
  return a[..., :H], a[..., H:2 * H], a[..., 2 * H:3 * H], a[..., 3 * H:]


def _normalize(z):
  """``(z - mean) / sqrt(var + eps)`` over the last axis, and ``1 / sqrt(var + eps)``."""
  centred = z - jnp.mean(z, axis=-1, keepdims=True)
  rstd = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + LAYER_NORM_EPS)
  return centred * rstd, rstd


def _normalize_bwd(u, z_hat, rstd):
  """The gradient of ``z`` from ``u``, the gradient of ``z_hat`` (see `lstm`)."""
  return rstd * (u - jnp.mean(u, axis=-1, keepdims=True)
                 - z_hat * jnp.mean(u * z_hat, axis=-1, keepdims=True))


def _options_kernel(H, peephole, proj_size, layer_norm, dtype):
  """The kernel of an LSTM with peepholes, a projection or layer norm (see `lstm`)."""
  projected = proj_size is not None

  def project(params, xs, one_step=False):
    del one_step  # one matmul over all gates either way
    a = base.matmul(xs, params.w_x, dtype)
    if layer_norm:
      a = _normalize(a)[0] * params.ln_x.scale + params.ln_x.offset
    return a if params.b_x is None else a + (params.b_x + params.b_h)

  def recur(params, state, a_x, keep=None):
    a_h = base.matmul(gates.kept(state.hidden, keep), params.w_h, dtype)
    z_h = rstd_h = z_c = rstd_c = None
    if layer_norm:
      z_h, rstd_h = _normalize(a_h)
      a_h = z_h * params.ln_h.scale + params.ln_h.offset
    a_i, a_f, a_g, a_o = _split(a_x + a_h, H)
    if peephole:
      a_i = a_i + params.w_peep[0] * state.cell
      a_f = a_f + params.w_peep[1] * state.cell
    i, f, g = jax.nn.sigmoid(a_i), jax.nn.sigmoid(a_f), jnp.tanh(a_g)
    c = f * state.cell + i * g
    if peephole:
      a_o = a_o + params.w_peep[2] * c
    o = jax.nn.sigmoid(a_o)
    if layer_norm:
      z_c, rstd_c = _normalize(c)
      m = o * jnp.tanh(z_c * params.ln_c.scale + params.ln_c.offset)
    else:
      m = o * jnp.tanh(c)
    h = base.matmul(m, params.w_proj, dtype) if projected else m
    return LSTMState(h, c), _Residuals(jnp.concatenate([i, f, g, o], axis=-1),
                                       m if projected else None, z_h, rstd_h, z_c, rstd_c)

  def transposed_weights(params):
    w_proj_t = base.transposed(params.w_proj) if projected else None
    return gates.transposed_w_h(params), w_proj_t

  def recur_bwd(params, w_t, state, new_state, res, d_state, d_y, keep=None):
    w_h_t, w_proj_t = w_t
    i, f, g, o = _split(res.act, H)
    if layer_norm:
      tc = jnp.tanh(res.z_c * params.ln_c.scale + params.ln_c.offset)
    else:
      tc = jnp.tanh(new_state.cell)
    d_h = d_state.hidden + d_y
    d_m = base.matmul(d_h, w_proj_t, dtype) if projected else d_h
    delta_o = d_m * tc * o * (1 - o)
    d_tc = d_m * o * (1 - tc * tc)
    d_ln_c = d_tc if layer_norm else None
    if layer_norm:
      d_tc = _normalize_bwd(d_tc * params.ln_c.scale, res.z_c, res.rstd_c)
    d_c = d_state.cell + d_tc
    if peephole:
      d_c = d_c + params.w_peep[2] * delta_o
    delta_i = d_c * g * i * (1 - i)
    delta_f = d_c * state.cell * f * (1 - f)
    delta_g = d_c * i * (1 - g * g)
    d_c_prev = d_c * f
    if peephole:
      d_c_prev = d_c_prev + params.w_peep[0] * delta_i + params.w_peep[1] * delta_f
    delta = jnp.concatenate([delta_i, delta_f, delta_g, delta_o], axis=-1)
    d_a_h = (_normalize_bwd(delta * params.ln_h.scale, res.z_h, res.rstd_h) if layer_norm
             else delta)
    d_prev = LSTMState(gates.kept(base.matmul(d_a_h, w_h_t, dtype), keep), d_c_prev)
    per_step = _PerStep(delta, delta_o * new_state.cell if peephole else None,
                        d_h if projected else None, d_a_h if layer_norm else None, d_ln_c)
    return recurrence.StepGrads(d_prev, per_step)

  def param_grads(params, xs, states, res, per_step, keep=None):
    delta = per_step.delta
    d_b = gates.sum_rows(delta)
    d_a_x, d_a_h, z_x = delta, delta, None
    if layer_norm:
      z_x, rstd_x = _normalize(base.matmul(xs, params.w_x, dtype))
      d_a_x = _normalize_bwd(delta * params.ln_x.scale, z_x, rstd_x)
      d_a_h = per_step.d_a_h
    d_params = LSTMParams(gates.weight_grad(xs, d_a_x),
                          gates.weight_grad(gates.kept(states.hidden, keep), d_a_h),
                          *gates.bias_grads(params, d_b, d_b))
    if layer_norm:
      d_params = d_params._replace(
          ln_x=LayerNormParams(gates.sum_rows(delta * z_x), d_b),
          ln_h=LayerNormParams(gates.sum_rows(delta * res.z_h), d_b),
          ln_c=LayerNormParams(gates.sum_rows(per_step.d_ln_c * res.z_c),
                               gates.sum_rows(per_step.d_ln_c)))
    if peephole:
      delta_i, delta_f = delta[..., :H], delta[..., H:2 * H]
      d_params = d_params._replace(w_peep=jnp.stack([
          gates.sum_rows(delta_i * states.cell), gates.sum_rows(delta_f * states.cell),
          gates.sum_rows(per_step.peep_o)]))
    if projected:
      d_params = d_params._replace(w_proj=gates.weight_grad(res.m, per_step.d_h))
    return d_params, base.matmul(d_a_x, params.w_x.T, dtype)

  return recurrence.Kernel(
      project=project, recur=recur, output=lambda s, res: s.hidden, recur_bwd=recur_bwd,
      param_grads=param_grads, transposed_weights=transposed_weights,
      grad_norm=recurrence.hidden_grad_norm(lambda s: s.hidden),
      mask_hooks=recurrence.MaskHooks(recur, recur_bwd, param_grads, _output_grad),
      recur_jac=_options_jacobian(H, peephole, projected, layer_norm))


_HI = jax.lax.Precision.HIGHEST


def _options_jacobian(H, peephole, projected, layer_norm):
  """`Kernel.recur_jac` of `_options_kernel`, derived by hand.

  With ``A = h W_h`` (or ``LN(h W_h)``) the gates' recurrent pre-activations,
  the new cell reads ``h`` through ``dc'/dA = [i'(a) g, f'(a) c, i g'(a), 0]``
  (per gate block) and ``c`` only through its own unit, ``dc'_j/dc_j = f_j +
  p_f f'(a) c_j + p_i i'(a) g_j``. ``m = o * tanh(c')`` (or ``tanh(LN(c'))``)
  and ``h' = m`` (or ``m W_proj``) follow by the chain rule. The diagonal
  alone (``quasi_newton``) never forms a ``D x D`` matrix: each entry is a sum
  over the gate blocks of one unit, or, through a layer norm's mean and
  variance, a contraction with ``W_h`` costing one step's matmul.
  """

  def recur_jac(params, state, new_state, res, diagonal):
    i, f, g, o = _split(res.act, H)
    c = state.cell
    di, df, dg, do = i * (1 - i), f * (1 - f), 1 - g * g, o * (1 - o)
    cc = jnp.concatenate([di * g, df * c, i * dg, jnp.zeros_like(o)], axis=-1)  # dc'/dA
    dcc = f  # dc'_j / dc_j
    p_i, p_f, p_o = params.w_peep if peephole else (None, None, None)
    if peephole:
      dcc = f + df * c * p_f + di * g * p_i
    if layer_norm:
      return _layer_norm_jacobian(H, params, res, f, o, do, cc, diagonal)
    tau = jnp.tanh(new_state.cell)
    kk = o * (1 - tau * tau)  # dm/dc', through tanh and (peephole) through o
    if p_o is not None:
      kk = kk + do * tau * p_o
    cm = jnp.concatenate([kk[..., None, :] * _split4(cc, H)[..., :3, :],
                          (do * tau)[..., None, :]], axis=-2)  # dm/dA, [N, 4, H]
    dm_dc = kk * dcc
    if not projected:
      cm = cm.reshape(cc.shape)
      if diagonal:
        return jnp.concatenate([gates.gate_jacobian(params.w_h, cm, True), dcc], axis=-1)
      return jnp.concatenate([
          jnp.concatenate([gates.gate_jacobian(params.w_h, cm, False), _diag(dm_dc)], -1),
          jnp.concatenate([gates.gate_jacobian(params.w_h, cc, False), _diag(dcc)], -1)], -2)
    w3 = params.w_h.reshape(params.w_h.shape[0], 4, H)  # [p, g, k]
    if diagonal:
      d_hh = jnp.einsum("ngk,pgk,kp->np", cm, w3, params.w_proj, precision=_HI)
      return jnp.concatenate([d_hh, dcc], axis=-1)
    dm_dh = jnp.einsum("ngk,pgk->nkp", cm, w3, precision=_HI)
    d_hh = jnp.einsum("kq,nkp->nqp", params.w_proj, dm_dh, precision=_HI)
    d_hc = params.w_proj.T * dm_dc[..., None, :]  # [n, q, j] = w_proj[j, q] dm_j/dc_j
    d_ch = jnp.einsum("ngj,pgj->njp", _split4(cc, H), w3, precision=_HI)
    return jnp.concatenate([jnp.concatenate([d_hh, d_hc], -1),
                            jnp.concatenate([d_ch, _diag(dcc)], -1)], -2)

  return recur_jac


def _diag(v):
  """``[..., H] -> [..., H, H]``: the diagonal matrix of ``v``."""
  return v[..., :, None] * jnp.eye(v.shape[-1], dtype=v.dtype)


def _split4(a, H):
  """``[..., 4H] -> [..., 4, H]``: one row per gate block."""
  return a.reshape(a.shape[:-1] + (4, H))


def _layer_norm_jacobian(H, params, res, f, o, do, cc, diagonal):
  """`_options_jacobian` of the layer-normalised LSTM (no peepholes, no projection).

  ``dA/dh_p = gamma_h rstd_h (W_h[p] - mean(W_h[p]) - z_h (z_h . W_h[p]) / 4H)``
  (the layer norm's Jacobian applied to row ``p`` of ``W_h``), and
  ``dm/dc' = o (1 - tau^2) gamma_c rstd_c (I - 1/H - z_c z_c^T / H)`` with
  ``tau = tanh(LN(c'))``; ``dc'/dc = diag(f)``.
  """
  w_h, gamma_h, gamma_c = params.w_h, params.ln_h.scale, params.ln_c.scale
  z_h, rstd_h, z_c, rstd_c = res.z_h, res.rstd_h, res.z_c, res.rstd_c
  tau = jnp.tanh(z_c * gamma_c + params.ln_c.offset)
  kc = o * (1 - tau * tau) * gamma_c * rstd_c  # before the centring of LN(c')
  G = 4 * H
  mean_w = jnp.mean(w_h, axis=1)  # [p]
  zw = jnp.matmul(z_h, w_h.T, precision=_HI)  # [n, p] = z_h . W_h[p]

  def contract(a):
    """``sum_gk a[n, gk] dA[n, p, gk]`` for every ``p``, as matmuls."""
    ag = a * gamma_h
    return rstd_h * (jnp.matmul(ag, w_h.T, precision=_HI)
                     - mean_w * jnp.sum(ag, -1, keepdims=True)
                     - zw * jnp.sum(ag * z_h, -1, keepdims=True) / G)

  z_c4 = jnp.tile(z_c, 4)
  if diagonal:
    w_pp = jnp.einsum("pgp->gp", w_h.reshape(H, 4, H))  # W_h[p, g*H + p]
    d_a = (_split4(gamma_h, H) * rstd_h[..., None, :] * (
        w_pp - mean_w - _split4(z_h, H) * zw[..., None, :] / G))  # [n, g, p]
    dc_dh = jnp.sum(_split4(cc, H) * d_a, axis=-2)
    mean_u = contract(cc) / H
    mean_zu = contract(cc * z_c4) / H
    d_hh = do * tau * d_a[..., 3, :] + kc * (dc_dh - mean_u - z_c * mean_zu)
    return jnp.concatenate([d_hh, f], axis=-1)
  d_a = gamma_h * rstd_h[..., None, :] * (
      w_h - mean_w[:, None] - z_h[..., None, :] * zw[..., :, None] / G)  # [n, p, gk]
  u = jnp.sum(_split4(cc, H)[..., None, :, :] * _split4(d_a, H), axis=-2)  # [n, p, k]
  lnc = u - jnp.mean(u, -1, keepdims=True) - z_c[..., None, :] * jnp.mean(
      z_c[..., None, :] * u, -1, keepdims=True)
  dm_dh = (do * tau)[..., None, :] * d_a[..., 3 * H:] + kc[..., None, :] * lnc  # [n, p, k]
  eye = jnp.eye(H, dtype=f.dtype)
  fj = f[..., None, :]
  dm_dc = kc[..., :, None] * (eye * fj - fj / H - z_c[..., :, None] * z_c[..., None, :] * fj / H)
  return jnp.concatenate([jnp.concatenate([jnp.swapaxes(dm_dh, -1, -2), dm_dc], -1),
                          jnp.concatenate([jnp.swapaxes(u, -1, -2), _diag(f)], -1)], -2)


def _output_grad(d_y, new_state):
  """The gradient of the state from that of the output, ``h``."""
  return LSTMState(d_y, jnp.zeros_like(new_state.cell))

