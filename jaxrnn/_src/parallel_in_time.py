r"""`parallel_unroll`: a recurrence solved over the sequence length with Newton's method.

A recurrence :math:`s_t = f(s_{t-1}, x_t)` has :math:`T` sequential steps.
DEER (Lim et al. 2024) treats the trajectory :math:`s_{1:T}` as the root of
:math:`r_t(s) = s_t - f(s_{t-1}, x_t)` and solves it with Newton's method.
Linearising :math:`f` around the current guess :math:`\bar s` gives the
update :math:`\Delta` from a *linear* recurrence,

.. math::
  \Delta_t = J_t \Delta_{t-1} + (f(\bar s_{t-1}, x_t) - \bar s_t), \qquad
  \Delta_0 = 0, \qquad J_t = \partial f / \partial s_{t-1} |_{\bar s_{t-1}}

which `jax.lax.associative_scan` solves in :math:`O(\log T)` depth with the
operator :math:`(A_2, b_2) \circ (A_1, b_1) = (A_2 A_1, A_2 b_1 + b_2)`.
After :math:`k` Newton steps the first :math:`k` states are exact, so the
sequential trajectory is reached in at most :math:`T` steps in exact
arithmetic; in practice a handful suffice for a contracting recurrence.

- ``method="newton"``: dense :math:`J_t` (``[D, D]`` per step and sequence,
  the combine costs :math:`D^3`).
- ``method="quasi_newton"`` (quasi-DEER, Gonzalez et al. 2024): only
  :math:`\mathrm{diag}(J_t)`; the combine costs :math:`D`, more iterations.
- ``damping = \lambda > 0`` (ELK, Gonzalez et al. 2024): the
  Levenberg--Marquardt step :math:`\min_\Delta \sum_t \|\Delta_t - J_t
  \Delta_{t-1} - r_t\|^2 + \lambda \|\Delta_t\|^2`, the posterior mean of a
  linear-Gaussian state-space model, solved by a parallel Kalman filter and
  smoother (Särkkä and García-Fernández 2021). It keeps each step bounded
  where plain Newton overflows (chaotic recurrences).

The state is flattened to one vector per sequence: ``D = H`` for an array
state, ``D = 2H`` for the LSTM's ``(h, c)`` (``P + H`` with a projection),
leaves in `jax.tree` order.

The gradient is the BPTT adjoint recurrence
:math:`\mu_t = J_t^\top \mu_{t+1} + c_t`, with :math:`\mu_t` the gradient of
:math:`s_{t-1}` and :math:`c_t` what the output :math:`y_t` sends back,
which is linear: a reverse associative scan over the converged trajectory
(parallel BPTT). With ``quasi_newton`` the adjoint is solved by the same
diagonally preconditioned iteration, with exact :math:`J^\top v` products
from the cell's hand-derived backward, to the same tolerance.

Cells whose recurrence is linear in the state (`min_gru`, `min_lstm`) give
``log_linear``: :math:`s_t = a_t s_{t-1} + b_t` with :math:`a, b > 0` in log
space, solved in one pass by a cumulative log-sum-exp (Heinsen 2023).

References:
  Lim et al., *Parallelizing non-linear sequential models over the sequence
  length*, ICLR 2024.
  Gonzalez et al., *Towards scalable and stable parallelization of nonlinear
  RNNs*, NeurIPS 2024.
  Danieli et al., *ParaRNN: Unlocking parallel training of nonlinear RNNs for
  large language models*, 2025.
  Särkkä and García-Fernández, *Temporal parallelization of Bayesian
  smoothers*, IEEE TAC 2021.
  Heinsen, *Efficient parallelization of a ubiquitous sequential computation*,
  arXiv:2311.06281, 2023.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrnn._src import base
from jaxrnn._src import unroll as unroll_lib

Array = jax.Array

METHODS = ("newton", "quasi_newton")
ON_FAILURE = ("nan", "keep")
# The default tolerance, in units of the dtype's machine epsilon, on
# max|s - f(s_prev)| / (1 + max|s|).
DEFAULT_TOL_EPS = 1024


class ParallelInfo(NamedTuple):
  """What `parallel_unroll` reports about its solve.

  For a `stack` each field has one entry per layer, ``[num_layers]``.

  Attributes:
    iterations: int32, the Newton steps run (1 for a cell solved in one pass).
    residual: the final ``max |s_t - f(s_{t-1}, x_t)|`` over every step,
      sequence and state unit (NaN if the iteration blew up).
    converged: bool, ``residual <= tol * (1 + max |s|)``.
  """
  iterations: Array
  residual: Array
  converged: Array


class SolverOptions(NamedTuple):
  """The static settings of a parallel solve (see `parallel_unroll`)."""
  method: str = "newton"
  max_iters: Optional[int] = None
  tol: Optional[float] = None
  damping: float = 0.0
  on_failure: str = "nan"


# --- state vectors -------------------------------------------------------


class _Layout(NamedTuple):
  """How a state pytree ``[N, ...]`` maps to vectors ``[N, D]``."""
  treedef: Any
  shapes: tuple  # each leaf's shape after the batch axis

  @property
  def size(self):
    return sum(math.prod(s) for s in self.shapes)

  def flatten(self, tree):
    leaves = jax.tree.leaves(tree)
    lead = leaves[0].shape[:leaves[0].ndim - len(self.shapes[0])]
    return jnp.concatenate([a.reshape(lead + (-1,)) for a in leaves], axis=-1)

  def unflatten(self, vec):
    sizes = [math.prod(s) for s in self.shapes]
    parts = jnp.split(vec, np.cumsum(sizes)[:-1].tolist(), axis=-1)
    lead = vec.shape[:-1]
    return self.treedef.unflatten([p.reshape(lead + s) for p, s in zip(parts, self.shapes)])


def _layout(state):
  leaves, treedef = jax.tree.flatten(state)
  return _Layout(treedef, tuple(a.shape[1:] for a in leaves))


def _merge_time(tree):
  return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), tree)


def _split_time(tree, T):
  return jax.tree.map(lambda a: a.reshape((T, -1) + a.shape[1:]), tree)


# --- linear recurrences ----------------------------------------------------


def _mm(a, b):
  return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)


def _mv(a, v):
  return jnp.einsum("...ij,...j->...i", a, v, precision=lax.Precision.HIGHEST)


def _apply(jac, v, diagonal):
  return jac * v if diagonal else _mv(jac, v)


def _transpose(jac, diagonal):
  return jac if diagonal else jnp.swapaxes(jac, -1, -2)


def linear_scan(A: Array, b: Array, *, diagonal: bool) -> Array:
  """``x_t = A_t x_{t-1} + b_t`` from ``x_0 = 0``, for ``t = 1..T``, along axis 0.

  ``A`` is ``[T, ..., D, D]`` (or ``[T, ..., D]`` with ``diagonal``) and
  ``b`` is ``[T, ..., D]``. Depth ``O(log T)`` (`jax.lax.associative_scan`).
  """
  def combine(earlier, later):
    a1, b1 = earlier
    a2, b2 = later
    if diagonal:
      return a2 * a1, a2 * b1 + b2
    return _mm(a2, a1), _mv(a2, b1) + b2

  return lax.associative_scan(combine, (A, b))[1]


def solve_small(m: Array, x: Array) -> Array:
  """``m^-1 x`` for a batch of small systems, ``m`` ``[..., D, D]``, ``x`` ``[..., D, K]``.

  Gauss--Jordan elimination with partial pivoting (the pivots LAPACK's
  ``getrf`` picks), in plain XLA operations: ``D`` steps of a
  `jax.lax.fori_loop`, each a rank-one update of the augmented ``[m | x]``.

  Why not `jnp.linalg.solve`: on XLA:CPU (jaxlib 0.10.2) its LAPACK custom
  calls (``getrf``, ``trsm``) split their batch over the intra-op thread pool
  they already run on (``jax::ParallelBatchMap``) and block until the pieces
  finish. When two such calls run at once (independent solves in the same
  computation, as in `damped_scan`'s combine) and they hold every pool
  thread, nothing is left to run the pieces and the process sleeps forever.
  Minimal reproduction on a 2-core machine: a jitted `jax.lax.while_loop`
  whose body does two independent ``jnp.linalg.solve`` of ``[2048, 8, 8]``
  systems (each fed by an elementwise op), called a few times.
  ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`` does not avoid it.
  """
  D = m.shape[-1]
  aug = jnp.concatenate([m, x], axis=-1)
  rows = jnp.arange(D)

  def step(k, aug):
    col = lax.dynamic_index_in_dim(aug, k, axis=-1, keepdims=False)  # [..., D]
    p = jnp.argmax(jnp.where(rows >= k, jnp.abs(col), -1), axis=-1)  # the pivot row
    e_k = (rows == k).astype(aug.dtype)
    e_p = (rows == p[..., None]).astype(aug.dtype)
    row_k = lax.dynamic_index_in_dim(aug, k, axis=-2, keepdims=False)
    row_p = jnp.einsum("...i,...ij->...j", e_p, aug, precision=lax.Precision.HIGHEST)
    # Swap rows k and p (nothing when p == k).
    aug = aug + (e_k - e_p)[..., :, None] * (row_p - row_k)[..., None, :]
    pivot = row_p / lax.dynamic_index_in_dim(row_p, k, axis=-1)
    col = lax.dynamic_index_in_dim(aug, k, axis=-1, keepdims=False)
    # Row k becomes the normalised pivot row, every other row loses its column k.
    return aug - (col - e_k)[..., :, None] * pivot[..., None, :]

  return lax.fori_loop(0, D, step, aug)[..., D:]


class _Ops(NamedTuple):
  """Matrix algebra on ``[..., D, D]`` blocks, or on diagonals ``[..., D]``."""
  mm: Callable
  mv: Callable
  t: Callable
  eye: Callable
  eye_plus: Callable  # eye_plus(M) = I + M
  rsolve: Callable  # rsolve(M, X) = X M^-1


def _ops(diagonal):
  if diagonal:
    return _Ops(jnp.multiply, jnp.multiply, lambda a: a, lambda like: jnp.ones_like(like),
                lambda m: 1 + m, lambda m, x: x / m)
  t = lambda a: jnp.swapaxes(a, -1, -2)
  eye = lambda like: jnp.broadcast_to(jnp.eye(like.shape[-1], dtype=like.dtype), like.shape)
  return _Ops(_mm, _mv, t, eye, lambda m: m + eye(m),
              lambda m, x: t(solve_small(t(m), t(x))))


def damped_scan(F: Array, u: Array, damping: float, *, diagonal: bool) -> Array:
  r"""The Levenberg--Marquardt (ELK) step: argmin of
  :math:`\sum_t \|x_t - F_t x_{t-1} - u_t\|^2 + \lambda \|x_t\|^2`, :math:`x_0 = 0`.

  The minimiser is the posterior mean of the state-space model
  :math:`x_t = F_t x_{t-1} + u_t + q_t` observed as :math:`0 = x_t + r_t`,
  :math:`q_t \sim N(0, I)`, :math:`r_t \sim N(0, I / \lambda)`: a parallel
  Kalman filter (an associative scan over the elements
  :math:`(A, b, C, \eta, J)` of Särkkä and García-Fernández 2021) followed by
  a parallel Rauch--Tung--Striebel smoother (a reverse linear scan). With
  :math:`\lambda = 0` it is `linear_scan`.
  """
  o = _ops(diagonal)
  k = damping / (1.0 + damping)
  eye = o.eye(F)
  A = (1 - k) * F
  A = A.at[0].set(0)
  b = (1 - k) * u
  C = (1 - k) * eye
  eta = -k * o.mv(o.t(F), u)
  eta = eta.at[0].set(0)
  J = k * o.mm(o.t(F), F)
  J = J.at[0].set(0)

  def combine(earlier, later):
    a_i, b_i, c_i, eta_i, j_i = earlier
    a_j, b_j, c_j, eta_j, j_j = later
    g = o.rsolve(o.eye_plus(o.mm(c_i, j_j)), a_j)
    h = o.rsolve(o.eye_plus(o.mm(j_j, c_i)), o.t(a_i))
    return (o.mm(g, a_i), o.mv(g, b_i + o.mv(c_i, eta_j)) + b_j,
            o.mm(o.mm(g, c_i), o.t(a_j)) + c_j,
            o.mv(h, eta_j - o.mv(j_j, b_i)) + eta_i,
            o.mm(o.mm(h, j_j), a_i) + j_i)

  _, m, P, _, _ = lax.associative_scan(combine, (A, b, C, eta, J))
  # Smoother: x_t = E_t x_{t+1} + g_t backwards from x_T = m_T.
  F_next, u_next, m_t, P_t = F[1:], u[1:], m[:-1], P[:-1]
  pred = o.mm(o.mm(F_next, P_t), o.t(F_next)) + eye[1:]
  E = o.rsolve(pred, o.mm(P_t, o.t(F_next)))
  g = m_t - o.mv(E, o.mv(F_next, m_t) + u_next)
  E = jnp.concatenate([jnp.zeros_like(E[:1]), E[::-1]])
  g = jnp.concatenate([m[-1:], g[::-1]])
  return linear_scan(E, g, diagonal=diagonal)[::-1]


# --- the Newton iteration ----------------------------------------------------


def _max_abs(x):
  """``max |x|``, NaN where any element is NaN (XLA's max may skip NaNs)."""
  if not x.size:
    return jnp.zeros((), x.dtype)
  m = jnp.max(jnp.abs(x))
  return jnp.where(jnp.any(jnp.isnan(x)), jnp.asarray(jnp.nan, m.dtype), m)


def _threshold(tol, fs):
  return tol * (1 + _max_abs(fs))


def _shift(S, s0):
  """The states each step reads: ``[s0, S_1, ..., S_{T-1}]``."""
  return jnp.concatenate([s0[None], S[:-1]], axis=0)


def newton_solve(evaluate: Callable, s0: Array, T: int, *, diagonal: bool, damping: float,
                 max_iters: int, tol: float, guess: Optional[Array] = None):
  """Solves ``S_t = f(S_{t-1})``, ``S_0 = s0``, by (quasi-)Newton steps.

  ``evaluate(prev) -> (f(prev), jacobian, aux)`` for the states read at
  every step, ``prev`` ``[T, N, D]``. Returns ``(S, f(S), jacobian, aux,
  iterations, residual)``, all at the last iterate.
  """
  if guess is None:
    # One Jacobi sweep (every step applied to s0) rather than s0 itself: a
    # layer norm's Jacobian at a state of zero variance scales W_h by
    # 1/sqrt(eps), and a Newton step from there overshoots to inf.
    guess = evaluate(jnp.broadcast_to(s0, (T,) + s0.shape))[0]
  S = guess
  fS, jac, aux = evaluate(_shift(S, s0))
  r = _max_abs(fS - S)

  def cond(carry):
    k, _, fS, _, _, r = carry
    return (k < max_iters) & jnp.isfinite(r) & (r > _threshold(tol, fS))

  def body(carry):
    k, S, fS, jac, _, _ = carry
    if damping > 0:
      S = S + damped_scan(jac, fS - S, damping, diagonal=diagonal)
    else:
      S = S + linear_scan(jac, fS - S, diagonal=diagonal)
    fS, jac, aux = evaluate(_shift(S, s0))
    return k + 1, S, fS, jac, aux, _max_abs(fS - S)

  k, S, fS, jac, aux, r = lax.while_loop(
      cond, body, (jnp.zeros((), jnp.int32), S, fS, jac, aux, r))
  return S, fS, jac, aux, k, r


def _default_tol(dtype):
  return DEFAULT_TOL_EPS * float(jnp.finfo(dtype).eps)


# --- one cell ----------------------------------------------------------------


class _Cell(NamedTuple):
  """A kernel's step, Jacobian and transposed derivative on ``[N, ...]`` rows."""
  kernel: Any
  params: Any
  layout: _Layout

  def step(self, prev, gx):
    new, res = self.kernel.recur(self.params, self.layout.unflatten(prev), gx)
    return self.layout.flatten(new), new, res

  def jacobian(self, prev_vec, gx, new, res, diagonal):
    """``[N, D, D]`` (or ``[N, D]``): ``d s_t / d s_{t-1}``."""
    prev = self.layout.unflatten(prev_vec)
    if self.kernel.recur_jac is not None:
      return self.kernel.recur_jac(self.params, prev, new, res, diagonal)
    if self.kernel.recur_bwd is not None:
      jac = _jacobian_from_backward(self, prev, new, res)
    else:
      jac = _jacobian_by_autodiff(self, prev_vec, gx)
    return jnp.diagonal(jac, axis1=-2, axis2=-1) if diagonal else jac


def _repeat_rows(tree, D):
  return jax.tree.map(lambda a: jnp.repeat(a, D, axis=0), tree)


def _jacobian_from_backward(cell, prev, new, res):
  """The Jacobian from the cell's hand-derived reverse step, one basis vector per row.

  ``recur_bwd`` with ``d_new = e_j`` returns ``J^T e_j``, row ``j`` of ``J``.
  """
  layout, D = cell.layout, cell.layout.size
  N = jax.tree.leaves(new)[0].shape[0]
  basis = jnp.tile(jnp.eye(D, dtype=jax.tree.leaves(new)[0].dtype), (N, 1))
  y = cell.kernel.output(new, res)
  d_y = jnp.zeros((N * D,) + y.shape[1:], y.dtype)
  grads = cell.kernel.recur_bwd(
      cell.params, cell.kernel.transposed_weights(cell.params), _repeat_rows(prev, D),
      _repeat_rows(new, D), _repeat_rows(res, D), layout.unflatten(basis), d_y)
  return layout.flatten(grads.d_state).reshape(N, D, D)


def _jacobian_by_autodiff(cell, prev_vec, gx):
  """``jax.jacfwd`` of the step, for a cell without a hand-derived backward."""
  def one(p, g):
    return cell.step(p[None], jax.tree.map(lambda a: a[None], g))[0][0]

  return jax.vmap(jax.jacfwd(one))(prev_vec, gx)


class _Transpose(NamedTuple):
  """The transposed derivative of every step at once, given the states it read."""
  d_prev: Callable  # (d_new, d_y) -> d_prev vector [N, D]
  grads: Callable  # (d_new, d_y) -> (d_params, d_xs)


def _transpose_steps(cell, xs, prev_vec, new, res):
  kernel, params, layout = cell.kernel, cell.params, cell.layout
  prev = layout.unflatten(prev_vec)
  if kernel.recur_bwd is not None:
    w_t = kernel.transposed_weights(params)

    def bwd(d_new, d_y):
      return kernel.recur_bwd(params, w_t, prev, new, res, layout.unflatten(d_new), d_y)

    def grads(d_new, d_y):
      g = bwd(d_new, d_y)
      if kernel.param_grads is None:
        return g.d_params, g.d_pre
      return kernel.param_grads(params, xs, prev, res, g.d_pre)

    return _Transpose(lambda d_new, d_y: layout.flatten(bwd(d_new, d_y).d_state), grads)

  def run(p, s, x):
    new, res = kernel.recur(p, layout.unflatten(s), kernel.project(p, x, one_step=True))
    return layout.flatten(new), kernel.output(new, res)

  _, vjp = jax.vjp(run, params, prev_vec, xs)

  def grads_autodiff(d_new, d_y):
    d_params, _, d_xs = vjp((d_new, d_y))
    return d_params, d_xs

  return _Transpose(lambda d_new, d_y: vjp((d_new, d_y))[1], grads_autodiff)


def _masked(mask, a, b):
  return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - mask.ndim)), a, b)


