"""A jaxrnn model as an Equinox module: `jaxrnn.equinox.RNN`.

Imported only when used; needs Equinox (``pip install 'jaxrnn[equinox]'``).
"""

from jaxrnn._src.equinox_module import RNN

__all__ = ("RNN",)
