r"""Where the time of one LSTM train step goes on a GPU: loop structure, per-step cost, kernels.

    python -m experiments.gpu_profile --out_dir=/tmp/gpu_profile      # on the GPU machine
    python -m experiments.gpu_profile --analyze=/tmp/gpu_profile       # later, anywhere (no JAX)

The first command, at one shape (default lstm:32:100:64:256, cell:B:T:I:H), for
jaxrnn's train step (`jax.grad` of an MSE loss through `jaxrnn.unroll`, the
benchmark's) and for the peers that bound it (`cudnn`: jax.experimental.rnn's
cuDNN LSTM; `scan_floor`: the matmuls alone in `lax.scan`; `torch`):

1. reads the compiled HLO (`jit(f).lower(...).compile().as_text()`) and prints,
   for every while loop, its trip count and the kernel-launching instructions
   (fusions by kind, custom calls such as cuBLAS gemms, copies, ...) in its body
   and condition, and the estimate of kernels per train step that follows;
2. times each step at T and 2T (median of --repeats runs): the difference over T
   is the cost of one time step, and 2 t(T) - t(2T) the fixed cost (launch,
   projections, the weight-gradient matmul);
3. traces --trace_steps steps of jaxrnn's and cuDNN's train step with
   `jax.profiler.trace(create_perfetto_trace=True)`, copies only the
   `perfetto_trace.json.gz` of each into --out_dir, with `profile_meta.json`
   (steps traced, T, wall time; rewritten as results come), and analyses them
   as in 4. jaxrnn's and cuDNN's train steps come first, each traced as soon
   as it is built, so that a run cut short by a timeout keeps them.

4. `--analyze=DIR_OR_FILE` (no JAX, no profiler plugin needed) reads such a
   trace and prints per train step: GPU kernel launches (and per time step),
   memcpys, summed kernel time, busy time (union of kernel intervals) against
   wall time, and the kernels that take the most time.

Everything goes to stdout; the HLO texts are saved in --out_dir too.
"""

import argparse
import glob
import gzip
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter

# PyTorch allocates on the same GPU in this process (as in experiments/gpu_benchmark.sh).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def _parser() -> argparse.ArgumentParser:
  # argparse, not absl flags: experiments.benchmark (imported for its peers) defines
  # absl flags of the same names.
  parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
  parser.add_argument("--out_dir", help="Where the traces, HLO and meta JSON go.")
  parser.add_argument("--analyze", help="Only analyse this perfetto trace (.json.gz) or "
                      "every *trace.json.gz in this folder (with its profile_meta.json).")
  parser.add_argument("--shape", default="lstm:32:100:64:256", help="cell:B:T:I:H.")
  parser.add_argument("--peers", default="jaxrnn,cudnn,scan_floor,torch",
                      help="Comma-separated peers timed at T and 2T (jaxrnn always first).")
  parser.add_argument("--modes", default="train,forward", help="train and/or forward.")
  parser.add_argument("--repeats", type=int, default=20,
                      help="Timed runs per step; the median is shown.")
  parser.add_argument("--trace_steps", type=int, default=5, help="Train steps in each trace.")
  parser.add_argument("--max_trace_mb", type=float, default=5.0,
                      help="Traces larger than this are not copied.")
  return parser


# HLO instructions that launch nothing on a GPU.
_FREE_OPS = frozenset({
    "parameter", "get-tuple-element", "tuple", "constant", "bitcast", "after-all",
    "opt-barrier", "add-dependency", "partition-id", "replica-id", "domain"})
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"\s([a-z][a-z0-9_\-]*)\(")
# XProf's derived timelines on a device: other views of the kernels' time, not kernels.
_DERIVED_LINE = re.compile(
    r"(?i)^(steps|xla modules|xla ops|xla tracem|async xla|tensorflow|framework|source|"
    r"launch stats|host|sparsecore)")


# --- the compiled HLO --------------------------------------------------------------


