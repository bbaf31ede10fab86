"""The common room: mechanisms every layer shares and that know nothing of the paper.

Input validation (:mod:`~lqtheory.common.checks`), atomic file writes (:mod:`~lqtheory.common.atomic`).
It imports nothing else from ``lqtheory``; every other room may import it.
"""
