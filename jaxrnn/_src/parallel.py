"""Data-parallel and multi-process training with `jax.sharding`.

A one-axis `Mesh` named "data" spans the devices. The batch is split along that
axis, while params and optimizer state are replicated. A step jitted with those
shardings (`data_parallel`) computes the same global-batch loss as on one
device. XLA partitions it and inserts the all-reduce of the gradient itself, so
the loss function needs no collectives and no `axis_name`:

    mesh = jaxrnn.parallel.make_mesh()
    state = jaxrnn.parallel.replicate(mesh, jaxrnn.training.init_train_state(params, opt, key))
    step = jaxrnn.parallel.data_parallel(jaxrnn.training.make_train_step(loss_fn, opt, jit=False),
                                mesh, batch_axis=Batch(inputs=1, targets=0))
    batch = jaxrnn.parallel.shard_batch(mesh, batch, Batch(inputs=1, targets=0))
    state, metrics = step(state, batch)

jaxrnn is time-major, so the batch axis of an `[T, B, F]` sequence is 1. A
per-example target such as `[B, 1]` has its batch axis at 0. For this reason
`batch_axis` can be given per leaf.

With several processes (hosts), every process runs the same program.
`initialize_distributed` joins them before JAX touches a device, and then
`jax.devices()` lists the devices of every process. `make_mesh` spans all of
them. Each process supplies only the rows its own devices hold, either cut from
a global batch that every process can draw (`shard_batch`) or read by its own
data loader (`shard_local_batch`, rows `process_batch_slice`).
"""

from collections.abc import Callable, Sequence
from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

DATA_AXIS = "data"

# The position of a leaf's batch axis (an int >= 0), or None for a leaf that is
# replicated. It is one value for every leaf or a pytree prefix of the batch.
BatchAxis = Any


def initialize_distributed(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    *,
    local_device_ids: Optional[Sequence[int]] = None,
    initialization_timeout: int = 300,
) -> None:
  """Joins this process to a multi-process JAX run (`jax.distributed.initialize`).

  Call it once in every process, before any other JAX call. Afterwards
  `jax.devices()` lists the devices of every process, and `jax.local_devices()`
  lists this process's own. On CPU, the cross-process collectives use gloo.

  Arguments left as None are detected from the cluster environment, which JAX
  can do on Cloud TPU, under Slurm and under Open MPI. Elsewhere, pass all
  three.

  Args:
    coordinator_address: "host:port" of process 0, reachable from every
      process. Process 0 starts the coordinator service there.
    num_processes: how many processes take part.
    process_id: this process's rank, in `[0, num_processes)`.
    local_device_ids: restrict this process to these local devices. None keeps
      them all, except under Slurm or Open MPI on GPUs, where JAX gives each
      process one GPU.
    initialization_timeout: seconds to wait for every process to join before
      raising.

  Raises:
    ValueError: `num_processes` or `process_id` is out of range.
  """
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"num_processes must be >= 1, got {num_processes}.")
  if process_id is not None and process_id < 0:
    raise ValueError(f"process_id must be >= 0, got {process_id}.")
  if process_id is not None and num_processes is not None and process_id >= num_processes:
    raise ValueError(
        f"process_id must be in [0, num_processes={num_processes}), got {process_id}.")
  # jax.config's options are attributes made at run time, which its type does not list.
  collectives = jax.config.jax_cpu_collectives_implementation  # pyright: ignore[reportAttributeAccessIssue]
  if collectives in (None, "", "none"):
    # Without cross-process collectives, CPU processes cannot all-reduce gradients.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes,
      process_id=process_id, local_device_ids=local_device_ids,
      initialization_timeout=initialization_timeout)