def _identity_like(jac, diagonal):
  if diagonal:
    return jnp.ones_like(jac)
  return jnp.broadcast_to(jnp.eye(jac.shape[-1], dtype=jac.dtype), jac.shape)


def _evaluator(cell, gx, mask, T, diagonal):
  """``evaluate(prev [T, B, D]) -> (f(prev), J, (new, res))`` with padded steps kept."""
  def evaluate(prev):
    B = prev.shape[1]
    flat_prev = prev.reshape((T * B,) + prev.shape[2:])
    f, new, res = cell.step(flat_prev, gx)
    jac = cell.jacobian(flat_prev, gx, new, res, diagonal)
    f = _masked(mask, f.reshape(prev.shape), prev)
    jac = jac.reshape((T, B) + jac.shape[1:])
    jac = _masked(mask, jac, _identity_like(jac, diagonal))
    return f, jac, (new, res)
  return evaluate


def _log_linear_solve(kernel, params, gx, h0, mask, T, B):
  r"""``s_t = a_t s_{t-1} + b_t`` with ``a, b > 0`` given in log space, in one pass.

  :math:`s_t = P_t s_0 + q_t`, :math:`\log P_t = \sum_{k \le t} \log a_k`,
  :math:`\log q_t = \log P_t + \mathrm{logcumsumexp}_k(\log b_k - \log P_k)`;
  padded steps have :math:`a = 1, b = 0`. Any sign of :math:`s_0` works.
  """
  log_a, log_b = kernel.log_linear(params, gx)
  log_a = _masked(mask, log_a.reshape((T, B) + log_a.shape[1:]), jnp.zeros((), log_a.dtype))
  log_b = _masked(mask, log_b.reshape((T, B) + log_b.shape[1:]), jnp.asarray(-jnp.inf, log_b.dtype))
  log_p = jnp.cumsum(log_a, axis=0)
  log_q = log_p + lax.cumlogsumexp(log_b - log_p, axis=0)
  return jnp.exp(log_p) * h0[None] + jnp.exp(log_q)


