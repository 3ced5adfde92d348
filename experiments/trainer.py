"""The training run behind `python -m experiments.train`, importable for tests.

`train(config)` builds the task, model and optimizer, resumes from the latest
checkpoint in `config.workdir` if there is one, trains, and writes:

  config.json     the settings that must match for a resume
  metrics.jsonl   one JSON object per logged step, flushed as training goes
  checkpoints/    Orbax checkpoints of the `TrainState`
  loss_curve.png  training and held-out loss against the baseline
  summary.json    the final held-out figures

Training is data-parallel over `config.num_devices` devices (default: all,
across every process of a `jax.distributed` run): each global batch is split
along its batch axis and the state is replicated, so the results do not depend
on the device count. Only process 0 writes the files above; Orbax checkpoints
are written by all processes together.

With `config.seeds` = N > 1 the run trains N independent models side by side,
seeds `config.seed` .. `config.seed + N - 1`, each exactly as a run of that
`seed` alone would (its own initialisation, data stream, dropout and gradient
clipping): every leaf of the `TrainState` and of the batch gains a leading
seed axis, and one jitted step `vmap`s the single-seed step over it. The
summary then reports each seed and their mean and spread.

The batch of step `s` is drawn from `fold_in(data_key, s)` and everything else
that changes lives in the checkpointed `TrainState`, so a run killed at any
moment and restarted ends bitwise identical to an uninterrupted one. SIGTERM
(a preemption notice) makes every process save the checkpoint of one agreed
step and raise `Stopped` (see `preemption`).
"""

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import jaxrnn
from experiments import checkpoints
from experiments import model as model_lib
from experiments import preemption
from experiments import tasks

# Settings that may change between a run and its resumption.
RESUMABLE_CHANGES = ("steps", "workdir", "checkpoint_every", "eval_every", "log_every",
                     "progress", "sample_length", "num_devices", "shared_workdir_timeout")


class ConfigError(ValueError):
  """The settings (or the corpus they name) cannot make a run."""


class Stopped(Exception):
  """SIGTERM stopped the run once the checkpoint of `step` was written.

  Attributes:
    step: the step of that checkpoint, from which the run resumes.
  """

  def __init__(self, step: int, steps: int, workdir: str):
    where = (f", after writing its checkpoint to {workdir}; run the same command again to "
             "resume" if step else " (nothing to save); run the same command again to start")
    super().__init__(f"stopped by SIGTERM at step {step} of {steps}{where}.")
    self.step = step


@dataclasses.dataclass(frozen=True)
class Config:
  """A training run's settings; the flags of `experiments.train` mirror them."""
  task: str = "charlm"
  cell: str = "lstm"  # a name in jaxrnn.CELLS, or "conv_lstm"
  peephole: bool = False  # LSTM options
  layer_norm: bool = False
  proj_size: Optional[int] = None
  recurrent_dropout: float = 0.0  # regularisers of the recurrence, one at a time
  zoneout: float = 0.0
  zoneout_cell: Optional[float] = None  # the (Conv)LSTM's cell-state rate; None: zoneout
  hidden_size: int = 128
  conv_kernel_size: int = 3  # conv_lstm only
  num_layers: int = 1
  embed_size: int = 32
  seq_len: Optional[int] = None  # None: tasks.DEFAULT_SEQ_LEN[task]
  batch_size: int = 32
  steps: int = 1500
  optimizer: str = "adam"
  learning_rate: float = 3e-3
  momentum: Optional[float] = None
  clip_norm: float = 1.0  # 0 turns clipping off
  clip_value: float = 0.0
  adaptive_clip: float = 0.0
  schedule: str = "constant"
  warmup_steps: int = 0
  seed: int = 0
  workdir: str = "/tmp/jaxrnn_train"
  checkpoint_every: int = 500
  eval_every: int = 250
  log_every: int = 50
  data_path: Optional[str] = None
  eval_size: int = 1000
  sample_length: int = 400
  progress: bool = True  # a tqdm bar when stdout is a terminal
  num_devices: Optional[int] = None  # None: every device of every process
  shared_workdir_timeout: float = 60.0  # seconds for every process to see process 0's file
  unroll: str = "sequential"  # or "parallel": jaxrnn.parallel_unroll
  parallel_method: str = "newton"
  parallel_max_iters: Optional[int] = None  # None: T
  parallel_damping: float = 0.0
  parallel_tol: Optional[float] = None  # None: parallel_unroll's default
  seeds: int = 1  # models trained side by side: seeds seed .. seed + seeds - 1