# jax.Device is jaxlib's class, re-exported as a plain variable that a type cannot name.
def make_mesh(num_devices: Optional[int] = None, *,
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:  # pyright: ignore[reportInvalidTypeForm]
  """A one-axis mesh named "data" over `num_devices` devices.

  The devices are ordered by process, so each process's devices hold a
  contiguous block of the batch, which `shard_local_batch` relies on. With
  several processes, the mesh takes the same number of devices from each one.

  Args:
    num_devices: how many devices in total; None uses all of `devices`. With
      several processes it must be a multiple of `jax.process_count()`.
    devices: the devices to choose from; default `jax.devices()` (every
      process's).

  Returns:
    A `jax.sharding.Mesh` with the single axis `DATA_AXIS` of type Auto.

  Raises:
    ValueError: `num_devices` is out of range or does not split evenly over the
      processes.
  """
  devices = list(jax.devices() if devices is None else devices)
  by_process = {}
  for device in sorted(devices, key=lambda d: (d.process_index, d.id)):
    by_process.setdefault(device.process_index, []).append(device)
  processes = len(by_process)
  total = len(devices)
  if num_devices is None:
    num_devices = total
  if not 1 <= num_devices <= total:
    raise ValueError(f"num_devices must be in [1, {total}] (the devices available), "
                     f"got {num_devices}.")
  if num_devices % processes:
    raise ValueError(
        f"num_devices={num_devices} does not split evenly over {processes} processes; "
        f"use a multiple of {processes}.")
  per_process = num_devices // processes
  if any(len(local) < per_process for local in by_process.values()):
    raise ValueError(
        f"num_devices={num_devices} needs {per_process} devices in each of {processes} "
        f"processes, but some have fewer ({[len(v) for v in by_process.values()]}).")
  chosen = [d for _, local in sorted(by_process.items()) for d in local[:per_process]]
  if not hasattr(jax.sharding, "AxisType"):  # JAX < 0.5.3, whose mesh axes are all Auto.
    return Mesh(np.array(chosen), (DATA_AXIS,))
  return Mesh(np.array(chosen), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """The sharding that places a full copy of an array on every device of `mesh`."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, batch_axis: BatchAxis = 1) -> Any:
  """The shardings that split the batch axis over the mesh's "data" axis.

  Args:
    mesh: from `make_mesh`.
    batch_axis: the batch axis of every leaf (1 for time-major `[T, B, F]`
      sequences, 0 for `[B, ...]`). It is one int, or a pytree prefix of the
      batch with an int per leaf or subtree. None replicates the leaf.

  Returns:
    A pytree of `NamedSharding`s with the structure of `batch_axis`. It can be
    given as `jax.jit`'s `in_shardings` for the batch argument.

  Raises:
    ValueError: a batch axis is negative or not an int.
  """

  def one(axis):
    if axis is None:
      return replicated_sharding(mesh)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis < 0:
      raise ValueError(
          f"batch_axis entries must be ints >= 0 or None, got {axis!r}; a time-major "
          "[T, B, ...] leaf has batch axis 1, a batch-major [B, ...] leaf 0.")
    return NamedSharding(mesh, PartitionSpec(*([None] * int(axis)), DATA_AXIS))

  return jax.tree.map(one, batch_axis, is_leaf=lambda x: x is None)


def _leaf_axes(batch_axis: BatchAxis, batch) -> list:
  """`batch_axis` broadcast to one entry per leaf of `batch`, in flattening order."""
  if batch_axis is None or isinstance(batch_axis, (int, np.integer)):
    return [batch_axis] * len(jax.tree.leaves(batch))
  is_leaf = lambda x: x is None
  try:
    subtrees = jax.tree.structure(batch_axis, is_leaf=is_leaf).flatten_up_to(batch)
  except (ValueError, TypeError) as e:
    raise ValueError(
        f"batch_axis {batch_axis!r} is not a pytree prefix of the batch "
        f"{jax.tree.structure(batch)}; give one int, or one per leaf.") from e
  axes = jax.tree.leaves(batch_axis, is_leaf=is_leaf)
  return [axis for axis, subtree in zip(axes, subtrees) for _ in jax.tree.leaves(subtree)]


def _check_leaf(leaf, axis, mesh: Mesh, what: str) -> None:
  if axis is None:
    return
  if np.ndim(leaf) <= axis:
    raise ValueError(
        f"{what} has shape {np.shape(leaf)} and no batch axis {axis}; set batch_axis per "
        "leaf (1 for time-major [T, B, ...] leaves, 0 for [B, ...]).")
  if np.shape(leaf)[axis] % mesh.size:
    raise ValueError(
        f"{what} has {np.shape(leaf)[axis]} rows on batch axis {axis}, which do not split "
        f"evenly over {mesh.size} devices; use a batch size divisible by {mesh.size}.")


def process_batch_slice(mesh: Mesh, global_batch_size: int) -> slice:
  """The rows of a global batch that this process's devices hold.

  A data loader of this process reads these rows of each global batch and
  passes them to `shard_local_batch`.

  Args:
    mesh: from `make_mesh`.
    global_batch_size: rows of the global batch, divisible by `mesh.size`.

  Returns:
    A `slice` of `range(global_batch_size)`.

  Raises:
    ValueError: the batch does not split evenly, or this process holds no
      contiguous block (a mesh not made by `make_mesh`).
  """
  if global_batch_size % mesh.size:
    raise ValueError(
        f"a global batch of {global_batch_size} does not split evenly over {mesh.size} "
        f"devices; use a batch size divisible by {mesh.size}.")
  sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
  index_map = sharding.addressable_devices_indices_map((global_batch_size,))
  # JAX types each index as Optional, but a NamedSharding gives every device one.
  starts = sorted({index[0].start or 0  # pyright: ignore[reportOptionalSubscript]
                   for index in index_map.values()})
  rows = global_batch_size // mesh.size
  if not starts:
    raise ValueError("this process has no device in the mesh.")
  if starts != list(range(starts[0], starts[0] + rows * len(starts), rows)):
    raise ValueError("this process's devices do not hold a contiguous block of the "
                     "batch; build the mesh with make_mesh.")
  return slice(starts[0], starts[0] + rows * len(starts))


def shard_batch(mesh: Mesh, batch, batch_axis: BatchAxis = 1):
  """A global batch, known to every process, split over the mesh.

  Every process passes the same global batch (e.g. drawn from the same key),
  and each keeps only the rows its own devices hold. Results therefore do not
  depend on how many devices or processes there are.

  Args:
    mesh: from `make_mesh`.
    batch: a pytree of arrays (host or device) holding the global batch.
    batch_axis: as in `batch_sharding`.

  Returns:
    The batch as global `jax.Array`s, sharded by `batch_sharding`.

  Raises:
    ValueError: a leaf lacks its batch axis or its rows do not split evenly.
  """
  leaves, treedef = jax.tree.flatten(batch)
  axes = _leaf_axes(batch_axis, batch)
  for i, (leaf, axis) in enumerate(zip(leaves, axes)):
    _check_leaf(leaf, axis, mesh, f"batch leaf {i}")
  return jax.tree.unflatten(
      treedef, [_place(leaf, batch_sharding(mesh, axis)) for leaf, axis in zip(leaves, axes)])


def shard_local_batch(mesh: Mesh, local_batch, batch_axis: BatchAxis = 1):
  """This process's rows of a global batch, assembled into global arrays.

  For data loaders that read only their own part. Every process passes the
  same number of rows, namely `process_batch_slice(mesh, global_batch_size)` of
  the global batch. The global batch is these blocks concatenated in process
  order. With one process this is `shard_batch`.

  Args:
    mesh: from `make_mesh`.
    local_batch: a pytree of this process's rows.
    batch_axis: as in `batch_sharding`; replicated (None) leaves must be equal
      in every process.

  Returns:
    The global batch as `jax.Array`s sharded by `batch_sharding`.

  Raises:
    ValueError: a leaf lacks its batch axis or its rows do not split evenly over
      this process's devices.
  """
  leaves, treedef = jax.tree.flatten(local_batch)
  axes = _leaf_axes(batch_axis, local_batch)
  local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
  out = []
  for i, (leaf, axis) in enumerate(zip(leaves, axes)):
    if axis is None:
      out.append(_place(leaf, replicated_sharding(mesh)))
      continue
    if np.ndim(leaf) <= axis or np.shape(leaf)[axis] % local_devices:
      raise ValueError(
          f"local batch leaf {i} has shape {np.shape(leaf)}; its batch axis {axis} must "
          f"exist and split evenly over this process's {local_devices} devices.")
    out.append(jax.make_array_from_process_local_data(
        batch_sharding(mesh, axis), np.asarray(leaf)))
  return jax.tree.unflatten(treedef, out)


def _place(leaf, sharding: NamedSharding) -> jax.Array:
  """`leaf`, the same global value in every process, laid out by `sharding`.

  Each device's part is copied from the host, and each process fills only its
  own devices. `jax.device_put` of a device array would reshard it with a
  collective program instead, and on CPU such a program, running next to a
  train step, can deadlock the devices' threads.
  """
  value = np.asarray(leaf)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def replicate(mesh: Mesh, tree):
  """A full copy of every leaf of `tree` on every device of `mesh`.

  With several processes, every process must pass the same values (e.g. params
  initialised from the same seed).

  Args:
    mesh: from `make_mesh`.
    tree: a pytree of arrays (params, a `TrainState`, ...).

  Returns:
    The tree with each leaf a replicated global `jax.Array`.
  """
  return jax.tree.map(lambda leaf: _place(leaf, replicated_sharding(mesh)), tree)


def data_parallel(
    step: Callable[[Any, Any], Any],
    mesh: Mesh,
    *,
    batch_axis: BatchAxis = 1,
    donate_state: bool = False,
) -> Callable[[Any, Any], Any]:
  """Jits `step(state, batch) -> outputs` to run data-parallel over `mesh`.

  `state` (a `TrainState` or params) and every output are replicated. The batch
  is split along its batch axis. XLA partitions the computation by these
  shardings, and because the loss is a mean over the global batch, it adds the
  all-reduce of the gradient itself. The step is the one that would run on a
  single device: use `make_train_step(..., jit=False)` and `make_eval_step`
  without an `axis_name`.

  Args:
    step: a function of `(state, batch)`, jitted or not.
    mesh: from `make_mesh`.
    batch_axis: as in `batch_sharding`.
    donate_state: let XLA reuse the input state's buffers for the output (do
      not touch the old state after the call).

  Returns:
    The jitted step. Its inputs must already be placed, with `replicate` for
    `state` and `shard_batch` or `shard_local_batch` for `batch`.
  """
  replicated = replicated_sharding(mesh)
  return jax.jit(step, in_shardings=(replicated, batch_sharding(mesh, batch_axis)),
                 out_shardings=replicated, donate_argnums=(0,) if donate_state else ())
