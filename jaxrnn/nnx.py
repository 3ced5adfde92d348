"""A jaxrnn model as a Flax NNX module: `jaxrnn.nnx.RNN`.

Imported only when used; needs Flax with NNX (``pip install 'jaxrnn[flax]'``).
"""

from jaxrnn._src.flax_nnx import RNN

__all__ = ("RNN",)
