"""Test-suite settings shared by every test file."""

import os

from hypothesis import HealthCheck, settings

# CI and `make test` are deterministic: hypothesis draws the same examples on every run, so a red
# run is reproducible and a green one stays green. HYPOTHESIS_PROFILE=explore draws fresh random
# examples (and more of them) when hunting for counterexamples locally.
_relaxed = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
settings.register_profile("ci", derandomize=True, deadline=None, database=None, suppress_health_check=_relaxed)
settings.register_profile("explore", max_examples=1000, deadline=None, suppress_health_check=_relaxed)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