def _solve_forward(kernel, opts, params, xs, s0, mask):
  """The forward of a cell: outputs, info and what the backward needs."""
  T, B = xs.shape[:2]
  layout = _layout(s0)
  cell = _Cell(kernel, params, layout)
  gx = _merge_time(kernel.project(params, xs))
  h0 = layout.flatten(s0)
  dtype = h0.dtype
  tol = _default_tol(dtype) if opts.tol is None else opts.tol
  max_iters = T if opts.max_iters is None else opts.max_iters
  one_pass = kernel.log_linear is not None
  diagonal = one_pass or opts.method == "quasi_newton"
  evaluate = _evaluator(cell, gx, mask, T, diagonal)
  guess = _log_linear_solve(kernel, params, gx, h0, mask, T, B) if one_pass else None
  S, fS, jac, (new, res), iters, r = newton_solve(
      evaluate, h0, T, diagonal=diagonal, damping=0.0 if one_pass else opts.damping,
      max_iters=max_iters, tol=tol, guess=guess)
  if one_pass:  # the log-space pass, and Newton steps only if it was not within tol
    iters = iters + 1
  converged = r <= _threshold(tol, fS)
  ys = kernel.output(new, res)
  ys = _masked(mask, ys.reshape((T, B) + ys.shape[1:]), jnp.zeros((), ys.dtype))
  final = layout.unflatten(fS[-1])
  if opts.on_failure == "nan":
    nan = lambda a: jnp.where(converged, a, jnp.asarray(jnp.nan, a.dtype))
    final, ys = jax.tree.map(nan, final), nan(ys)
  info = ParallelInfo(iters, r, converged)
  residuals = (params, xs, s0, mask, _shift(S, h0), new, res, jac)
  return (final, ys, info), residuals