class Experiment(NamedTuple):
  """What `build` makes of a `Config`.

  Attributes:
    task: the `tasks.Task`.
    model: the `model.SequenceModel`.
    optimizer: the `optax.GradientTransformation` from `jaxrnn.training.make_optimizer`.
    train_step: ``(TrainState, Batch) -> (TrainState, metrics)``, data-parallel
      over `mesh`; the state must be replicated on it (`jaxrnn.parallel.replicate`).
      With several seeds, every leaf of the state, the batch and the metrics
      has a leading seed axis (`init_state`, `batch_sampler`).
    eval_step: ``(params, Batch) -> metrics``, likewise; with several seeds
      the params have the seed axis and the batch (one held-out batch for all
      seeds) has none.
    mesh: the devices the steps run on.
    seeds: the seeds trained, ``config.seed`` .. ``config.seed + config.seeds - 1``.
  """
  task: tasks.Task
  model: model_lib.SequenceModel
  optimizer: Any
  train_step: Callable
  eval_step: Callable
  mesh: Any
  seeds: tuple[int, ...]

  @property
  def multi_seed(self) -> bool:
    """Whether the state and the metrics carry a leading seed axis."""
    return len(self.seeds) > 1


def build(config: Config) -> Experiment:
  """The task, model, optimizer and jitted steps of `config`.

  Raises:
    ConfigError: a setting the task or optimizer rejects.
  """
  if config.momentum is not None and config.optimizer not in ("sgd", "rmsprop"):
    raise ConfigError(f"--momentum is ignored by --optimizer={config.optimizer}; drop it, or "
                      "use --optimizer=sgd or rmsprop.")
  if config.seeds < 1:
    raise ConfigError(f"--seeds={config.seeds}: expected at least 1 model to train.")
  if config.warmup_steps and config.schedule != "warmup_cosine":
    raise ConfigError(f"--warmup_steps is ignored by --schedule={config.schedule}; drop it, or "
                      "use --schedule=warmup_cosine.")
  try:
    task = tasks.make_task(config.task, config.seq_len, eval_size=config.eval_size,
                           data_path=config.data_path)
    learning_rate = jaxrnn.training.make_schedule(
        config.learning_rate, config.schedule, total_steps=config.steps,
        warmup_steps=config.warmup_steps)
    optimizer = jaxrnn.training.make_optimizer(
        config.optimizer, learning_rate, momentum=config.momentum,
        clip_norm=config.clip_norm or None, clip_value=config.clip_value or None,
        adaptive_clip=config.adaptive_clip or None)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  try:
    mesh = jaxrnn.parallel.make_mesh(config.num_devices)
  except ValueError as e:
    raise ConfigError(f"--num_devices: {e}") from e
  if config.batch_size % mesh.size:
    raise ConfigError(
        f"--batch_size={config.batch_size} does not split evenly over {mesh.size} devices; "
        f"use a multiple of {mesh.size}, or set --num_devices.")
  try:
    model = model_lib.sequence_model(
        config.cell, config.hidden_size, config.num_layers, task.input_size,
        task.output_size, tokens=task.tokens, embed_size=config.embed_size,
        conv_kernel_size=config.conv_kernel_size,
        unroll=model_lib.Unroll(config.unroll, config.parallel_method,
                                config.parallel_max_iters, config.parallel_damping,
                                config.parallel_tol),
        **cell_options(config))
  except ValueError as e:
    raise ConfigError(str(e)) from e

  def loss_fn(params, batch, rng):
    return task.loss(model.apply(params, batch.inputs, rng), batch)

  train_step = jaxrnn.training.make_train_step(loss_fn, optimizer, jit=False)
  eval_step = jaxrnn.training.make_eval_step(loss_fn, jit=False)
  train_axes = eval_axes = batch_axes(task)
  if config.seeds > 1:
    # The whole single-seed step, optimizer update included, is mapped: each seed clips its
    # gradient by its own global norm, and `apply_if_finite` skips each seed's bad steps alone.
    train_step = jax.vmap(train_step)
    eval_step = jax.vmap(eval_step, in_axes=(0, None))
    train_axes = jax.tree.map(lambda axis: axis + 1, train_axes)
  seeds = tuple(range(config.seed, config.seed + config.seeds))
  return Experiment(task, model, optimizer, _on_mesh(train_step, mesh, train_axes),
                    _on_mesh(eval_step, mesh, eval_axes), mesh, seeds)


