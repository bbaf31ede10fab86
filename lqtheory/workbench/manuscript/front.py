"""The report's front and back matter, generated from the claims records: title block, abstract, ledger.

Every number here comes from the notebooks' claims records (``<figures dir>/claims/<notebook>.json``),
completed by the registry (``notebooks/claims.toml``) for the claims no notebook evaluated; nothing
is typed by hand. The abstract names the papers, says what was run and gives the verdict of every
empirical **[paper]** claim with its 95% interval against its registered threshold. The ledger is one
table, grouped by notebook, with the columns a reader needs at a 1,280 px window: statement, verdict
(never cut off), measured mean and interval, threshold, how far the interval clears it, the
registered practical-equivalence margin (comparative claims), n.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

from lqtheory.workbench.claims import load_registry
from lqtheory.workbench.ledger import NOT_EVALUATED, VERDICT_LABELS, label_class, verdict_label
from lqtheory.workbench.manuscript.tables import format_value
from lqtheory.workbench.records import record_reads

PAPERS = ("W. Yang, G. Wang, J. Ding, Y. Yang, <em>A Theoretical Understanding of Neural Network Compression "
          "from Sparse Linear Approximation</em> (arXiv 2206.05604), and E. Diao et al., <em>Pruning Deep Neural "
          "Networks from a Sparsity Perspective</em> (ICLR 2023: the PQ Index and SAP)")
PROFILE_MEANING = {
    "ci": "the <code>ci</code> profile: small data and models that exercise every step in minutes; its "
          "verdicts check the pipeline and say little about the papers",
    "default": "the <code>default</code> profile: Fashion-MNIST and small MLPs on a CPU, the reproduction "
               "reported in <code>figures/</code>",
    "paper": "the <code>paper</code> profile: the papers' own scale, meant for a GPU",
}
# the class (colour) of every ledger label: for the claim positive, against it negative (a "no practical
# difference" by how it reads), inconclusive open, not evaluated none
VERDICT_CLASS = {label: label_class(label) for label in VERDICT_LABELS}


@dataclass
class LedgerRow:
    notebook: str
    id: str
    statement: str
    provenance: str
    kind: str
    verdict: str
    mean: float | None = None
    lo: float | None = None
    hi: float | None = None
    n: str = ""
    threshold: float | None = None
    direction: str | None = None
    evidence: str = ""
    record_profile: str | None = None  # the profile the notebook's claims record was written at
    margin: float | None = None  # the registered practical-equivalence margin (comparative claims)

    @property
    def relation(self) -> str:
        if self.threshold is None or self.direction not in ("above", "below"):
            return ""
        return f"{'>' if self.direction == 'above' else '<'} {self.threshold:g}".replace("-", "−")

    @property
    def clearance(self) -> float | None:
        """How far the interval lies on the claimed side of the threshold (negative: it does not)."""
        if self.threshold is None or self.lo is None or self.hi is None:
            return None
        if self.direction == "above":
            return self.lo - self.threshold
        if self.direction == "below":
            return self.threshold - self.hi
        return None

    def interval_text(self) -> str:
        if self.mean is None:
            return ""
        values = [self.mean, self.lo, self.hi]
        # ×10ⁿ only when the whole interval is tiny, so that its three numbers read alike
        scientific = max((abs(v) for v in values if math.isfinite(v)), default=0.0) < 1e-3
        mean, lo, hi = (format_value(v, scientific=scientific) for v in values)
        return f"{mean} [{lo}, {hi}]"


def _number(x) -> float | None:
    return None if x is None else float(x)


def read_ledger(figures_dir: Path | None, notebooks: list[str],
                profile: str | None) -> tuple[list[LedgerRow], list[str]]:
    """Every recorded claim of ``notebooks`` (in their order), then registered ones not evaluated.

    Returns ``(rows, notebooks without a claims record)``.
    """
    rows, missing, seen = [], [], set()
    folder = figures_dir / "claims" if figures_dir is not None else None
    for name in notebooks:
        path = folder / f"{name}.json" if folder is not None else None
        if path is None or not path.is_file():
            missing.append(name)
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            rows.append(LedgerRow(name, "?", "unreadable claims record", "", "", "?"))
            continue
        for c in record.get("claims", []):
            kind, provenance = str(c.get("kind", "")), str(c.get("provenance", "")).strip("[]")
            row = LedgerRow(name, str(c.get("id", "")), str(c.get("statement", "")), provenance, kind,
                            verdict_label(kind, str(c.get("verdict", "")), provenance, record_reads(c)),
                            threshold=_number(c.get("threshold")), direction=c.get("direction"),
                            record_profile=record.get("profile"), margin=_number(c.get("margin")),
                            evidence=str(c.get("measured", "")) if kind == "theorem" else str(c.get("evidence", "")))
            iv = c.get("interval")
            if isinstance(iv, dict) and iv.get("mean") is not None:
                over = str(c.get("over", "seeds"))
                n = int(iv.get("n", 1))
                row.mean = float(iv["mean"])
                row.lo = -math.inf if iv.get("lo") is None else float(iv["lo"])
                row.hi = math.inf if iv.get("hi") is None else float(iv["hi"])
                row.n = f"{n} {over[:-1] if n == 1 and over.endswith('s') else over}"
            rows.append(row)
            seen.add(row.id)
    try:
        registry = load_registry()
    except (OSError, ValueError):
        registry = {}
    for claim in registry.values():
        if claim.notebook in notebooks and claim.notebook not in missing and claim.id not in seen \
                and (profile is None or profile in claim.profiles):
            rows.append(LedgerRow(claim.notebook, claim.id, claim.statement, claim.provenance, claim.kind,
                                  NOT_EVALUATED, threshold=claim.threshold, direction=claim.direction,
                                  margin=claim.margin))
    order = {name: k for k, name in enumerate(notebooks)}
    rows.sort(key=lambda r: order.get(r.notebook, len(order)))  # stable: record order within a notebook
    return rows, missing


def verdict_counts(rows: list[LedgerRow]) -> dict[str, int]:
    counts = {label: sum(r.verdict == label for r in rows) for label in VERDICT_LABELS}
    return {k: v for k, v in counts.items() if v}


def _verdict(verdict: str) -> str:
    return f'<span class="verdict verdict-{VERDICT_CLASS.get(verdict, "none")}">{html.escape(verdict)}</span>'


def title_block(profile: str | None, n_notebooks: int, n_figures: int, rows: list[LedgerRow]) -> str:
    """The title, the papers and the abstract (verdict counts and the [paper] claims with intervals)."""
    counts = verdict_counts(rows)
    count_text = ", ".join(f"{n} {label}" for label, n in counts.items()) or "no claims recorded"
    other = sorted({r.notebook for r in rows if profile and r.record_profile and r.record_profile != profile})
    other_text = (f' <strong class="missing">The claims records of {len(other)} notebook(s) were written at another '
                  f"profile than this report's ({html.escape(', '.join(other))}); their verdicts are not this run's."
                  "</strong>" if other else "")
    meaning = PROFILE_MEANING.get(profile or "", f"the <code>{html.escape(profile)}</code> profile" if profile
                                  else "the executed notebooks")
    headline = [r for r in rows if r.kind == "empirical" and r.provenance == "paper" and r.verdict != "not evaluated"]
    theorems = [r for r in rows if r.kind == "theorem"]
    violated = [r for r in theorems if r.verdict == "VIOLATED"]
    items = "".join(
        f'<li><a href="#claim-{html.escape(r.id)}">{html.escape(r.id)}</a> {_verdict(r.verdict)}: '
        f'{html.escape(r.statement)}. Measured <span class="num">{html.escape(r.interval_text())}</span>'
        f'{" against " + html.escape(r.relation) if r.relation else ""}'
        f'{", n = " + html.escape(r.n) if r.n else ""}.</li>' for r in headline)
    theorem_text = (f"All {len(theorems)} mathematical statements checked numerically hold."
                    if theorems and not violated else
                    f"{len(violated)} of {len(theorems)} mathematical statements are VIOLATED: "
                    + ", ".join(html.escape(r.id) for r in violated) + "." if violated else "")
    return f"""<header class="title-block">
