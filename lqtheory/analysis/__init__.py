"""The analysis room: statistics over seeds and matched comparisons of pruning methods.

Intervals, paired differences and three-way verdicts (:mod:`~lqtheory.analysis.stats`), the shared
remaining-fraction grid and the E2/E3 standard settings (:mod:`~lqtheory.analysis.comparison`).
"""
