"""The project's words, defined once (common room): profiles, verdicts, environment variable names.

Every room that checks a profile, writes or colours a verdict, or reads an ``LQTHEORY_*`` variable
takes the word from here, so the registry, the session, the ledger, the statistics and the CLI cannot
drift apart.
"""

from __future__ import annotations

__all__ = [
    "EMPIRICAL_VERDICTS",
    "EQUIVALENCES",
    "ENV_BANK_SIZE",
    "ENV_BATCH",
    "ENV_CLAIMS",
    "ENV_DATA",
    "ENV_KERNEL_LOG",
    "ENV_EXECUTOR",
    "ENV_PIN_KERNELS",
    "ENV_FIGURES",
    "ENV_PROGRESS",
    "ENV_SCHEDULER",
    "NEGATIVE_VERDICTS",
    "NO_PRACTICAL_DIFFERENCE",
    "POSITIVE_VERDICTS",
    "PROFILES",
    "THEOREM_VERDICTS",
]

#: The profiles every notebook defines, smallest first: ``ci`` (tests, committed outputs), ``default``
#: (``make reproduce``, the committed figures), ``paper`` (the paper's scale).
PROFILES = ("ci", "default", "paper")

#: Verdicts recorded for a claim: a theorem checked numerically holds or is violated; an empirical claim
#: is decided from an interval against its threshold (supported / contradicted / inconclusive) and, where
#: the registry gives a practical-equivalence margin, "no practical difference" when the whole interval
#: lies within the margin of the threshold (two one-sided tests).
THEOREM_VERDICTS = ("holds", "violated")
NO_PRACTICAL_DIFFERENCE = "no practical difference"
EMPIRICAL_VERDICTS = ("supported", "contradicted", "inconclusive", NO_PRACTICAL_DIFFERENCE)
#: What "no practical difference" says about a claim with a margin (the registry's ``equivalence``): an
#: ordering claim ("A beats B") is contradicted by it, an equality claim ("A matches B") supported.
EQUIVALENCES = ("contradicts", "supports")
#: Verdict words coloured as good / bad news in findings and reports (older records wrote the long forms).
POSITIVE_VERDICTS = ("holds", "supported")
NEGATIVE_VERDICTS = ("does not hold", "does not reproduce", "contradicted", "violated")

# Environment variables (names only; what each means is documented where it is read).
ENV_FIGURES = "LQTHEORY_FIGURES"  # replaces <repo>/figures as the root of every profile's folder
ENV_PROGRESS = "LQTHEORY_PROGRESS"  # "0" / "1": progress bars off / on, whatever the detection says
ENV_BATCH = "LQTHEORY_BATCH"  # "1" / "0": force batch (non-interactive) / interactive behaviour
ENV_CLAIMS = "LQTHEORY_CLAIMS"  # the claims registry to use instead of <repo>/notebooks/claims.toml
ENV_SCHEDULER = "LQTHEORY_SCHEDULER"  # address of the Dask scheduler grids go to (set by `lqtheory reproduce`)
ENV_EXECUTOR = "LQTHEORY_EXECUTOR"  # "dask" | "serial": the executor when none is passed
ENV_BANK_SIZE = "LQTHEORY_BANK_SIZE"  # runs per bank of a grid when none is passed (`--bank-size`)
ENV_DATA = "LQTHEORY_DATA"  # the data folder instead of <repo>/data
ENV_PIN_KERNELS = "LQTHEORY_PIN_KERNELS"  # "0": leave the math libraries' CPU kernels unpinned (see common.kernels)
ENV_KERNEL_LOG = "LQTHEORY_KERNEL_LOG"  # where a notebook kernel's own stderr goes (set by `lqtheory reproduce`)
