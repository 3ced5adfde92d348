"""End-to-end tests of `python -m experiments.train` on shrunk configurations."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

import jaxrnn
import model_zoo
from experiments import checkpoints
from experiments import learning_report
from experiments import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_KEYS = ("steps_per_second", "seconds")

# A tiny adding run.
TINY = trainer.Config(task="adding", cell="gru", hidden_size=8, seq_len=6, batch_size=4,
                      steps=60, learning_rate=1e-2, checkpoint_every=20, eval_every=20,
                      log_every=5, eval_size=16)


def _flags(config: trainer.Config) -> list[str]:
  return [f"--{k}={v}" for k, v in (
      ("task", config.task), ("cell", config.cell), ("hidden_size", config.hidden_size),
      ("seq_len", config.seq_len), ("batch_size", config.batch_size), ("steps", config.steps),
      ("learning_rate", config.learning_rate), ("checkpoint_every", config.checkpoint_every),
      ("eval_every", config.eval_every), ("log_every", config.log_every),
      ("eval_size", config.eval_size), ("seeds", config.seeds), ("workdir", config.workdir))]


def _launch(*args: str) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "experiments.train", *args], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _final_state(config: trainer.Config):
  """The latest checkpoint of the run, with its seed axis if it has several seeds."""
  template = trainer.init_state(trainer.build(config))
  manager = checkpoints.open_manager(os.path.join(config.workdir, "checkpoints"))
  state = checkpoints.restore_latest(manager, template)
  manager.close()
  return state


def _metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


class TrainExperimentTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.tmp = tmp.name

  @parameterized.parameters(
      dict(task="adding", cell="lstm", seq_len=8, num_layers=2),
      dict(task="copy", cell="gru", seq_len=3, num_layers=1),
      dict(task="charlm", cell="lstm", seq_len=16, num_layers=1),
  )
  def test_shrunk_run_writes_everything(self, task, cell, seq_len, num_layers):
    config = trainer.Config(task=task, cell=cell, hidden_size=16, num_layers=num_layers,
                            seq_len=seq_len,
                            batch_size=8, steps=40, checkpoint_every=20, eval_every=20,
                            log_every=10, eval_size=32, sample_length=20,
                            workdir=os.path.join(self.tmp, task))
    summary = trainer.train(config)
    for name in ("summary.json", "metrics.jsonl", "loss_curve.png", "config.json"):
      self.assertTrue(os.path.exists(os.path.join(config.workdir, name)), name)
    self.assertEqual(sorted(os.listdir(os.path.join(config.workdir, "checkpoints"))), ["20", "40"])
    with open(os.path.join(config.workdir, "summary.json")) as f:
      self.assertEqual(json.load(f), summary)
    self.assertEqual(summary["task"], task)
    self.assertEqual(summary["steps"], 40)
    self.assertEqual(summary["devices"], jax.device_count())
    self.assertTrue(np.isfinite(summary["test_loss"]))
    self.assertGreater(summary["baseline_loss"], 0)
    self.assertEqual(summary["test_accuracy"] is None, task == "adding")
    records = _metrics(config.workdir)
    self.assertEqual([r["step"] for r in records], [10, 20, 30, 40])
    self.assertEqual([r["step"] for r in records if "eval_metric" in r], [20, 40])
    for key in ("loss", "grad_norm", "clipped_grad_norm", "skipped_steps", "metric"):
      self.assertIn(key, records[-1])
    self.assertLessEqual(records[-1]["clipped_grad_norm"], config.clip_norm * (1 + 1e-5))
    if task == "charlm":
      self.assertTrue(summary["sample"].startswith("The "))
      self.assertEqual(len(summary["sample"]), 4 + 20)
      # 40 steps already beat a uniform guess over the vocabulary.
      self.assertLess(summary["test_loss"], 0.9 * np.log(summary["vocab_size"]))

  def test_conv_lstm_run_reads_each_step_as_a_grid(self):
    config = trainer.Config(task="charlm", cell="conv_lstm", hidden_size=3, num_layers=2,
                            embed_size=6, conv_kernel_size=5, seq_len=8, batch_size=4,
                            steps=20, checkpoint_every=20, eval_every=20, log_every=10,
                            sample_length=10, workdir=os.path.join(self.tmp, "conv"))
    summary = trainer.train(config)
    self.assertEqual(summary["cell"], "conv_lstm")
    self.assertTrue(np.isfinite(summary["test_loss"]))
    self.assertTrue(summary["sample"].startswith("The "))
    self.assertLen(summary["sample"], 4 + 10)
    # The core is two conv_lstm layers over the 6 embedding features as 6 positions of one
    # channel, kernel 5, with the [6, 3] outputs flattened for the readout.
    core = trainer.build(config).model.core
    self.assertEqual(core.output_size, 6 * 3)
    params = core.init(jax.random.PRNGKey(0), 6)
    self.assertEqual(params.layers[0].w_x.shape, (5, 1, 4 * 3))
    xs = model_zoo.normal(jax.random.PRNGKey(1), (5, 2, 6))
    _, ys = jaxrnn.unroll(core, params, xs)
    layer = jaxrnn.conv_lstm(3, spatial_dims=1, kernel_size=5)
    _, want = jaxrnn.unroll(jaxrnn.stack([layer, layer]), params, xs[..., None])
    np.testing.assert_allclose(ys, want.reshape(5, 2, 18), rtol=1e-6, atol=1e-6)

  def test_resumed_run_is_bitwise_identical_in_process(self):
    whole = trainer.dataclasses.replace(TINY, workdir=os.path.join(self.tmp, "whole"))
    parts = trainer.dataclasses.replace(TINY, workdir=os.path.join(self.tmp, "parts"))
    once = trainer.train(whole)
    first = trainer.train(trainer.dataclasses.replace(parts, steps=40))
    second = trainer.train(parts)
    self.assertEqual(first["resumed_from_step"], 0)
    self.assertEqual(second["resumed_from_step"], 40)
    model_zoo.assert_trees_equal(_final_state(whole), _final_state(parts))
    self.assertEqual(_metrics(whole.workdir), _metrics(parts.workdir))
    # The training time counts both processes' steps; the wall time only the last process's.
    self.assertLess(first["train_seconds"], first["wall_seconds"])
    self.assertGreater(second["train_seconds"], first["train_seconds"])
    # A finished run re-run in its workdir trains nothing and changes nothing.
    again = trainer.train(whole)
    self.assertEqual(again["resumed_from_step"], 60)
    self.assertEqual(again["test_loss"], second["test_loss"])
    self.assertEqual(again["train_seconds"], once["train_seconds"])

  def test_sigkill_and_restart_is_bitwise_identical(self):
    # Two seeds side by side: the checkpoint holds both, with a leading seed axis.
    config = trainer.dataclasses.replace(
        TINY, steps=150, checkpoint_every=10, eval_every=50, log_every=5, seeds=2,
        workdir=os.path.join(self.tmp, "killed"))
    reference = trainer.dataclasses.replace(config, workdir=os.path.join(self.tmp, "reference"))
    run = _launch(*_flags(config))
    ckpt_dir = os.path.join(config.workdir, "checkpoints")
    # Kill once a checkpoint is complete, preferably while the next one is being written.
    deadline, killed_at = time.time() + 120, None
    while time.time() < deadline and run.poll() is None:
      names = os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []
      if killed_at is None and any(n.isdigit() for n in names):
        killed_at = time.time() + 1.0
      if killed_at is not None and (time.time() > killed_at or
                                    any("tmp" in n for n in names)):
        break
      time.sleep(0.002)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    self.assertEqual(run.returncode, -signal.SIGKILL, "the run ended before it was killed")
    written = sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit())
    self.assertTrue(written and written[-1] < config.steps, written)

    resumed = _launch(*_flags(config))
    out, err = resumed.communicate(timeout=300)
    self.assertEqual(resumed.returncode, 0, err[-2000:])
    with open(os.path.join(config.workdir, "summary.json")) as f:
      self.assertGreaterEqual(json.load(f)["resumed_from_step"], written[-1])

    trainer.train(reference)
    model_zoo.assert_trees_equal(_final_state(reference), _final_state(config))
    self.assertEqual(_metrics(reference.workdir), _metrics(config.workdir))

  def test_incompatible_workdir_is_refused_and_kept(self):
    config = trainer.dataclasses.replace(TINY, steps=20, workdir=os.path.join(self.tmp, "run"))
    trainer.train(config)
    ckpt = os.path.join(config.workdir, "checkpoints", "20")
    before = _snapshot(ckpt)
    bigger = trainer.dataclasses.replace(config, hidden_size=12)
    with self.assertRaisesRegex(checkpoints.CheckpointError, "hidden_size: 8 there, 12 now"):
      trainer.train(bigger)
    # Without the recorded settings the checkpoint's shapes still give it away.
    os.remove(os.path.join(config.workdir, "config.json"))
    with self.assertRaisesRegex(checkpoints.CheckpointError, "does not fit|cannot restore"):
      trainer.train(bigger)
    self.assertEqual(_snapshot(ckpt), before)

  def test_corrupt_checkpoint_is_reported_and_kept(self):
    config = trainer.dataclasses.replace(TINY, steps=20, workdir=os.path.join(self.tmp, "run"))
    trainer.train(config)
    ckpt = os.path.join(config.workdir, "checkpoints", "20")
    for root, _, files in os.walk(ckpt):
      for name in files:
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"garbage")
    before = _snapshot(ckpt)
    run = _launch(*_flags(trainer.dataclasses.replace(config, steps=40)))
    out, err = run.communicate(timeout=120)
    self.assertNotEqual(run.returncode, 0)
    self.assertNotIn("Traceback", err)
    self.assertIn("cannot restore checkpoint", err)
    self.assertEqual(len([l for l in err.splitlines() if l.startswith("train: error")]), 1)
    self.assertEqual(_snapshot(ckpt), before)
    self.assertFalse(os.path.exists(os.path.join(config.workdir, "checkpoints", "40")))


class SeedsTest(absltest.TestCase):
  """`--seeds=N`: N models in one vmapped step, each the run its seed alone would make."""

  def setUp(self):
    super().setUp()
    self.tmp = self.enter_context(tempfile.TemporaryDirectory())

  def test_three_seeds_equal_three_single_seed_runs(self):
    # A tight clip bound, so that most steps are clipped: clipping by the global norm of all
    # three seeds' gradients together, instead of each seed's own, would change every seed.
    # At the default learning rate the runs differ by float32 rounding only (a few 1e-7; the
    # batched matmuls of vmap round differently); TINY's 1e-2 can amplify it past 1e-4 in 200
    # steps where a seed is leaving the plateau.
    config = trainer.dataclasses.replace(
        TINY, steps=200, clip_norm=0.3, learning_rate=3e-3, checkpoint_every=200,
        eval_every=100, log_every=20, seed=5, seeds=3, workdir=os.path.join(self.tmp, "seeds"))
    together = trainer.train(config)
    self.assertEqual(together["seeds"], [5, 6, 7])
    records = _metrics(config.workdir)
    self.assertEqual([(r["step"], r["seed"]) for r in records],
                     [(step, seed) for step in range(20, 201, 20) for seed in (5, 6, 7)])
    self.assertGreater(np.mean([r["grad_norm"] > config.clip_norm for r in records]), 0.5)
    states = _final_state(config)
    for i, seed in enumerate((5, 6, 7)):
      alone_config = trainer.dataclasses.replace(
          config, seed=seed, seeds=1, workdir=os.path.join(self.tmp, str(seed)))
      alone = trainer.train(alone_config)
      result = together["per_seed"][i]
      self.assertEqual(result["seed"], seed)
      np.testing.assert_allclose(result["test_loss"], alone["test_loss"], rtol=1e-4)
      np.testing.assert_allclose(result["loss_over_baseline"], alone["loss_over_baseline"],
                                 rtol=1e-4)
      mine = [r for r in records if r["seed"] == seed]
      theirs = _metrics(alone_config.workdir)
      self.assertEqual([r["step"] for r in mine], [r["step"] for r in theirs])
      for key in ("loss", "grad_norm", "clipped_grad_norm"):
        np.testing.assert_allclose([r[key] for r in mine], [r[key] for r in theirs],
                                   rtol=1e-4, err_msg=f"seed {seed}: {key}")
      model_zoo.assert_trees_close(jax.tree.map(lambda leaf, i=i: leaf[i], states.params),
                                   _final_state(alone_config).params, rtol=1e-4, atol=1e-6)
    losses = [r["test_loss"] for r in together["per_seed"]]
    self.assertLen(set(losses), 3)  # Three different models, not one trained three times.
    self.assertAlmostEqual(together["mean"]["test_loss"], np.mean(losses), places=12)
    self.assertAlmostEqual(together["std"]["test_loss"], np.std(losses, ddof=1), places=12)
    self.assertEqual(together["solved"], sum(loss < 0.01 for loss in losses))
    self.assertTrue(os.path.exists(os.path.join(config.workdir, "loss_curve.png")))
    # The seed count is part of the run: another one does not resume it. (Killing and resuming
    # a run of seeds: test_sigkill_and_restart_is_bitwise_identical.)
    with self.assertRaisesRegex(checkpoints.CheckpointError, "seeds: 3 there, 2 now"):
      trainer.train(trainer.dataclasses.replace(config, seeds=2))
    # One seed is left out of the record (as in older workdirs) but named as 1.
    with self.assertRaisesRegex(checkpoints.CheckpointError, "seeds: 3 there, 1 now"):
      trainer.train(trainer.dataclasses.replace(config, seeds=1))


class DigitsRunTest(absltest.TestCase):

  def test_short_run_beats_chance_next_to_the_nonrecurrent_baselines(self):
    with tempfile.TemporaryDirectory() as tmp:
      config = trainer.Config(task="digits", cell="gru", hidden_size=16, seq_len=8,
                              batch_size=32, steps=100, learning_rate=1e-2,
                              checkpoint_every=100, eval_every=100, log_every=50,
                              workdir=os.path.join(tmp, "digits"))
      summary = trainer.train(config)
    self.assertEqual((summary["task"], summary["seq_len"]), ("digits", 8))
    # Chance is 0.1 and the class frequencies' cross-entropy about ln 10.
    self.assertGreater(summary["test_accuracy"], 0.4)
    self.assertLess(summary["loss_over_baseline"], 0.75)
    self.assertAlmostEqual(summary["baseline_loss"], np.log(10), delta=0.01)
    baselines = summary["nonrecurrent_baselines"]
    self.assertEqual(set(baselines), {"logistic_regression", "mlp"})
    for result in baselines.values():
      self.assertGreater(result["test_accuracy"], 0.8)
      self.assertLess(result["test_loss"], 0.5)


class TrainSecondsTest(absltest.TestCase):

  def _seconds(self, records):
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "metrics.jsonl")
      with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
      return trainer.train_seconds(path)

  def test_counts_each_step_once_over_its_seeds(self):
    records = [{"step": step, "seed": seed, "seconds": seconds}
               for step, seconds in ((50, 4.0), (100, 1.5), (150, 0.25)) for seed in (0, 1, 2)]
    self.assertEqual(self._seconds(records), 5.75)

  def test_unknown_when_a_step_has_no_seconds(self):
    # Written before `seconds` existed, or nothing logged yet.
    self.assertIsNone(self._seconds([{"step": 50}, {"step": 100, "seconds": 1.0}]))
    self.assertIsNone(self._seconds([]))


class LearningReportTest(absltest.TestCase):

  def test_rows_give_mean_std_and_solved_count(self):
    common = {"cell_options": {}, "hidden_size": 64, "steps": 4000, "wall_seconds": 12.0,
              "baseline_loss": 1 / 6}
    runs = {
        "adding_gru": dict(common, task="adding", cell="gru", seq_len=100, per_seed=[
            {"seed": s, "test_loss": loss, "loss_over_baseline": 6 * loss, "test_accuracy": None}
            for s, loss in enumerate((0.002, 0.004, 0.03))]),
        "adding_rnn": dict(common, task="adding", cell="rnn", seq_len=100, train_seconds=30.0,
                           per_seed=[{"seed": s, "test_loss": loss, "loss_over_baseline": 6 * loss,
                                      "test_accuracy": None}
                                     for s, loss in enumerate((0.002, float("nan"), 0.004))]),
        "digits_lstm": dict(common, task="digits", cell="lstm", seq_len=64, baseline_loss=2.3,
                            test_loss=0.5, loss_over_baseline=0.5 / 2.3, test_accuracy=0.95,
                            nonrecurrent_baselines={"mlp": {"test_accuracy": 0.919,
                                                            "test_loss": 0.34}})}
    with tempfile.TemporaryDirectory() as tmp:
      for name, summary in runs.items():
        os.makedirs(os.path.join(tmp, name))
        with open(os.path.join(tmp, name, "summary.json"), "w") as f:
          json.dump(summary, f)
      table = learning_report.report(tmp, list(runs)).splitlines()
    std = np.std([0.002, 0.004, 0.03], ddof=1)
    self.assertEqual(
        table[2], "| adding_gru: adding T=100, gru H=64 | 4000 | 3 | "
        f"0.0120 ± {std:.4f} | 0.1667 | 0.0720 ± {6 * std:.4f} | - | test MSE < 0.01 | 2/3 | 12 |")
    # A diverged seed is counted, not averaged; the time is over all the run's processes.
    self.assertEqual(
        table[3], "| adding_rnn: adding T=100, rnn H=64 | 4000 | 3 | 0.0030 ± 0.0014 (1 of 3 "
        "not finite) | 0.1667 | 0.0180 ± 0.0085 (1 of 3 not finite) | - | test MSE < 0.01 | "
        "2/3 | 30 |")
    self.assertEqual(table[4], "| digits_lstm: digits T=64, lstm H=64 | 4000 | 1 | 0.5000 | "
                     "2.3000 | 0.2174 | 0.9500 | test accuracy > 0.9 | 1/1 | 12 |")
    self.assertIn("- adding_rnn: 0.012, nan, 0.024", table)
    self.assertIn("digits: mlp on the 64 pixels, test accuracy 0.9190", table[-1])


def _snapshot(directory: str) -> dict:
  contents = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        contents[os.path.relpath(path, directory)] = f.read()
  return contents


# `python -m experiments.train`'s flags and main, once per cell named after the workdir root.
_EVERY_CELL_SCRIPT = """
import sys
from absl import flags
from absl.testing import flagsaver
from experiments import train
root = sys.argv[1]
for name in sys.argv[2:]:
  print(f"--cell={name}", file=sys.stderr, flush=True)  # the last one named is the one that failed
  with flagsaver.flagsaver():
    flags.FLAGS(["train", "--task=adding", f"--cell={name}", "--hidden_size=2", "--seq_len=2",
                 "--batch_size=1", "--num_devices=1", "--steps=1", "--eval_size=1",
                 "--checkpoint_every=1", "--eval_every=1", "--log_every=1",
                 f"--workdir={root}/{name}"])
    train.main(["train"])