<h1 class="title">Compression from sparse linear approximation: a reproduction</h1>
<p class="subtitle">lqtheory reproduction report{f" · profile {html.escape(profile)}" if profile else ""}</p>
<section class="abstract" id="abstract"><h2>Abstract</h2>
<p>This report reproduces the claims of {PAPERS}. It was built from {n_notebooks} executed notebooks at
{meaning}; they made {n_figures} figures and recorded {len(rows)} claims: {html.escape(count_text)}.
{theorem_text}{other_text} Empirical claims are decided from a 95% interval against a threshold registered before
the measurement: <em>supported</em> when the interval lies on the claimed side, <em>contradicted</em>
when it lies on the other side, <em>inconclusive</em> when it covers the threshold. A comparative claim also
registers a practical-equivalence margin: an interval wholly within it of the threshold reads <em>no practical
difference</em>, which decides an ordering claim against the paper and a &#8220;does not beat&#8221; claim for
it.</p>
{f'<p>The papers&#8217; empirical claims:</p><ul class="headline">{items}</ul>' if items else ""}
</section></header>"""


def ledger_table(rows: list[LedgerRow], notebook_titles: dict[str, str], profile: str | None = None) -> str:
    """The ledger as one table grouped by notebook (a record of another profile than ``profile`` flagged)."""
    if not rows:
        return '<p class="missing">No claims records were found.</p>'
    cols = "".join(f'<col style="width: {w}%">' for w in (10, 31, 13, 17, 7, 7, 7, 8))
    head = ("<tr><th class=\"id\">claim</th><th class=\"statement\">statement</th><th class=\"verdict\">verdict</th>"
            "<th class=\"num\">measured: mean [95% interval]</th><th class=\"num\">threshold</th>"
            "<th class=\"num\">clears by</th><th class=\"num\">margin</th><th class=\"num\">n</th></tr>")
    body, current = [], None
    for r in rows:
        if r.notebook != current:
            current = r.notebook
            title = notebook_titles.get(r.notebook, r.notebook)
            if profile and r.record_profile and r.record_profile != profile:
                title += f' <span class="missing">(record of profile {html.escape(r.record_profile)})</span>'
            body.append(f'<tr class="group"><th colspan="8"><a href="#section-{html.escape(r.notebook)}">'
                        f'{title}</a> <span class="source">{html.escape(r.notebook)}</span></th></tr>')
        clearance = r.clearance
        margin = "" if r.margin is None else "±" + format_value(r.margin)
        # a theorem's evidence is what it measured; an empirical claim's is a note beside its interval
        measured = html.escape(r.interval_text()) if r.mean is not None else \
            f'<span class="evidence">{html.escape(r.evidence)}</span>'
        evidence = f'<div class="evidence">{html.escape(r.evidence)}</div>' if r.evidence and r.mean is not None else ""
        body.append(
            f'<tr id="claim-{html.escape(r.id)}"><td class="id">{html.escape(r.id).replace(".", ".<wbr>")}</td>'
            f'<td class="statement">{html.escape(r.statement)} <span class="provenance">[{html.escape(r.provenance)}]'
            f"</span>{evidence}</td><td class=\"verdict\">{_verdict(r.verdict)}</td>"
            f'<td class="num">{measured}</td><td class="num">{html.escape(r.relation)}</td>'
            f'<td class="num nowrap">{html.escape(format_value(clearance)) if clearance is not None else ""}</td>'
            f'<td class="num nowrap">{html.escape(margin)}</td>'
            f'<td class="num">{html.escape(r.n)}</td></tr>')
    return (f'<table class="ledger"><colgroup>{cols}</colgroup><thead>{head}</thead>'
            f'<tbody>{"".join(body)}</tbody></table>')
