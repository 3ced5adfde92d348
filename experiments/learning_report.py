"""The README's table of learning results, from the `summary.json` of finished runs.

    python -m experiments.learning_report RUNS_DIR [NAME ...]   # default: every run in RUNS_DIR

Each run is a directory `RUNS_DIR/NAME` written by `experiments.train`. A row
gives the held-out loss, its ratio to the task's baseline and the accuracy as
mean ± std over the run's seeds (`--seeds`; the std is the sample standard
deviation), and how many seeds met the task's bar (`tasks.BARS`). A run of one
seed is one seed's figures with no spread. Each seed's ratio follows the
table (a mean of 0.5 may be five seeds at 0.5, or two solved and three at the
baseline), then the non-recurrent classifiers of the digits runs and the
charlm LSTM-against-tanh-RNN comparison. "wall s" is the run's
`train_seconds`: the time of the steps it kept, summed over every process that
trained them (a resumed run counts all of its stretches; a summary from
before `train_seconds` gives its last process's).
"""

import json
import math
import os
import sys

from experiments import tasks


def seed_results(summary: dict) -> list[dict]:
  """Each seed's figures (test_loss, loss_over_baseline, test_accuracy) of a summary."""
  if "per_seed" in summary:
    return summary["per_seed"]
  return [{key: summary[key] for key in ("test_loss", "loss_over_baseline", "test_accuracy")}]


def spread(values: list) -> str:
  """"mean ± std" of `values` (sample std), or the one value; "-" for no values.

  A seed whose figure is not finite (a diverged run) is left out of the mean and
  counted instead: "0.0100 ± 0.0020 (1 of 5 not finite)".
  """
  values = [v for v in values if v is not None]
  finite = [v for v in values if math.isfinite(v)]
  lost = "" if len(finite) == len(values) else (
      f" ({len(values) - len(finite)} of {len(values)} not finite)")
  if not finite:
    return "-" + lost
  mean = sum(finite) / len(finite)
  if len(finite) == 1:
    return f"{mean:.4f}" + lost
  std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
  return f"{mean:.4f} ± {std:.4f}" + lost


def row(name: str, summary: dict) -> str:
  """The table row of one run."""
  results = seed_results(summary)
  bar = tasks.BARS.get(summary["task"])
  solved = "-" if bar is None else f"{sum(bar.met(r) for r in results)}/{len(results)}"
  options = "".join(f", {k}={v}" for k, v in summary.get("cell_options", {}).items())
  run = (f"{name}: {summary['task']} T={summary['seq_len']}, {summary['cell']} "
         f"H={summary['hidden_size']}{options}")
  return " | ".join([
      f"| {run}", str(summary["steps"]), str(len(results)),
      spread([r["test_loss"] for r in results]), f"{summary['baseline_loss']:.4f}",
      spread([r["loss_over_baseline"] for r in results]),
      spread([r["test_accuracy"] for r in results]),
      "-" if bar is None else bar.text, solved, f"{run_seconds(summary):.0f} |"])


def run_seconds(summary: dict) -> float:
  """The run's training time over all its processes (`train_seconds`), or, in a summary
  written before it existed, the last process's `wall_seconds`."""
  seconds = summary.get("train_seconds")
  return summary["wall_seconds"] if seconds is None else seconds


def report(runs_dir: str, names: list[str]) -> str:
  """The Markdown table of the runs `names` in `runs_dir`, then the notes."""
  summaries = {}
  for name in names:
    with open(os.path.join(runs_dir, name, "summary.json")) as f:
      summaries[name] = json.load(f)
  lines = [
      "| run | steps | seeds | held-out loss | baseline | ratio | accuracy | bar | solved "
      "| wall s |",
      "|---|---|---|---|---|---|---|---|---|---|"]
  lines += [row(name, summary) for name, summary in summaries.items()]
  lines.append("\nEach seed's held-out loss over the baseline (the \"ratio\" column's values):")
  for name, summary in summaries.items():
    ratios = [r["loss_over_baseline"] for r in seed_results(summary)]
    lines.append(f"- {name}: " + ", ".join("-" if v is None else f"{v:.3f}" for v in ratios))
  # The digits split is fixed, so every digits run reports the same classifiers: once.
  classifiers = {}
  for summary in summaries.values():
    classifiers.update(summary.get("nonrecurrent_baselines", {}))
  for classifier, result in classifiers.items():
    lines.append(f"\ndigits: {classifier.replace('_', ' ')} on the 64 pixels, test accuracy "
                 f"{result['test_accuracy']:.4f}, cross-entropy {result['test_loss']:.4f}.")
  charlm = {s["cell"]: s for s in summaries.values() if s["task"] == "charlm"}
  if {"lstm", "rnn"} <= set(charlm):
    mean = lambda s: sum(r["test_loss"] for r in seed_results(s)) / len(seed_results(s))
    lstm, rnn = mean(charlm["lstm"]), mean(charlm["rnn"])
    lines.append(f"\ncharlm: LSTM {lstm:.4f} against tanh RNN {rnn:.4f} nats/char (means); "
                 f"the LSTM is {'lower' if lstm < rnn else 'NOT lower'}.")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  if len(argv) < 2:
    sys.exit(f"usage: python -m experiments.learning_report RUNS_DIR [NAME ...]\n{__doc__}")
  runs_dir, names = argv[1], argv[2:]
  if not os.path.isdir(runs_dir):
    sys.exit(f"no runs directory {runs_dir}")
  if not names:
    names = sorted(n for n in os.listdir(runs_dir)
                   if os.path.exists(os.path.join(runs_dir, n, "summary.json")))
  missing = [n for n in names if not os.path.exists(os.path.join(runs_dir, n, "summary.json"))]
  if missing or not names:
    sys.exit(f"no summary.json in {runs_dir} for {', '.join(missing) or 'any run'}")
  print(report(runs_dir, names))


if __name__ == "__main__":
  main(sys.argv)
