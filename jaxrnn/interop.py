"""Converters between jaxrnn and PyTorch, Flax linen and Haiku recurrent layers.

PyTorch's ``nn.RNN``/``nn.LSTM``/``nn.GRU`` convert exactly both ways (same
equations, gate orders and two biases). Flax's and Haiku's cells keep one bias
and (Haiku) other gate orders or constants; see each function's docstring and
the table in the README. Converters to a library read what a model is from its
``config`` and refuse, saying why, a model that library does not compute.
PyTorch and Flax are imported only when their converters are called; Haiku's
converters work on its parameter dicts alone.
"""

from jaxrnn._src.interop_flax import from_flax
from jaxrnn._src.interop_flax import from_flax_carry
from jaxrnn._src.interop_flax import to_flax
from jaxrnn._src.interop_flax import to_flax_carry
from jaxrnn._src.interop_haiku import from_haiku
from jaxrnn._src.interop_haiku import to_haiku
from jaxrnn._src.interop_torch import from_torch
from jaxrnn._src.interop_torch import from_torch_state
from jaxrnn._src.interop_torch import to_torch
from jaxrnn._src.interop_torch import to_torch_state

__all__ = (
    "from_flax",
    "from_flax_carry",
    "from_haiku",
    "from_torch",
    "from_torch_state",
    "to_flax",
    "to_flax_carry",
    "to_haiku",
    "to_torch",
    "to_torch_state",
)
