"""Shared pieces of the dense gated cells (RNN, LSTM, GRU, MGU): weights, projection, gradients.

Weights are laid out for ``x @ w``: ``w_x`` is ``[input_size, G*H]`` and
``w_h`` is ``[H, G*H]``, the transposes of PyTorch's ``weight_ih`` and
``weight_hh``; the gate blocks follow PyTorch's order. Like PyTorch, each cell
keeps an input-side bias ``b_x`` and a recurrent-side bias ``b_h``; only their
sum matters for the RNN and the LSTM, and both are kept so that weights
converted from PyTorch round-trip exactly.
"""

import math

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import recurrence

RECURRENT_INITS = ("uniform", "orthogonal")


def check_options(hidden_size, recurrent_init):
  if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size < 1:
    raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}.")
  if recurrent_init not in RECURRENT_INITS:
    raise ValueError(f"recurrent_init must be one of {RECURRENT_INITS}, got {recurrent_init!r}.")


def init_weights(key, input_size, hidden_size, gates, bias, recurrent_init):
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


def zeros_state(hidden_size, params, batch_size):
  shape = (hidden_size,) if batch_size is None else (batch_size, hidden_size)
  return jnp.zeros(shape, params.w_h.dtype)


def input_size_of(params):
  return params.w_x.shape[0]


def project(params, xs, dtype, fold_b_h, one_step=False):
  """Input projection; folds in the biases that only add.

  Returns one ``[..., H]`` block per gate. For a whole sequence (hoisted out
  of the loop) each block is its own matmul and buffer: on XLA:CPU, slicing a
  wide per-step block out of one scanned buffer and then into gates was
  slower than scanning separate gate buffers and joining them inside the step
  (BUILD.md has the measurement). For ``one_step`` (inside the loop) one
  matmul covers all gates and the blocks are its slices, which XLA fuses into
  the gate math.
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


def transposed_w_h(params):
  return base.transposed(params.w_h)


def bias_grads(params, d_x, d_h):
  if params.b_x is None:
    return None, None
  return d_x, d_h


def sum_rows(d):
  return d.reshape(-1, d.shape[-1]).sum(0)


def weight_grad(inputs, d_pre):
  """``sum_t inputs_t^T d_pre_t`` as one matmul over all ``T*B`` rows."""
  return inputs.reshape(-1, inputs.shape[-1]).T @ d_pre.reshape(-1, d_pre.shape[-1])



def dense_param_grads(param_type, params, xs, hs, d_gx, d_gh, keep, dtype):
  """Parameter and input gradients of gates that read ``x W_x + b_x`` and ``h W_h + b_h``.

  ``d_gx`` and ``d_gh`` are the gradients of those two pre-activations,
  ``[..., G*H]`` over all steps (the same array where the cell adds them);
  ``hs`` are the states read, masked by ``keep`` as the recurrence read them.
  Returns ``(param_type(d_w_x, d_w_h, d_b_x, d_b_h), d_xs)``, each weight
  gradient one matmul over all ``T*B`` rows.
  """
  d_b_x = sum_rows(d_gx)
  d_b_h = d_b_x if d_gh is d_gx else sum_rows(d_gh)
  d_params = param_type(weight_grad(xs, d_gx), weight_grad(kept(hs, keep), d_gh),
                        *bias_grads(params, d_b_x, d_b_h))
  return d_params, base.matmul(d_gx, params.w_x.T, dtype)


def gate_scale(hidden_size, sigmoid_blocks, dtype):
  """Per-column scale ``s`` so that ``s*tanh(s*a) + 1 - s`` is sigmoid or tanh.

  sigmoid(a) = tanh(a/2)/2 + 1/2, so one ``tanh`` over all gates computes
  the sigmoid gates (s = 1/2) and the tanh gate (s = 1) together.
  """
  return jnp.repeat(jnp.asarray([0.5 if s else 1.0 for s in sigmoid_blocks], dtype),
                    hidden_size)


def kept(h, keep):
  """``h * keep``: the hidden state as the recurrent weights read it (`MaskHooks`)."""
  return h if keep is None else h * keep


def array_state_cell(*, init, project, recur, recur_bwd, param_grads, transposed_weights,
                     hidden_size, config, name, recur_jac=None):
  """The `Model` of a dense cell whose state is its output ``h [B, H]`` (RNN, GRU, MGU).

  Zeros are the initial state, the input size is read from ``w_x``, and the
  norm `bptt` reports is that of ``dL/dh_t``. ``recur``, ``recur_bwd`` and
  ``param_grads`` take a last argument ``keep=None`` (`recurrence.MaskHooks`).
  """
  kernel = recurrence.Kernel(
      project=project, recur=recur, output=lambda h, res: h, recur_bwd=recur_bwd,
      param_grads=param_grads, transposed_weights=transposed_weights,
      grad_norm=recurrence.hidden_grad_norm(lambda h: h),
      mask_hooks=recurrence.MaskHooks(recur, recur_bwd, param_grads,
                                      output_grad=lambda d_y, h: d_y),
      recur_jac=recur_jac)
  return recurrence.kernel_cell(
      kernel, init=init, initial_state=lambda p, b: zeros_state(hidden_size, p, b),
      input_size=input_size_of, output_size=hidden_size, config=config, name=name)


def gate_jacobian(w_h, coefs, diagonal, diag=None):
  """``J[n, i, j] = diag[n, i] [i = j] + sum_g coefs[n, g*H + i] w_h[j, g*H + i]``.

  The Jacobian ``d h'_i / d h_j`` of a gated cell whose pre-activations read
  ``h W_h``: each gate block ``g`` contributes its column of ``W_h`` scaled by
  the derivative of ``h'_i`` through that gate (``coefs``, ``[N, G*H]``).
  ``diagonal`` returns ``[N, H]``, the diagonal alone, in ``O(G*H)`` per row.
  """
  H = w_h.shape[0]
  c = coefs.reshape(coefs.shape[:-1] + (w_h.shape[1] // H, H))
  w = w_h.reshape(H, -1, H)  # [j, g, i]
  if diagonal:
    jac = jnp.sum(c * jnp.einsum("igi->gi", w), axis=-2)
    return jac if diag is None else jac + diag
  jac = jnp.einsum("...gi,jgi->...ij", c, w, precision=jax.lax.Precision.HIGHEST)
  return jac if diag is None else jac + diag[..., :, None] * jnp.eye(H, dtype=jac.dtype)