class SeedKeys(NamedTuple):
  """The keys of one seed's run, each drawn from ``PRNGKey(seed)``.

  Attributes:
    init: the model's initialisation.
    data: the batch stream; step ``s`` reads ``fold_in(data, s)``.
    step: the `TrainState`'s rng (dropout).
    sample: charlm's text sample.
  """
  init: jax.Array
  data: jax.Array
  step: jax.Array
  sample: jax.Array


def seed_keys(seed: int) -> SeedKeys:
  """The keys of seed `seed`: those a run of ``--seed=seed`` uses, with or without other seeds."""
  root = jax.random.PRNGKey(seed)
  return SeedKeys(*(jax.random.fold_in(root, i) for i in range(4)))


def init_state(experiment: Experiment) -> jaxrnn.training.TrainState:
  """The fresh `TrainState` of the run (host arrays), stacked over seeds when there are several."""
  states = [jaxrnn.training.init_train_state(
      experiment.model.init(keys.init), experiment.optimizer, keys.step)
      for keys in map(seed_keys, experiment.seeds)]
  if not experiment.multi_seed:
    return states[0]
  return jax.tree.map(lambda *leaves: np.stack(leaves), *states)


def batch_sampler(experiment: Experiment, batch_size: int) -> Callable[[int], tasks.Batch]:
  """``step -> Batch``: the batch of each seed at that step, stacked when there are several."""
  task = experiment.task
  if not experiment.multi_seed:
    data_key = seed_keys(experiment.seeds[0]).data
    return lambda step: task.sample(jax.random.fold_in(data_key, step), batch_size)
  data_keys = jnp.stack([seed_keys(seed).data for seed in experiment.seeds])
  # Drawn under vmap, each seed's batch is bitwise the one its own run draws.
  sample = jax.jit(jax.vmap(lambda key, step: task.sample(jax.random.fold_in(key, step),
                                                          batch_size), in_axes=(0, None)))
  return lambda step: sample(data_keys, step)


# The cell options of `Config` (the flags' names) and the values that leave them off.
_CELL_OPTIONS = {"peephole": False, "layer_norm": False, "proj_size": None,
                 "recurrent_dropout": 0.0, "zoneout": 0.0, "zoneout_cell": None}
# Settings `fingerprint` leaves out at these values, as workdirs from before them recorded.
OMITTED_DEFAULTS = {**_CELL_OPTIONS, "seeds": 1}


def cell_options(config: Config) -> dict:
  """The cell options of `config` that are on, checked against its cell.

  Raises:
    ConfigError: an option the cell does not have, a rate outside ``[0, 1)``,
      or both regularisers.
  """
  options = {name: getattr(config, name) for name, off in _CELL_OPTIONS.items()
             if getattr(config, name) != off}
  if config.cell == model_lib.CONV_CELL:
    other = sorted(set(options) - {"recurrent_dropout", "zoneout", "zoneout_cell"})
    if other:
      raise ConfigError(f"--cell={config.cell} takes none of --{', --'.join(other)}; of the"
                        " cell options it takes only the regularisers.")
  for name in ("peephole", "layer_norm", "proj_size"):
    if name in options and not model_lib.takes_option(config.cell, name):
      raise ConfigError(f"--{name} is an option of --cell=lstm; --cell={config.cell} has none.")
  if "zoneout_cell" in options and config.cell not in ("lstm", model_lib.CONV_CELL):
    raise ConfigError(f"--zoneout_cell sets the LSTM's cell-state rate; --cell={config.cell}"
                      " has no cell state.")
  for name in ("recurrent_dropout", "zoneout", "zoneout_cell"):
    if name in options and not 0.0 <= options[name] < 1.0:
      raise ConfigError(f"--{name}={options[name]}: expected a probability in [0, 1).")
  if "recurrent_dropout" in options and ({"zoneout", "zoneout_cell"} & set(options)):
    raise ConfigError("--recurrent_dropout and --zoneout do not combine; use one of them.")
  regularisers = sorted({"recurrent_dropout", "zoneout", "zoneout_cell"} & set(options))
  if config.unroll == "parallel" and regularisers:
    raise ConfigError(f"--{regularisers[0]} draws its masks in the sequential loop;"
                      " --unroll=parallel has none.")
  return options


