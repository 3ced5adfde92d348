"""The models the benchmark times: jaxrnn and the same one-layer RNN in its peers.

Every peer builds the same computation for a `Shape`: a one-layer recurrent
model run over a time-major `[T, B, I]` sequence from a zero state, and the
mean squared error between every output `ys [T, B, H]` and a fixed target. The
`"train"` step is the gradient of that loss with respect to the parameters; the
`"forward"` step is the loss alone. JAX peers are jitted (compiled ahead of
time, so the compile time is measured apart from the run time); PyTorch runs
eagerly with `loss.backward()`.

A shape's cell is any name in `jaxrnn.CELLS`, so a new built-in cell is timed
by the jaxrnn rows without editing this file, or a variant of one with options
(`CELL_VARIANTS`: ``lstm_ln`` is ``jaxrnn.lstm(H, layer_norm=True)``). The
other peers run the cells their library has (the tables below); none of them
has a layer-normalised LSTM, so its rows are jaxrnn's and the scan floor's.
The convolutional LSTM (`CONV_CELL`) has shapes of its own,
``conv_lstm:B:T:C:Hc:HxW:K``: inputs ``[T, B, H, W, C]``, ``Hc`` channels, a
``K x K`` kernel with "SAME" padding; jaxrnn's `conv_lstm` and Flax's
``ConvLSTMCell`` run it.

A builder raises `ImportError` when its library is missing and `Unsupported`
when it has no such cell or cannot run on this backend; the benchmark skips
the peer with a note in either case.
"""
# A peer's library may be missing (equinox is in the bench extra only), as said above.
# pyright: reportMissingImports=false

import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxrnn
from experiments import model as model_lib

MODES = ("train", "forward")
# The cells each peer library has: the jaxrnn cell's name, and the peer's class for it.
FLAX_CELLS = {"lstm": "OptimizedLSTMCell", "gru": "GRUCell", "rnn": "SimpleCell",
              "conv_lstm": "ConvLSTMCell"}
EQUINOX_CELLS = {"lstm": "LSTMCell", "gru": "GRUCell"}
HAIKU_CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "VanillaRNN"}
TORCH_CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
CUDNN_CELLS = {"lstm": "lstm"}
CONV_CELL = "conv_lstm"  # not in jaxrnn.CELLS: its constructor needs a spatial shape and a kernel
# Shape cells beyond jaxrnn.CELLS: name -> (the jaxrnn.CELLS cell, its options, what it is).
CELL_VARIANTS = {"lstm_ln": ("lstm", {"layer_norm": True}, "layer-normalised LSTM")}


class Shape(NamedTuple):
  """One benchmark problem.

  Attributes:
    cell: a name in `jaxrnn.CELLS`, built with its defaults (`"rnn"` is the
      tanh Elman RNN), or in `CELL_VARIANTS`.
    batch: B.
    time: T, the sequence length.
    inputs: I, the input size (the input channels C of `conv_lstm`).
    hidden: H, the hidden (and output) size (the channels Hc of `conv_lstm`).
    spatial: the spatial shape of `conv_lstm`'s inputs and state, e.g.
      ``(16, 16)``; ``()`` for the other cells.
    kernel: the kernel size of `conv_lstm` on every spatial axis; 0 otherwise.
  """
  cell: str
  batch: int
  time: int
  inputs: int
  hidden: int
  spatial: tuple[int, ...] = ()
  kernel: int = 0

  def __str__(self):
    text = f"{self.cell}:{self.batch}:{self.time}:{self.inputs}:{self.hidden}"
    if self.spatial:
      text += f":{'x'.join(map(str, self.spatial))}:{self.kernel}"
    return text


class Step(NamedTuple):
  """One benchmarked computation, with its data bound and ready to run.

  Attributes:
    run: runs the computation once, blocks until it has finished and returns
      its result (the loss, or the gradients for a train step).
    label: what exactly runs, e.g. `"flax.linen.RNN(OptimizedLSTMCell)"`.
    compile_s: seconds spent in `jit(...).lower(...).compile()`; `None` for
      eager peers.
    compiled: the compiled JAX executable (for `memory_analysis()`), or `None`.
  """
  run: Callable[[], Any]
  label: str
  compile_s: float | None = None
  compiled: Any = None


class Unsupported(Exception):
  """The peer has no such cell, or cannot run on this backend."""


Builder = Callable[[Shape, str], Step]


