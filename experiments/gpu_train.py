"""`python -m experiments.train` on a bare machine, without Orbax or matplotlib if missing.

    # the flags of experiments.train:
    python -m experiments.gpu_train --steps=300 --workdir=/tmp/run

The training code is that of `experiments.train`, unchanged. Only when a
package cannot be imported does this wrapper stand in for it:

- no `orbax.checkpoint` (it needs tensorstore, a large platform-specific wheel):
  no checkpoints are written or restored, so the run cannot resume; the
  config.json guard, metrics.jsonl and summary.json are written as usual;
- no `matplotlib`: loss_curve.png is not drawn.

Each substitution is announced on stderr at the start of the run.
"""

import sys
import types


def _note(message: str) -> None:
  sys.stderr.write(f"gpu_train: {message}\n")


def _without_orbax(reason: str) -> None:
  """Imports experiments.checkpoints against a placeholder Orbax and turns saving off."""
  placeholder = type("OrbaxMissing", (), {})
  fake = types.ModuleType("orbax.checkpoint")
  fake.__getattr__ = lambda name: placeholder  # Only annotations read it at import.
  package = types.ModuleType("orbax")
  setattr(package, "checkpoint", fake)  # noqa: B010  # a module attribute pyright cannot see
  saved = {name: sys.modules.get(name) for name in ("orbax", "orbax.checkpoint")}
  sys.modules.update({"orbax": package, "orbax.checkpoint": fake})
  try:
    from experiments import checkpoints  # pylint: disable=g-import-not-at-top
  finally:
    for name, module in saved.items():
      if module is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = module

  class NoManager:
    """Takes the place of an Orbax CheckpointManager and keeps nothing."""

    def __init__(self, directory):
      self.directory = directory

    def latest_step(self):
      return None

    def wait_until_finished(self):
      pass

    def close(self):
      pass

  checkpoints.open_manager = lambda directory, **kwargs: NoManager(directory)
  checkpoints.save = lambda manager, step, state: None
  checkpoints.restore_latest = lambda manager, template: None
  _note(f"orbax.checkpoint cannot be imported ({reason}); training without checkpoints.")


def _without_matplotlib(reason: str) -> None:
  from experiments import trainer  # pylint: disable=g-import-not-at-top
  trainer.plot_metrics = lambda *args, **kwargs: None
  _note(f"matplotlib cannot be imported ({reason}); no loss_curve.png.")


def _reason(e: BaseException) -> str:
  return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def prepare() -> None:
  """Installs the stand-ins that this machine needs, before experiments.train is imported."""
  try:
    import orbax.checkpoint  # noqa: F401  # the import itself is the check
  except Exception as e:  # pylint: disable=broad-except
    _without_orbax(_reason(e))   # ImportError, or a broken tensorstore/protobuf build
  try:
    import matplotlib  # noqa: F401  # the import itself is the check
  except Exception as e:  # pylint: disable=broad-except
    _without_matplotlib(_reason(e))


if __name__ == "__main__":
  prepare()
  from absl import app  # pylint: disable=g-import-not-at-top

  from experiments import train  # pylint: disable=g-import-not-at-top
  app.run(train.main, flags_parser=train._parse_flags)  # pylint: disable=protected-access