def batch_axes(task: tasks.Task) -> tasks.Batch:
  """The batch axis of each field of the task's `Batch` (see its docstring)."""
  # A `Batch` of axes is a pytree prefix, JAX's idiom, which the fields' array types cannot say.
  return tasks.Batch(inputs=1, targets=task.targets_axis)  # pyright: ignore[reportArgumentType]


def _on_mesh(step: Callable, mesh, axes: tasks.Batch) -> Callable:
  """`step(state, batch)` run data-parallel over `mesh`, given the global batch.

  A batch whose rows do not split evenly over the devices (a short held-out
  batch) is replicated instead, and every device computes it whole.
  """
  sharded = jaxrnn.parallel.data_parallel(step, mesh, batch_axis=axes)
  replicated = jaxrnn.parallel.data_parallel(step, mesh, batch_axis=None)

  def run(state, batch: tasks.Batch):
    if batch.inputs.shape[axes.inputs] % mesh.size == 0:  # with seeds, the batch axis is 2
      return sharded(state, jaxrnn.parallel.shard_batch(mesh, batch, axes))
    return replicated(state, jaxrnn.parallel.replicate(mesh, batch))

  return run


def evaluate(eval_step, params, batches) -> dict:
  """Metrics averaged over `batches`, weighted by their batch sizes.

  Each is a float, or a float64 array over the seeds of a multi-seed `eval_step`.
  """
  totals, count = {}, 0
  for batch in batches:
    size = batch.inputs.shape[1]
    for name, value in eval_step(params, batch).items():
      totals[name] = totals.get(name, 0.0) + np.asarray(value, np.float64) * size
    count += size
  averages = {name: total / count for name, total in totals.items()}
  return {name: float(value) if np.ndim(value) == 0 else value
          for name, value in averages.items()}


def fingerprint(config: Config) -> dict:
  """The settings a resumed run must share with the run that wrote the workdir."""
  fields = dataclasses.asdict(config)
  for name in RESUMABLE_CHANGES:
    if name != "steps" or config.schedule == "constant":
      fields.pop(name)
  for name, off in OMITTED_DEFAULTS.items():  # left off, as in older workdirs
    if fields[name] == off:
      fields.pop(name)
  fields["seq_len"] = config.seq_len or tasks.DEFAULT_SEQ_LEN[config.task]
  return fields


def train(config: Config) -> dict:
  """Trains (or resumes) the run of `config`; returns the summary it writes.

  Raises:
    ConfigError: a bad setting or corpus, or a workdir that cannot be made.
    checkpoints.CheckpointError: the workdir holds an incompatible or damaged run,
      or is not shared by all processes.
    Stopped: SIGTERM stopped the run after its checkpoint was written. One
      that comes after the last step lets the run finish.
  """
  with preemption.StopSignal() as stop:
    return _train(config, stop)


