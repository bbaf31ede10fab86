"""Test-suite settings shared by every test file."""

import os

import pytest
from hypothesis import HealthCheck, settings

# CI and `make test` are deterministic: hypothesis draws the same examples on every run, so a red
# run is reproducible and a green one stays green. HYPOTHESIS_PROFILE=explore draws fresh random
# examples (and more of them) when hunting for counterexamples locally.
_relaxed = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
settings.register_profile("ci", derandomize=True, deadline=None, database=None, suppress_health_check=_relaxed)
settings.register_profile("explore", max_examples=1000, deadline=None, suppress_health_check=_relaxed)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# Environment variables a notebook session reads (lqtheory.workbench.session, lqtheory.workbench.claims).
NOTEBOOK_ENV_KEYS = ("LQTHEORY_FIGURES", "LQTHEORY_PROGRESS", "LQTHEORY_BATCH", "CI", "LQTHEORY_CLAIMS")


@pytest.fixture
def notebook_env(tmp_path):
    """A clean notebook session: the variables above cleared, figures written under ``tmp_path/figs``
    (yielded); the variables, torch's determinism switches and open figures restored afterwards
    (``setup()`` changes all three)."""
    import matplotlib.pyplot as plt
    import torch

    from lqtheory.common.environment import patched_environ

    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cleared = {k: None for k in NOTEBOOK_ENV_KEYS}
    with patched_environ({**cleared, "LQTHEORY_FIGURES": str(tmp_path / "figs")}):
        yield tmp_path / "figs"
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
    plt.close("all")
