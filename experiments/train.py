"""Trains a recurrent network on the adding, copy, character-LM or sequential-digits task.

    python -m experiments.train                      # LSTM char-LM on Python's help text
    python -m experiments.train --task=adding --cell=gru --seq_len=100 --steps=4000
    python -m experiments.train --task=adding --cell=gru --seeds=5   # seeds 0..4 side by side
    python -m experiments.train --task=digits --cell=lstm   # 8x8 digits, one pixel per step
    python -m experiments.train --task=adding --cell=gru --unroll=parallel --parallel_method=newton

Re-running with the same --workdir resumes from its latest checkpoint.
SIGTERM (a preemption notice from Slurm, Kubernetes or Cloud TPU) makes every
process save the checkpoint of one agreed step within seconds and exit with
status 143 (128 + SIGTERM), so that schedulers see an unfinished run.

Training is data-parallel over all devices (or --num_devices). Several
processes, one per host or GPU, join with --coordinator_address,
--num_processes and --process_id (detected on TPU, Slurm and Open MPI when
left out); see BUILD.md.
"""

import logging as std_logging
import os
import sys
from typing import NoReturn

import jax
from absl import app
from absl import flags
from absl import logging

import jaxrnn
from experiments import checkpoints
from experiments import model as model_lib
from experiments import tasks
from experiments import trainer

_DEFAULTS = trainer.Config()

TASK = flags.DEFINE_enum("task", _DEFAULTS.task, tasks.TASKS, "Task to train on.")
CELL = flags.DEFINE_enum("cell", _DEFAULTS.cell, list(model_lib.CELL_NAMES),
                         "Recurrent cell, any of jaxrnn.CELLS (rnn is the tanh Elman RNN), or"
                         " conv_lstm: jaxrnn.conv_lstm reading each step's F features (the"
                         " embedding for copy and charlm) as a 1-D grid of F positions with one"
                         " channel, its [F, hidden_size] output flattened for the readout.")
PEEPHOLE = flags.DEFINE_bool("peephole", _DEFAULTS.peephole,
                             "LSTM peephole connections (--cell=lstm).")
LAYER_NORM = flags.DEFINE_bool("layer_norm", _DEFAULTS.layer_norm,
                               "Layer-normalised LSTM (--cell=lstm).")
PROJ_SIZE = flags.DEFINE_integer("proj_size", _DEFAULTS.proj_size,
                                 "LSTM hidden-state projection size (--cell=lstm).",
                                 lower_bound=1)
RECURRENT_DROPOUT, ZONEOUT, ZONEOUT_CELL = (
    flags.DEFINE_float(name, getattr(_DEFAULTS, name), text, lower_bound=0.0)
    for name, text in (
        ("recurrent_dropout", "Variational dropout rate of the state the recurrence reads"
                              " (jaxrnn.recurrent_dropout)."),
        ("zoneout", "Zoneout rate of the hidden state (jaxrnn.zoneout)."),
        ("zoneout_cell", "Zoneout rate of the cell state of --cell=lstm or conv_lstm"
                         " (default: --zoneout).")))
HIDDEN_SIZE = flags.DEFINE_integer("hidden_size", _DEFAULTS.hidden_size,
                                   "Units per layer (conv_lstm: channels per position).",
                                   lower_bound=1)
CONV_KERNEL_SIZE = flags.DEFINE_integer(
    "conv_kernel_size", _DEFAULTS.conv_kernel_size,
    "Kernel size of --cell=conv_lstm over the F positions ('SAME' padding).", lower_bound=1)
NUM_LAYERS = flags.DEFINE_integer("num_layers", _DEFAULTS.num_layers, "Stacked layers.",
                                  lower_bound=1)
EMBED_SIZE = flags.DEFINE_integer("embed_size", _DEFAULTS.embed_size,
                                  "Token embedding size (copy, charlm).", lower_bound=1)
SEQ_LEN = flags.DEFINE_integer(
    "seq_len", None, "Sequence length T (the delay for copy, whose sequences have T+20 "
    "steps; for digits the steps an image is read in: 64 one pixel per step, 8 one row per "
    f"step). Default: {tasks.DEFAULT_SEQ_LEN}.", lower_bound=1)
BATCH_SIZE = flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Sequences per batch.",
                                  lower_bound=1)
STEPS = flags.DEFINE_integer("steps", _DEFAULTS.steps, "Training steps.", lower_bound=1)
OPTIMIZER = flags.DEFINE_enum("optimizer", _DEFAULTS.optimizer,
                              ["sgd", "adam", "rmsprop", "adagrad"], "Update rule.")
LEARNING_RATE = flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate,
                                   "Peak learning rate.", lower_bound=1e-12)
MOMENTUM = flags.DEFINE_float("momentum", None, "Momentum of sgd and rmsprop.",
                              lower_bound=0.0, upper_bound=1.0)
