"""Training: an optax chain factory, the train state and jitted train and eval steps."""

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

__all__ = (
    "TrainState",
    "UpdateNormState",
    "clipped_grad_norm",
    "init_train_state",
    "make_eval_step",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "record_update_norm",
    "skipped_steps",
)
