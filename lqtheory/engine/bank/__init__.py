"""A bank of runs trained together: K runs of one architecture, data set and schedule as one batched computation.

Entry point: :func:`train_bank` ``(members, *, device, precision, checkpoint, progress)`` with one
:class:`BankMember` ``(model, data, config, mask, seed, callbacks, label)`` per run; it returns one
:func:`lqtheory.engine.training.train`-style history per member and trains each member's model in place.
A single run is a bank of one.

What a member keeps to itself, exactly as :func:`lqtheory.engine.training.train` gives a lone run: its
initial weights (its ``model``), its mask (applied before the first step, gradients of pruned entries
zeroed before clipping, re-applied after every step, so pruned weights are exactly zero), its batch
order (the per-``(seed, epoch)`` CPU generator of ``train``), its gradient-norm clipping, its SGD
momentum buffers, its step counter and learning rate (the shared schedule at its own step), its
callbacks (a :class:`lqtheory.engine.training.TrainState` of its own; ``state.model`` is synced from the
stack before each hook, ``state.optimizer`` is ``None``) and its records. Members must share the
data, the architecture and the :class:`lqtheory.engine.training.TrainConfig` (``ValueError`` naming the
first difference otherwise).

How: plain MLPs (``linear``, ``mlp-{w}-1-{depth}-relu``, ``pqi-mlp``) are held as stacked leaf tensors
``(K, out, in)`` (:class:`StackedMLP`), one ``torch.baddbmm`` per layer per step, the optimizer step as
the same elementwise operations on the stacked tensors. **The registry's CNNs (``cnn4``,
``resnet18``) fall back to the per-run loop**: a bank of them trains member after member through
``train`` (no grouped convolutions yet).

Guarantees, tested in ``tests/test_engine_bank.py`` on the machine that runs them:

* bank-size independence: a member's records (``seconds`` aside) and final weights are bit-identical
  alone, in a bank of 2 or of K, at any position in the bank; deterministic given its seed on one
  device;
* resume: with ``checkpoint=PATH`` the bank writes its state atomically at every epoch boundary; a
  call after an interruption resumes from it and gives the records of an uninterrupted bank;
* precision: ``precision="float32"`` (default) or ``"bfloat16"`` (autocast for the products; fp32
  master weights, gradients, optimizer state and reductions). The name is what a caller hashes into
  a run's identity (:data:`PRECISIONS`).

What differs from ``train`` (measured, ``benchmarks/bank_vs_train.py``): at one thread (the sweep's
workers) nothing: records and weights are bit-identical to ``train``'s at the default profile, dense
and masked (the batched linear's backward uses ``nn.Linear``'s product orientation, the norms and
scaled adds are ``train``'s calls on each member's slice). With more threads, ``train``'s products may
be multi-threaded BLAS calls while a bank's are single-threaded per member, so the last bits can
differ. The records' ``seconds`` is the bank's epoch time divided by the members trained in it.
``TrainState.optimizer`` is ``None`` in a bank.
"""

from lqtheory.engine.bank.core import PRECISIONS, BankDivergedError, BankMember, bank_identity, train_bank
from lqtheory.engine.bank.stacked import StackedMLP, is_stackable

__all__ = ["PRECISIONS", "BankDivergedError", "BankMember", "StackedMLP", "bank_identity", "is_stackable",
           "train_bank"]
