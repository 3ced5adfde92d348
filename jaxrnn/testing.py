"""Conformance checks for jaxrnn models: `check_cell` runs any model through the suite.

Use it on a cell of your own (`jaxrnn.custom_cell`, with or without a
``step_vjp``) or on a composite::

  report = jaxrnn.testing.check_cell(my_cell, input_size=4)
  print(report)

It raises `AssertionError` naming each check that failed, with the error
measured and its bound, and otherwise returns a `CheckReport`.
"""

from jaxrnn._src.conformance import CheckReport
from jaxrnn._src.conformance import check_cell

__all__ = (
    "CheckReport",
    "check_cell",
)