def parse_shapes(text: str) -> list[Shape]:
  """Parses `"lstm:32:100:64:256,gru:..."` (cell:B:T:I:H, comma separated).

  A `conv_lstm` shape reads `conv_lstm:B:T:C:Hc:HxW:K`, e.g.
  `conv_lstm:8:20:4:16:16x16:3`.
  """
  shapes = []
  for item in filter(None, (s.strip() for s in text.split(","))):
    fields = item.split(":")
    conv = fields[0] == CONV_CELL and len(fields) == 7
    cells = tuple(jaxrnn.CELLS) + tuple(CELL_VARIANTS)
    if not conv and (len(fields) != 5 or fields[0] not in cells):
      raise ValueError(
          f"Shape {item!r} should read cell:B:T:I:H with cell in {cells}, "
          f"e.g. 'lstm:32:100:64:256', or {CONV_CELL}:B:T:C:Hc:HxW:K, e.g."
          f" '{CONV_CELL}:8:20:4:16:16x16:3'.")
    batch, time, inputs, hidden = (int(f) for f in fields[1:5])
    shape = Shape(fields[0], batch, time, inputs, hidden)
    if conv:
      shape = shape._replace(spatial=tuple(int(n) for n in fields[5].split("x")),
                             kernel=int(fields[6]))
    shapes.append(shape)
  return shapes


@functools.lru_cache
def matmul_weights(shape: Shape) -> int:
  """Elements of the jaxrnn cell's weight matrices (its 2-D parameters) at `shape`.

  Each one multiplies a `[B, rows]` operand once per step: `w_x [I, G*H]` the
  input and `w_h [H, G*H]` the state, so the count is `(I + H) * G * H`, with
  G = 4 gates for the LSTM, 3 for the GRU and 1 for the Elman RNN. It is read
  from the parameters' shapes (`jax.eval_shape`, nothing is computed), so a new
  cell in `jaxrnn.CELLS` needs no entry here. For `conv_lstm` the kernels
  `[K, K, C, 4Hc]` and `[K, K, Hc, 4Hc]` count likewise, per spatial position.
  """
  model = _jaxrnn_cell(shape, None)
  params = jax.eval_shape(lambda key: model.init(key, shape.inputs), jax.random.key(0))
  return sum(math.prod(p.shape) for p in jax.tree.leaves(params) if len(p.shape) >= 2)


def flops(shape: Shape, mode: str) -> float:
  """Floating point operations of one step, counting the matmuls only.

  Forward: each of the T steps multiplies `x [B, I]` by `w_x [I, G*H]` and
  `h [B, H]` by `w_h [H, G*H]`, so forward = 2 * T * B * (I + H) * G * H
  (`matmul_weights` is `(I + H) * G * H`); `conv_lstm` does that at each of
  its spatial positions, with `K*K*(C + Hc)` rows. Train = 3 * forward: the backward
  pass multiplies by each weight twice more (for the gradient of the
  activations and of the weights). Elementwise gate maths is left out, as in
  DeepBench.

  Args:
    shape: the problem.
    mode: `"train"` or `"forward"`.

  Returns:
    The count, as a float.
  """
  positions = math.prod(shape.spatial)  # 1 for the cells over feature vectors
  forward = 2.0 * shape.time * shape.batch * positions * matmul_weights(shape)
  return 3.0 * forward if mode == "train" else forward


def _peer_cell(shape: Shape, library: str, cells: dict[str, str]) -> str:
  """The name of `library`'s class for the shape's cell; `Unsupported` if it has none."""
  if shape.cell in CELL_VARIANTS:
    raise Unsupported(f"{library} has no {CELL_VARIANTS[shape.cell][2]} ({shape.cell})")
  if shape.cell not in cells:
    raise Unsupported(f"{library} has no {shape.cell} cell (it has {', '.join(cells)})")
  return cells[shape.cell]


def _data(shape: Shape, time_major: bool = True):
  """The float32 inputs and targets every peer sees (same seed, same values)."""
  kx, ky = jax.random.split(jax.random.key(1))
  dims = (shape.time, shape.batch) if time_major else (shape.batch, shape.time)
  dims += shape.spatial
  xs = jax.random.normal(kx, (*dims, shape.inputs), jnp.float32)
  targets = jax.random.normal(ky, (*dims, shape.hidden), jnp.float32)
  return xs, targets


