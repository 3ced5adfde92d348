"""Orbax checkpoints of a `TrainState`, and the guards that keep a workdir consistent.

Orbax writes each checkpoint into a temporary directory and renames it when it
is complete, so a run killed mid-write leaves the previous checkpoint as the
latest one; the half-written directory is ignored and cleaned up on restart.
"""

import json
import os
import time
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils


class CheckpointError(Exception):
  """A workdir's checkpoint cannot be resumed by this run."""


def open_manager(directory: str, *, max_to_keep: int = 3,
                 asynchronous: bool = True) -> ocp.CheckpointManager:
  """A manager saving into `directory` (created if missing), by default in the background."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
      enable_async_checkpointing=asynchronous)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Starts saving `state` as checkpoint `step`; it lands when the write completes."""
  manager.save(step, args=ocp.args.StandardSave(state))


def restore_latest(manager: ocp.CheckpointManager, template: Any) -> Optional[Any]:
  """The latest checkpoint restored into the structure of `template`, or None.

  Args:
    manager: from `open_manager`.
    template: a state of the expected structure, shapes and dtypes (e.g. a
      freshly initialised one).

  Raises:
    CheckpointError: the checkpoint is unreadable or holds a different model.
  """
  step = manager.latest_step()
  if step is None:
    return None
  where = os.path.join(str(manager.directory), str(step))
  hint = ("it is left untouched; use another --workdir, or delete the checkpoint "
          "to start over")
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
  try:
    restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as e:  # Orbax raises many types for damaged or foreign files.
    reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    raise CheckpointError(f"cannot restore checkpoint {where} ({reason}); {hint}.") from e
  expected, got = _describe(template), _describe(restored)
  if expected != got:
    for path, want in expected.items():
      if got.get(path) != want:
        raise CheckpointError(
            f"checkpoint {where} does not fit this model: {path} is {got.get(path)}, "
            f"this run expects {want}; {hint}.")
    raise CheckpointError(f"checkpoint {where} does not fit this model's structure; {hint}.")
  return restored


def _describe(tree) -> dict:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): f"{np.dtype(leaf.dtype).name}{list(np.shape(leaf))}"
          for path, leaf in leaves}


def check_shared(directory: str, timeout: float) -> None:
  """Checks that every process of a multi-process run sees the same `directory`.

  Orbax writes a checkpoint from all processes into one directory, and waits
  without end for the others' part if they were given directories of their
  own. So process 0 writes a file of a fresh name into `directory`, every
  process looks for it for up to `timeout` seconds, and all of them learn
  whether each one saw it.

  Raises:
    CheckpointError: some process did not see the file (raised in every process).
  """
  if jax.process_count() == 1:
    return
  name = bytes(multihost_utils.broadcast_one_to_all(
      np.frombuffer(os.urandom(8), np.uint8))).hex()
  token = os.path.join(directory, f".shared-check-{name}")
  if jax.process_index() == 0:
    try:
      _write_atomically(token, "")
    except OSError as e:  # Reported below, once every process has looked.
      logging.error("Cannot write %s: %s", token, e)
  deadline = time.monotonic() + timeout
  while not os.path.exists(token) and time.monotonic() < deadline:
    time.sleep(0.1)
  seen_by = np.asarray(multihost_utils.process_allgather(np.array(os.path.exists(token))))
  if jax.process_index() == 0 and seen_by[0]:
    os.remove(token)
  if not seen_by[0]:
    raise CheckpointError(f"process 0 cannot write to --workdir={directory}.")
  if not seen_by.all():
    blind = [str(i) for i in np.flatnonzero(~seen_by)]
    raise CheckpointError(
        f"--workdir must be a directory shared by all processes: within {timeout:g} s, "
        f"process{'es' if len(blind) > 1 else ''} {', '.join(blind)} did not see the file that "
        f"process 0 wrote to {directory}. Give every process "
        "the same path on a filesystem they all mount (NFS, Lustre, Filestore), or raise "
        "--shared_workdir_timeout if that filesystem is slow to show new files.")


def check_config(path: str, fingerprint: dict, omitted: Optional[dict] = None) -> None:
  """Records `fingerprint` at `path`, or checks it against the one recorded there.

  ``omitted`` gives the value a setting has where a fingerprint leaves it out
  (a default kept out of older workdirs' records), for the error message.

  Raises:
    CheckpointError: the workdir was made by a run with other settings.
  """
  if not os.path.exists(path):
    _write_atomically(path, json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")
    return
  try:
    with open(path) as f:
      recorded = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"cannot read {path} ({e}); use another --workdir.") from e
  omitted = omitted or {}
  shown = lambda record, k: record.get(k, omitted.get(k))
  changed = [f"{k}: {shown(recorded, k)!r} there, {shown(fingerprint, k)!r} now"
             for k in sorted(set(recorded) | set(fingerprint))
             if recorded.get(k) != fingerprint.get(k)]
  if changed:
    raise CheckpointError(
        f"{os.path.dirname(path) or '.'} holds a run with other settings "
        f"({'; '.join(changed)}); use another --workdir or the same flags.")


def truncate_jsonl(path: str, last_step: int) -> None:
  """Keeps the complete lines of `path` whose "step" is <= `last_step`.

  Lines written after the checkpoint a run resumes from (and a line cut short
  by a kill) are dropped, so the resumed run appends each step exactly once.
  """
  if not os.path.exists(path):
    return
  kept = []
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if line.endswith("\n") and record.get("step", last_step + 1) <= last_step:
        kept.append(line)
  _write_atomically(path, "".join(kept))


def _write_atomically(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
