"""`unroll`: run any model over a sequence."""

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import sequences
from jaxrnn._src import validation

_BACKWARDS = ("bptt", "autodiff")


def run(model: base.Model, params: base.Params, xs: jax.Array, state: base.State,
        ctx: base.Context, reverse: bool) -> tuple[base.State, jax.Array]:
  """Runs ``model.forward`` on checked, time-major inputs, reading backwards if asked."""
  if not reverse:
    return model.forward(params, xs, state, ctx)
  T, B = xs.shape[:2]
  index = sequences.reversal_index(ctx.mask, T, B)
  probe = None if ctx.probe is None else sequences.gather_time(ctx.probe, index)
  ctx = ctx._replace(resets=sequences.reversed_resets(ctx.resets, ctx.mask, index), probe=probe)
  final, ys = model.forward(params, sequences.gather_time(xs, index), state, ctx)
  return final, sequences.gather_time(ys, index)


def prepare(model, params, xs, state, *, seq_lengths, resets, time_major, rng, backward,
            remat_chunk, scan_unroll, state_grad_clip):
  """Checks the arguments of `unroll` and `bptt`; returns time-major inputs and a context."""
  if not isinstance(model, base.Model):
    raise TypeError(f"model: expected a jaxrnn Model (from jaxrnn.lstm, jaxrnn.stack, ...),"
                    f" got {type(model).__name__}.")
  validation.check_bool("time_major", time_major)
  T, B = validation.check_sequence(model, params, xs, time_major)
  if backward not in _BACKWARDS:
    raise ValueError(f"backward: expected one of {_BACKWARDS}, got {backward!r}.")
  if remat_chunk is not None and (not isinstance(remat_chunk, int) or isinstance(remat_chunk, bool)
                                  or remat_chunk < 1):
    raise ValueError(f"remat_chunk: expected a positive int or None, got {remat_chunk!r}.")
  if isinstance(scan_unroll, bool) or not isinstance(scan_unroll, int) or scan_unroll < 1:
    raise ValueError(f"scan_unroll: expected a positive int, got {scan_unroll!r}.")
  if state_grad_clip is not None and not isinstance(state_grad_clip, base.StateGradClip):
    raise TypeError("state_grad_clip: expected jaxrnn.clip_state_grad_by_value(...) or"
                    f" jaxrnn.clip_state_grad_by_norm(...), got {type(state_grad_clip).__name__}.")
  validation.check_rng(rng)
  spatial_shape = xs.shape[2:-1]  # both layouts; () without spatial axes
  if state is None:
    state = base.initial_state(model, params, B, spatial_shape)
  else:
    validation.check_state(model, params, state, B, spatial_shape=spatial_shape)
    state = validation.cast_to_params(params, state)
  xs = validation.cast_to_params(params, jnp.asarray(xs))
  if not time_major:
    xs = jnp.swapaxes(xs, 0, 1)
  mask = None
  if seq_lengths is not None:
    validation.check_seq_lengths(seq_lengths, B, T)
    mask = sequences.lengths_to_mask(seq_lengths, T)
    # Padding may hold anything (NaN, Inf): zero it before any arithmetic, so that
    # no gradient multiplies it (the gradient of `where` is exactly 0 there).
    xs = sequences.zero_padding(xs, mask)
  if resets is not None:
    validation.check_time_batch("resets", resets, T, B, time_major)
    resets = jnp.asarray(resets).astype(bool)
    if not time_major:
      resets = resets.T
  ctx = base.Context(mask=mask, resets=resets, rng=rng, backward=backward,
                     remat_chunk=remat_chunk, scan_unroll=scan_unroll,
                     state_grad_clip=state_grad_clip)
  return xs, state, ctx


