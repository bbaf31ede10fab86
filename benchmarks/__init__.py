"""Benchmarks of lqtheory (not part of the installed package): run ``python benchmarks/run.py --help``."""
