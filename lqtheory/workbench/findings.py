"""The "What we found" section that closes every notebook: its claims as Markdown, one verdict colour
per verdict word (workbench room).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from lqtheory.common.formatting import format_measured, format_number
from lqtheory.common.vocabulary import NEGATIVE_VERDICTS, NO_PRACTICAL_DIFFERENCE, POSITIVE_VERDICTS
from lqtheory.workbench.records import READS_AGAINST, READS_FOR, record_reads
from lqtheory.workbench.session import Session

__all__ = [
    "findings",
    "findings_markdown",
    "verdict_class",
]

_MARKDOWN_SPECIALS = re.compile(r"([\\`*_<>|~$\[\]#])")


def verdict_class(verdict: str, reads: str | None = None) -> str:
    """``"positive"`` (holds, supported), ``"negative"`` (does not hold/reproduce, contradicted,
    violated) or ``"open"`` (inconclusive, or any verdict word this module does not know).

    "no practical difference" is classed by how it ``reads`` (the record's reading): "for the
    paper" positive, "against the paper" negative, unknown open.
    """
    word = str(verdict).strip().lower()
    if word == NO_PRACTICAL_DIFFERENCE:
        return {READS_FOR: "positive", READS_AGAINST: "negative"}.get(str(reads or ""), "open")
    if word in POSITIVE_VERDICTS:
        return "positive"
    if word in NEGATIVE_VERDICTS:
        return "negative"
    return "open"


def _claim_class(claim: Mapping[str, Any]) -> str:
    return verdict_class(claim.get("verdict", ""), record_reads(dict(claim)))


def _md_escape(text: str) -> str:
    """Plain text made safe for Markdown (σ_s(w)_1 must not turn into italics)."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text))


def _interval_text(claim: Mapping[str, Any]) -> str:
    """``mean [lo, hi], n = N; threshold: above t`` for an empirical claim with an interval, else ''."""
    interval = claim.get("interval")
    if interval is None:
        return ""
    get = interval.get if isinstance(interval, Mapping) else (lambda k, d=None: getattr(interval, k, d))
    mean, lo, hi, n = get("mean"), get("lo"), get("hi"), get("n")
    if mean is None:
        return ""
    text = f"{format_number(mean)} [{format_number(lo)}, {format_number(hi)}]"
    if n is not None:
        text += f", n = {format_number(n)}"
    threshold, direction = claim.get("threshold"), claim.get("direction")
    if threshold is not None:
        sign = {"above": ">", "below": "<"}.get(str(direction), str(direction or ""))
        text += f"; the claim needs {sign} {format_number(threshold)}"
        margin = claim.get("margin")
        if margin is not None:
            text += f", no practical difference within ±{format_number(margin)}"
    return text


def findings_markdown(claims: Iterable[Mapping[str, Any]], *, notes: Mapping[str, str] | None = None,
                      title: str = "What we found") -> str:
    """Markdown for a notebook's closing section, written only from computed values.

    ``claims`` is ``run.claims`` (dicts with at least ``id, statement, provenance, kind, verdict,
    measured``; empirical ones may also carry ``interval`` (mean, lo, hi, n), ``threshold``,
    ``direction``, ``seeds_needed`` and, with a registered margin, ``margin`` and ``reads``). Every claim
    gets one line: its verdict (a "no practical difference" with how it reads, and counted as
    reproduced or not by that reading), statement and the measured evidence. ``notes`` maps a
    claim id to a Markdown paragraph printed under that claim only when its verdict is not positive:
    the place to discuss a negative result, written so it holds whatever the numbers (they are on the
    line above it). A summary sentence counts the verdicts, so nothing in the section is typed by hand.
    """
    claims = [dict(c) for c in claims]
    notes = dict(notes or {})
    unknown = sorted(set(notes) - {c.get("id") for c in claims})
    if unknown:
        raise ValueError(f"notes name claim id(s) that were not recorded: {', '.join(unknown)}")
    lines = [f"## {title}", ""]
    if not claims:
        return "\n".join([*lines, "No claims were recorded in this run."]) + "\n"
    theorems = [c for c in claims if c.get("kind") == "theorem"]
    empirical = [c for c in claims if c.get("kind") != "theorem"]
    summary = []
    if theorems:
        ok = sum(_claim_class(c) == "positive" for c in theorems)
        summary.append(f"{ok} of {len(theorems)} mathematical statement{'s' if len(theorems) != 1 else ''} "
                       f"hold{'s' if len(theorems) == 1 else ''} on every case checked")
    if empirical:
        classes = [_claim_class(c) for c in empirical]
        parts = [f"{classes.count('positive')} reproduced", f"{classes.count('negative')} not reproduced"]
        if classes.count("open"):
            parts.append(f"{classes.count('open')} inconclusive")
        summary.append(f"of {len(empirical)} empirical claim{'s' if len(empirical) != 1 else ''}, "
                       + ", ".join(parts))
        equivalent = sum(str(c.get("verdict", "")).strip().lower() == NO_PRACTICAL_DIFFERENCE for c in empirical)
        if equivalent:
            summary.append(f"{equivalent} of these decided by no practical difference within a registered margin")
    lines += ["; ".join(summary)[:1].upper() + "; ".join(summary)[1:] + ".", ""]

    marks = {"positive": "✓", "negative": "✗", "open": "?"}
    for group, heading in ((theorems, "Mathematical statements"), (empirical, "Empirical claims")):
        if not group:
            continue
        lines += [f"**{heading}**", ""]
        for c in group:
            verdict = str(c.get("verdict", ""))
            cls = _claim_class(c)
            shown = verdict.upper()
            if verdict.strip().lower() == NO_PRACTICAL_DIFFERENCE and record_reads(dict(c)):
                shown += f" ({record_reads(dict(c))})"
            prov = str(c.get("provenance", "")).strip("[]")
            line = (f"- {marks[cls]} **{_md_escape(c.get('id', ''))}** ({prov}): **{shown}**. "
                    f"{_md_escape(str(c.get('statement', '')).rstrip('.'))}.")
            evidence = _interval_text(c) or format_measured(c.get("measured", ""))
            if evidence:
                line += f" Measured: {_md_escape(evidence)}."
            seeds = c.get("seeds_needed")
            if cls == "open" and seeds:
                line += f" About {format_number(seeds)} seeds would decide it at the observed spread."
            lines.append(line)
            note = notes.get(c.get("id"))
            if note and cls != "positive":
                lines += ["", "  " + note.strip().replace("\n", "\n  "), ""]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def findings(run: Session, *, notes: Mapping[str, str] | None = None, title: str = "What we found"):
    """:func:`findings_markdown` of ``run.claims`` as an ``IPython.display.Markdown`` object.

    End a notebook with ``findings(run)`` (optionally ``notes={"S7.acc": "..."}``): it renders as
    the closing section in JupyterLab and in the HTML report.
    """
    from IPython.display import Markdown

    return Markdown(findings_markdown(run.claims, notes=notes, title=title))