SCHEDULE = flags.DEFINE_enum("schedule", _DEFAULTS.schedule,
                             ["constant", "cosine", "warmup_cosine"],
                             "Learning-rate schedule over --steps.")
WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", _DEFAULTS.warmup_steps,
                                    "Linear warmup steps of warmup_cosine.", lower_bound=0)
CLIP_NORM = flags.DEFINE_float("clip_norm", _DEFAULTS.clip_norm,
                               "Clip gradients to this global norm; 0 turns it off.",
                               lower_bound=0.0)
CLIP_VALUE = flags.DEFINE_float("clip_value", _DEFAULTS.clip_value,
                                "Clip each gradient element to +-this; 0 turns it off.",
                                lower_bound=0.0)
ADAPTIVE_CLIP = flags.DEFINE_float("adaptive_clip", _DEFAULTS.adaptive_clip,
                                   "Adaptive gradient clipping ratio; 0 turns it off.",
                                   lower_bound=0.0)
SEED = flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of initialisation and data.")
SEEDS = flags.DEFINE_integer(
    "seeds", _DEFAULTS.seeds, "Independent models trained side by side in one vmapped step: "
    "seeds --seed .. --seed + --seeds - 1, each exactly as --seed alone would train it.",
    lower_bound=1)
WORKDIR = flags.DEFINE_string("workdir", _DEFAULTS.workdir,
                              "Directory of checkpoints, metrics and summary.")
CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", _DEFAULTS.checkpoint_every,
                                        "Steps between checkpoints.", lower_bound=1)
EVAL_EVERY = flags.DEFINE_integer("eval_every", _DEFAULTS.eval_every,
                                  "Steps between held-out evaluations.", lower_bound=1)
LOG_EVERY = flags.DEFINE_integer("log_every", _DEFAULTS.log_every,
                                 "Steps between metrics.jsonl lines.", lower_bound=1)
DATA_PATH = flags.DEFINE_string("data_path", None,
                                "UTF-8 text for charlm (default: Python's pydoc topics).")
EVAL_SIZE = flags.DEFINE_integer("eval_size", _DEFAULTS.eval_size,
                                 "Held-out sequences of adding and copy.", lower_bound=1)
SAMPLE_LENGTH = flags.DEFINE_integer("sample_length", _DEFAULTS.sample_length,
                                     "Characters sampled after charlm training.", lower_bound=1)
NUM_DEVICES = flags.DEFINE_integer(
    "num_devices", None, "Devices to train on, in total over all processes (default: all); "
    "--batch_size must be a multiple of it.", lower_bound=1)
COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 in a multi-process run.")
NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes in a multi-process run.", lower_bound=1)
UNROLL = flags.DEFINE_enum(
    "unroll", _DEFAULTS.unroll, ["sequential", "parallel"],
    "sequential: jaxrnn.unroll (lax.scan); parallel: jaxrnn.parallel_unroll (Newton over time).")
PARALLEL_METHOD = flags.DEFINE_enum("parallel_method", _DEFAULTS.parallel_method,
                                    ["newton", "quasi_newton"],
                                    "Method of --unroll=parallel.")
PARALLEL_MAX_ITERS = flags.DEFINE_integer(
    "parallel_max_iters", None, "Newton steps at most with --unroll=parallel (default: T);"
    " an unconverged solve gives a NaN loss.", lower_bound=1)
PARALLEL_DAMPING = flags.DEFINE_float("parallel_damping", _DEFAULTS.parallel_damping,
                                      "ELK damping of --unroll=parallel; 0: plain Newton.",
                                      lower_bound=0.0)
PARALLEL_TOL = flags.DEFINE_float(
    "parallel_tol", None, "Residual at which --unroll=parallel stops, relative to 1 + max|h|"
    " (default: 1024 machine epsilons).", lower_bound=0.0)
PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "Rank of this process in a multi-process run, from 0.", lower_bound=0)
SHARED_WORKDIR_TIMEOUT = flags.DEFINE_float(
    "shared_workdir_timeout", _DEFAULTS.shared_workdir_timeout,
    "Seconds each process of a multi-process run waits to see the file that process 0 writes "
    "to --workdir, which must be shared.", lower_bound=0.0)

# The exit status of a run that SIGTERM stopped after its checkpoint: a shell's 128 + 15.
STOPPED_EXIT_STATUS = 128 + 15


@flags.multi_flags_validator(["task", "seq_len"], message="")
def _check_seq_len(values):
  seq_len = values["seq_len"]
  minimum = tasks.MIN_SEQ_LEN[values["task"]]
  if seq_len is not None and seq_len < minimum:
    raise flags.ValidationError(
        f"--seq_len={seq_len} is too short for --task={values['task']}: it needs at least"
        f" {minimum}.")
  return True


@flags.multi_flags_validator(["task", "data_path"], message="")
def _check_data_path(values):
  if values["data_path"] and values["task"] != "charlm":
    raise flags.ValidationError("--data_path is only read by --task=charlm.")
  return True