def _mse(ys, targets):
  return jnp.mean(jnp.square(ys.astype(jnp.float32) - targets))


def jax_step(loss_fn, params, xs, targets, mode: str, label: str) -> Step:
  """Jits `loss_fn(params, xs, targets)` (or its gradient), timing the compile."""
  fn = jax.grad(loss_fn) if mode == "train" else loss_fn
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(params, xs, targets).compile()
  compile_s = time.perf_counter() - start
  return Step(
      run=lambda: jax.block_until_ready(compiled(params, xs, targets)),
      label=label, compile_s=compile_s, compiled=compiled)


def _jaxrnn_cell(shape: Shape, dtype) -> jaxrnn.Model:
  """The shape's jaxrnn cell at its H, with its defaults (or variant options) and `dtype`."""
  if shape.cell == CONV_CELL:
    if dtype is not None:
      raise Unsupported(f"jaxrnn's {shape.cell} cell takes no dtype")
    return jaxrnn.conv_lstm(shape.hidden, kernel_size=shape.kernel,
                            spatial_dims=len(shape.spatial))
  cell, options, _ = CELL_VARIANTS.get(shape.cell, (shape.cell, {}, None))
  if dtype is not None:
    if not model_lib.takes_option(cell, "dtype"):
      raise Unsupported(f"jaxrnn's {cell} cell takes no dtype")
    options = dict(options, dtype=dtype)
  return jaxrnn.CELLS[cell](shape.hidden, **options)


def _cell_label(shape: Shape) -> str:
  """The shape's jaxrnn cell as code, e.g. ``lstm`` or ``lstm(layer_norm=True)``."""
  cell, options, _ = CELL_VARIANTS.get(shape.cell, (shape.cell, {}, None))
  return f"{cell}({', '.join(f'{k}={v!r}' for k, v in options.items())})" if options else cell


def jaxrnn_peer(backward: str = "bptt", remat_chunk: int | None = None,
                dtype=None) -> Builder:
  """jaxrnn: `jax.grad` of a loss through `jaxrnn.unroll`."""

  def build(shape: Shape, mode: str) -> Step:
    model = _jaxrnn_cell(shape, dtype)
    params = model.init(jax.random.key(0), shape.inputs)
    xs, targets = _data(shape)

    def loss(params, xs, targets):
      _, ys = jaxrnn.unroll(model, params, xs, backward=backward,
                            remat_chunk=remat_chunk)
      return _mse(ys, targets)

    options = [f"backward={backward!r}"]
    if remat_chunk is not None:
      options.append(f"remat_chunk={remat_chunk}")
    if dtype is not None:
      options.append(f"dtype={jnp.dtype(dtype).name}")
    label = f"jaxrnn.unroll({_cell_label(shape)}, {', '.join(options)})"
    return jax_step(loss, params, xs, targets, mode, label)

  return build


def flax_peer(shape: Shape, mode: str) -> Step:
  """Flax linen: `nn.RNN` over `OptimizedLSTMCell`, `GRUCell`, `SimpleCell`, `ConvLSTMCell`."""
  cell_name = _peer_cell(shape, "flax.linen", FLAX_CELLS)
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  if shape.cell == CONV_CELL:
    cell = nn.ConvLSTMCell(features=shape.hidden, kernel_size=(shape.kernel,) * len(shape.spatial))
  else:
    cell = getattr(nn, cell_name)(features=shape.hidden)
  model = nn.RNN(cell, time_major=True)
  xs, targets = _data(shape)
  params = model.init(jax.random.key(0), xs)
  loss = lambda params, xs, targets: _mse(model.apply(params, xs), targets)
  return jax_step(loss, params, xs, targets, mode,
                  f"flax.linen.RNN({type(cell).__name__})")


def equinox_peer(shape: Shape, mode: str) -> Step:
  """Equinox: an unbatched cell, `vmap`ped over the batch inside `lax.scan`."""
  cell_name = _peer_cell(shape, "equinox.nn", EQUINOX_CELLS)
  import equinox as eqx  # pylint: disable=g-import-not-at-top
  lstm = shape.cell == "lstm"
  cell_type = getattr(eqx.nn, cell_name)
  cell = cell_type(shape.inputs, shape.hidden, key=jax.random.key(0))
  params, static = eqx.partition(cell, eqx.is_array)
  xs, targets = _data(shape)

  def loss(params, xs, targets):
    cell = eqx.combine(params, static)

    def step(carry, x):
      carry = jax.vmap(cell)(x, carry)
      return carry, carry[0] if lstm else carry

    h = jnp.zeros((shape.batch, shape.hidden), xs.dtype)
    _, ys = jax.lax.scan(step, (h, h) if lstm else h, xs)
    return _mse(ys, targets)

  return jax_step(loss, params, xs, targets, mode,
                  f"lax.scan(vmap(equinox.nn.{cell_type.__name__}))")


