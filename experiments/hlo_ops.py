r"""What runs per time step: the ops in each compiled `while` body, jaxrnn beside the bounds.

On XLA:CPU every op in a loop body (a fusion, a copy, a concatenate, a
dynamic-update-slice writing a residual) is dispatched once per time step, so
the count of a body is one lead on the per-step overhead that
``python -m experiments.benchmark`` measures. The default peers are jaxrnn,
`scan_minimal` (a hand-minimal LSTM or GRU) and `scan_floor` (the matmuls
alone). This prints, for each shape and peer, every `while` body of the
compiled step with its op count and opcodes (parameters, tuples,
get-tuple-elements, constants and bitcasts are free and not counted)::

  python -m experiments.hlo_ops --shapes=lstm:16:200:32:128,gru:32:100:64:256

The counts are deterministic; they are not timings.
"""

import collections
from collections.abc import Sequence
from typing import Any

from absl import app
from absl import flags

from experiments import benchmark_peers as peers
from experiments import gpu_profile

FREE = frozenset({"parameter", "get-tuple-element", "tuple", "constant", "bitcast"})


def loop_ops(hlo_text: str) -> list[dict[str, Any]]:
  """Each `while` body of an optimised HLO module: its name, op count and opcodes."""
  comps, _ = gpu_profile.parse_hlo(hlo_text)
  bodies = [gpu_profile._attribute(inst["line"], "body")  # pylint: disable=protected-access
            for instructions in comps.values() for inst in instructions
            if inst["opcode"] == "while"]
  result = []
  for body in filter(None, bodies):
    ops = collections.Counter(inst["opcode"] for inst in comps[body]
                              if inst["opcode"] not in FREE)
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
  flags.DEFINE_list("peers", ["jaxrnn", "scan_minimal", "scan_floor"], "Peers to compile.")
  flags.DEFINE_enum("mode", "train", ["train", "forward"], "The step to compile.")
  app.run(main)