def _solve_backward(kernel, opts, residuals, cotangents):
  params, xs, s0, mask, prev, new, res, jac = residuals
  d_final, d_ys, _ = cotangents
  T, B = xs.shape[:2]
  layout = _layout(s0)
  cell = _Cell(kernel, params, layout)
  flat = lambda a: a.reshape((T * B,) + a.shape[2:])
  transpose = _transpose_steps(cell, flat(xs), flat(prev), new, res)
  d_ys = _masked(mask, d_ys, jnp.zeros((), d_ys.dtype))
  zeros = jnp.zeros((T * B, layout.size), prev.dtype)
  c = _masked(mask, transpose.d_prev(zeros, flat(d_ys)).reshape(prev.shape),
              jnp.zeros((), prev.dtype))
  mu_end = layout.flatten(d_final)
  diagonal = jac.shape == prev.shape
  exact = not diagonal or kernel.log_linear is not None
  # In reversed time the adjoint is a forward recurrence: u_k = J^T u_{k-1} + c.
  jac_t = _transpose(jac, diagonal)[::-1]
  if exact:
    b = c[::-1].at[0].add(_apply(jac_t[0], mu_end, diagonal))
    mu = linear_scan(jac_t, b, diagonal=diagonal)[::-1]
  else:
    def evaluate(u_prev):
      d_new = _masked(mask, u_prev[::-1], jnp.zeros((), u_prev.dtype))
      jtu = transpose.d_prev(flat(d_new), jnp.zeros_like(flat(d_ys))).reshape(prev.shape)
      step = _masked(mask, jtu, u_prev[::-1]) + c
      return step[::-1], jac_t, None
    tol = _default_tol(prev.dtype) if opts.tol is None else opts.tol
    _, mu, _, _, _, _ = newton_solve(evaluate, mu_end, T, diagonal=True, damping=0.0,
                                     max_iters=T, tol=tol)
    mu = mu[::-1]
  # nu_t, the gradient of s_t from later steps and the final state.
  nu = jnp.concatenate([mu[1:], mu_end[None]], axis=0)
  nu = _masked(mask, nu, jnp.zeros((), nu.dtype))
  d_params, d_xs = transpose.grads(flat(nu), flat(d_ys))
  d_s0 = layout.unflatten(mu[0])
  cast = lambda d, p: jnp.asarray(d).astype(p.dtype)
  return (jax.tree.map(cast, d_params, params), cast(d_xs.reshape(xs.shape), xs),
          jax.tree.map(cast, d_s0, s0), None)