def haiku_peer(shape: Shape, mode: str) -> Step:
  """Haiku: `hk.dynamic_unroll` of `hk.LSTM`, `hk.GRU`, `hk.VanillaRNN`."""
  core_name = _peer_cell(shape, "haiku", HAIKU_CELLS)
  import haiku as hk  # pylint: disable=g-import-not-at-top
  core_type = getattr(hk, core_name)

  def forward(xs):
    core = core_type(shape.hidden)
    ys, _ = hk.dynamic_unroll(core, xs, core.initial_state(shape.batch))
    return ys

  model = hk.without_apply_rng(hk.transform(forward))
  xs, targets = _data(shape)
  params = model.init(jax.random.key(0), xs)
  loss = lambda params, xs, targets: _mse(model.apply(params, xs), targets)
  return jax_step(loss, params, xs, targets, mode,
                  f"haiku.dynamic_unroll(hk.{core_type.__name__})")


def cudnn_peer(shape: Shape, mode: str) -> Step:
  """`jax.experimental.rnn.lstm`: JAX's binding of the cuDNN LSTM (GPU only)."""
  from jax.experimental import rnn  # pylint: disable=g-import-not-at-top
  if jax.default_backend() != "gpu":
    raise Unsupported("jax.experimental.rnn.lstm needs cuDNN (a GPU backend)")
  _peer_cell(shape, "jax.experimental.rnn", CUDNN_CELLS)
  batch, hidden, inputs = shape.batch, shape.hidden, shape.inputs
  weights = rnn.init_lstm_weight(jax.random.key(0), inputs, hidden, 1, False)
  xs, targets = _data(shape, time_major=False)  # cuDNN's binding is batch-major.
  seq_lengths = jnp.full((batch,), shape.time, jnp.int32)
  zeros = jnp.zeros((1, batch, hidden), jnp.float32)

  def loss(weights, xs, targets):
    # jax's partial(custom_vjp, ...) decorator hides lstm's return type.
    ys, _, _ = rnn.lstm(  # pyright: ignore[reportGeneralTypeIssues]
        xs, zeros, zeros, weights, seq_lengths, inputs, hidden,
        num_layers=1, dropout=0.0, bidirectional=False)
    return _mse(ys, targets)

  return jax_step(loss, weights, xs, targets, mode, "jax.experimental.rnn.lstm (cuDNN)")


def scan_floor_peer(shape: Shape, mode: str) -> Step:
  """Not a model: the matmuls alone of any `lax.scan` RNN, a bound on this backend.

  It does what every peer above must do at the least: the input projection as
  one matmul, then one `[B, H] @ [H, G*H]` dot and one small elementwise op
  per step inside `lax.scan`; for a train step also one `[B, G*H] @ [G*H, H]`
  dot per step in a reverse scan and the weight gradient as one matmul. There
  are no gates, so its result means nothing; its time is the cost of the
  loop and the dots on this backend, which no scan-based peer can go below.
  Its FLOPs are those of the shape's cell, so its "% of peak" is the ceiling
  of what such a loop reaches here. G is read from the jaxrnn cell's weights
  (`matmul_weights`), so any cell in `jaxrnn.CELLS` whose weights are
  `[I + H, G*H]` in all has this row.
  """
  if shape.spatial:
    raise Unsupported(f"the {shape.cell} cell convolves; this loop times dense matmuls only")
  hidden = shape.hidden
  gates, rest = divmod(matmul_weights(shape), (shape.inputs + hidden) * hidden)
  if rest or not gates:
    raise Unsupported(f"the {shape.cell} cell's weights are not [I + H, G*H], the matmuls this"
                      " loop times")
  ki, kh = jax.random.split(jax.random.key(0))
  scale = 1.0 / np.sqrt(hidden)
  params = (scale * jax.random.normal(ki, (shape.inputs, gates * hidden)),
            scale * jax.random.normal(kh, (hidden, gates * hidden)))
  xs, targets = _data(shape)

  def forward(w_x, w_h, xs):
    def step(h, g):
      h = jnp.tanh(g[:, :hidden] + (h @ w_h)[:, :hidden])
      return h, h
    return jax.lax.scan(step, jnp.zeros((shape.batch, hidden), xs.dtype), xs @ w_x)[1]

  def loss(params, xs, targets):
    w_x, w_h = params
    return _mse(forward(w_x, w_h, xs), targets)

  def grad(params, xs, targets):
    w_x, w_h = params
    hs = forward(w_x, w_h, xs)
    w_h_t = jax.lax.optimization_barrier(w_h.T)

    def step(d, d_y):
      d_a = jnp.tile(d + d_y, (1, gates))
      return d_a @ w_h_t, d_a

    _, d_a = jax.lax.scan(step, jnp.zeros_like(hs[0]), 2.0 * (hs - targets), reverse=True)
    inputs = jnp.concatenate([xs, hs], axis=-1).reshape(-1, shape.inputs + hidden)
    return inputs.T @ d_a.reshape(-1, gates * hidden)

  # `grad` is its own hand-written backward, so neither function is differentiated.
  return jax_step(grad if mode == "train" else loss, params, xs, targets, "forward",
                  "lax.scan of the matmuls alone (a bound, not a model)")