def unroll(model, params, xs, state=None, *, seq_lengths=None, resets=None, reverse=False,
           time_major=True, rng=None, backward="bptt", remat_chunk=None, scan_unroll=1,
           state_grad_clip=None):
  """Runs ``model`` over a batch of sequences with `jax.lax.scan`.

  Works under `jit`, `grad` and `vmap`. Plain `jax.grad` through `unroll`
  runs each cell's explicit, hand-derived BPTT (``backward="bptt"``, the
  default), the same backward as `jaxrnn.bptt`; ``backward="autodiff"`` lets
  JAX differentiate the scan instead. Both give the same gradients to float
  tolerance. A `custom_cell` without ``step_vjp`` is always differentiated by
  JAX.

  Args:
    model: a `Model` (a cell or a composite).
    params: its parameters.
    xs: floating-point inputs, ``[T, B, F]`` (or ``[B, T, F]`` with
      ``time_major=False``); ``[T, B, *spatial, C]`` for a model with
      ``spatial_dims`` spatial axes (`conv_lstm`), of any sizes. ``xs`` and
      ``state`` are cast to the parameters' floating dtype; their gradients
      come back in their own dtypes.
    state: the initial state, shaped like ``model.initial_state(params, B)``
      (``model.initial_state(params, B, spatial_shape=xs.shape[2:-1])`` for
      a model with spatial axes); None means exactly that (zeros, or the
      learned initial state). A state computed by the caller, e.g. from side
      information, receives gradients.
    seq_lengths: optional ``[B]`` integer lengths in ``[0, T]``. Steps
      ``t >= seq_lengths[b]`` are padding: they leave the state unchanged and
      output zeros, so ``final_state[b]`` is the state after
      ``seq_lengths[b]`` steps. 0 is allowed. The padding of ``xs`` may hold
      anything (NaN, Inf): it is zeroed before any arithmetic and reaches no
      output and no gradient. Concrete lengths outside ``[0, T]`` raise a
      `ValueError`; under `jit` they cannot be read and are clipped to
      ``[0, T]``.
    resets: optional ``[T, B]`` (``[B, T]`` when not time-major) booleans that
      mark ``xs[t]`` as the first element of a new episode: the initial state
      ``state`` is swapped in before it is read, as in Haiku's ``ResetCore``.
      Reading backwards, the swap happens after ``xs[t]``, so episodes stay
      intact. Resets at padded steps are ignored.
    reverse: read each sequence from its last valid element back to its first.
      Outputs stay aligned with the inputs (``ys[t]`` is produced on reading
      ``xs[t]``), padding stays at the end and is zero, and ``final_state`` is
      the state after reading ``xs[0]``.
    time_major: layout of ``xs``, ``ys`` and ``resets``.
    rng: PRNG key for dropout in `stack` and for the masks of
      `recurrent_dropout` and `zoneout` (training); None disables them
      (evaluation: zoneout then uses its expectation).
    backward: ``"bptt"`` or ``"autodiff"``.
    remat_chunk: store the state only every ``remat_chunk`` steps and
      recompute the rest in the backward pass, trading time for memory.
    scan_unroll: the ``unroll`` argument of `lax.scan`.
    state_grad_clip: clip the gradient sent back through the recurrent state
      at every step (`clip_state_grad_by_value`, `clip_state_grad_by_norm`).
      This changes, i.e. biases, the gradient.

  Returns:
    ``(final_state, ys)`` with ``ys`` ``[T, B, model.output_size]`` (or
    ``[B, T, ...]``).

  Raises:
    TypeError, ValueError: at trace time, naming the argument and the
      expected and actual shape or type (``params`` against
      ``model.init(key, F)``, ``state`` against ``model.initial_state``,
      bools, the ``rng`` key); these read only shapes and dtypes and cost
      nothing at run time under `jit`.
  """
  validation.check_bool("reverse", reverse)
  xs, state, ctx = prepare(model, params, xs, state, seq_lengths=seq_lengths, resets=resets,
                           time_major=time_major, rng=rng, backward=backward,
                           remat_chunk=remat_chunk, scan_unroll=scan_unroll,
                           state_grad_clip=state_grad_clip)
  final, ys = run(model, params, xs, state, ctx, reverse)
  return final, (ys if time_major else jnp.swapaxes(ys, 0, 1))