def _cell_solver(kernel, opts):
  @jax.custom_vjp
  def solve(params, xs, s0, mask):
    return _solve_forward(kernel, opts, params, xs, s0, mask)[0]

  def fwd(params, xs, s0, mask):
    return _solve_forward(kernel, opts, params, xs, s0, mask)

  def bwd(residuals, cotangents):
    return _solve_backward(kernel, opts, residuals, cotangents)

  solve.defvjp(fwd, bwd)
  return solve


class KernelForward(NamedTuple):
  """A cell's ``parallel_forward``: ``(final_state, ys, ParallelInfo)`` over time-major ``xs``.

  Attributes:
    kernel: the cell's `jaxrnn.kernel.Kernel`.
  """
  kernel: Any

  def __call__(self, params, xs, state, mask, opts):
    return _kernel_forward(self.kernel, params, xs, state, mask, opts)


def step_jacobian(model: base.Model, params: base.Params, state: base.State, x: Array, *,
                  diagonal: bool = False) -> Array:
  """The Jacobian ``d s'/d s`` of a cell's step as `parallel_unroll` uses it.

  ``[B, D, D]``, or ``[B, D]`` with ``diagonal``.

  The state is flattened as in `parallel_unroll` (e.g. ``[h, c]``).
  """
  forward = model.parallel_forward
  if not isinstance(forward, KernelForward):
    raise ValueError("model: expected a cell (its parallel_forward is a KernelForward), got"
                     f" {type(model.config).__name__}.")
  kernel = forward.kernel
  layout = _layout(state)
  gx = kernel.project(params, x, one_step=True)
  prev = layout.flatten(state)
  _, new, res = _Cell(kernel, params, layout).step(prev, gx)
  return _Cell(kernel, params, layout).jacobian(prev, gx, new, res, diagonal)


