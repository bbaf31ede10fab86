"""One self-contained HTML report from the executed notebooks (``lqtheory reproduce --report``).

The entry point of the report: :func:`build_report` and ``python -m lqtheory.workbench.report``. The rendering
lives in the manuscript room, :mod:`lqtheory.workbench.manuscript`: a title block and an abstract from
the claims records, the notebooks as sections with their formulas as MathML (written at build time, so
the report needs no script and no network), figures numbered through the document, tables reshaped
for a page, the notebook machinery folded away, and the claims ledger once at the end.

``python -m lqtheory.workbench.report BUILD_DIR [--figures DIR] [--out FILE]`` builds a report from a folder of
executed notebooks by hand.

Room: workbench (what turns the notebooks into a reproducible paper).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lqtheory.workbench.manuscript import build_manuscript, executed_notebooks
from lqtheory.workbench.paths import repo_root

__all__ = ["build_report", "default_report_path", "executed_notebooks", "main"]


def build_report(build: str | os.PathLike, out: str | os.PathLike, *, figures: str | os.PathLike | None = None,
                 profile: str | None = None, names: Sequence[str] | None = None,
                 missing: Iterable[str] = ()) -> dict[str, Any]:
    """Write one self-contained HTML report of the executed notebooks in ``build`` to ``out``.

    Rendered by the manuscript room (:func:`lqtheory.workbench.manuscript.build_manuscript`): formulas
    as MathML, figures numbered through the document, the claims ledger once at the end.
    """
    return build_manuscript(build, out, figures=figures, profile=profile, names=names, missing=missing)


def default_report_path(profile: str, root: str | os.PathLike | None = None) -> Path:
    """``<repo>/build/report/<profile>/report.html`` (git-ignored, like the executed copies)."""
    base = Path(root) if root is not None else repo_root() / "build" / "report"
    return base / profile / "report.html"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lqtheory.workbench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("build", type=Path, help="folder of executed notebooks (build/notebooks/<profile>)")
    parser.add_argument("--figures", type=Path, default=None, help="the profile's figures folder (claims ledger)")
    parser.add_argument("--out", type=Path, default=None, help="default: <build>/report.html")
    parser.add_argument("--profile", default=None)
    args = parser.parse_args(argv)
    out = args.out or args.build / "report.html"
    try:
        summary = build_report(args.build, out, figures=args.figures, profile=args.profile)
    except ValueError as err:
        print(f"lqtheory report: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {summary['path']} ({summary['notebooks']} notebooks, {summary['figures']} figures, "
          f"{summary['claims']} claims)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