def scan_minimal_peer(shape: Shape, mode: str) -> Step:
  """Not jaxrnn: the least a `lax.scan` LSTM or GRU does, with a hand-written backward.

  A second bound beside `scan_floor`: where the floor does the matmuls alone,
  this is a whole cell written as plainly as it goes, with weights of the
  floor's shapes and scale (`w_x [I, G*H]`, `w_h [H, G*H]`) plus biases. The
  LSTM (gates i, f, g, o) applies one logistic to all 4H gates (tanh(x) =
  2 sigmoid(2x) - 1 on g) and stores h, c and the activations; the reset-after
  GRU (r, z, n) stores h, r, z, n and `h W_hn + b_hn`. Each train step is one reverse scan of the
  hand-derived gradients with one dot per step and the weight gradients as
  matmuls afterwards (its gradient is checked against `jax.grad` in
  tests/test_benchmark.py). What it takes over `scan_floor` is the cost of the
  cell's own arithmetic in the loop; jaxrnn's time over it is what jaxrnn adds.
  """
  if shape.cell not in ("lstm", "gru"):
    raise Unsupported(f"scan_minimal has the plain lstm and gru only, not {shape.cell}")
  params, forward, grad = minimal_cell(shape)
  params = jax.device_put(params)  # on the device once, as every other peer's
  xs, targets = _data(shape)
  loss = lambda params, xs, targets: _mse(forward(params, xs)[0], targets)
  # `grad` is its own hand-written backward, so neither function is differentiated.
  return jax_step(grad if mode == "train" else loss, params, xs, targets, "forward",
                  f"lax.scan of a hand-minimal {shape.cell} (a bound, not a model)")


def minimal_cell(shape: Shape):
  """`scan_minimal`'s cell at `shape`: ``(params, forward, grad)``.

  ``forward(params, xs)`` returns the outputs first, then what the backward
  reads; ``grad(params, xs, targets)`` is the gradient of `_mse` of the
  outputs, by hand.
  """
  hidden = shape.hidden
  gates = 4 if shape.cell == "lstm" else 3
  # NumPy, not jax.random: built on the host, with no small op to compile.
  rng = np.random.default_rng(0)
  params = [(rng.standard_normal(dims) / np.sqrt(hidden)).astype(np.float32)
            for dims in ((shape.inputs, gates * hidden), (hidden, gates * hidden))]
  params += [np.zeros(gates * hidden, np.float32)] * (1 if gates == 4 else 2)  # b; b_x, b_h
  forward, grad = (_minimal_lstm if gates == 4 else _minimal_gru)(hidden)
  return params, forward, grad


def _minimal_weight_grads(xs, h_prev, d_gx, d_gh, hidden_bias: bool) -> list:
  """``[d w_x, d w_h, d b (or d b_x), (d b_h)]`` from the per-step gate gradients."""
  d_gx, d_gh = d_gx.reshape(-1, d_gx.shape[-1]), d_gh.reshape(-1, d_gh.shape[-1])
  grads = [xs.reshape(-1, xs.shape[-1]).T @ d_gx, h_prev.reshape(-1, h_prev.shape[-1]).T @ d_gh,
           d_gx.sum(0)]
  return grads + ([d_gh.sum(0)] if hidden_bias else [])