def _train(config: Config, stop: preemption.StopSignal) -> dict:
  start_time = time.time()
  experiment = build(config)
  task, mesh = experiment.task, experiment.mesh
  is_writer = jax.process_index() == 0
  try:
    os.makedirs(config.workdir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"--workdir={config.workdir}: cannot make it a directory "
                      f"({e.strerror}).") from e
  checkpoints.check_shared(config.workdir, config.shared_workdir_timeout)
  if is_writer:
    checkpoints.check_config(os.path.join(config.workdir, "config.json"), fingerprint(config),
                             OMITTED_DEFAULTS)

  state = jaxrnn.parallel.replicate(mesh, init_state(experiment))
  # Orbax finishes a background save by reporting its (older) step to JAX's preemption sync
  # point, which could make process 0 miss the step the processes agree on: save in the
  # foreground when there are several.
  manager = checkpoints.open_manager(os.path.join(config.workdir, "checkpoints"),
                                     asynchronous=jax.process_count() == 1)
  try:
    restored = checkpoints.restore_latest(manager, state)
    start = 0 if restored is None else start_step(restored)
    if start > config.steps:
      raise checkpoints.CheckpointError(
          f"{config.workdir} holds a checkpoint at step {start}, past --steps={config.steps}; "
          "use another --workdir or more steps.")
    if restored is not None:
      state = restored
      logging.info("Resuming from the checkpoint at step %d.", start)
    metrics_path = os.path.join(config.workdir, "metrics.jsonl")
    if is_writer:
      checkpoints.truncate_jsonl(metrics_path, start)
    if stop.reached(start):  # SIGTERM before the first step.
      raise Stopped(start, config.steps, config.workdir)
    state, stopped = _train_loop(config, experiment, manager, state,
                                 metrics_path if is_writer else os.devnull, stop)
    manager.wait_until_finished()
  finally:
    manager.close()
  if stopped:
    raise Stopped(start_step(state), config.steps, config.workdir)

  final = evaluate(experiment.eval_step, state.params, task.eval_batches)
  skipped = np.asarray(jaxrnn.training.skipped_steps(state.opt_state))
  # charlm samples from a local copy: sampling needs no other process.
  local_params = (jax.device_put(jax.device_get(state.params), jax.local_devices()[0])
                  if task.name == "charlm" else None)
  results = []
  for i, seed in enumerate(experiment.seeds):
    index = i if experiment.multi_seed else None
    seed_final = _of_seed(final, index)
    result = {"test_loss": float(seed_final["metric"]),
              "loss_over_baseline": float(seed_final["metric"]) / task.baseline,
              "test_accuracy": (None if seed_final.get("accuracy") is None
                                else float(seed_final["accuracy"])),
              "skipped_steps": int(_of_seed(skipped, index))}
    if task.name == "charlm":
      result["sample"] = model_lib.sample_text(
          experiment.model, _of_seed(local_params, index), task.vocab,
          prompt=_prompt(task.vocab), length=config.sample_length, key=seed_keys(seed).sample)
    results.append(result)
  summary = {
      "task": task.name, "cell": config.cell, "cell_options": cell_options(config),
      "hidden_size": config.hidden_size,
      "num_layers": config.num_layers, "seq_len": task.seq_len,
      "batch_size": config.batch_size, "steps": config.steps,
      "optimizer": config.optimizer, "learning_rate": config.learning_rate,
      "clip_norm": config.clip_norm,
  }
  if experiment.multi_seed:
    summary.update(seeds_summary(task, experiment.seeds, results))
  else:
    result = results[0]
    summary.update({
        "test_loss": result["test_loss"],
        "baseline_loss": task.baseline, "baseline": task.baseline_name,
        "loss_over_baseline": result["loss_over_baseline"],
        "test_accuracy": result["test_accuracy"], "skipped_steps": result["skipped_steps"]})
  summary.update({
      "num_params": int(sum(np.size(x) for x in jax.tree.leaves(
          _of_seed(state.params, 0 if experiment.multi_seed else None)))),
      "devices": mesh.size, "platform": jax.devices()[0].platform,
      "resumed_from_step": start, "wall_seconds": time.time() - start_time,
      "train_seconds": train_seconds(metrics_path) if is_writer else None,
  })
  if task.name == "charlm":
    summary["vocab_size"] = len(task.vocab)
    if not experiment.multi_seed:
      summary["sample"] = results[0]["sample"]
  if task.name == "digits":
    summary["nonrecurrent_baselines"] = tasks.digits_nonrecurrent_baselines()
  if is_writer:
    with open(os.path.join(config.workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
    plot_metrics(metrics_path, os.path.join(config.workdir, "loss_curve.png"), task)
  return summary


def seeds_summary(task: tasks.Task, seeds: tuple[int, ...], results: list[dict]) -> dict:
  """The summary's figures of a multi-seed run.

  Args:
    task: the task (its baseline and `tasks.BARS` entry).
    seeds: the seeds, in the order of `results`.
    results: each seed's ``test_loss``, ``loss_over_baseline``,
      ``test_accuracy`` (None for regression) and ``skipped_steps``.

  Returns:
    ``seeds``; the baseline; ``per_seed`` (each seed's results with its
    ``seed``); ``mean`` and ``std`` (the sample standard deviation, ddof=1) of
    the loss, the ratio and the accuracy over the seeds; and, where the task
    has a bar, the ``bar`` in words and how many seeds ``solved`` it.
  """
  figures = ["test_loss", "loss_over_baseline"]
  if results[0]["test_accuracy"] is not None:
    figures.append("test_accuracy")
  values = {name: np.asarray([r[name] for r in results], np.float64) for name in figures}
  summary = {
      "seeds": list(seeds),
      "baseline_loss": task.baseline, "baseline": task.baseline_name,
      "per_seed": [dict(seed=seed, **result) for seed, result in zip(seeds, results)],
      "mean": {name: float(np.mean(v)) for name, v in values.items()},
      "std": {name: float(np.std(v, ddof=1)) for name, v in values.items()},
  }
  bar = tasks.BARS.get(task.name)
  if bar is not None:
    summary["bar"] = bar.text
    summary["solved"] = sum(bar.met(result) for result in results)
  return summary


def start_step(state: jaxrnn.training.TrainState) -> int:
  """The step of a state, with or without a seed axis (every seed is at the same step)."""
  return int(np.max(state.step))


def _of_seed(tree: Any, index: Optional[int]) -> Any:
  """Seed `index`'s slice of every leaf of `tree`; None: the tree of a single-seed run."""
  return tree if index is None else jax.tree.map(lambda leaf: leaf[index], tree)


def train_seconds(metrics_path: str) -> Optional[float]:
  """The time the run's kept steps took, summed over every process that trained them.

  Each logged step's `seconds` (since the step logged before it in the same process,
  compilation and evaluations included) from `metrics.jsonl`, once per step (the seeds
  of a step share it). Not counted: each process's start-up, the final evaluation and
  checkpoint, and steps that were trained but are not in the file: on resume it is cut
  back to the checkpoint's step, which drops the steps a killed process trained after
  it, and the last logged stretch before it if the checkpoint fell between two logged
  steps. None when some kept step has no `seconds` (logged before it existed) or none
  was logged. `wall_seconds` is the last process's time alone.
  """
  with open(metrics_path) as f:
    per_step = {record["step"]: record.get("seconds") for record in map(json.loads, f)}
  if not per_step or None in per_step.values():
    return None
  return float(sum(per_step.values()))


def _train_loop(config, experiment: Experiment, manager, state, metrics_path,
                stop: preemption.StopSignal):
  """Steps from `state.step` to `config.steps`, logging, evaluating and checkpointing.

  Returns:
    The last state, and whether `stop` ended the loop early (after its checkpoint).
  """
  start = start_step(state)
  stopped = False
  bar = _progress_bar(config, start)
  tick, tick_step = time.time(), start
  sample = batch_sampler(experiment, config.batch_size)
  seeds = experiment.seeds if experiment.multi_seed else (None,)
  skipped_seen = dict(zip(seeds, np.atleast_1d(
      np.asarray(jaxrnn.training.skipped_steps(state.opt_state))).tolist()))
  with open(metrics_path, "a") as metrics_file:
    for step in range(start, config.steps):
      state, metrics = experiment.train_step(state, sample(step))
      done = step + 1
      if bar is not None:
        bar.update(1)
      is_eval = done % config.eval_every == 0 or done == config.steps
      if done % config.log_every == 0 or is_eval:
        logged = {k: v for k, v in metrics.items() if k != "skipped"}
        now = time.time()
        logged["steps_per_second"] = (done - tick_step) / max(now - tick, 1e-9)
        logged["seconds"] = now - tick  # since the last logged step (or this process's start)
        tick, tick_step = now, done
        if is_eval:
          held_out = evaluate(experiment.eval_step, state.params, experiment.task.eval_batches)
          logged.update({f"eval_{k}": v for k, v in held_out.items()})
        records = _records(done, logged, seeds)
        for record in records:
          metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        _report(bar, records, config.steps)
        for seed, record in zip(seeds, records):
          if record["skipped_steps"] > skipped_seen[seed]:
            skipped_seen[seed] = record["skipped_steps"]
            logging.warning("Step %d%s: %d updates skipped so far for non-finite gradients.",
                            done, "" if seed is None else f", seed {seed}", skipped_seen[seed])
      stopped = stop.reached(done)
      if done % config.checkpoint_every == 0 or done == config.steps or stopped:
        checkpoints.save(manager, done, state)
      if stopped:
        logging.warning("SIGTERM: saved the checkpoint of step %d and stopping.", done)
        break
  if bar is not None:
    bar.close()
  return state, stopped


def _records(step: int, logged: dict, seeds: tuple) -> list[dict]:
  """The metrics.jsonl lines of one logged step: one line, or one per seed with its "seed"."""
  if seeds == (None,):
    return [{"step": step, **{k: _to_json(v) for k, v in logged.items()}}]
  # The timing is the step's, shared by all seeds.
  return [{"step": step, "seed": seed,
           **{k: _to_json(v if np.ndim(v) == 0 else np.asarray(v)[i])
              for k, v in logged.items()}}
          for i, seed in enumerate(seeds)]


def _prompt(vocab: str) -> str:
  prompt = "The "
  return prompt if all(c in vocab for c in prompt) else vocab[0]


def _to_json(value):
  value = np.asarray(value)
  return value.item() if np.isfinite(value) or value.dtype.kind in "biu" else None


def _progress_bar(config: Config, start: int):
  if not (config.progress and sys.stdout.isatty()):
    return None
  import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm.tqdm(total=config.steps, initial=start, unit="step", dynamic_ncols=True)


def _report(bar, records: list[dict], steps: int) -> None:
  """Shows the loss of a logged step (the mean over the seeds, if several)."""
  shown = {}
  for name, key in (("loss", "metric"), ("eval_loss", "eval_metric"),
                    ("eval_accuracy", "eval_accuracy")):
    values = [r[key] for r in records if r.get(key) is not None]
    if values:
      shown[name] = float(np.mean(values))
  if len(records) > 1:
    shown = {f"mean_{k}": v for k, v in shown.items()}
  if bar is not None:
    bar.set_postfix({k: f"{v:.4f}" for k, v in shown.items()})
  else:
    logging.info("step %d/%d  %s  %.1f steps/s", records[0]["step"], steps,
                 "  ".join(f"{k}={v:.4f}" for k, v in shown.items()),
                 records[0]["steps_per_second"])


def plot_metrics(metrics_path: str, png_path: str, task: tasks.Task) -> None:
  """Plots the training and held-out metric of `metrics_path` against the baseline."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  with open(metrics_path) as f:
    records = [json.loads(line) for line in f]
  by_seed: dict = {}
  for record in records:
    by_seed.setdefault(record.get("seed"), []).append(record)
  multi_seed = len(by_seed) > 1
  fig, ax = plt.subplots(figsize=(7, 4))
  for i, (seed, rows) in enumerate(by_seed.items()):
    style: dict[str, Any] = dict(color=f"C{i % 10}", linewidth=1.0) if multi_seed else {}
    for key, label in (("metric", "train"), ("eval_metric", "held-out")):
      points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
      if not points:
        continue
      if multi_seed:  # One colour per seed: the training curve solid, held-out dashed.
        label = f"seed {seed}" if key == "metric" else None
        style["linestyle"] = "-" if key == "metric" else "--"
      ax.plot(*zip(*points), label=label, marker="." if key == "eval_metric" else None,
              **style)
  ax.axhline(task.baseline, color="gray", linestyle="--", label=f"baseline ({task.baseline_name})")
  ax.set_xlabel("step")
  ax.set_ylabel({"adding": "MSE (last step)", "digits": "cross-entropy (last step, nats)"}.get(
      task.name, "cross-entropy (nats/step)"))
  title = f"{task.name}, T={task.seq_len}"
  ax.set_title(title + (f", {len(by_seed)} seeds (held-out dashed)" if multi_seed else ""))
  ax.legend(fontsize="small", ncol=2 if multi_seed else 1)
  fig.tight_layout()
  fig.savefig(png_path, dpi=100)
  plt.close(fig)