def parse_hlo(text: str) -> tuple[dict[str, list[dict]], str | None]:
  """The computations of an HLO module's text: name -> instructions, and the entry's name.

  Each instruction is a dict with `name`, `opcode` and `line` (the text after `=`).
  """
  computations, entry, current = {}, None, None
  for line in text.splitlines():
    if current is None:
      match = _HEADER.match(line)
      if match and not line.startswith(" "):
        current = match.group(1)
        computations[current] = []
        if line.startswith("ENTRY"):
          entry = current
      continue
    if line.strip() == "}":
      current = None
      continue
    match = _INSTRUCTION.match(line)
    if match:
      rest = match.group(2)
      opcode = _OPCODE.search(" " + rest)
      computations[current].append({"name": match.group(1), "line": rest,
                                    "opcode": opcode.group(1) if opcode else "?"})
  return computations, entry


def _attribute(line: str, key: str) -> str | None:
  match = re.search(key + r"=%?([\w.\-]+)", line)
  return match.group(1) if match else None


def _kind(instruction: dict) -> str | None:
  """What a kernel-launching instruction is, e.g. 'fusion:kLoop', 'custom-call:__cublas$gemm'."""
  opcode, line = instruction["opcode"], instruction["line"]
  if opcode in _FREE_OPS or opcode in ("while", "call", "conditional"):
    return None
  if opcode == "fusion":
    kind = _attribute(line, "kind") or "?"
    custom = re.search(r'"kind":"([^"]+)"', line)  # e.g. __triton_gemm, __cudnn$fusion
    return f"fusion:{kind}" + (f"({custom.group(1)})" if custom and kind == "kCustom" else "")
  if opcode == "custom-call":
    target = re.search(r'custom_call_target="([^"]+)"', line)
    return f"custom-call:{target.group(1) if target else '?'}"
  return opcode


def count_kernels(computations: dict, name: str, seen=None) -> Counter:
  """Kernel-launching instructions of computation `name`, through `call`s (command buffers).

  While loops inside are not counted (they are reported as loops of their own).
  """
  seen = set() if seen is None else seen
  counts = Counter()
  for instruction in computations.get(name, []):
    if instruction["opcode"] == "call":
      callee = _attribute(instruction["line"], "to_apply")
      if callee and callee not in seen:
        seen.add(callee)
        counts["call(command buffer or subcomputation)"] += 1
        counts.update(count_kernels(computations, callee, seen))
      continue
    kind = _kind(instruction)
    if kind:
      counts[kind] += 1
  return counts


def while_loops(computations: dict, entry: str) -> list[dict]:
  """Every while loop reachable from `entry`, outermost first, with its kernel counts."""
  loops, queue, visited = [], [(entry, 1, "entry")], set()
  while queue:
    name, multiplier, parent = queue.pop(0)
    if name in visited:
      continue
    visited.add(name)
    for instruction in computations.get(name, []):
      line = instruction["line"]
      if instruction["opcode"] == "while":
        body, cond = _attribute(line, "body") or "", _attribute(line, "condition") or ""
        trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
        op_name = re.search(r'op_name="([^"]+)"', line)
        trips = int(trip.group(1)) if trip else None
        loops.append({
            "name": instruction["name"], "in": parent, "body": body, "condition": cond,
            "trip_count": trips, "op_name": op_name.group(1) if op_name else "",
            "runs_per_step": multiplier,
            "body_kernels": count_kernels(computations, body),
            "condition_kernels": count_kernels(computations, cond),
        })
        queue.append((body, multiplier * (trips or 1), instruction["name"]))
      elif instruction["opcode"] == "call":
        callee = _attribute(line, "to_apply")
        if callee:
          queue.append((callee, multiplier, parent))
  return loops