def _minimal_lstm(hidden: int):
  """The plain LSTM (gates i, f, g, o; params w_x, w_h, b), forward and hand gradient."""
  # One logistic over i, f, g, o: a = mul * sigmoid(mul * z) + add, with mul = 2 and
  # add = -1 on g (tanh), 1 and 0 elsewhere.
  mul = np.repeat(np.array([1, 1, 2, 1], np.float32), hidden)
  add = np.repeat(np.array([0, 0, -1, 0], np.float32), hidden)

  def forward(params, xs):
    w_x, w_h, b = params

    def step(carry, gx):
      h, c = carry
      a = mul * jax.nn.sigmoid(mul * (gx + h @ w_h)) + add
      i, f, g, o = jnp.split(a, 4, axis=-1)
      c = f * c + i * g
      h = o * jnp.tanh(c)
      return (h, c), (h, c, a)

    zeros = jnp.zeros((xs.shape[1], hidden), xs.dtype)
    return jax.lax.scan(step, (zeros, zeros), xs @ w_x + b)[1]

  def grad(params, xs, targets):
    hs, cs, acts = forward(params, xs)
    w_h_t = jax.lax.optimization_barrier(params[1].T)

    def step(carry, inputs):
      dh, dc = carry
      d_y, a, c, c_prev = inputs
      i, f, g, o = jnp.split(a, 4, axis=-1)
      dh = dh + d_y
      tanh_c = jnp.tanh(c)
      dc = dc + dh * o * (1 - tanh_c * tanh_c)
      d_a = jnp.concatenate([dc * g, dc * c_prev, dc * i, dh * tanh_c], axis=-1)
      s = (a - add) / mul  # the logistic's value
      d_z = d_a * mul * mul * s * (1 - s)
      return (d_z @ w_h_t, dc * f), d_z

    zeros = jnp.zeros_like(hs[:1])
    _, d_z = jax.lax.scan(step, (zeros[0], zeros[0]),
                          (2.0 * (hs - targets) / hs.size, acts, cs,
                           jnp.concatenate([zeros, cs[:-1]])), reverse=True)
    return _minimal_weight_grads(xs, jnp.concatenate([zeros, hs[:-1]]), d_z, d_z, False)

  return forward, grad


def _minimal_gru(hidden: int):
  """The reset-after GRU (gates r, z, n; params w_x, w_h, b_x, b_h), forward and hand gradient."""

  def forward(params, xs):
    w_x, w_h, b_x, b_h = params

    def step(h, gx):
      gh = h @ w_h + b_h
      rz = jax.nn.sigmoid(gx[:, :2 * hidden] + gh[:, :2 * hidden])
      n = jnp.tanh(gx[:, 2 * hidden:] + rz[:, :hidden] * gh[:, 2 * hidden:])
      h = n + rz[:, hidden:] * (h - n)
      return h, (h, rz, n, gh[:, 2 * hidden:])

    return jax.lax.scan(step, jnp.zeros((xs.shape[1], hidden), xs.dtype), xs @ w_x + b_x)[1]

  def grad(params, xs, targets):
    hs, rzs, ns, gh_ns = forward(params, xs)
    w_h_t = jax.lax.optimization_barrier(params[1].T)
    h_prev = jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]])

    def step(dh, inputs):
      d_y, rz, n, gh_n, h_prev = inputs
      r, z = rz[:, :hidden], rz[:, hidden:]
      dh = dh + d_y
      d_n = dh * (1 - z) * (1 - n * n)
      d_rz = jnp.concatenate([d_n * gh_n, dh * (h_prev - n)], axis=-1) * rz * (1 - rz)
      d_gh = jnp.concatenate([d_rz, d_n * r], axis=-1)
      return dh * z + d_gh @ w_h_t, (d_rz, d_n, d_gh)

    _, (d_rz, d_n, d_gh) = jax.lax.scan(
        step, jnp.zeros_like(hs[0]), (2.0 * (hs - targets) / hs.size, rzs, ns, gh_ns, h_prev),
        reverse=True)
    return _minimal_weight_grads(xs, h_prev, jnp.concatenate([d_rz, d_n], axis=-1), d_gh, True)

  return forward, grad


