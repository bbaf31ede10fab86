"""The engine room: models, data, masks, pruning methods and the training loop, device-agnostic.

It builds on :mod:`lqtheory.theory` (indices and bounds decide what pruning keeps) and knows nothing
of run folders, grids or notebooks.
"""