def describe_hlo(text: str, label: str) -> dict:
  """Prints the loop structure of a compiled module; returns the counts."""
  computations, entry = parse_hlo(text)
  if entry is None:
    print(f"[hlo] {label}: no ENTRY computation found in the HLO text")
    return {}
  top = count_kernels(computations, entry)
  loops = while_loops(computations, entry)
  total = sum(top.values())
  print(f"[hlo] {label}: {len(computations)} computations; outside loops "
        f"{sum(top.values())} kernel-launching ops: {_fmt_counts(top)}")
  for loop in loops:
    body, cond = sum(loop["body_kernels"].values()), sum(loop["condition_kernels"].values())
    trips = loop["trip_count"]
    per_step = (trips or 0) * (body + cond) * loop["runs_per_step"]
    total += per_step
    print(f"[hlo]   while {loop['name']} (in {loop['in']}; {loop['op_name']}): trip count "
          f"{trips if trips is not None else 'unknown'}; per iteration {body} in the body + "
          f"{cond} in the condition")
    print(f"[hlo]     body {loop['body']}: {_fmt_counts(loop['body_kernels'])}")
    print(f"[hlo]     condition {loop['condition']}: {_fmt_counts(loop['condition_kernels'])}")
  dots = sum(n for k, n in top.items() if _is_matmul(k))
  for loop in loops:
    dots += (loop["trip_count"] or 0) * loop["runs_per_step"] * sum(
        n for k, n in loop["body_kernels"].items() if _is_matmul(k))
  print(f"[hlo]   => about {total} kernel-launching ops per step if every op is one launch "
        f"(matmul-like: {dots}); a GPU while loop also reads its predicate back to the host "
        f"each iteration unless the trip count is known and used")
  return {"label": label, "outside_loops": dict(top), "estimated_kernels_per_step": total,
          "matmul_like_per_step": dots,
          "loops": [{**{k: v for k, v in loop.items() if "kernels" not in k},
                     "body_kernels": dict(loop["body_kernels"]),
                     "condition_kernels": dict(loop["condition_kernels"])} for loop in loops]}


def _is_matmul(kind: str) -> bool:
  return bool(re.search(r"dot|gemm|matmul|cublas|triton|ynn|onednn|xnn", kind, re.IGNORECASE))


def _fmt_counts(counts: Counter) -> str:
  return ", ".join(f"{k} x{n}" for k, n in counts.most_common()) or "none"


# --- timing at T and 2T -----------------------------------------------------------------


def _median_ms(step, repeats: int) -> float:
  for _ in range(2):
    step.run()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    step.run()
    times.append(1e3 * (time.perf_counter() - start))
  return statistics.median(times)


def time_at_t_and_2t(peers_module, shape, names, modes, repeats, out_dir, on_built=None,
                     meta=None):
  """Per-step and per-time-step cost of each (peer, mode), appended to meta["rows"].

  `on_built(name, mode, step)` runs on each step built at T, before the 2T one
  (the traces are taken there, so that a run cut short keeps them). The HLO
  summaries at T go to meta["hlo"]; meta is saved after every peer.
  """
  meta = {"rows": [], "hlo": []} if meta is None else meta
  for mode in modes:
    for name in names:
      ms, compile_s = [], []
      for t in (shape.time, 2 * shape.time):
        try:
          step = peers_module.PEERS[name](shape._replace(time=t), mode)
        except Exception as e:  # pylint: disable=broad-except
          print(f"[time] {name} {mode} T={t}: skipped ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:160] if str(e) else ''})")
          break
        if step.compiled is not None and t == shape.time:
          text = step.compiled.as_text()
          with open(os.path.join(out_dir, f"{name}_{mode}_T{t}.hlo.txt"), "w") as f:
            f.write(text)
          meta["hlo"].append(describe_hlo(text, f"{name} {mode} T={t}"))
        ms.append(_median_ms(step, repeats))
        compile_s.append(step.compile_s)
        print(f"[time] {name:<10} {mode:<7} T={t}: {ms[-1]:8.3f} ms (median of {repeats}; "
              f"compile {_fmt_s(step.compile_s)})")
        if t == shape.time and on_built is not None:
          on_built(name, mode, step)
        del step
      if len(ms) == 2:
        per_t = (ms[1] - ms[0]) / shape.time
        fixed = 2 * ms[0] - ms[1]
        print(f"[time] {name:<10} {mode:<7} => {1e3 * per_t:8.2f} us per time step, fixed "
              f"{fixed:7.3f} ms (from T={shape.time}: {ms[0]:.3f} ms, T={2 * shape.time}: "
              f"{ms[1]:.3f} ms)")
        meta["rows"].append({"peer": name, "mode": mode, "T": shape.time, "ms_T": ms[0],
                             "ms_2T": ms[1], "us_per_time_step": 1e3 * per_t,
                             "fixed_ms": fixed, "compile_s": compile_s})
      _save_meta(out_dir, meta)
  return meta