"""


class CellsTest(absltest.TestCase):

  def test_every_cell_of_the_library_trains_from_the_flag(self):
    # The smallest run of each cell through --cell, the config and a step of `train.main`, all
    # in one process (one import of JAX, not one per cell). conv_lstm is not in jaxrnn.CELLS;
    # the experiments build it themselves.
    names = (*jaxrnn.CELLS, "conv_lstm")
    with tempfile.TemporaryDirectory() as tmp:
      run = subprocess.run([sys.executable, "-c", _EVERY_CELL_SCRIPT, tmp, *names], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
      self.assertEqual(run.returncode, 0, run.stderr[-3000:])
      for name in names:
        with open(os.path.join(tmp, name, "summary.json")) as f:
          summary = json.load(f)
        self.assertEqual(summary["cell"], name)
        self.assertEqual(summary["steps"], 1, name)
        self.assertTrue(np.isfinite(summary["test_loss"]), name)

  def test_parallel_unroll_trains_like_the_sequential_path(self):
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
      for unroll in ("sequential", "parallel"):
        # Solved to 16 float32 epsilons, not the default 1024: at the default the two paths
        # may differ by up to 1.2e-4 per forward, as large as the bound checked below.
        config = trainer.dataclasses.replace(
            TINY, steps=20, unroll=unroll, parallel_method="newton", num_devices=1,
            parallel_tol=16 * float(np.finfo(np.float32).eps), workdir=os.path.join(tmp, unroll))
        runs[unroll] = trainer.train(config)
    self.assertTrue(np.isfinite(runs["parallel"]["test_loss"]))
    # The same model and data: only float32 rounding separates the two paths.
    np.testing.assert_allclose(runs["parallel"]["test_loss"], runs["sequential"]["test_loss"],
                               rtol=1e-4)

  def test_parallel_flags(self):
    with tempfile.TemporaryDirectory() as tmp:
      run = _launch("--task=adding", "--cell=min_lstm", "--hidden_size=2", "--seq_len=3",
                    "--batch_size=2", "--num_devices=1", "--steps=2", "--eval_size=2",
                    "--checkpoint_every=2", "--eval_every=2", "--log_every=1",
                    "--unroll=parallel", "--parallel_method=quasi_newton",
                    "--parallel_max_iters=3", "--parallel_damping=0.001", f"--workdir={tmp}/run")
      _, err = run.communicate(timeout=300)
      self.assertEqual(run.returncode, 0, err)
      with open(os.path.join(tmp, "run", "config.json")) as f:
        saved = json.load(f)
      self.assertContainsSubset({"unroll": "parallel", "parallel_method": "quasi_newton",
                                 "parallel_max_iters": 3, "parallel_damping": 0.001}.items(),
                                saved.items())

  def test_unknown_cell_in_the_config_is_a_config_error(self):
    config = trainer.dataclasses.replace(TINY, cell="transformer")
    with self.assertRaisesRegex(trainer.ConfigError, "'transformer': expected one of jaxrnn.CELLS"):
      trainer.build(config)


class CellOptionsTest(parameterized.TestCase):
  """The LSTM options and the regularisers, from the config to the model."""

  def test_lstm_options_and_zoneout_train(self):
    with tempfile.TemporaryDirectory() as tmp:
      config = trainer.dataclasses.replace(
          TINY, cell="lstm", num_layers=2, peephole=True, proj_size=3, zoneout=0.1,
          zoneout_cell=0.3, steps=4, checkpoint_every=4, eval_every=4, log_every=2,
          workdir=os.path.join(tmp, "run"))
      summary = trainer.train(config)
    self.assertEqual(summary["cell_options"], {"peephole": True, "proj_size": 3,
                                               "zoneout": 0.1, "zoneout_cell": 0.3})
    self.assertTrue(np.isfinite(summary["test_loss"]))
    core = trainer.build(config).model.core
    for layer in core.config.layers:
      self.assertEqual(layer, jaxrnn.ZoneoutConfig(
          jaxrnn.LSTMConfig(8, peephole=True, proj_size=3), 0.1, 0.3))

  def test_recurrent_dropout_is_on_in_training_only(self):
    config = trainer.dataclasses.replace(TINY, cell="lstm", layer_norm=True,
                                         recurrent_dropout=0.5)
    model = trainer.build(config).model
    self.assertEqual(model.core.config, jaxrnn.RecurrentDropoutConfig(
        jaxrnn.LSTMConfig(8, layer_norm=True), 0.5))
    params = model.init(jax.random.PRNGKey(0))
    inputs = model_zoo.normal(jax.random.PRNGKey(1), (6, 4, 2))
    evaluated = model.apply(params, inputs)
    np.testing.assert_array_equal(evaluated, model.apply(params, inputs))
    self.assertFalse(np.allclose(model.apply(params, inputs, jax.random.PRNGKey(2)), evaluated))

  def test_conv_lstm_regularisers_train(self):
    with tempfile.TemporaryDirectory() as tmp:
      config = trainer.dataclasses.replace(
          TINY, cell="conv_lstm", hidden_size=2, zoneout=0.1, zoneout_cell=0.3, steps=2,
          checkpoint_every=2, eval_every=2, log_every=2, workdir=os.path.join(tmp, "run"))
      summary = trainer.train(config)
    self.assertEqual(summary["cell_options"], {"zoneout": 0.1, "zoneout_cell": 0.3})
    self.assertTrue(np.isfinite(summary["test_loss"]))
    self.assertEqual(trainer.build(config).model.core.config, jaxrnn.ZoneoutConfig(
        jaxrnn.ConvLSTMConfig(2, 1, (3,), ((1, 1),)), 0.1, 0.3))
    config = trainer.dataclasses.replace(config, zoneout=0.0, zoneout_cell=None,
                                         recurrent_dropout=0.5)
    model = trainer.build(config).model
    self.assertEqual(model.core.config, jaxrnn.RecurrentDropoutConfig(
        jaxrnn.ConvLSTMConfig(2, 1, (3,), ((1, 1),)), 0.5))
    params = model.init(jax.random.PRNGKey(0))
    inputs = model_zoo.normal(jax.random.PRNGKey(1), (6, 4, 2))
    evaluated = model.apply(params, inputs)
    self.assertFalse(np.allclose(model.apply(params, inputs, jax.random.PRNGKey(2)), evaluated))

  @parameterized.named_parameters(
      ("peephole_with_gru", dict(cell="gru", peephole=True), "--peephole is an option of"),
      ("peephole_with_conv_lstm", dict(cell="conv_lstm", peephole=True),
       "--cell=conv_lstm takes none of --peephole"),
      ("proj_size_with_rnn", dict(cell="rnn", proj_size=2), "--proj_size is an option of"),
      ("layer_norm_with_peephole", dict(cell="lstm", layer_norm=True, peephole=True),
       "does not combine with peephole"),
      ("zoneout_of_one", dict(zoneout=1.0), r"--zoneout=1.0: expected a probability"),
      ("zoneout_cell_with_mgu", dict(cell="mgu", zoneout_cell=0.1), "no cell state"),
      ("both_regularisers", dict(recurrent_dropout=0.1, zoneout=0.1), "do not combine"))
  def test_bad_cell_option_is_a_config_error(self, changes, expected):
    with self.assertRaisesRegex(trainer.ConfigError, expected):
      trainer.build(trainer.dataclasses.replace(TINY, **changes))


class BadFlagsTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("unknown_cell", ["--cell=transformer"], "--cell"),
      ("negative_size", ["--hidden_size=-4"], "--hidden_size"),
      ("seq_len_too_short", ["--task=adding", "--seq_len=1"], "too short"),
      ("missing_data", ["--data_path=/nonexistent/corpus.txt"], "no such file"),
      ("empty_corpus", ["--data_path={empty}"], "empty"),
      ("unknown_flag", ["--hiden_size=3"], "hiden_size"),
      ("workdir_is_a_file", ["--workdir={empty}"], "cannot make it a directory"),
      ("data_path_is_a_directory", ["--data_path={tmp}"], "is a directory"),
      ("momentum_with_adam", ["--optimizer=adam", "--momentum=0.9"],
       "--momentum is ignored by --optimizer=adam"),
      ("warmup_without_warmup_schedule", ["--schedule=cosine", "--warmup_steps=10"],
       "--warmup_steps is ignored by --schedule=cosine"),
      ("peephole_with_gru", ["--cell=gru", "--peephole"], "--peephole is an option of"),
      ("negative_zoneout", ["--zoneout=-0.1"], "--zoneout"),
      ("no_seeds", ["--seeds=0"], "--seeds"),
      ("digits_seq_len", ["--task=digits", "--seq_len=5"], "does not divide the 64 pixels"),
  )
  def test_one_line_usage_error(self, args, expected):
    with tempfile.TemporaryDirectory() as tmp:
      empty = os.path.join(tmp, "empty.txt")
      open(empty, "w").close()
      args = [f"--workdir={tmp}/w"] + [a.format(empty=empty, tmp=tmp) for a in args]
      run = _launch(*args)
      out, err = run.communicate(timeout=120)
    self.assertEqual(run.returncode, 2, err)
    self.assertNotIn("Traceback", err)
    lines = [l for l in err.splitlines() if l.strip()]
    self.assertLen(lines, 1, err)
    self.assertIn(expected, lines[0])
    self.assertFalse(os.path.exists(os.path.join(tmp, "w", "checkpoints")))


if __name__ == "__main__":
  absltest.main()
