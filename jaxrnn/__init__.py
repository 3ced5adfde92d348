"""jaxrnn: pure-functional recurrent networks for JAX.

The top level holds the core: cells, `custom_cell`, composites, `unroll`,
`bptt`, readouts and losses. The rest lives in sub-namespaces, each
importable after a plain ``import jaxrnn``:

- `jaxrnn.kernel`: the cell kit (`Kernel`, `kernel_cell`) for cells with the
  hoisted-projection fast path and a hand-derived backward.
- `jaxrnn.testing`: `check_cell`, the conformance suite for any model.
- `jaxrnn.training`: optax chains, the train state and jitted steps.
- `jaxrnn.parallel`: data parallelism over devices and processes.
- `jaxrnn.interop`: converters to and from PyTorch, Flax and Haiku.

Modules for other frameworks are imported only when used, so their
frameworks stay optional: `jaxrnn.flax` (linen), `jaxrnn.nnx` (Flax NNX) and
`jaxrnn.equinox`, each with an ``RNN`` module.
"""

import importlib

from jaxrnn._src.base import InitFn
from jaxrnn._src.base import InitialStateFn
from jaxrnn._src.base import Model
from jaxrnn._src.base import Params
from jaxrnn._src.base import PyTree
from jaxrnn._src.base import SpatialInitialStateFn
from jaxrnn._src.base import State
from jaxrnn._src.base import StateGradClip
from jaxrnn._src.base import StepFn
from jaxrnn._src.base import clip_state_grad_by_norm
from jaxrnn._src.base import clip_state_grad_by_value
from jaxrnn._src.bptt import bptt
from jaxrnn._src.cell_list import CELLS
from jaxrnn._src.composites import BidirectionalConfig
from jaxrnn._src.composites import BidirectionalParams
from jaxrnn._src.composites import BidirectionalState
from jaxrnn._src.composites import LearnedStateConfig
from jaxrnn._src.composites import LearnedStateParams
from jaxrnn._src.composites import StackConfig
from jaxrnn._src.composites import StackParams
from jaxrnn._src.composites import StackState
from jaxrnn._src.composites import bidirectional
from jaxrnn._src.composites import learned_initial_state
from jaxrnn._src.composites import stack
from jaxrnn._src.conv_lstm import ConvLSTMConfig
from jaxrnn._src.conv_lstm import ConvLSTMParams
from jaxrnn._src.conv_lstm import conv_lstm
from jaxrnn._src.custom import CustomCellConfig
from jaxrnn._src.custom import custom_cell
from jaxrnn._src.gru import GRUConfig
from jaxrnn._src.gru import GRUParams
from jaxrnn._src.gru import gru
from jaxrnn._src.losses import sequence_cross_entropy
from jaxrnn._src.losses import sequence_mse
from jaxrnn._src.lstm import LSTMConfig
from jaxrnn._src.lstm import LSTMParams
from jaxrnn._src.lstm import LSTMState
from jaxrnn._src.lstm import lstm
from jaxrnn._src.mgu import MGUConfig
from jaxrnn._src.mgu import MGUParams
from jaxrnn._src.mgu import mgu
from jaxrnn._src.min_rnn import MinGRUConfig
from jaxrnn._src.min_rnn import MinLSTMConfig
from jaxrnn._src.min_rnn import MinRNNParams
from jaxrnn._src.min_rnn import min_gru
from jaxrnn._src.min_rnn import min_lstm
from jaxrnn._src.parallel_in_time import ParallelInfo
from jaxrnn._src.parallel_in_time import parallel_unroll
from jaxrnn._src.readout import DenseParams
from jaxrnn._src.readout import Readout
from jaxrnn._src.readout import dense
from jaxrnn._src.readout import sequence_mask
from jaxrnn._src.regularisers import KeptParams
from jaxrnn._src.regularisers import RecurrentDropoutConfig
from jaxrnn._src.regularisers import ZoneoutConfig
from jaxrnn._src.regularisers import recurrent_dropout
from jaxrnn._src.regularisers import zoneout
from jaxrnn._src.rnn import RNNConfig
from jaxrnn._src.rnn import RNNParams
from jaxrnn._src.rnn import rnn
from jaxrnn._src.truncated import truncated_value_and_grad
from jaxrnn._src.unroll import unroll

# isort: split
from jaxrnn import interop
from jaxrnn import kernel
from jaxrnn import parallel
from jaxrnn import testing
from jaxrnn import training

__version__ = "0.1.0"

_FRAMEWORK_MODULES = ("equinox", "flax", "nnx")


def __getattr__(name):
  """Imports `jaxrnn.flax`, `jaxrnn.nnx` and `jaxrnn.equinox` on first use."""
  if name in _FRAMEWORK_MODULES:
    return importlib.import_module(f"jaxrnn.{name}")
  raise AttributeError(f"module 'jaxrnn' has no attribute {name!r}")


__all__ = (
    "BidirectionalConfig",
    "BidirectionalParams",
    "BidirectionalState",
    "CELLS",
    "ConvLSTMConfig",
    "ConvLSTMParams",
    "CustomCellConfig",
    "DenseParams",
    "GRUConfig",
    "GRUParams",
    "InitFn",
    "InitialStateFn",
    "KeptParams",
    "LSTMConfig",
    "LSTMParams",
    "LSTMState",
    "LearnedStateConfig",
    "LearnedStateParams",
    "MGUConfig",
    "MGUParams",
    "MinGRUConfig",
    "MinLSTMConfig",
    "MinRNNParams",
    "Model",
    "ParallelInfo",
    "Params",
    "PyTree",
    "RNNConfig",
    "RNNParams",
    "Readout",
    "RecurrentDropoutConfig",
    "SpatialInitialStateFn",
    "StackConfig",
    "StackParams",
    "StackState",
    "State",
    "StateGradClip",
    "StepFn",
    "ZoneoutConfig",
    "bidirectional",
    "bptt",
    "clip_state_grad_by_norm",
    "clip_state_grad_by_value",
    "conv_lstm",
    "custom_cell",
    "dense",
    "gru",
    "interop",
    "kernel",
    "learned_initial_state",
    "lstm",
    "mgu",
    "min_gru",
    "min_lstm",
    "parallel",
    "parallel_unroll",
    "recurrent_dropout",
    "rnn",
    "sequence_cross_entropy",
    "sequence_mask",
    "sequence_mse",
    "stack",
    "testing",
    "training",
    "truncated_value_and_grad",
    "unroll",
    "zoneout",
)