def _save_meta(out_dir, meta):
  with open(os.path.join(out_dir, "profile_meta.json"), "w") as f:
    json.dump(meta, f, indent=1, default=str)


def _fmt_s(seconds):
  return "-" if seconds is None else f"{seconds:.2f} s"


# --- the traces -------------------------------------------------------------------------


def trace_steps(jax, step, name, steps, out_dir, meta, max_mb):
  """Traces `steps` runs of `step`, copies the perfetto trace into out_dir; returns its path."""
  for _ in range(3):
    step.run()
  log_dir = tempfile.mkdtemp(prefix=f"trace_{name}_")
  try:
    with jax.profiler.trace(log_dir, create_perfetto_trace=True):
      start = time.perf_counter()
      for _ in range(steps):
        step.run()
      wall = time.perf_counter() - start
  except Exception as e:  # pylint: disable=broad-except
    print(f"[trace] {name}: the profiler failed ({type(e).__name__}: {e})")
    return None
  found = (sorted(glob.glob(os.path.join(log_dir, "**", "perfetto_trace.json.gz"), recursive=True))
           or sorted(glob.glob(os.path.join(log_dir, "**", "*.trace.json.gz"), recursive=True)))
  if not found:
    print(f"[trace] {name}: no *.trace.json.gz under {log_dir}")
    return None
  size_mb = os.path.getsize(found[-1]) / 2**20
  meta[name] = {"steps": steps, "wall_s": wall, "wall_ms_per_step": 1e3 * wall / steps}
  if size_mb > max_mb:
    print(f"[trace] {name}: {found[-1]} is {size_mb:.1f} MiB, over --max_trace_mb; not copied")
    return found[-1]
  target = os.path.join(out_dir, f"{name}.perfetto_trace.json.gz")
  shutil.copyfile(found[-1], target)
  shutil.rmtree(log_dir, ignore_errors=True)
  print(f"[trace] {name}: {steps} steps, {1e3 * wall / steps:.3f} ms per step while tracing; "
        f"{target} ({size_mb:.2f} MiB)")
  return target


