"""`jaxrnn.equinox.RNN`: a jaxrnn model as an Equinox module."""

from typing import Any, Optional

import equinox as eqx
import jax

from jaxrnn._src import base
from jaxrnn._src import frameworks


class RNN(eqx.Module):
  """Runs a jaxrnn model over sequences inside an Equinox model.

  ``self.params`` is the model's own parameter pytree, exactly what
  ``model.init(key, input_size)`` returns, so `jaxrnn.interop`, checkpoints
  and `jaxrnn.unroll` read it as is; the model itself is a static field. A
  call is one `jaxrnn.unroll`, with its explicit BPTT under `jax.grad` and
  `eqx.filter_grad`.

  Batching is jaxrnn's: ``xs`` is a batch ``[T, B, F]`` (``[B, T, F]`` with
  ``time_major=False``), run as one scan over time with the batch in every
  matmul. One sequence ``[T, F]`` (Equinox's unbatched convention) is also
  accepted, with an unbatched ``state`` and a scalar ``seq_lengths``, so
  ``jax.vmap(rnn)(xs_bt)`` over ``[B, T, F]`` works too; it computes the
  same values, and XLA batches the vmapped scan back into matmuls over B.

  Args:
    model: a jaxrnn `Model`.
    input_size: the feature size of the inputs.
    key: PRNG key for ``model.init``.
    time_major: layout of batched inputs and outputs.
    return_state: return ``(final_state, ys)`` instead of ``ys``.
  """
  params: Any
  model: base.Model = eqx.field(static=True)
  time_major: bool = eqx.field(static=True)
  return_state: bool = eqx.field(static=True)

  def __init__(self, model: base.Model, input_size: int, *, key: jax.Array,
               time_major: bool = True, return_state: bool = False):
    frameworks.check_model(model, "jaxrnn.equinox.RNN")
    frameworks.check_input_size(input_size, "jaxrnn.equinox.RNN")
    self.model = model
    self.params = model.init(key, input_size)
    self.time_major = time_major
    self.return_state = return_state

  def __call__(self, xs: jax.Array, state: Optional[base.State] = None, *,
               seq_lengths: Optional[jax.Array] = None, resets: Optional[jax.Array] = None,
               reverse: bool = False, key: Optional[jax.Array] = None) -> Any:
    """Runs the model; arguments as in `jaxrnn.unroll`.

    Args:
      xs: ``[T, B, F]`` (``[B, T, F]`` with ``time_major=False``), or one
        sequence ``[T, F]``.
      state: the initial state (unbatched for one sequence); None means
        ``model.initial_state``.
      seq_lengths: ``[B]`` lengths (a scalar for one sequence).
      resets: episode starts, laid out like ``xs``' leading axes.
      reverse: read each sequence backwards.
      key: PRNG key for dropout (a `jaxrnn.stack`'s, or a recurrent
        regulariser's); None disables it, Equinox's inference mode.

    Returns:
      ``ys``, or ``(final_state, ys)`` with ``return_state=True``.
    """
    one_sequence = getattr(xs, "ndim", None) == 2
    time_major = self.time_major
    if one_sequence:
      xs, state, seq_lengths, resets = frameworks.add_batch_axis(xs, state, seq_lengths, resets)
      time_major = True
    out = frameworks.call_unroll(self.model, self.params, xs, state, time_major=time_major,
                                 seq_lengths=seq_lengths, resets=resets, reverse=reverse,
                                 rng=key, return_state=self.return_state)
    return frameworks.drop_batch_axis(out, self.return_state) if one_sequence else out