def config_from_flags() -> trainer.Config:
  return trainer.Config(
      task=TASK.value, cell=CELL.value, peephole=PEEPHOLE.value, layer_norm=LAYER_NORM.value,
      proj_size=PROJ_SIZE.value, recurrent_dropout=RECURRENT_DROPOUT.value or 0.0,
      zoneout=ZONEOUT.value or 0.0, zoneout_cell=ZONEOUT_CELL.value, hidden_size=HIDDEN_SIZE.value,
      conv_kernel_size=CONV_KERNEL_SIZE.value,
      num_layers=NUM_LAYERS.value, embed_size=EMBED_SIZE.value, seq_len=SEQ_LEN.value,
      batch_size=BATCH_SIZE.value, steps=STEPS.value, optimizer=OPTIMIZER.value,
      learning_rate=LEARNING_RATE.value, momentum=MOMENTUM.value, clip_norm=CLIP_NORM.value,
      clip_value=CLIP_VALUE.value, adaptive_clip=ADAPTIVE_CLIP.value, schedule=SCHEDULE.value,
      warmup_steps=WARMUP_STEPS.value, seed=SEED.value, seeds=SEEDS.value,
      workdir=WORKDIR.value,
      checkpoint_every=CHECKPOINT_EVERY.value, eval_every=EVAL_EVERY.value,
      log_every=LOG_EVERY.value, data_path=DATA_PATH.value, eval_size=EVAL_SIZE.value,
      sample_length=SAMPLE_LENGTH.value, num_devices=NUM_DEVICES.value,
      shared_workdir_timeout=SHARED_WORKDIR_TIMEOUT.value,
      unroll=UNROLL.value, parallel_method=PARALLEL_METHOD.value,
      parallel_max_iters=PARALLEL_MAX_ITERS.value, parallel_damping=PARALLEL_DAMPING.value,
      parallel_tol=PARALLEL_TOL.value)


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}")
  _show_only_own_info_logs()
  distributed = (COORDINATOR_ADDRESS.value, NUM_PROCESSES.value, PROCESS_ID.value)
  if any(value is not None for value in distributed):
    try:
      jaxrnn.parallel.initialize_distributed(*distributed)
    except ValueError as e:
      _fail(f"cannot join a multi-process run ({e}); pass --coordinator_address, "
            "--num_processes and --process_id, or launch under Slurm, Open MPI or on TPU.")
  try:
    summary = trainer.train(config_from_flags())
  except (trainer.ConfigError, checkpoints.CheckpointError) as e:
    _fail(str(e))
  except trainer.Stopped as e:
    sys.stderr.write(f"train: {e}\n")
    sys.exit(STOPPED_EXIT_STATUS)
  if jax.process_index() != 0:
    return
  print(result_line(summary))
  if "sample" in summary:
    print("Sample:\n" + summary["sample"])
  for seed in summary.get("per_seed", ()):
    if "sample" in seed:
      print(f"Sample of seed {seed['seed']}:\n" + seed["sample"])


def result_line(summary: dict) -> str:
  """The run's held-out result in one line: one seed's figures, or their mean and spread."""
  if "per_seed" in summary:
    mean, std = summary["mean"], summary["std"]
    line = (f"{summary['task']} {summary['cell']}, {len(summary['seeds'])} seeds: test loss "
            f"{mean['test_loss']:.4f} ± {std['test_loss']:.4f} vs {summary['baseline']} "
            f"baseline {summary['baseline_loss']:.4f} (ratio {mean['loss_over_baseline']:.3f})")
    if "test_accuracy" in mean:
      line += f", accuracy {mean['test_accuracy']:.3f} ± {std['test_accuracy']:.3f}"
    if "solved" in summary:
      line += f"; solved {summary['solved']}/{len(summary['seeds'])} ({summary['bar']})"
  else:
    line = (f"{summary['task']} {summary['cell']}: test loss {summary['test_loss']:.4f} vs "
            f"{summary['baseline']} baseline {summary['baseline_loss']:.4f} "
            f"(ratio {summary['loss_over_baseline']:.3f})")
    if summary["test_accuracy"] is not None:
      line += f", accuracy {summary['test_accuracy']:.3f}"
  for name, result in summary.get("nonrecurrent_baselines", {}).items():
    line += f"; {name.replace('_', ' ')} accuracy {result['test_accuracy']:.3f}"
  return line + f"; {summary['steps']} steps, {summary['wall_seconds']:.0f} s."


def _show_only_own_info_logs():
  """Keeps the INFO lines of the experiments; Orbax and JAX log each save and backend at INFO."""
  here = os.path.dirname(os.path.abspath(__file__))
  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= std_logging.WARNING or record.pathname.startswith(here))


def _fail(message: str) -> NoReturn:
  """Exits with one line on stderr, no traceback."""
  sys.stderr.write(f"train: error: {message}\n")
  sys.exit(2)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