def analyze_trace(path: str, steps: int | None = None, time_steps: int | None = None,
                  wall_ms_per_step: float | None = None, top: int = 12) -> dict:
  """Counts GPU kernels per step in a Chrome/perfetto trace (.json or .json.gz); prints a summary.

  Device work is every complete ('X') event of a process named /device:GPU...
  except on XProf's derived lines ("XLA Ops", "XLA Modules", "Steps", ...,
  other views of the same time); on XProf's GPU traces that leaves the
  per-stream lines ("Stream #N(...)"). Memcpy and memset events (by name)
  are counted apart from kernels. The "XLA Modules" line gives the number of
  steps when `steps` is not given.
  """
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt") as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  process_names, thread_names = {}, {}
  for e in events:
    if e.get("ph") == "M" and e.get("name") == "process_name":
      process_names[e["pid"]] = e.get("args", {}).get("name", "")
    elif e.get("ph") == "M" and e.get("name") == "thread_name":
      thread_names[(e["pid"], e.get("tid"))] = e.get("args", {}).get("name", "")
  devices = {pid for pid, n in process_names.items()
             if re.search(r"(?i)gpu|/device:", n) and "host" not in n.lower()}
  lines = Counter()
  kernels, copies, modules, host_launches = [], [], [], Counter()
  for e in events:
    if e.get("ph") != "X":
      continue
    thread = thread_names.get((e.get("pid"), e.get("tid")), "")
    name = e.get("name", "")
    if e.get("pid") in devices:
      lines[f"{process_names[e['pid']]} | {thread}"] += 1
      if "XLA Modules" in thread:
        modules.append(e)
      if _DERIVED_LINE.match(thread):
        continue
      if re.match(r"(?i)mem(cpy|set)", name) or "memcpy_details" in e.get("args", {}):
        copies.append(e)
      else:
        kernels.append(e)
    elif re.search(r"(?i)launch|memcpy|synchroniz|eventquery|streamwait", name):
      host_launches[name] += 1
  print(f"[analyze] {path}")
  for line, n in lines.most_common():
    print(f"[analyze]   device line {line}: {n} events")
  if not kernels:
    print("[analyze]   no GPU kernel events found (no CUPTI, or another trace layout): see the "
          "line names above")
    return {"path": path, "kernels": 0}
  module_names = Counter(m.get("name", "") for m in modules)
  if steps is None:
    steps = max(module_names.values()) if module_names else 1
    print(f"[analyze]   steps taken from the XLA Modules line: {steps} ({dict(module_names)})")
  start = min(e["ts"] for e in kernels + copies)
  end = max(e["ts"] + e.get("dur", 0) for e in kernels + copies)
  span_ms = (end - start) / 1e3
  kernel_ms = sum(e.get("dur", 0) for e in kernels) / 1e3
  busy_ms = _union_ms(kernels + copies)
  wall = wall_ms_per_step if wall_ms_per_step else span_ms / steps
  summary = {
      "path": path, "steps": steps, "kernels_per_step": len(kernels) / steps,
      "memcpy_memset_per_step": len(copies) / steps,
      "kernel_ms_per_step": kernel_ms / steps, "busy_ms_per_step": busy_ms / steps,
      "device_span_ms_per_step": span_ms / steps, "wall_ms_per_step": wall,
      "mean_kernel_us": 1e3 * kernel_ms / len(kernels),
  }
  print(f"[analyze]   per step: {summary['kernels_per_step']:.1f} kernels, "
        f"{summary['memcpy_memset_per_step']:.1f} memcpy/memset; kernel time "
        f"{summary['kernel_ms_per_step']:.3f} ms, GPU busy {summary['busy_ms_per_step']:.3f} ms "
        f"of {wall:.3f} ms wall ({100 * summary['busy_ms_per_step'] / wall:.0f}% busy); "
        f"mean kernel {summary['mean_kernel_us']:.2f} us")
  if time_steps:
    per_t = summary["kernels_per_step"] / time_steps
    summary["kernels_per_time_step"] = per_t
    memcpy_per_t = summary["memcpy_memset_per_step"] / time_steps
    print(f"[analyze]   {per_t:.2f} kernels and {memcpy_per_t:.2f}"
          f" memcpy per time step (T={time_steps}); wall per time step "
          f"{1e3 * wall / time_steps:.2f} us, of which GPU busy "
          f"{1e3 * summary['busy_ms_per_step'] / time_steps:.2f} us")
  by_name = {}
  for e in kernels + copies:
    total, count = by_name.get(e.get("name", ""), (0.0, 0))
    by_name[e.get("name", "")] = (total + e.get("dur", 0), count + 1)
  print("[analyze]   top kernels by time (per step: count, total us, mean us):")
  for name, (total, count) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]:
    print(f"[analyze]     {count / steps:7.1f}  {total / steps:9.1f}  {total / count:7.2f}  "
          f"{name[:110]}")
  if host_launches:
    print("[analyze]   host API calls per step: " + ", ".join(
        f"{n} x{c / steps:.1f}" for n, c in host_launches.most_common(8)))
  summary["top"] = [{"name": n, "per_step": c / steps, "us_per_step": t / steps}
                    for n, (t, c) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]]
  return summary


