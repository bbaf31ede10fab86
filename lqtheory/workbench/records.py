"""Claims records: ``<figures dir>/claims/<notebook>.json``, written by the notebook session and read
by the ledger and ``lqtheory reproduce`` (workbench room).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "collect_claims",
    "read_claims",
    "record_json_text",
]

def record_json_text(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


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