def _kernel_forward(kernel, params, xs, state, mask, opts):
  T, B = xs.shape[:2]
  if mask is None:
    mask = jnp.ones((T, B), bool)
  if T == 0:
    x = jnp.zeros(xs.shape[1:], xs.dtype)
    y = jax.eval_shape(lambda: kernel.output(*kernel.recur(
        params, state, kernel.project(params, x, one_step=True))))
    dtype = jax.tree.leaves(state)[0].dtype
    return state, jnp.zeros((0,) + y.shape, y.dtype), ParallelInfo(
        jnp.zeros((), jnp.int32), jnp.zeros((), dtype), jnp.ones((), bool))
  return _cell_solver(kernel, opts)(params, xs, state, mask)


def stack_infos(infos):
  """The `ParallelInfo` of a stack from its layers' (one entry per layer)."""
  return ParallelInfo(*(jnp.stack([jnp.asarray(getattr(i, f)) for i in infos])
                        for f in ParallelInfo._fields))


# --- the public function -----------------------------------------------------


def _check_options(method, max_iters, tol, damping, on_failure):
  if method not in METHODS:
    raise ValueError(f"method: expected one of {METHODS}, got {method!r}.")
  if max_iters is not None and (not isinstance(max_iters, int) or isinstance(max_iters, bool)
                                or max_iters < 1):
    raise ValueError(f"max_iters: expected a positive int or None (T), got {max_iters!r}.")
  if tol is not None and not (isinstance(tol, (int, float)) and tol > 0):
    raise ValueError(f"tol: expected a positive number or None (near the dtype's precision),"
                     f" got {tol!r}.")
  if not (isinstance(damping, (int, float)) and math.isfinite(damping) and damping >= 0):
    raise ValueError(f"damping: expected a finite number >= 0 (0 is plain Newton), got"
                     f" {damping!r}.")
  if on_failure not in ON_FAILURE:
    raise ValueError(f"on_failure: expected one of {ON_FAILURE}, got {on_failure!r}.")


