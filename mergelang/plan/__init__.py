"""Stage 3, checked recipe + input headers -> :class:`~mergelang.plan.plan.Plan`.

Every input is resolved once (found, opened, its format sniffed, its header read; the open
file serves every later read), the recipe is checked
against the architectures found, model expressions become the merge graph, every output gets
its exact key layout, and the cache decisions are made: all before any tensor is read.

This package's ``__init__`` imports nothing, so that ``import mergelang`` stays cheap.
"""
