"""Wall time of `experiments.train --seeds=N` against one seed, on the same task, in one process.

    python -m experiments.seeds_benchmark                 # adding T=100, LSTM H=64, 1 vs 8 seeds
    python -m experiments.seeds_benchmark --task=copy --cell=gru --seeds=8 --out=/tmp/seeds.json

For one seed and for ``--seeds`` seeds, on the same configuration:

  step_ms   the median wall time of one train step (every seed at once), each
            step timed to `block_until_ready` after ``--warmup`` steps; the
            batches are drawn beforehand, so this is the vmapped step alone.
  run_s     the wall time of a whole `trainer.train` run of ``--run_steps``
            steps in a fresh workdir: compilation, batch drawing, the final
            evaluation and the checkpoints included.

``speedup`` is ``seeds x one-seed time / N-seed time``: how much sooner N seeds
finish in one vmapped run than N one-seed runs one after another (N would be a
perfect batching of the seeds, 1 no gain). Run it on an idle machine; the
numbers of a shared one mean little.
"""

import dataclasses
import json
import statistics
import tempfile
import time

import jax
from absl import app
from absl import flags

import jaxrnn
from experiments import model as model_lib
from experiments import tasks
from experiments import trainer

TASK = flags.DEFINE_enum("task", "adding", tasks.TASKS, "Task to train on.")
CELL = flags.DEFINE_enum("cell", "lstm", list(model_lib.CELL_NAMES), "Recurrent cell.")
HIDDEN_SIZE = flags.DEFINE_integer("hidden_size", 64, "Units.", lower_bound=1)
SEQ_LEN = flags.DEFINE_integer("seq_len", None, "Sequence length (default: the task's).",
                               lower_bound=1)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 50, "Sequences per batch and seed.",
                                  lower_bound=1)
SEEDS = flags.DEFINE_integer("seeds", 8, "Seeds of the vmapped run, against 1.", lower_bound=2)
TIMED_STEPS = flags.DEFINE_integer("timed_steps", 50, "Steps timed for step_ms.", lower_bound=1)
WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed steps first (compilation).", lower_bound=1)
RUN_STEPS = flags.DEFINE_integer("run_steps", 200, "Steps of each whole run; 0: no whole runs.",
                                 lower_bound=0)
OUT = flags.DEFINE_string("out", None, "Also write the rows to this JSON file.")


def time_steps(config: trainer.Config, steps: int, warmup: int) -> float:
  """Median seconds of one train step of `config` (all its seeds at once)."""
  experiment = trainer.build(config)
  state = jaxrnn.parallel.replicate(experiment.mesh, trainer.init_state(experiment))
  sample = trainer.batch_sampler(experiment, config.batch_size)
  batches = [sample(step) for step in range(warmup + steps)]
  jax.block_until_ready(batches)
  times = []
  for i, batch in enumerate(batches):
    start = time.perf_counter()
    state, metrics = experiment.train_step(state, batch)
    jax.block_until_ready((state, metrics))
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return statistics.median(times)


def time_run(config: trainer.Config, steps: int) -> float:
  """Wall seconds of a whole `trainer.train` run of `steps` steps, in a fresh workdir."""
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    trainer.train(dataclasses.replace(
        config, steps=steps, workdir=workdir, progress=False, checkpoint_every=steps,
        eval_every=steps, log_every=steps))
    return time.perf_counter() - start


def compare(config: trainer.Config, seeds: int, *, timed_steps: int, warmup: int,
            run_steps: int) -> list[dict]:
  """One row per seed count (1, then `seeds`): step_ms, run_s and the speed-up over 1 seed."""
  rows = []
  for count in (1, seeds):
    counted = dataclasses.replace(config, seeds=count)
    row = {"task": config.task, "cell": config.cell, "hidden_size": config.hidden_size,
           "seq_len": config.seq_len or tasks.DEFAULT_SEQ_LEN[config.task],
           "batch_size": config.batch_size, "seeds": count,
           "devices": jaxrnn.parallel.make_mesh(config.num_devices).size,
           "platform": jax.devices()[0].platform,
           "step_ms": 1e3 * time_steps(counted, timed_steps, warmup)}
    if run_steps:
      row.update(run_steps=run_steps, run_s=time_run(counted, run_steps))
    rows.append(row)
  one = rows[0]
  for row in rows:
    for key in ("step_ms", "run_s"):
      if key in row:
        row[key.split("_")[0] + "_speedup"] = row["seeds"] * one[key] / row[key]
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  config = trainer.Config(task=TASK.value, cell=CELL.value, hidden_size=HIDDEN_SIZE.value,
                          seq_len=SEQ_LEN.value, batch_size=BATCH_SIZE.value)
  rows = compare(config, SEEDS.value, timed_steps=TIMED_STEPS.value, warmup=WARMUP.value,
                 run_steps=RUN_STEPS.value)
  print("| task | cell | H | T | B | seeds | step ms | step speed-up | run s | run speed-up |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    run = (f"{r['run_s']:.1f} | {r['run_speedup']:.2f}" if "run_s" in r else "- | -")
    print(f"| {r['task']} | {r['cell']} | {r['hidden_size']} | {r['seq_len']} | "
          f"{r['batch_size']} | {r['seeds']} | {r['step_ms']:.2f} | {r['step_speedup']:.2f} | "
          f"{run} |")
  if OUT.value:
    with open(OUT.value, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
