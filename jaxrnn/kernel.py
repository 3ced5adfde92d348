"""The cell kit: build a cell with the hoisted-projection fast path and an explicit BPTT.

A built-in cell is one module: a params `NamedTuple`, a config `NamedTuple`,
and a constructor that returns ``kernel_cell(Kernel(...), ...)``, directly
(`jaxrnn/_src/lstm.py`) or, for cells whose state is their output, through
``gates.array_state_cell`` (`jaxrnn/_src/rnn.py`, the smallest example). For a cell written as one
step function, `jaxrnn.custom_cell` is simpler.
"""

from jaxrnn._src.base import Context
from jaxrnn._src.recurrence import GradNormFn
from jaxrnn._src.recurrence import Kernel
from jaxrnn._src.recurrence import MaskHooks
from jaxrnn._src.recurrence import OutputFn
from jaxrnn._src.recurrence import ParamGradsFn
from jaxrnn._src.recurrence import ProjectFn
from jaxrnn._src.recurrence import RecurBwdFn
from jaxrnn._src.recurrence import RecurFn
from jaxrnn._src.recurrence import StepGrads
from jaxrnn._src.recurrence import hidden_grad_norm
from jaxrnn._src.recurrence import kernel_cell

__all__ = (
    "Context",
    "GradNormFn",
    "Kernel",
    "MaskHooks",
    "OutputFn",
    "ParamGradsFn",
    "ProjectFn",
    "RecurBwdFn",
    "RecurFn",
    "StepGrads",
    "hidden_grad_norm",
    "kernel_cell",
)
