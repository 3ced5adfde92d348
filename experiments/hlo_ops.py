r"""What runs per time step: the ops in each compiled `while` body, jaxrnn beside `scan_floor`.

On XLA:CPU every op in a loop body (a fusion, a copy, a concatenate, a
dynamic-update-slice writing a residual) is dispatched once per time step, so
the count of a body is one lead on the per-step overhead that
``python -m experiments.benchmark`` measures. This prints, for each shape and
peer, every `while` body of the compiled step with its op count and opcodes
(parameters, tuples, get-tuple-elements, constants and bitcasts are free and
not counted)::

  python -m experiments.hlo_ops --shapes=lstm:16:200:32:128,gru:32:100:64:256

The counts are deterministic; they are not timings.
"""

import collections
import re
from collections.abc import Sequence
from typing import Any

from absl import app
from absl import flags

from experiments import benchmark_peers as peers

FREE = frozenset({"parameter", "get-tuple-element", "tuple", "constant", "bitcast"})
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
_WHILE_BODY = re.compile(r"while\(.*body=%?([\w.\-]+)")
_OPCODE = re.compile(r"= (?:\S+ )?([a-z][a-z0-9\-]*)\(")

def _computations(hlo_text: str) -> dict[str, list[str]]:
  comps, current = {}, None
  for line in hlo_text.splitlines():
    match = _COMPUTATION.match(line)
    if match and not line.startswith(" "):
      current = match.group(1)
      comps[current] = []
    elif line.startswith("}"):
      current = None
    elif current is not None:
      comps[current].append(line.strip())
  return comps


def loop_ops(hlo_text: str) -> list[dict[str, Any]]:
  """Each `while` body of an optimised HLO module: its name, op count and opcodes."""
  comps = _computations(hlo_text)
  bodies = [m.group(1) for lines in comps.values() for line in lines
            if (m := _WHILE_BODY.search(line))]
  result = []
  for body in bodies:
    ops = collections.Counter(m.group(1) for line in comps[body]
                              if (m := _OPCODE.search(line)) and m.group(1) not in FREE)
    result.append({"body": body, "ops": sum(ops.values()), "opcodes": dict(ops)})
  return result


def report(shapes: Sequence[peers.Shape], peer_names: Sequence[str], mode: str) -> list[str]:
  lines = []
  for shape in shapes:
    lines.append(f"{mode} {shape}")
    for name in peer_names:
      try:
        step = peers.PEERS[name](shape, mode)
      except peers.Unsupported as e:
        lines.append(f"  {name:<12} skipped: {e}")
        continue
      for loop in loop_ops(step.compiled.as_text()):
        opcodes = ", ".join(f"{k} {v}" for k, v in sorted(loop["opcodes"].items()))
        lines.append(f"  {name:<12} {loop['ops']:>3} ops per step  ({opcodes})")
  return lines


def main(argv):
  del argv
  f = flags.FLAGS
  print("\n".join(report(peers.parse_shapes(f.shapes), f.peers, f.mode)))


if __name__ == "__main__":
  # Defined here, not on import: experiments.benchmark owns --shapes in-process.
  flags.DEFINE_string("shapes", "lstm:32:100:64:256,lstm:64:50:128:512,lstm:16:200:32:128,"
                      "gru:32:100:64:256,rnn:32:100:64:256", "Comma-separated cell:B:T:I:H.")
  flags.DEFINE_list("peers", ["jaxrnn", "scan_floor"], "Peers to compile.")
  flags.DEFINE_enum("mode", "train", ["train", "forward"], "The step to compile.")
  app.run(main)
