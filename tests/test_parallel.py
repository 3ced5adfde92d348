"""Tests of data-parallel and multi-process training (`jaxrnn/_src/parallel.py`).

Simulated devices come from XLA_FLAGS=--xla_force_host_platform_device_count,
which only acts before JAX starts. Tests that need several devices therefore
run in subprocesses. `FourDeviceTest` is this file rerun by pytest with four
CPU devices. `TwoProcessTest` joins two processes of two devices each through
`jax.distributed` on localhost. `DeviceCountInvarianceTest` trains the same
adding run with `python -m experiments.train` on one device and on two
processes of two devices.
"""

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

import jaxrnn
import model_zoo
from experiments import tasks
from experiments import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SUBPROCESS_ENV = "JAXRNN_PARALLEL_TEST_SUBPROCESS"
_TIMEOUT_S = 240


def _env(num_devices: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env[_SUBPROCESS_ENV] = "1"
  return env


def _free_port() -> int:
  with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_all(commands: list[tuple[list[str], dict]], timeout: float) -> list[str]:
  """Runs the commands at once and returns their outputs; any still running at the end are killed.

  Output goes to files, not pipes: a process blocked on a full pipe would stall
  its peers in the collectives.
  """
  procs, logs = [], []
  try:
    for argv, env in commands:
      logs.append(tempfile.TemporaryFile(mode="w+"))
      procs.append(subprocess.Popen(argv, env=env, cwd=REPO, stdout=logs[-1],
                                    stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + timeout
    for proc in procs:
      proc.wait(timeout=max(deadline - time.monotonic(), 1))
    outputs = []
    for proc, log in zip(procs, logs):
      log.seek(0)
      outputs.append(log.read())
      if proc.returncode != 0:
        raise AssertionError(f"{' '.join(proc.args)} exited with {proc.returncode}:\n"
                             f"{outputs[-1][-4000:]}")
    return outputs
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    for log in logs:
      log.close()


# --- a small model to train -------------------------------------------------

_AXES = tasks.Batch(inputs=1, targets=0)  # time-major inputs [T, B, 2], targets [B, 1]


def _adding_setup(hidden_size=8, time_major=True):
  cell, readout = jaxrnn.lstm(hidden_size), jaxrnn.dense(1)

  def init(key):
    k_cell, k_readout = jax.random.split(key)
    return (cell.init(k_cell, 2), readout.init(k_readout, hidden_size))

  def loss_fn(params, batch, rng):
    del rng
    _, ys = jaxrnn.unroll(cell, params[0], batch.inputs, time_major=time_major)
    last = ys[-1] if time_major else ys[:, -1]
    preds = readout.apply(params[1], last[None])[0]
    mse = jnp.mean(jnp.sum((preds - batch.targets) ** 2, axis=-1))
    return mse, {"metric": mse}

  optimizer = jaxrnn.training.make_optimizer("adam", 1e-2, clip_norm=1.0)
  state = jaxrnn.training.init_train_state(init(jax.random.PRNGKey(0)), optimizer,
                                  jax.random.PRNGKey(1))
  return loss_fn, optimizer, state


def _batch(step, batch_size=16, seq_len=6):
  return tasks.adding_batch(jax.random.PRNGKey(100 + step), batch_size, seq_len)


# --- any number of devices (runs in the test process) -----------------------


class MeshAndShardingTest(parameterized.TestCase):

  def test_mesh_spans_all_devices_by_default(self):
    mesh = jaxrnn.parallel.make_mesh()
    self.assertEqual(mesh.axis_names, (jaxrnn.parallel.DATA_AXIS,))
    self.assertEqual(mesh.size, jax.device_count())

  @parameterized.parameters(0, -1, 10_000)
  def test_mesh_rejects_impossible_sizes(self, num_devices):
    with self.assertRaisesRegex(ValueError, "num_devices"):
      jaxrnn.parallel.make_mesh(num_devices)

  @parameterized.parameters((0, P("data")), (1, P(None, "data")),
                            (2, P(None, None, "data")), (None, P()))
  def test_batch_sharding_puts_data_on_the_batch_axis(self, axis, spec):
    self.assertEqual(jaxrnn.parallel.batch_sharding(jaxrnn.parallel.make_mesh(), axis).spec, spec)

  def test_batch_sharding_per_leaf(self):
    shardings = jaxrnn.parallel.batch_sharding(jaxrnn.parallel.make_mesh(), _AXES)
    self.assertIsInstance(shardings, tasks.Batch)
    self.assertEqual(shardings.inputs.spec, P(None, "data"))
    self.assertEqual(shardings.targets.spec, P("data"))

  @parameterized.parameters(-1, 1.5, True, "1")
  def test_batch_axis_must_be_a_non_negative_int(self, axis):
    with self.assertRaisesRegex(ValueError, "batch_axis"):
      jaxrnn.parallel.batch_sharding(jaxrnn.parallel.make_mesh(), axis)

  def test_batch_axis_must_be_a_prefix_of_the_batch(self):
    with self.assertRaisesRegex(ValueError, "prefix"):
      jaxrnn.parallel.shard_batch(jaxrnn.parallel.make_mesh(), _batch(0), {"inputs": 1, "targets": 0})

  def test_missing_batch_axis_is_reported(self):
    with self.assertRaisesRegex(ValueError, "no batch axis 1"):
      jaxrnn.parallel.shard_batch(jaxrnn.parallel.make_mesh(), {"x": jnp.zeros(4)}, batch_axis=1)

  def test_shard_batch_keeps_the_values(self):
    mesh, batch = jaxrnn.parallel.make_mesh(), _batch(0, batch_size=jax.device_count() * 4)
    sharded = jaxrnn.parallel.shard_batch(mesh, batch, _AXES)
    model_zoo.assert_trees_close(sharded, batch, rtol=0, atol=0)
    self.assertEqual(sharded.inputs.sharding, jaxrnn.parallel.batch_sharding(mesh, 1))

  def test_shard_local_batch_of_one_process_is_shard_batch(self):
    mesh, batch = jaxrnn.parallel.make_mesh(), _batch(0, batch_size=jax.device_count() * 4)
    self.assertEqual(jaxrnn.parallel.process_batch_slice(mesh, 4 * mesh.size), slice(0, 4 * mesh.size))
    model_zoo.assert_trees_close(jaxrnn.parallel.shard_local_batch(mesh, batch, _AXES),
                                 jaxrnn.parallel.shard_batch(mesh, batch, _AXES), rtol=0, atol=0)

  def test_replicate(self):
    mesh = jaxrnn.parallel.make_mesh()
    _, _, state = _adding_setup()
    replicated = jaxrnn.parallel.replicate(mesh, state)
    for leaf in jax.tree.leaves(replicated):
      self.assertTrue(leaf.is_fully_replicated)
      self.assertEqual(leaf.sharding, jaxrnn.parallel.replicated_sharding(mesh))
    model_zoo.assert_trees_close(replicated, state, rtol=0, atol=0)

  def test_data_parallel_step_equals_the_plain_step(self):
    loss_fn, optimizer, state = _adding_setup()
    mesh = jaxrnn.parallel.make_mesh()
    plain = jaxrnn.training.make_train_step(loss_fn, optimizer)
    parallel = jaxrnn.parallel.data_parallel(jaxrnn.training.make_train_step(loss_fn, optimizer, jit=False),
                                    mesh, batch_axis=_AXES)
    expected, placed = state, jaxrnn.parallel.replicate(mesh, state)
    for step in range(3):
      batch = _batch(step, batch_size=4 * mesh.size)
      expected, expected_metrics = plain(expected, batch)
      placed, metrics = parallel(placed, jaxrnn.parallel.shard_batch(mesh, batch, _AXES))
    model_zoo.assert_trees_close(placed, expected, rtol=1e-5, atol=1e-6)
    model_zoo.assert_trees_close(metrics, expected_metrics, rtol=1e-5, atol=1e-6)

  @parameterized.parameters((-1,), (2,))
  def test_initialize_distributed_checks_the_rank(self, process_id):
    with self.assertRaisesRegex(ValueError, "process_id"):
      jaxrnn.parallel.initialize_distributed("127.0.0.1:1", 2, process_id)


# --- four devices (this file rerun in a subprocess) -------------------------


@absltest.skipIf(jax.device_count() < 4, "needs 4 devices; run by test_four_device_suite")
class FourDeviceTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.mesh = jaxrnn.parallel.make_mesh(4)

  def test_each_device_holds_a_quarter_of_the_batch(self):
    batch = _batch(0, batch_size=16, seq_len=6)
    sharded = jaxrnn.parallel.shard_batch(self.mesh, batch, _AXES)
    inputs = sorted(sharded.inputs.addressable_shards, key=lambda s: s.index[1].start)
    self.assertLen(inputs, 4)
    for i, shard in enumerate(inputs):
      self.assertEqual(shard.data.shape, (6, 4, 2))
      np.testing.assert_array_equal(shard.data, batch.inputs[:, 4 * i:4 * i + 4])
    self.assertEqual({s.data.shape for s in sharded.targets.addressable_shards}, {(4, 1)})

  def test_mesh_of_fewer_devices(self):
    mesh = jaxrnn.parallel.make_mesh(2)
    self.assertEqual(mesh.size, 2)
    sharded = jaxrnn.parallel.shard_batch(mesh, _batch(0, batch_size=16), _AXES)
    self.assertEqual({s.data.shape for s in sharded.inputs.addressable_shards}, {(6, 8, 2)})

  def test_indivisible_batch_is_rejected(self):
    with self.assertRaisesRegex(ValueError, "divisible by 4"):
      jaxrnn.parallel.shard_batch(self.mesh, _batch(0, batch_size=6), _AXES)

  def test_replicated_leaf(self):
    batch = {"xs": jnp.ones((3, 8, 2)), "scale": jnp.arange(5.0)}
    sharded = jaxrnn.parallel.shard_batch(self.mesh, batch, {"xs": 1, "scale": None})
    self.assertTrue(sharded["scale"].is_fully_replicated)
    self.assertFalse(sharded["xs"].is_fully_replicated)

  def test_gradient_is_all_reduced(self):
    loss_fn, optimizer, state = _adding_setup()
    step = jaxrnn.parallel.data_parallel(jaxrnn.training.make_train_step(loss_fn, optimizer, jit=False),
                                self.mesh, batch_axis=_AXES)
    batch = jaxrnn.parallel.shard_batch(self.mesh, _batch(0), _AXES)
    hlo = step.lower(jaxrnn.parallel.replicate(self.mesh, state), batch).compile().as_text()
    self.assertIn("all-reduce", hlo)

  def test_four_devices_equal_one(self):
    # Same global batches: the parameters after some steps agree with a single
    # device's, i.e. the gradient is the global-batch mean.
    loss_fn, optimizer, state = _adding_setup()
    one = jaxrnn.parallel.make_mesh(1)
    runs = []
    for mesh in (one, self.mesh):
      step = jaxrnn.parallel.data_parallel(jaxrnn.training.make_train_step(loss_fn, optimizer, jit=False),
                                  mesh, batch_axis=_AXES)
      placed = jaxrnn.parallel.replicate(mesh, state)
      for i in range(5):
        placed, metrics = step(placed, jaxrnn.parallel.shard_batch(mesh, _batch(i), _AXES))
      runs.append((placed, metrics))
    model_zoo.assert_trees_close(runs[1], runs[0], rtol=1e-5, atol=1e-6)
    self.assertEqual(int(runs[1][0].step), 5)

  def test_batch_major_equals_time_major(self):
    results = []
    for time_major in (True, False):
      loss_fn, optimizer, state = _adding_setup(time_major=time_major)
      axes = tasks.Batch(inputs=1 if time_major else 0, targets=0)
      step = jaxrnn.parallel.data_parallel(jaxrnn.training.make_train_step(loss_fn, optimizer, jit=False),
                                  self.mesh, batch_axis=axes)
      placed = jaxrnn.parallel.replicate(self.mesh, state)
      for i in range(3):
        batch = _batch(i)
        if not time_major:
          batch = batch._replace(inputs=jnp.swapaxes(batch.inputs, 0, 1))
        placed, _ = step(placed, jaxrnn.parallel.shard_batch(self.mesh, batch, axes))
      results.append(placed.params)
    model_zoo.assert_trees_close(results[1], results[0], rtol=1e-5, atol=1e-6)

  def test_eval_step_with_sharded_batch(self):
    loss_fn, _, state = _adding_setup()
    batch = _batch(0, batch_size=32)
    expected = jaxrnn.training.make_eval_step(loss_fn)(state.params, batch)
    evaluate = jaxrnn.parallel.data_parallel(jaxrnn.training.make_eval_step(loss_fn, jit=False), self.mesh,
                                    batch_axis=_AXES)
    got = evaluate(jaxrnn.parallel.replicate(self.mesh, state.params),
                   jaxrnn.parallel.shard_batch(self.mesh, batch, _AXES))
    model_zoo.assert_trees_close(got, expected, rtol=1e-5, atol=1e-6)


  def test_trainer_rejects_a_batch_that_does_not_split(self):
    config = trainer.Config(task="adding", seq_len=6, batch_size=6, num_devices=4)
    with self.assertRaisesRegex(trainer.ConfigError, "multiple of 4"):
      trainer.build(config)
    self.assertEqual(trainer.build(dataclasses.replace(config, num_devices=2)).mesh.size, 2)
    with self.assertRaisesRegex(trainer.ConfigError, "--num_devices"):
      trainer.build(dataclasses.replace(config, num_devices=5))

  @parameterized.parameters(("adding", 1), ("copy", 2))
  def test_trainer_result_does_not_depend_on_the_devices(self, task, seeds):
    # 18 held-out sequences do not split over 4 devices: they are evaluated
    # replicated. The second run switches from 4 devices to 2 when it resumes.
    # With --seeds=2 the batch carries a seed axis before its batch axis.
    with tempfile.TemporaryDirectory() as tmp:
      config = trainer.Config(task=task, hidden_size=8, seq_len=6, batch_size=8, steps=20,
                              checkpoint_every=10, eval_every=10, log_every=10,
                              eval_size=18, progress=False, seeds=seeds)
      one = trainer.train(dataclasses.replace(
          config, num_devices=1, workdir=os.path.join(tmp, "one")))
      parts = dataclasses.replace(config, workdir=os.path.join(tmp, "parts"))
      first = trainer.train(dataclasses.replace(parts, num_devices=4, steps=10))
      resumed = trainer.train(dataclasses.replace(parts, num_devices=2))
    self.assertEqual((one["devices"], first["devices"], resumed["devices"]), (1, 4, 2))
    self.assertEqual(resumed["resumed_from_step"], 10)
    losses = lambda summary: [r["test_loss"] for r in summary.get("per_seed", [summary])]
    self.assertLen(losses(one), seeds)
    np.testing.assert_allclose(losses(resumed), losses(one), rtol=1e-5)


class FourDeviceSuiteTest(absltest.TestCase):

  def test_four_device_suite(self):
    if os.environ.get(_SUBPROCESS_ENV) or jax.device_count() >= 4:
      self.skipTest("FourDeviceTest runs directly here.")
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            os.path.abspath(__file__), "-k", "FourDeviceTest"]
    out, = _run_all([(argv, _env(4))], timeout=_TIMEOUT_S)
    self.assertIn("passed", out)
    self.assertNotIn("skipped", out.split("\n")[-2])


# --- two processes of two devices --------------------------------------------

# Each process loads only its own rows; the assembled batch must be the global
# one, and a data-parallel loss over it the single-device loss.
_LOCAL_ROWS_SCRIPT = """
import sys
import jax, jax.numpy as jnp, numpy as np
import jaxrnn
jaxrnn.parallel.initialize_distributed(sys.argv[1], 2, int(sys.argv[2]), initialization_timeout=60)
from experiments import tasks
mesh = jaxrnn.parallel.make_mesh()
assert (jax.process_count(), mesh.size, jax.local_device_count()) == (2, 4, 2)
axes = tasks.Batch(inputs=1, targets=0)
batch = tasks.adding_batch(jax.random.PRNGKey(0), 16, 6)
rows = jaxrnn.parallel.process_batch_slice(mesh, 16)
assert rows == slice(8 * jax.process_index(), 8 * jax.process_index() + 8), rows
local = tasks.Batch(batch.inputs[:, rows], batch.targets[rows])
loss = jaxrnn.parallel.data_parallel(lambda _, b: jnp.mean(b.inputs[..., 0].sum(0) * b.targets[:, 0]),
                            mesh, batch_axis=axes)
expected = np.mean(np.asarray(batch.inputs[..., 0]).sum(0) * np.asarray(batch.targets[:, 0]))
for placed in (jaxrnn.parallel.shard_local_batch(mesh, local, axes), jaxrnn.parallel.shard_batch(mesh, batch, axes)):
  got = float(loss(jaxrnn.parallel.replicate(mesh, jnp.zeros(())), placed))
  np.testing.assert_allclose(got, expected, rtol=1e-6)
print("ok", jax.process_index())
"""


class TwoProcessTest(absltest.TestCase):

  def test_each_process_feeds_its_own_rows(self):
    if os.environ.get(_SUBPROCESS_ENV):
      self.skipTest("runs in the parent test process only.")
    coordinator = f"127.0.0.1:{_free_port()}"
    outputs = _run_all([([sys.executable, "-c", _LOCAL_ROWS_SCRIPT, coordinator, str(rank)],
                         _env(2)) for rank in range(2)], timeout=_TIMEOUT_S)
    for rank, out in enumerate(outputs):
      self.assertIn(f"ok {rank}", out)


# --- the same training run on 1 device and on 2 processes x 2 devices ---------

_TRAIN = [sys.executable, "-m", "experiments.train"]
_RUN_FLAGS = ["--task=adding", "--cell=lstm", "--hidden_size=32", "--seq_len=50",
              "--batch_size=64", "--steps=50", "--seed=1", "--eval_every=50",
              "--checkpoint_every=50", "--log_every=50"]


class DeviceCountInvarianceTest(absltest.TestCase):
  """The command line's run on one device and on two processes of two devices.

  One device against four, with a resume on two, through `trainer.train` in
  one process is `FourDeviceTest.test_trainer_result_does_not_depend_on_the_devices`.
  """

  def test_same_test_loss_on_one_device_and_two_processes(self):
    if os.environ.get(_SUBPROCESS_ENV):
      self.skipTest("runs in the parent test process only.")
    root = self.enter_context(tempfile.TemporaryDirectory())
    coordinator = f"127.0.0.1:{_free_port()}"
    two = os.path.join(root, "two_processes")
    one = os.path.join(root, "one_device")
    # All three processes at once.
    _run_all([(_TRAIN + _RUN_FLAGS + [f"--workdir={one}"], _env(1))]
             + [(_TRAIN + _RUN_FLAGS + [
                 f"--workdir={two}", f"--coordinator_address={coordinator}",
                 "--num_processes=2", f"--process_id={rank}"], _env(2)) for rank in range(2)],
             timeout=_TIMEOUT_S)
    summaries = {"one_device": _summary(one), "two_processes": _summary(two)}

    print({name: s["test_loss"] for name, s in summaries.items()})
    self.assertEqual({name: s["devices"] for name, s in summaries.items()},
                     {"one_device": 1, "two_processes": 4})
    self.assertEqual({name: s["steps"] for name, s in summaries.items()},
                     {"one_device": 50, "two_processes": 50})
    # They differ by float32 rounding alone (4e-8 relative here); another --seed moves the
    # loss by far more than 1e-5.
    np.testing.assert_allclose(summaries["two_processes"]["test_loss"],
                               summaries["one_device"]["test_loss"], rtol=1e-5)


def _summary(workdir: str) -> dict:
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


if __name__ == "__main__":
  absltest.main()
