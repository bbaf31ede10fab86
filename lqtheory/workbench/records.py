"""Claims records: ``<figures dir>/claims/<notebook>.json``, written by the notebook session and read
by the ledger and ``lqtheory reproduce`` (workbench room).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lqtheory.common.vocabulary import NO_PRACTICAL_DIFFERENCE

__all__ = [
    "READS_AGAINST",
    "READS_FOR",
    "collect_claims",
    "read_claims",
    "reads",
    "record_json_text",
    "record_reads",
]

#: How an empirical verdict reads for the claim (the record's ``reads``): supported reads for it,
#: contradicted against it, inconclusive neither (""); "no practical difference" reads as the
#: registry's ``equivalence`` says ("supports": for, "contradicts": against).
READS_FOR = "for the paper"
READS_AGAINST = "against the paper"


def record_json_text(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def reads(verdict: str, equivalence: str | None = None) -> str:
    """:data:`READS_FOR`, :data:`READS_AGAINST` or "" for an empirical ``verdict`` (see above)."""
    if verdict == "supported":
        return READS_FOR
    if verdict == "contradicted":
        return READS_AGAINST
    if verdict == NO_PRACTICAL_DIFFERENCE:
        return READS_FOR if equivalence == "supports" else READS_AGAINST
    return ""


def record_reads(claim: dict) -> str:
    """How a recorded claim reads: its ``reads`` field, or (older records) derived from its verdict.

    A theorem reads neither way (""): it holds or is violated.
    """
    if claim.get("kind") == "theorem":
        return ""
    recorded = claim.get("reads")
    if recorded in (READS_FOR, READS_AGAINST, ""):
        return recorded
    return reads(str(claim.get("verdict", "")), claim.get("equivalence"))


def read_claims(path: str | os.PathLike) -> dict:
    """A claims record written by :meth:`Session.claim` (``{"notebook", "profile", "claims", ...}``)."""
    with open(path, encoding="utf-8") as fh:
        record = json.load(fh)
    if not isinstance(record, dict) or not isinstance(record.get("claims"), list):
        raise ValueError(f"{path} is not a claims record (no 'claims' list)")
    return record


def collect_claims(folder: str | os.PathLike, expected: Iterable[str] = (), exclude: Iterable[str] = ()):
    """All claims under ``<folder>/claims/*.json`` as one table, plus the expected notebooks without a file.

    Returns ``(table, missing)``: a ``pandas.DataFrame`` with columns ``id, statement, provenance,
    kind, notebook, measured, verdict`` (sorted by notebook, then recording order) and the sorted
    list of names in ``expected`` whose record is absent.
    """
    import pandas as pd

    claims_folder = Path(folder) / "claims"
    exclude = set(exclude)
    rows, present = [], set()
    for path in sorted(claims_folder.glob("*.json")) if claims_folder.is_dir() else []:
        if path.stem in exclude:
            continue
        record = read_claims(path)
        notebook = record.get("notebook", path.stem)
        present.add(notebook)
        for c in record["claims"]:
            rows.append(
                {
                    "id": c["id"],
                    "statement": c["statement"],
                    "provenance": f"[{c['provenance']}]",
                    "kind": c["kind"],
                    "notebook": notebook,
                    "measured": c["measured"],
                    "verdict": c["verdict"],
                }
            )
    columns = ["id", "statement", "provenance", "kind", "notebook", "measured", "verdict"]
    missing = sorted(set(expected) - present - exclude)
    return pd.DataFrame(rows, columns=columns), missing
