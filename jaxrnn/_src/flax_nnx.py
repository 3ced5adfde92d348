"""`jaxrnn.nnx.RNN`: a jaxrnn model as a Flax NNX module."""

from typing import Any, Optional

import jax
from flax import nnx

from jaxrnn._src import base
from jaxrnn._src import frameworks


class RNN(nnx.Module):
  """Runs a jaxrnn model over a batch of sequences inside a Flax NNX model.

  ``self.cell`` is an `nnx.Param` whose value (``self.cell.get_value()``) is
  the model's own parameter pytree, exactly what ``model.init(key,
  input_size)`` returns, so `jaxrnn.interop`, checkpoints and `jaxrnn.unroll`
  read it as is. A call is one `jaxrnn.unroll` (explicit BPTT under
  `nnx.grad`). Dropout draws from ``rngs.dropout()`` when the module is in
  training mode (``module.train()``; the default is ``module.eval()``'s
  deterministic behaviour unless ``deterministic=False`` is given).

  Args:
    model: a jaxrnn `Model`.
    input_size: the feature size of the inputs.
    rngs: `nnx.Rngs`; ``rngs.params()`` initialises the parameters and, with
      dropout, ``rngs.dropout()`` (or ``rngs.default()``) draws its keys.
    time_major: ``[T, B, F]`` if True; False (Flax's default) is ``[B, T, F]``.
    return_state: return ``(final_state, ys)`` instead of ``ys``.
    deterministic: no dropout when True (the default).
  """

  def __init__(self, model: base.Model, input_size: int, *, rngs: nnx.Rngs,
               time_major: bool = False, return_state: bool = False,
               deterministic: bool = True):
    frameworks.check_model(model, "jaxrnn.nnx.RNN")
    frameworks.check_input_size(input_size, "jaxrnn.nnx.RNN")
    self.model = model
    self.cell = nnx.Param(model.init(rngs.params(), input_size))
    self.time_major = time_major
    self.return_state = return_state
    self.deterministic = deterministic
    self.rngs = rngs

  def __call__(self, xs: jax.Array, state: Optional[base.State] = None, *,
               seq_lengths: Optional[jax.Array] = None, resets: Optional[jax.Array] = None,
               reverse: bool = False, deterministic: Optional[bool] = None) -> Any:
    """Runs the model; arguments as in `jaxrnn.unroll` and `jaxrnn.flax.RNN`."""
    if deterministic is None:
      deterministic = self.deterministic
    rng = None if deterministic else self.rngs.dropout()
    return frameworks.call_unroll(self.model, _value(self.cell), xs, state,
                                  time_major=self.time_major, seq_lengths=seq_lengths,
                                  resets=resets, reverse=reverse, rng=rng,
                                  return_state=self.return_state)


def _value(variable):
  """A variable's value: ``get_value()`` since Flax 0.12, ``.value`` before."""
  get_value = getattr(variable, "get_value", None)
  return get_value() if get_value is not None else variable.value
