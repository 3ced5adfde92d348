"""`custom_cell`: bring your own step, with or without a hand-written backward."""

from collections.abc import Callable
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxrnn._src import base
from jaxrnn._src import recurrence
from jaxrnn._src import validation

Array = jax.Array

# ``step_vjp(params, state, x, new_state, d_new_state, d_y) -> (d_params, d_state, d_x)``.
StepVjpFn = Callable[..., tuple[base.Params, base.State, Array]]


class CustomCellConfig(NamedTuple):
  """What a `custom_cell` is.

  Attributes:
    name: the cell's name, for error messages.
    output_size: the size of its output.
    explicit_backward: whether it was given a ``step_vjp``.
  """
  name: str
  output_size: int
  explicit_backward: bool


class CustomResidual(NamedTuple):
  """What a custom cell's step keeps for its backward: its input and output."""
  x: Array
  y: Array


def custom_cell(init: base.InitFn, step: base.StepFn, *, output_size: int,
                initial_state: Optional[base.InitialStateFn] = None,
                step_vjp: Optional[StepVjpFn] = None, name: Optional[str] = None) -> base.Model:
  r"""A cell from your own step function, with every feature of `unroll`.

  The result is a `Model` like `lstm`: `unroll` (``seq_lengths``,
  ``reverse``, ``resets``, ``time_major``, ``remat_chunk``,
  ``state_grad_clip``), `stack`, `bidirectional`, `learned_initial_state`,
  `truncated_value_and_grad`, the readouts and the losses accept it. Masking,
  resets, reversal, remat and state-gradient clipping are handled by the
  library, for the forward and for the backward.

  Without ``step_vjp`` JAX differentiates ``step`` (``model.explicit_backward``
  is False and `bptt` refuses the model, saying so). With it, the cell has an
  explicit backward: `bptt` runs ``step_vjp`` in its reverse scan, and
  `jax.grad` through `unroll` uses it too, through the time loop's custom VJP.
  `jaxrnn.testing.check_cell` checks a ``step_vjp`` against JAX's derivative.

  Example, an IndRNN (Li et al. 2018), :math:`h' = \tanh(x W + u \odot h + b)`::

    def init(key, input_size):
      return {"w": 0.1 * jax.random.normal(key, (input_size, 8)),
              "u": jnp.full((8,), 0.5), "b": jnp.zeros((8,))}

    def step(p, h, x):
      h = jnp.tanh(x @ p["w"] + p["u"] * h + p["b"])
      return h, h

    indrnn = jaxrnn.custom_cell(init, step, output_size=8, name="indrnn")

  Args:
    init: ``init(key, input_size) -> params``, any pytree of float arrays.
    step: ``step(params, state, x) -> (new_state, y)`` for ``x`` ``[B, F]``
      and ``y`` ``[B, output_size]``. It need not handle unbatched input:
      the model's ``step`` adds a batch axis of 1 for an unbatched ``x``.
    output_size: the size of ``y``'s last axis.
    initial_state: ``initial_state(params, batch_size) -> state``; None
      gives zeros ``[B, output_size]`` (``[output_size]`` for
      ``batch_size=None``) in the dtype of the parameters' first leaf.
    step_vjp: ``step_vjp(params, state, x, new_state, d_new_state, d_y) ->
      (d_params, d_state, d_x)``, the hand-derived transpose of ``step``'s
      derivative, batched, with ``d_params`` summed over the batch; or None.
    name: the cell's name in error messages (default ``"custom_cell"``).

  Returns:
    A `Model` whose ``config`` is a `CustomCellConfig`.
  """
  if not callable(init) or not callable(step):
    raise TypeError("custom_cell: init and step must be callables, got"
                    f" {type(init).__name__} and {type(step).__name__}.")
  if not isinstance(output_size, int) or isinstance(output_size, bool) or output_size < 1:
    raise ValueError(f"output_size: expected a positive int, got {output_size!r}.")
  if step_vjp is not None and not callable(step_vjp):
    raise TypeError(f"step_vjp: expected a callable or None, got {type(step_vjp).__name__}.")
  name = name or "custom_cell"
  config = CustomCellConfig(name, output_size, step_vjp is not None)

  def init_(key, input_size):
    if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 1:
      raise ValueError(f"input_size must be a positive int, got {input_size!r}.")
    params = init(key, input_size)
    for leaf in jax.tree.leaves(params):
      if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
        raise TypeError(f"{name}: init must return floating-point arrays, got"
                        f" {validation.describe(params)}.")
    return params

  def zeros_state(params, batch_size):
    leaves = jax.tree.leaves(params)
    dtype = leaves[0].dtype if leaves else base.default_float()
    shape = (output_size,) if batch_size is None else (batch_size, output_size)
    return jnp.zeros(shape, dtype)

  state_fn = initial_state or zeros_state

  def run_step(params, state, x):
    new_state, y = step(params, state, x)
    expected = x.shape[:-1] + (output_size,)
    if tuple(y.shape) != expected:
      raise ValueError(f"{name}: step returned y of shape {list(y.shape)}, expected"
                       f" {list(expected)} ([batch, output_size={output_size}]).")
    return new_state, y

  def recur(params, state, x):
    new_state, y = run_step(params, state, x)
    return new_state, CustomResidual(x, y)

  def grad_norm(d_new_state, d_y):
    leaves = jax.tree.leaves(d_new_state) + [d_y]
    return jnp.sqrt(sum(jnp.sum(d.reshape(d.shape[0], -1) ** 2, axis=-1) for d in leaves))

  kernel = recurrence.Kernel(
      project=lambda params, xs, one_step=False: xs,
      recur=recur,
      output=lambda new_state, res: res.y,
      recur_bwd=_recur_bwd(step_vjp) if step_vjp is not None else None,
      param_grads=None,
      transposed_weights=lambda params: None,
      grad_norm=grad_norm)

  def input_size(params):
    # An arbitrary pytree does not say what input size it was made for: `unroll`
    # then leaves the feature size of ``xs`` to ``step``.
    del params
    return None

  model = recurrence.kernel_cell(
      kernel, init=init_, initial_state=state_fn, input_size=input_size,
      output_size=output_size, config=config, name=name)

  def model_step(params, state, x):
    state, x = validation.check_step(custom, name, params, state, x)
    if x.ndim == 1:
      batched = jax.tree.map(lambda s: s[None], state)
      new_state, y = run_step(params, batched, x[None])
      return jax.tree.map(lambda s: s[0], new_state), y[0]
    return run_step(params, state, x)

  custom = model._replace(step=model_step)
  return custom


def _recur_bwd(step_vjp: StepVjpFn) -> recurrence.RecurBwdFn:
  """The kernel's reverse step, from a custom cell's ``step_vjp``."""

  def recur_bwd(params, w_t, state, new_state, res, d_new_state, d_y):
    del w_t
    d_params, d_state, d_x = step_vjp(params, state, res.x, new_state, d_new_state, d_y)
    return recurrence.StepGrads(d_state, d_x, d_params)

  return recur_bwd
