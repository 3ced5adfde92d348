"""jaxrnn: pure-functional recurrent networks for JAX."""

# --- core (cells, unroll, bptt, composites, readout, losses) ---
from jaxrnn._src.base import Cell
from jaxrnn._src.base import CellConfig
from jaxrnn._src.base import Model
from jaxrnn._src.base import StateGradClip
from jaxrnn._src.base import clip_state_grad_by_norm
from jaxrnn._src.base import clip_state_grad_by_value
from jaxrnn._src.bptt import bptt
from jaxrnn._src.cells import GRUParams
from jaxrnn._src.cells import LSTMParams
from jaxrnn._src.cells import LSTMState
from jaxrnn._src.cells import RNNParams
from jaxrnn._src.cells import gru
from jaxrnn._src.cells import lstm
from jaxrnn._src.cells import rnn
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
from jaxrnn._src.losses import sequence_cross_entropy
from jaxrnn._src.losses import sequence_mse
from jaxrnn._src.readout import DenseParams
from jaxrnn._src.readout import Readout
from jaxrnn._src.readout import dense
from jaxrnn._src.readout import sequence_mask
from jaxrnn._src.truncated import truncated_value_and_grad
from jaxrnn._src.unroll import unroll

# --- training ---
from jaxrnn._src.training import TrainState
from jaxrnn._src.training import UpdateNormState
from jaxrnn._src.training import clipped_grad_norm
from jaxrnn._src.training import init_train_state
from jaxrnn._src.training import make_eval_step
from jaxrnn._src.training import make_optimizer
from jaxrnn._src.training import make_schedule
from jaxrnn._src.training import make_train_step
from jaxrnn._src.training import record_update_norm
from jaxrnn._src.training import skipped_steps

# --- parallel ---
from jaxrnn._src.parallel import DATA_AXIS
from jaxrnn._src.parallel import batch_sharding
from jaxrnn._src.parallel import data_parallel
from jaxrnn._src.parallel import initialize_distributed
from jaxrnn._src.parallel import make_mesh
from jaxrnn._src.parallel import process_batch_slice
from jaxrnn._src.parallel import replicate
from jaxrnn._src.parallel import replicated_sharding
from jaxrnn._src.parallel import shard_batch
from jaxrnn._src.parallel import shard_local_batch

__version__ = "0.1.0"
