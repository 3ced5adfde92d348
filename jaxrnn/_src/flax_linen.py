"""`jaxrnn.flax.RNN`: a jaxrnn model as a Flax linen module."""

from typing import Any, Optional

import jax
from flax import linen as nn

from jaxrnn._src import base
from jaxrnn._src import frameworks


class RNN(nn.Module):
  """Runs a jaxrnn model over a batch of sequences inside a Flax linen model.

  ``variables["params"]["cell"]`` is the model's own parameter pytree, exactly
  what ``model.init(key, input_size)`` returns (an `LSTMParams`, a
  `StackParams`, ...), so `jaxrnn.interop`, checkpoints and `jaxrnn.unroll`
  read it as is; ``input_size`` is read from the inputs at ``init``. A call is
  one `jaxrnn.unroll`, with its explicit BPTT under `jax.grad`, so outputs
  and gradients are those of the functional API bit for bit.

  Dropout (a `jaxrnn.stack`'s, and the recurrent regularisers') draws its key
  from Flax's ``"dropout"`` rng stream when ``deterministic=False``;
  ``deterministic`` (a call argument, or the attribute) defaults to True.

  Swapping Flax's own layer for it, weights included:

  .. code-block:: python

    flax_rnn = nn.RNN(nn.LSTMCell(64))                 # [B, T, F] in, [B, T, 64] out
    model, cell_params = jaxrnn.interop.from_flax(flax_rnn, flax_variables)
    rnn = jaxrnn.flax.RNN(model)                       # same layout, same outputs
    ys = rnn.apply({"params": {"cell": cell_params}}, xs)

  Attributes:
    model: a jaxrnn `Model` (a cell or a composite).
    time_major: layout of the inputs and outputs, ``[T, B, F]`` if True;
      False (Flax's ``nn.RNN`` default) means ``[B, T, F]``.
    return_state: return ``(final_state, ys)`` instead of ``ys``.
    deterministic: the default of the call argument of that name.
  """
  model: base.Model
  time_major: bool = False
  return_state: bool = False
  deterministic: Optional[bool] = None

  @nn.compact
  def __call__(self, xs: jax.Array, state: Optional[base.State] = None, *,
               seq_lengths: Optional[jax.Array] = None, resets: Optional[jax.Array] = None,
               reverse: bool = False, deterministic: Optional[bool] = None) -> Any:
    """Runs the model; arguments as in `jaxrnn.unroll`.

    Args:
      xs: ``[B, T, F]`` (``[T, B, F]`` with ``time_major=True``).
      state: the initial state; None means ``model.initial_state``.
      seq_lengths: optional ``[B]`` lengths.
      resets: optional episode starts, laid out like ``xs``' first two axes.
      reverse: read each sequence backwards.
      deterministic: no dropout if True; with False, dropout keys come from
        the ``"dropout"`` rng stream. Overrides the attribute.

    Returns:
      ``ys``, or ``(final_state, ys)`` with ``return_state=True``.
    """
    frameworks.check_model(self.model, "jaxrnn.flax.RNN")
    if getattr(xs, "ndim", 0) < 3:  # unroll checks the rest once params exist.
      raise ValueError(f"xs: jaxrnn.flax.RNN expected an array [B, T, F] ([T, B, F] when"
                       f" time_major), got {type(xs).__name__} of shape"
                       f" {list(getattr(xs, 'shape', ()))}.")
    params = self.param("cell", lambda key: self.model.init(key, xs.shape[-1]))
    if deterministic is None:
      deterministic = True if self.deterministic is None else self.deterministic
    rng = None if deterministic else self.make_rng("dropout")
    return frameworks.call_unroll(self.model, params, xs, state, time_major=self.time_major,
                                  seq_lengths=seq_lengths, resets=resets, reverse=reverse,
                                  rng=rng, return_state=self.return_state)
