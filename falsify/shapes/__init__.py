"""Test shapes (PRODUCT.md §3): each a registered kind in its own module, on one pipeline.

:mod:`falsify.shapes.base` holds the protocol every shape implements and the shared pipeline
that runs it; see docs/extending.md for adding a shape.
"""
