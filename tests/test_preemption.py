"""SIGTERM and shared-workdir tests of `python -m experiments.train`, in one process and in two.

SIGTERM (a preemption notice) must stop a run after writing the checkpoint of
the step under way, with exit status 143, in every process at the same step;
re-running the command must then end bitwise identical to an uninterrupted
run. A multi-process run whose processes were given different workdirs must
stop at start-up with one error line instead of waiting at its first
checkpoint. Each subprocess is bounded by a timeout.
"""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest

import model_zoo
from experiments import trainer
from test_parallel import _env
from test_parallel import _free_port
from test_train_experiment import REPO
from test_train_experiment import TINY
from test_train_experiment import _final_state
from test_train_experiment import _flags
from test_train_experiment import _metrics

_TIMEOUT_S = 180
_STOPPED = re.compile(r"^train: stopped by SIGTERM at step (\d+) of (\d+)", re.MULTILINE)


class _Ranks:
  """The processes of one run of `experiments.train`, their output going to files.

  "{rank}" in an argument becomes each process's rank. Output goes to a file,
  not a pipe: a process blocked on a full pipe would stall its peers.
  """

  def __init__(self, test: absltest.TestCase, args: list[str], num_processes: int = 1):
    self.procs, self.logs = [], []
    coordinator = f"127.0.0.1:{_free_port()}"
    for rank in range(num_processes):
      ranked = [] if num_processes == 1 else [
          f"--coordinator_address={coordinator}", f"--num_processes={num_processes}",
          f"--process_id={rank}"]
      self.logs.append(test.enter_context(tempfile.TemporaryFile(mode="w+")))
      self.procs.append(subprocess.Popen(
          [sys.executable, "-m", "experiments.train", *(a.format(rank=rank) for a in args),
           *ranked], env=_env(1), cwd=REPO,
          stdout=self.logs[-1], stderr=subprocess.STDOUT, text=True))
      test.addCleanup(self._kill, self.procs[-1])

  @staticmethod
  def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
      proc.kill()
      proc.wait()

  def running(self) -> bool:
    return all(proc.poll() is None for proc in self.procs)

  def wait(self) -> list[tuple[int, str]]:
    """Each process's exit status and output, once all have ended (or been killed at the limit)."""
    deadline = time.monotonic() + _TIMEOUT_S
    for proc in self.procs:
      try:
        proc.wait(timeout=max(deadline - time.monotonic(), 1))
      except subprocess.TimeoutExpired:
        self._kill(proc)
    ended = []
    for proc, log in zip(self.procs, self.logs):
      log.seek(0)
      ended.append((proc.returncode, log.read()))
    return ended


def _wait_for_training(ranks: _Ranks, workdir: str) -> None:
  """Returns once process 0 has logged a step (or a process ended, or time ran out)."""
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.monotonic() + _TIMEOUT_S
  while ranks.running() and time.monotonic() < deadline:
    if os.path.exists(metrics) and os.path.getsize(metrics):
      return
    time.sleep(0.002)


def _checkpoint_steps(workdir: str) -> list[int]:
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())


class SigtermTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.enter_context(tempfile.TemporaryDirectory())

  def _check_stop_and_resume(self, steps: int, num_processes: int, signalled: int,
                             seeds: int = 1):
    # The only periodic checkpoint is the last one, so any other was written for SIGTERM.
    config = dataclasses.replace(TINY, steps=steps, checkpoint_every=steps, eval_every=steps,
                                 seeds=seeds, workdir=os.path.join(self.tmp, "stopped"))
    whole = dataclasses.replace(config, workdir=os.path.join(self.tmp, "whole"))
    if num_processes > 1:  # The reference runs meanwhile, as two processes too.
      reference = _Ranks(self, _flags(whole), num_processes)
    run = _Ranks(self, _flags(config), num_processes)
    _wait_for_training(run, config.workdir)
    run.procs[signalled].send_signal(signal.SIGTERM)

    stops = []
    for status, output in run.wait():
      self.assertEqual(status, 128 + signal.SIGTERM, output[-3000:])  # As documented.
      self.assertNotIn("Traceback", output)
      stops.append([(int(step), int(total)) for step, total in _STOPPED.findall(output)])
    self.assertLen(stops[0], 1)
    step = stops[0][0][0]
    self.assertEqual(stops, [[(step, steps)]] * num_processes)  # One step, agreed by all.
    self.assertLess(step, steps, "the run ended before SIGTERM")
    self.assertEqual(_checkpoint_steps(config.workdir), [step])

    for status, output in _Ranks(self, _flags(config), num_processes).wait():
      self.assertEqual(status, 0, output[-3000:])
    with open(os.path.join(config.workdir, "summary.json")) as f:
      self.assertEqual(json.load(f)["resumed_from_step"], step)
    if num_processes > 1:
      for status, output in reference.wait():
        self.assertEqual(status, 0, output[-3000:])
    else:
      trainer.train(whole)
    model_zoo.assert_trees_equal(_final_state(whole), _final_state(config))
    self.assertEqual(_metrics(whole.workdir), _metrics(config.workdir))

  def test_one_process_checkpoints_stops_and_resumes_bitwise(self):
    # With two seeds side by side (--seeds=2); the two-process run below trains one.
    self._check_stop_and_resume(steps=300, num_processes=1, signalled=0, seeds=2)

  def test_two_processes_stop_at_one_step_and_resume_bitwise(self):
    # JAX's preemption service tells process 0 of the SIGTERM that process 1 got. They stopped
    # 13 to 23 steps after the first logged one (step 5, when the signal is sent) on an idle
    # machine, and 24 to 52 steps after it at a load average of 7, so 300 steps leave a margin.
    self._check_stop_and_resume(steps=300, num_processes=2, signalled=1)


class SharedWorkdirTest(absltest.TestCase):

  def test_separate_workdirs_are_refused_at_start_up(self):
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    workdir = os.path.join(tmp, "{rank}")
    run = _Ranks(self, _flags(dataclasses.replace(TINY, workdir=workdir))
                 + ["--shared_workdir_timeout=2"], num_processes=2)
    for rank, (status, output) in enumerate(run.wait()):
      self.assertEqual(status, 2, output[-3000:])
      self.assertNotIn("Traceback", output)
      errors = [l for l in output.splitlines() if l.startswith("train: error:")]
      self.assertLen(errors, 1, output[-3000:])
      self.assertIn("--workdir must be a directory shared by all processes: within 2 s, "
                    "process 1 did not see", errors[0])
      self.assertFalse(os.path.exists(os.path.join(tmp, str(rank), "checkpoints")))


if __name__ == "__main__":
  absltest.main()
