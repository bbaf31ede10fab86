"""The claims ledger: every registered claim with its verdict, grouped by notebook.

:func:`ledger_frame` joins the claims registry (``notebooks/claims.toml``) with the claims records the
notebooks wrote (``<figures dir>/claims/<notebook>.json``). Verdict words match kind and provenance:

- theorems: "holds" / "VIOLATED";
- empirical claims: "supported" / "contradicted" / "inconclusive"; a contradicted **[derived]**
  claim is "contradicted (our conjecture)": our own conjecture fails, not a paper claim;
- a claim with a registered practical-equivalence margin may also read "no practical difference",
  labelled with how it reads: "(against the paper)" / "(for the paper)", or "(against our
  conjecture)" / "(for our conjecture)" for a [derived] one; coloured as a contradiction or a
  support, since that is what it decides. The "margin" column shows the registered margin;
- a registered claim that no record holds: "not evaluated".

:func:`ledger_markdown` renders one table per notebook with left-aligned statements and numbers that
never break across lines; :func:`ledger_styler` gives the same table as a pandas ``Styler`` with
coloured verdicts for the notebook's HTML output. Both are deterministic (byte-identical reruns).

Room: workbench (what turns the notebooks into a reproducible paper).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lqtheory.analysis.stats import Interval
from lqtheory.common.vocabulary import NO_PRACTICAL_DIFFERENCE
from lqtheory.workbench.claims import RegisteredClaim
from lqtheory.workbench.records import READS_AGAINST, READS_FOR, read_claims, record_reads

NOT_EVALUATED = "not evaluated"
NPD_AGAINST = f"{NO_PRACTICAL_DIFFERENCE} (against the paper)"
NPD_FOR = f"{NO_PRACTICAL_DIFFERENCE} (for the paper)"
NPD_AGAINST_OURS = f"{NO_PRACTICAL_DIFFERENCE} (against our conjecture)"
NPD_FOR_OURS = f"{NO_PRACTICAL_DIFFERENCE} (for our conjecture)"
VERDICT_LABELS = ("holds", "VIOLATED", "supported", NPD_FOR, NPD_FOR_OURS, "contradicted", NPD_AGAINST,
                  "contradicted (our conjecture)", NPD_AGAINST_OURS, "inconclusive", NOT_EVALUATED)
#: labels that read for / against the claim (the colour and the counts of good and bad news)
POSITIVE_LABELS = ("holds", "supported", NPD_FOR, NPD_FOR_OURS)
NEGATIVE_LABELS = ("VIOLATED", "contradicted", NPD_AGAINST, "contradicted (our conjecture)", NPD_AGAINST_OURS)
# colours of the HTML rendering (background, text)
VERDICT_COLOURS = {
    "holds": ("#dff0d8", "#1e5e1e"),
    "supported": ("#dff0d8", "#1e5e1e"),
    "VIOLATED": ("#b00020", "#ffffff"),
    "contradicted": ("#f8d7da", "#8a1c24"),
    "contradicted (our conjecture)": ("#fde8cc", "#7a4100"),
    NPD_FOR: ("#dff0d8", "#1e5e1e"),
    NPD_FOR_OURS: ("#dff0d8", "#1e5e1e"),
    NPD_AGAINST: ("#f8d7da", "#8a1c24"),
    NPD_AGAINST_OURS: ("#fde8cc", "#7a4100"),
    "inconclusive": ("#fff3cd", "#6b5300"),
    NOT_EVALUATED: ("#e9ecef", "#495057"),
}
LEGEND = [
    ("holds", "a mathematical statement (theorem) checked numerically and true on the data"),
    ("VIOLATED", "a theorem that failed: a bug; its notebook fails too"),
    ("supported", "an empirical claim whose 95% interval lies on the claimed side of the registered threshold"),
    ("contradicted", "a [paper] claim whose 95% interval lies on the other side: the paper's claim does not "
                     "reproduce at this scale"),
    ("contradicted (our conjecture)", "a [derived] claim (a conjecture of this project) contradicted the same way"),
    (NO_PRACTICAL_DIFFERENCE, "the claim registers a practical-equivalence margin (the 'margin' column, in the "
                              "metric's units) and the whole 95% interval lies within it of the threshold: the "
                              "difference is too small to matter. For an ordering claim ('A beats B') that "
                              "reads against it, for a 'does not beat' claim for it; the label says which"),
    ("inconclusive", "the interval covers the threshold: this scale cannot decide; 'to decide' gives the "
                     "seeds (or units) an interval with the observed spread would need"),
    (NOT_EVALUATED, "registered in notebooks/claims.toml but not recorded by its notebook at this profile"),
]
COLUMNS = ["notebook", "id", "provenance", "kind", "statement", "verdict", "measured", "threshold", "margin", "n",
           "to decide", "evidence", "metric", "mean", "lo", "hi", "direction", "threshold_value", "margin_value",
           "equivalence", "reads", "seeds_needed"]
SHOWN = ["id", "provenance", "statement", "verdict", "measured", "threshold", "margin", "n", "to decide",
         "evidence"]

_NBSP, _NBHYPHEN = "\u00a0", "\u2011"


def verdict_label(kind: str, verdict: str, provenance: str, reads: str = "") -> str:
    """The ledger's word for a recorded verdict, given the claim's kind and provenance.

    ``reads`` (the record's reading, :func:`lqtheory.workbench.records.record_reads`) labels a
    "no practical difference": against / for the paper, or our conjecture for a [derived] claim.
    """
    if kind == "theorem":
        return {"holds": "holds", "violated": "VIOLATED", "does not hold": "VIOLATED"}.get(verdict, verdict)
    if verdict == "contradicted":
        return "contradicted" if provenance == "paper" else "contradicted (our conjecture)"
    if verdict == NO_PRACTICAL_DIFFERENCE:
        ours = provenance != "paper"
        if reads == READS_FOR:
            return NPD_FOR_OURS if ours else NPD_FOR
        if reads == READS_AGAINST:
            return NPD_AGAINST_OURS if ours else NPD_AGAINST
    return verdict


def label_class(label: str) -> str:
    """``"positive"``, ``"negative"``, ``"open"`` (inconclusive) or ``"none"`` (not evaluated) for a label."""
    if label in POSITIVE_LABELS:
        return "positive"
    if label in NEGATIVE_LABELS:
        return "negative"
    return "none" if label == NOT_EVALUATED else "open"


def _interval(record: dict) -> Interval | None:
    iv = record.get("interval")
    if not isinstance(iv, dict):
        return None

    def num(x, default):
        return default if x is None else float(x)

    return Interval(num(iv.get("mean"), math.nan), num(iv.get("lo"), -math.inf), num(iv.get("hi"), math.inf),
                    int(iv.get("n", 1)), num(iv.get("sd"), math.nan), float(iv.get("level", 0.95)),
                    iv.get("method", "t"))


def _to_decide(verdict: str, needed: Any, n: int | None, over: str) -> str:
    if verdict != "inconclusive":
        return ""
    if isinstance(needed, int):
        return f"≈{needed} {over}"
    if n == 1:
        return f"spread unknown: more than 1 of {over}" if over != "seeds" else "spread unknown: run ≥ 2 seeds"
    return "mean on the threshold"


def _evidence(record: dict) -> str:
    """A theorem's measured evidence; for an empirical claim, what the notebook added to its interval."""
    if record.get("kind") == "empirical":
        return record.get("evidence", "")
    return record.get("measured", "")


def ledger_frame(folder: str | os.PathLike, notebooks: Iterable[str], registry: dict[str, RegisteredClaim],
                 exclude: Iterable[str] = (), profile: str | None = None):
    """``(frame, missing, unregistered)``: every registered claim of ``notebooks`` with its recorded verdict.

    ``folder`` holds ``claims/<notebook>.json``; ``missing`` lists notebooks without a claims file;
    ``unregistered`` lists recorded ids absent from the registry (old records), which are left out.
    Rows follow the notebooks' order, then the registry's. With ``profile``, claims registered for
    other profiles only (``profiles = [...]`` in the registry) are left out unless recorded.
    """
    import pandas as pd

    notebooks = [n for n in notebooks if n not in set(exclude)]
    records, missing = {}, []
    for name in notebooks:
        path = Path(folder) / "claims" / f"{name}.json"
        if not path.is_file():
            missing.append(name)
            continue
        records[name] = {c["id"]: c for c in read_claims(path)["claims"]}
    unregistered = sorted(f"{nb} [{cid}]" for nb, recs in records.items() for cid in recs
                          if cid not in registry or registry[cid].notebook != nb)
    rows = []
    for name in notebooks:
        for claim in (c for c in registry.values() if c.notebook == name):
            rec = records.get(name, {}).get(claim.id)
            if rec is None and profile is not None and profile not in claim.profiles:
                continue  # not meant to be measured at this profile
            row = {"notebook": name, "id": claim.id, "provenance": f"[{claim.provenance}]", "kind": claim.kind,
                   "statement": claim.statement, "metric": claim.metric or "", "direction": claim.direction or "",
                   "threshold": claim.relation or "", "threshold_value": claim.threshold,
                   "margin": claim.margin_text, "margin_value": claim.margin, "equivalence": claim.equivalence or "",
                   "reads": "", "measured": "", "n": "", "to decide": "", "evidence": "", "mean": None, "lo": None,
                   "hi": None, "seeds_needed": None}
            if rec is None:
                row["verdict"] = NOT_EVALUATED
            else:
                row["reads"] = record_reads(rec)
                row["verdict"] = verdict_label(claim.kind, rec["verdict"], claim.provenance, row["reads"])
                row["evidence"] = _evidence(rec)
                iv = _interval(rec)
                if iv is not None:
                    unit = claim.over[:-1] if iv.n == 1 and claim.over.endswith("s") else claim.over
                    row.update(measured=str(iv), n=f"{iv.n} {unit}", mean=iv.mean,
                               lo=iv.lo if math.isfinite(iv.lo) else None, hi=iv.hi if math.isfinite(iv.hi) else None,
                               seeds_needed=rec.get("seeds_needed"),
                               **{"to decide": _to_decide(rec["verdict"], rec.get("seeds_needed"), iv.n, claim.over)})
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS), missing, unregistered