def torch_peer(shape: Shape, mode: str) -> Step:
  """PyTorch `nn.LSTM`, `nn.GRU`, `nn.RNN` (eager; CUDA when JAX runs on a GPU)."""
  module_name = _peer_cell(shape, "torch.nn", TORCH_CELLS)
  import torch  # pylint: disable=g-import-not-at-top
  if jax.default_backend() == "gpu":
    if not torch.cuda.is_available():
      raise Unsupported("this torch build has no CUDA; a CPU row on a GPU machine "
                        "would compare unlike with unlike")
    device = torch.device("cuda")
  else:
    device = torch.device("cpu")
    torch.set_num_threads(len(os.sched_getaffinity(0)))
  module_type = getattr(torch.nn, module_name)
  torch.manual_seed(0)
  model = module_type(shape.inputs, shape.hidden).to(device)  # time-major by default
  xs, targets = (torch.tensor(np.asarray(a), device=device) for a in _data(shape))
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

  def train():
    model.zero_grad(set_to_none=True)
    ys, _ = model(xs)
    torch.nn.functional.mse_loss(ys, targets).backward()
    sync()

  def forward():
    with torch.no_grad():
      ys, _ = model(xs)
      loss = torch.nn.functional.mse_loss(ys, targets)
    sync()
    return loss

  return Step(run=train if mode == "train" else forward,
              label=f"torch.nn.{module_type.__name__} ({device.type})")


PEERS: dict[str, Builder] = {
    "jaxrnn": jaxrnn_peer(),
    "jaxrnn_autodiff": jaxrnn_peer(backward="autodiff"),
    "jaxrnn_bf16": jaxrnn_peer(dtype=jnp.bfloat16),
    "flax": flax_peer,
    "equinox": equinox_peer,
    "haiku": haiku_peer,
    "scan_floor": scan_floor_peer,
    "scan_minimal": scan_minimal_peer,
    "cudnn": cudnn_peer,
    "torch": torch_peer,
}
REFERENCE = "jaxrnn"  # Every row's time is also given relative to this peer's.


def bf16_gradient_error(shape: Shape) -> dict[str, float]:
  """How far the bfloat16-matmul jaxrnn gradient is from float32's, and why.

  `dtype=jnp.bfloat16` sets the compute dtype of the matmuls only (parameters
  and state stay float32), so both runs share the same parameters and inputs.
  A recurrence that amplifies small perturbations over time (a positive
  Lyapunov exponent) turns bfloat16's rounding into a large gradient change
  whatever the arithmetic does, so this also measures that sensitivity: the
  float32 gradient's change when only the parameters and inputs are rounded to
  bfloat16. bfloat16 compute is sound where the two are of one size.

  Returns:
    ``relative_error``: ||g_bf16 - g_f32|| / ||g_f32||, over all parameters at
    once; ``rounding_reference``: ||g_f32(round(params), round(xs)) - g_f32|| /
    ||g_f32||, with ``round`` the rounding to bfloat16 and back.
  """
  model32 = _jaxrnn_cell(shape, None)
  params = model32.init(jax.random.key(0), shape.inputs)
  xs, targets = _data(shape)

  def grad(model, params, xs):
    loss = lambda params: _mse(jaxrnn.unroll(model, params, xs)[1], targets)
    return jax.jit(jax.grad(loss))(params)

  rounded = lambda tree: jax.tree.map(
      lambda a: a.astype(jnp.bfloat16).astype(a.dtype), tree)
  g32 = grad(model32, params, xs)
  g16 = grad(_jaxrnn_cell(shape, jnp.bfloat16), params, xs)
  g_rounded = grad(model32, rounded(params), rounded(xs))
  norm = lambda tree: jnp.sqrt(sum(
      jnp.sum(jnp.square(a.astype(jnp.float32))) for a in jax.tree.leaves(tree)))
  error = lambda g: float(norm(jax.tree.map(jnp.subtract, g, g32)) / norm(g32))
  return {"relative_error": error(g16), "rounding_reference": error(g_rounded)}


def matmul_step(size: int) -> Step:
  """The machine's float32 peak: a jitted `[n, n] @ [n, n]` (2 n^3 FLOPs)."""
  ka, kb = jax.random.split(jax.random.key(2))
  a = jax.random.normal(ka, (size, size), jnp.float32)
  b = jax.random.normal(kb, (size, size), jnp.float32)
  return jax_step(lambda a, b, _: a @ b, a, b, None, "forward", f"{size}^3 matmul")
