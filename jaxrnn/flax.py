"""A jaxrnn model as a Flax linen module: `jaxrnn.flax.RNN`.

Imported only when used (``import jaxrnn.flax``, or the attribute
``jaxrnn.flax`` after ``import jaxrnn``); needs Flax (``pip install
'jaxrnn[flax]'``).
"""

from jaxrnn._src.flax_linen import RNN

__all__ = ("RNN",)