def verdict_counts(frame) -> dict[str, int]:
    """How many rows carry each verdict label (labels with no row left out), in legend order."""
    counts = frame["verdict"].value_counts()
    return {label: int(counts[label]) for label in VERDICT_LABELS if label in counts}


def _no_break(text: str) -> str:
    """Keep every number on one line: non-breaking hyphens in signs/exponents, non-breaking spaces."""
    text = re.sub(r"-(?=\d)", _NBHYPHEN, str(text))
    return text.replace(" ", _NBSP)


def _whole_numbers(text: str) -> str:
    """Only the hyphens of signs and exponents become non-breaking (free text still wraps at spaces)."""
    return re.sub(r"-(?=\d)", _NBHYPHEN, str(text))


def _display(frame):
    out = frame[SHOWN].copy()
    for col in ("measured", "threshold", "margin", "n", "to decide"):
        out[col] = [_no_break(v) for v in out[col]]
    out["evidence"] = [_whole_numbers(v) for v in out["evidence"]]
    return out


def ledger_markdown(frame, title: str = "Claims ledger", missing: Iterable[str] = ()) -> str:
    """One left-aligned Markdown table per notebook, with a legend; numbers never split across lines."""
    lines = [f"# {title}", ""]
    counts = verdict_counts(frame)
    lines += [", ".join(f"{n} {label}" for label, n in counts.items()) + f" ({len(frame)} registered claims)", ""]
    lines += ["Verdicts:", ""] + [f"- **{label}**: {text}" for label, text in LEGEND] + [""]
    missing = list(missing)
    if missing:
        lines += ["Notebooks without a claims record at this profile: " + ", ".join(missing), ""]
    for notebook, group in frame.groupby("notebook", sort=False):
        shown = _display(group)
        headers = list(shown.columns)
        cells = [[str(v).replace("|", "\\|").replace("\n", " ") for v in row] for row in shown.itertuples(index=False)]
        lines += [f"## {notebook}", "", "| " + " | ".join(headers) + " |",
                  "|" + "|".join(":---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        lines.append("")
    return "\n".join(lines)


def ledger_styler(frame):
    """The ledger as a pandas ``Styler``: grouped by notebook, statements left-aligned, verdicts coloured."""
    shown = frame[["notebook"]].join(_display(frame))

    def colour(value):
        bg, fg = VERDICT_COLOURS.get(value, ("", ""))
        return f"background-color: {bg}; color: {fg}; font-weight: bold" if bg else ""

    styler = shown.style.hide(axis="index").map(colour, subset=["verdict"])
    styler = styler.set_uuid("claims-ledger").set_table_styles([
        {"selector": "th", "props": "text-align: left; vertical-align: bottom"},
        {"selector": "td", "props": "text-align: left; vertical-align: top"},
    ]).set_properties(subset=["measured", "threshold", "margin", "n", "to decide", "verdict", "id"],
                      **{"white-space": "nowrap"})
    return styler