def _union_ms(events) -> float:
  intervals = sorted((e["ts"], e["ts"] + e.get("dur", 0)) for e in events)
  total, current_start, current_end = 0.0, None, None
  for start, end in intervals:
    if current_end is None or start > current_end:
      if current_end is not None:
        total += current_end - current_start
      current_start, current_end = start, end
    else:
      current_end = max(current_end, end)
  if current_end is not None:
    total += current_end - current_start
  return total / 1e3


def analyze_path(path: str) -> list[dict]:
  """Analyses one trace, or every *.json.gz trace in a folder (with its profile_meta.json)."""
  paths = [path] if os.path.isfile(path) else sorted(
      glob.glob(os.path.join(path, "*trace.json.gz")))
  meta_path = os.path.join(path if os.path.isdir(path) else os.path.dirname(path),
                           "profile_meta.json")
  meta = {}
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      meta = json.load(f)
  results = []
  for p in paths:
    name = os.path.basename(p).split(".")[0]
    info = meta.get("traces", {}).get(name, {})
    results.append(analyze_trace(p, steps=info.get("steps"), time_steps=meta.get("T"),
                                 wall_ms_per_step=info.get("wall_ms_per_step")))
  if not paths:
    print(f"[analyze] no *trace.json.gz in {path}")
  return results


# --- main -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
  """Steps 1-4 of the module docstring; jaxrnn's and cuDNN's train steps first."""
  import jax  # pylint: disable=g-import-not-at-top

  from experiments import benchmark  # pylint: disable=g-import-not-at-top
  from experiments import benchmark_peers as peers  # pylint: disable=g-import-not-at-top

  out_dir = args.out_dir
  os.makedirs(out_dir, exist_ok=True)
  shape = peers.parse_shapes(args.shape)[0]
  env = benchmark.environment()
  print(f"[env] backend {env['backend']}, device {env['device']}; float32 matmul precision "
        f"(defaults kept): {env['float32_matmul_precision']}")
  names = ["jaxrnn", "cudnn"] + [n for n in args.peers.split(",")
                                 if n and n not in ("jaxrnn", "cudnn")]
  if "cudnn" not in args.peers.split(","):
    names.remove("cudnn")
  modes = sorted({m for m in args.modes.split(",") if m}, key=lambda m: m != "train")
  meta = {"shape": str(shape), "T": shape.time, "environment": env, "rows": [], "hlo": [],
          "traces": {}}

  def trace(name, mode, step):
    if mode != "train" or name not in ("jaxrnn", "cudnn"):
      return
    label = f"{name}_train"
    path = trace_steps(jax, step, label, args.trace_steps, out_dir, meta["traces"],
                       args.max_trace_mb)
    _save_meta(out_dir, meta)
    if path:
      info = meta["traces"][label]
      try:
        info["analysis"] = analyze_trace(path, steps=info["steps"], time_steps=shape.time,
                                         wall_ms_per_step=info["wall_ms_per_step"])
      except Exception as e:  # pylint: disable=broad-except
        print(f"[analyze] {path}: failed ({type(e).__name__}: {e})")
      _save_meta(out_dir, meta)

  time_at_t_and_2t(peers, shape, names, modes, args.repeats, out_dir, trace, meta)
  _save_meta(out_dir, meta)


def main(argv=None) -> None:
  args = _parser().parse_args(argv)
  if args.analyze:
    analyze_path(args.analyze)
  elif args.out_dir:
    run(args)
  else:
    _parser().error("give --out_dir (to profile) or --analyze (to read a trace)")
  sys.stdout.flush()


if __name__ == "__main__":
  main()
