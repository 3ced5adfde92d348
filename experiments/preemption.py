"""Stopping a training run on SIGTERM at a step that every process agrees on.

Slurm, Kubernetes and Cloud TPU send SIGTERM some seconds before SIGKILL. In a
multi-process run, `jax.distributed.initialize` starts JAX's preemption
service: its handler catches SIGTERM in whichever process gets it, tells every
process through the coordinator, and they agree on a step one past the
furthest any of them has reached. `multihost_utils.reached_preemption_sync_point`
turns True at that step in every process, so all of them save the same
checkpoint and stop. A single process has no such service; `StopSignal` catches
SIGTERM itself and stops after the step under way.
"""

import signal
import threading

import jax
from jax.experimental import multihost_utils


class StopSignal:
  """A context in which SIGTERM asks the training loop to checkpoint and stop.

  Every process must call `reached(step)` with the same steps, in increasing
  order, including the step it starts from: JAX's sync point takes the last
  step each process reported. Orbax's `CheckpointManager.save(step)` reports
  its step too, which is why these are global step numbers. One gap remains:
  a SIGTERM that reaches a multi-process run before its first `reached` call
  is agreed at step 1, which a run resumed from a later step never meets; it
  then trains on until SIGKILL and resumes from its last periodic checkpoint.
  """

  def __init__(self):
    self._multi_process = jax.process_count() > 1
    self._received = False
    self._previous = None

  def __enter__(self) -> "StopSignal":
    # Several processes: JAX's handler is in place, and replacing it would cut the others off.
    # Python lets only the main thread set a handler.
    if not self._multi_process and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _handle(self, signum, frame) -> None:
    del signum, frame
    self._received = True

  def reached(self, step: int) -> bool:
    """Whether to save the checkpoint of `step` and stop; the same in every process."""
    if not self._multi_process:
      return self._received
    try:
      return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # jax_enable_preemption_service is off, and SIGTERM kills as usual.
      return False
