"""The workbench room: what turns notebooks into a reproducible paper.

The notebook session (parameters, profiles, figure/table saving, claims), the claims registry and
ledger, batch reproduction with caching and the HTML report. Built on runs, analysis and below.
"""
