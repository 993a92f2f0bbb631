"""Stage 4, :class:`~mergelang.plan.plan.Plan` -> bytes: the streaming executor, the chunked
evaluation of the graph, the sinks outputs are written to, and the progress protocol.

This package's ``__init__`` imports nothing (in particular not torch), so that
``import mergelang`` stays cheap.
"""
