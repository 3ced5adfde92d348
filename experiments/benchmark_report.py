"""The benchmark's outputs: a text table, a JSON file and a bar chart."""

import json
import os
import sys
from typing import Any

JSON_NAME = "benchmark.json"
TABLE_NAME = "benchmark.txt"
PLOT_NAME = "benchmark.png"
FLOOR = "scan_floor"  # the "x floor" column divides by this peer's time


def _fmt(value, width, spec):
  return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def format_table(results: dict[str, Any]) -> str:
  """The results as fixed-width text: one table per (mode, shape), then the extras."""
  env = results["environment"]
  lines = [
      f"backend {env['backend']} ({env['device']}, {env['cpu_cores']} CPU cores, "
      f"load {env['load_average_1m_at_start']:.1f} at start)",
      "ms: median of the interleaved runs (min ms: the fastest); "
      "x jaxrnn: this row's ms / jaxrnn's (>1 is slower); x floor: this row's ms / scan_floor's;",
      "compile s: jit lower+compile;",
      f"peak: a {results['peak_matmul_size']}^3 float32 matmul timed in each shape's "
      "round-robin.",
  ]
  precision = env.get("float32_matmul_precision")
  if precision:
    lines.append("float32 matmul precision, every library at its default (on a GPU, jax's "
                 "None lets XLA and the cudnn peer use TF32, and torch's cuDNN RNNs use TF32 "
                 "unless cudnn.allow_tf32 is False): "
                 + ", ".join(f"{k}={v}" for k, v in precision.items()))
  header = (f"{'peer':<16} {'ms':>10} {'min ms':>10} {'GFLOP/s':>9} {'% peak':>7} "
            f"{'x jaxrnn':>9} {'x floor':>8} {'compile s':>10}")
  groups = {}
  for row in results["rows"]:
    groups.setdefault((row["mode"], row["shape"]), []).append(row)
  for (mode, shape), rows in groups.items():
    lines += ["", f"{mode} {shape} (cell:B:T:I:H), {rows[0]['flops'] / 1e9:.3g} GFLOP, "
              f"peak {rows[0]['peak_gflops']:.1f} GFLOP/s", header]
    floor = next((r["median_ms"] for r in rows if r["peer"] == FLOOR), None)
    for row in rows:
      to_floor = row["median_ms"] / floor if floor else None
      lines.append(
          f"{row['peer']:<16} {row['median_ms']:>10.3f} {row['min_ms']:>10.3f} "
          f"{row['gflops']:>9.2f} "
          f"{row['pct_peak']:>7.1f} {_fmt(row['ratio_to_jaxrnn'], 9, '.2f')} "
          f"{_fmt(to_floor, 8, '.2f')} {_fmt(row['compile_s'], 10, '.2f')}")
  labels = {}
  for row in results["rows"] + results["memory"]:
    labels.setdefault(row["peer"], set()).add(row["label"])
  if labels:
    lines += ["", "peers:"] + [f"  {peer:<16} {'; '.join(sorted(ls))}"
                               for peer, ls in labels.items()]
  if results["compile_scaling"]:
    lines += ["", "compile time of the train step at T and 4T (flat: no unrolling)",
              f"{'peer':<16} {'shape':<22} {'T s':>7} {'4T s':>7} {'4T/T':>6}"]
    for row in results["compile_scaling"]:
      lines.append(f"{row['peer']:<16} {row['shape']:<22} {row['compile_s_T']:>7.2f} "
                   f"{row['compile_s_4T']:>7.2f} {row['ratio_4T_to_T']:>6.2f}")
  if results["bf16_gradient_error"]:
    lines += ["", "bfloat16 gradient, relative error vs float32 (||g16 - g32|| / ||g32||), and the",
              "float32 gradient's change when only params and inputs are rounded to bfloat16",
              f"  {'shape':<22} {'bf16':>9} {'rounding':>9}"]
    for row in results["bf16_gradient_error"]:
      reference = row.get("rounding_reference", float("nan"))  # older results lack it
      lines.append(f"  {row['shape']:<22} {row['relative_error']:>9.2e} {reference:>9.2e}")
  if results["memory"]:
    lines += ["", f"memory of the train step, {results['memory'][0]['shape']} "
              "(compiled memory_analysis: argument + output + temp - alias)",
              f"{'peer':<20} {'total MiB':>10} {'temp MiB':>10} {'ms':>10} {'compile s':>10}"]
    for row in results["memory"]:
      lines.append(f"{row['peer']:<20} {row['total_bytes'] / 2**20:>10.4g} "
                   f"{row['temp_bytes'] / 2**20:>10.4g} {row['median_ms']:>10.1f} "
                   f"{row['compile_s']:>10.2f}")
  notes = sorted({(s["peer"], s["reason"]) for s in results["skipped"]})
  if notes:
    lines += ["", "skipped:"] + [f"  {peer}: {reason}" for peer, reason in notes]
  return "\n".join(lines)


def plot(results: dict[str, Any], path: str) -> None:
  """Bars of the median time per peer, grouped by shape; one panel per mode.

  Raises:
    ImportError: matplotlib is not installed (imported here, so that the tables
      and the JSON need only numpy and JAX, e.g. on a bare GPU machine).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  modes = list(dict.fromkeys(r["mode"] for r in results["rows"]))
  panels = modes + (["memory"] if results["memory"] else [])
  fig, axes = plt.subplots(len(panels) or 1, 1, squeeze=False,
                           figsize=(11, 3.6 * max(len(panels), 1)))
  for ax, panel in zip(axes[:, 0], panels):
    if panel == "memory":
      rows = results["memory"]
      ax.bar([r["peer"] for r in rows], [r["total_bytes"] / 2**20 for r in rows])
      ax.set_ylabel("peak MiB")
      ax.set_title(f"train-step memory, {rows[0]['shape']}")
      continue
    rows = [r for r in results["rows"] if r["mode"] == panel]
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    names = list(dict.fromkeys(r["peer"] for r in rows))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
      xs, ms = [], []
      for j, shape in enumerate(shapes):
        for r in rows:
          if r["peer"] == name and r["shape"] == shape:
            xs.append(j + (i - (len(names) - 1) / 2) * width)
            ms.append(r["median_ms"])
      ax.bar(xs, ms, width, label=name)
    ax.set_xticks(range(len(shapes)), shapes)
    ax.set_yscale("log")
    ax.set_ylabel("median ms (log)")
    ax.set_title(f"{panel} ({results['environment']['backend']}, "
                 f"{results['environment']['device']})")
    ax.legend(fontsize="small", ncol=4)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def save(results: dict[str, Any], out_dir: str, plot_png: bool = False) -> None:
  """Writes benchmark.json and benchmark.txt (and benchmark.png) into `out_dir`."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, JSON_NAME), "w") as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(out_dir, TABLE_NAME), "w") as f:
    f.write(format_table(results) + "\n")
  if plot_png:
    try:
      plot(results, os.path.join(out_dir, PLOT_NAME))
    except ImportError as e:
      sys.stderr.write(f"benchmark: no {PLOT_NAME} ({e}); the table and JSON are written.\n")
