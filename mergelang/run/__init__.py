"""Stage 4, :class:`~mergelang.plan.plan.Plan` -> bytes: the streaming executor, the chunked
evaluation of the graph, and the progress protocol. The sinks outputs are written to are
below, in :mod:`mergelang.io.sinks` and each format's module.

This package's ``__init__`` imports nothing (in particular not torch), so that
``import mergelang`` stays cheap.
"""
