"""``lqtheory.profile``: how compressible is any PyTorch model, and how far can it be pruned (issue #12).

``profile(model, data=None, ...)`` returns a :class:`Profile` (tables as DataFrames, ``to_json``,
``to_markdown``, ``to_html``, plots); :func:`compare` ranks several profiles of one architecture. The
command line is ``lqtheory profile MODEL [MODEL ...]`` (:mod:`lqtheory.profiler.cli`).

Room: profiler (``lqtheory profile``: how compressible is any model).
"""

from lqtheory.profiler.core import profile
from lqtheory.profiler.evaluate import english_corpus, resolve_data, sample_images
from lqtheory.profiler.loading import Loaded, ProfileInputError, build_arch, load_model
from lqtheory.profiler.masking import budget_masks, masked_weights, model_parameter
from lqtheory.profiler.measure import DEFAULT_EPS, Settings, measure_units, needed_terms, profiled_weights
from lqtheory.profiler.report import Comparison, Profile, compare

__all__ = [
    "profile", "Profile", "compare", "Comparison", "Settings", "ProfileInputError", "load_model", "Loaded",
    "build_arch", "profiled_weights", "measure_units", "needed_terms", "budget_masks", "masked_weights",
    "model_parameter", "resolve_data", "english_corpus", "sample_images", "DEFAULT_EPS",
]
