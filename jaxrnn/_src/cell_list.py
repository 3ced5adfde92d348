"""The built-in cells by name, so that experiments and benchmarks find new ones."""

import types
from collections.abc import Callable, Mapping

from jaxrnn._src import base
from jaxrnn._src import gru
from jaxrnn._src import lstm
from jaxrnn._src import mgu
from jaxrnn._src import min_rnn
from jaxrnn._src import rnn

# ``CELLS[name](hidden_size, **options) -> Model`` for every built-in cell.
CELLS: Mapping[str, Callable[..., base.Model]] = types.MappingProxyType({
    "rnn": rnn.rnn,
    "lstm": lstm.lstm,
    "gru": gru.gru,
    "mgu": mgu.mgu,
    "min_gru": min_rnn.min_gru,
    "min_lstm": min_rnn.min_lstm,
})
