"""Data parallelism over every device with jax.sharding, and multi-process runs with jax.distributed."""

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

__all__ = (
    "DATA_AXIS",
    "batch_sharding",
    "data_parallel",
    "initialize_distributed",
    "make_mesh",
    "process_batch_slice",
    "replicate",
    "replicated_sharding",
    "shard_batch",
    "shard_local_batch",
)
