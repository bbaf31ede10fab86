"""The manuscript room: the reproduction report rendered as a paper (``lqtheory reproduce --report``).

One self-contained HTML file from the executed notebooks: a title block and an abstract generated from
the claims records, the notebooks as sections with formulas typeset as MathML at build time (no script,
no network), figures numbered through the document at print resolution, tables reshaped for a page,
the notebook machinery (parameters, log lines, warnings) folded away or left out, and the claims ledger
once at the end. Modules: :mod:`.document` (assembly and what is shown), :mod:`.mathml`,
:mod:`.figures`, :mod:`.tables`, :mod:`.front` (title block, abstract, ledger).
"""

from lqtheory.workbench.manuscript.document import build_manuscript, executed_notebooks

__all__ = ["build_manuscript", "executed_notebooks"]
