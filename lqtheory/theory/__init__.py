"""The theory room: the paper's mathematics as pure batched tensor functions.

Sparsity indices (norms), sparse approximation (S1, S3), neuron and network bounds (S2, S4, S7),
batched Lasso, E1 teachers and backward approximation. Theory knows nothing of models, data, training
or run folders: it imports only :mod:`lqtheory.common`.
"""