def parallel_unroll(model: base.Model, params: base.Params, xs: Array,
                    state: Optional[base.State] = None, *, method: str = "newton",
                    max_iters: Optional[int] = None, tol: Optional[float] = None,
                    damping: float = 0.0, seq_lengths: Optional[Array] = None,
                    time_major: bool = True,
                    on_failure: str = "nan") -> tuple[base.State, Array, ParallelInfo]:
  r"""Runs ``model`` over a sequence in parallel over time (DEER, quasi-DEER, ELK).

  Computes what `unroll` computes, by solving for the whole trajectory with
  Newton's method, each step a linear recurrence solved by an associative
  scan of depth :math:`O(\log T)` (see the module docstring for the
  equations). Cells linear in their state (`min_gru`, `min_lstm`) are solved
  in one pass. A `stack` (or `learned_initial_state`) runs layer by layer,
  each layer in parallel.

  Jacobians: the built-in cells' :math:`J_t = \partial s_t / \partial
  s_{t-1}` and their diagonals are derived by hand (`Kernel.recur_jac`); a
  kernel with a backward but no ``recur_jac`` (`conv_lstm`, a `custom_cell`
  with ``step_vjp``) builds :math:`J_t` from that hand-derived backward, one
  basis vector per row; a `custom_cell` without
  ``step_vjp`` gets its Jacobian from `jax.jacfwd` of its step. The state is
  one vector per sequence, e.g. ``[h, c]`` (2H) for the LSTM.

  The gradient (plain `jax.grad` through this function) is the BPTT adjoint
  recurrence, solved by a reverse associative scan over the converged
  trajectory (with ``quasi_newton``, by the same diagonally preconditioned
  iteration with exact products); it equals `jaxrnn.bptt` at convergence.

  Convergence is never silent: ``info.converged`` says whether
  ``max|s_t - f(s_{t-1}, x_t)| <= tol (1 + max|s|)``. Under `jit` no
  exception can be raised on a traced value, so with ``on_failure="nan"``
  (the default) an unconverged solve returns NaN outputs and final state;
  ``on_failure="keep"`` returns the last iterate and leaves the check to the
  caller (``info.converged``).

  Args:
    model: a cell (built-in, `min_gru`, `min_lstm` or `custom_cell`), or a
      `stack` or `learned_initial_state` of them. `bidirectional` is not
      supported.
    params: its parameters.
    xs: ``[T, B, F]`` (``[B, T, F]`` with ``time_major=False``).
    state: the initial state, or None for ``model.initial_state(params, B)``.
    method: ``"newton"`` (dense Jacobians, cost :math:`O(D^3)` per combine)
      or ``"quasi_newton"`` (their diagonals, cost :math:`O(D)`).
    max_iters: Newton steps at most; None means T, where Newton is exact in
      exact arithmetic (with ``damping`` that bound is not guaranteed).
    tol: the relative tolerance above; None is 1024 machine epsilons of the
      state's dtype.
    damping: :math:`\lambda \ge 0`, the Levenberg--Marquardt (ELK) damping;
      0 is plain (quasi-)Newton.
    seq_lengths: optional ``[B]`` lengths; padded steps keep the state and
      output zeros, as in `unroll`.
    time_major: layout of ``xs`` and ``ys``.
    on_failure: ``"nan"`` or ``"keep"`` (see above).

  Returns:
    ``(final_state, ys, info)``: what `unroll` returns and a `ParallelInfo`.

  Raises:
    TypeError, ValueError: at trace time, for bad arguments or a model
      without a parallel path.

  References:
    Lim et al., *Parallelizing non-linear sequential models over the sequence
    length*, ICLR 2024.
    Gonzalez et al., *Towards scalable and stable parallelization of
    nonlinear RNNs*, NeurIPS 2024.
  """
  _check_options(method, max_iters, tol, damping, on_failure)
  if isinstance(model, base.Model) and model.parallel_forward is None:
    raise ValueError(
        f"model: {type(model.config).__name__} has no parallel path. parallel_unroll takes a"
        " cell, a custom_cell, or a stack or learned_initial_state of them; run"
        " bidirectional models and the recurrent regularisers (recurrent_dropout, zoneout)"
        " with jaxrnn.unroll.")
  xs_tm, state, ctx = unroll_lib.prepare(
      model, params, xs, state, seq_lengths=seq_lengths, resets=None, time_major=time_major,
      rng=None, backward="bptt", remat_chunk=None, scan_unroll=1, state_grad_clip=None)
  opts = SolverOptions(method, max_iters, None if tol is None else float(tol),
                       float(damping), on_failure)
  parallel_forward = model.parallel_forward
  assert parallel_forward is not None
  final, ys, info = parallel_forward(params, xs_tm, state, ctx.mask, opts)
  return final, (ys if time_major else jnp.swapaxes(ys, 0, 1)), info
