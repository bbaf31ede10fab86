"""The report as one self-contained HTML manuscript of the executed notebooks.

Order: a title block and an abstract generated from the claims records, a table of contents, one
section per notebook (its markdown with MathML formulas, its figures and tables, its code folded), and
the claims ledger once at the end (notebook 99's own copy of the ledger is not repeated).

What a section shows and hides (the notebooks' outputs are never changed; nbval compares them):

- **shown**: markdown cells (less the paragraphs that tell an interactive user how to switch profile,
  :data:`INTERACTIVE_PARAGRAPHS`), figures (numbered through the document, see :mod:`.figures`),
  tables (reshaped for a page, see :mod:`.tables`), ``text/markdown`` outputs (*What we found*),
  printed lines that state a result, and errors;
- **folded** with the cell's code (``<details>``, closed): the parameters and papermill's injected
  parameters (as one fold at the top of the section), the setup line, claim verdict lines (the ledger
  and *What we found* carry them), stderr, and the printed output of cells tagged
  ``report-fold-output`` (or Jupyter Book's ``hide-output``);
- **left out**: cells tagged ``report-hide`` (or ``remove-cell``) and library warnings printed on
  stdout or stderr (:data:`WARNING_PATTERNS`); those go to ``<report>.log`` and are counted.

A cell's metadata ``report`` may say how its table's fractions read: ``{"units": {"effect": "points"}}``
shows the column ``effect`` (and its interval) ×100 in points (see :func:`.tables.reshape`).

Math needs no script: every formula is MathML, written at build time (:mod:`.mathml`).
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lqtheory.workbench.manuscript import figures as figs
from lqtheory.workbench.manuscript import front, tables
from lqtheory.workbench.manuscript.mathml import MathCounter, markdown_to_html
from lqtheory.workbench.paths import is_aggregator, repo_root

ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
HEADING_RE = re.compile(r"<h([1-6])([^>]*)>(.*?)</h\1>", re.S)
TAG_RE = re.compile(r"<[^>]+>")
MATH_ELEMENT_RE = re.compile(r"<math\b[^>]*alttext=\"([^\"]*)\"[^>]*>.*?</math>", re.S)
# paragraphs of a title cell addressed to someone running the notebook interactively
INTERACTIVE_PARAGRAPHS = ("**Running it.**", "**Profiles and time.**", "**Profiles.**", "**Time and profiles.**")
# printed lines that are machinery, not results: the setup line and the claims' verdict lines
LOG_LINE_RES = (re.compile(r"^\d\d_[A-Za-z0-9_]+: profile \w+, seed \d+"),
                re.compile(r"^\[[^\]\s]+\] (HOLDS|VIOLATED|SUPPORTED|CONTRADICTED|INCONCLUSIVE|NO PRACTICAL "
                           r"DIFFERENCE)\b"))
# library warnings that reach stdout/stderr despite the notebooks' filters (torch_pruning prints)
WARNING_PATTERNS = (re.compile(r"No positional inputs found for a module"),
                    re.compile(r"^\s*\S*(Warning|warnings\.warn)\b.*"),
                    re.compile(r"^\s*warnings\.warn\("))
# tags that hide a cell from the report, or fold its printed output with its code (Jupyter Book's
# names for the same intents are accepted too)
HIDE_TAGS = {"report-hide", "remove-cell"}
FOLD_OUTPUT_TAGS = {"report-fold-output", "hide-output"}
REPORT_METADATA = "report"  # cell metadata for the report, e.g. {"units": {"effect": "points"}}
INJECTED, PARAMETERS = "injected-parameters", "parameters"

CSS = """
:root { --column: 64rem; }
body { font-family: "DejaVu Serif", Georgia, serif; line-height: 1.5; color: #222; margin: 0; }
main { max-width: var(--column); margin: 0 auto; padding: 1rem 2rem 4rem; }
h1, h2, h3, h4, nav, table, figcaption, .source, details {
  font-family: "DejaVu Sans", system-ui, sans-serif; }
header.title-block { border-bottom: 2px solid #ccc; margin-bottom: 1rem; }
h1.title { font-size: 2rem; margin-bottom: .2rem; } .subtitle { color: #555; margin-top: 0; }
.abstract { background: #fafaf6; border-left: 4px solid #4c72b0; padding: .2rem 1rem .6rem; margin: 1rem 0; }
.abstract ul.headline li { margin: .25rem 0; }
nav.toc ol { padding-left: 1.4rem; } nav.toc li { margin: .1rem 0; }
nav.toc .level-3 { font-size: .92rem; }
section.notebook { border-top: 3px solid #4c72b0; margin-top: 3rem; padding-top: .5rem; }
.source { font-size: .8rem; color: #666; }
details.code { margin: .3rem 0; } details.code > summary { cursor: pointer; color: #777; font-size: .78rem; }
pre { background: #f7f7f7; padding: .5rem; font-size: .8rem; white-space: pre-wrap; overflow-wrap: anywhere; }
pre.error { background: #ffe0e0; border-left: 4px solid #c00; }
.printed { border-left: 3px solid #ddd; padding: .1rem .8rem; margin: .4rem 0; }
.printed p { margin: .1rem 0; }
figure.figure { margin: 1.2rem 0; } figure.figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { font-size: .9rem; margin-top: .4rem; } figcaption .figsource { color: #666; font-size: .8rem; }
a.fignum, .tabnum { font-weight: bold; }
.table { margin: .8rem 0; max-width: 100%; } .table-caption { font-size: .85rem; color: #444; margin: .2rem 0; }
table { border-collapse: collapse; font-size: .85rem; max-width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: .2rem .45rem; vertical-align: top; }
table.ledger th, table.ledger td { overflow-wrap: break-word; }
table.page td.text { min-width: 4rem; }  /* words stay whole: "neuron", not "neur/on" */
th { background: #f0f0f0; text-align: left; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.more td { color: #666; font-style: italic; }
table.ledger { width: 100%; table-layout: fixed; }
table.ledger tr.group th { background: #e8edf5; font-size: .9rem; }
table.ledger td.nowrap { white-space: nowrap; }
table.ledger .evidence { color: #666; font-size: .78rem; }
.provenance { color: #666; font-size: .78rem; white-space: nowrap; }
.verdict { font-weight: bold; }
.verdict-positive { color: #176317; } .verdict-negative { color: #a00; } .verdict-open { color: #8a6d00; }
.verdict-none { color: #555; }
.missing { color: #a00; }
math { font-family: "DejaVu Math TeX Gyre", "STIX Two Math", "Latin Modern Math", "Cambria Math", math;
       font-size: 1.08em; }
math[display="block"] { margin: .6rem 0; overflow-x: auto; max-width: 100%; }
code.tex { color: #555; }
"""


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _highlight(code: str) -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    return highlight(code, PythonLexer(), HtmlFormatter(cssclass="highlight"))


def _pygments_css() -> str:
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(cssclass="highlight").get_style_defs(".highlight")


def plain_text(fragment: str) -> str:
    """Visible text of an HTML fragment; a formula becomes its TeX source (for alt text and titles)."""
    fragment = MATH_ELEMENT_RE.sub(lambda m: html.unescape(m.group(1)), fragment)
    return re.sub(r"\s+", " ", html.unescape(TAG_RE.sub("", fragment))).strip()


def _href(target: Path, base: Path) -> str:
    return quote(Path(os.path.relpath(target, base)).as_posix())


def _drop_interactive(source: str) -> str:
    paragraphs = re.split(r"\n\s*\n", source)
    return "\n\n".join(p for p in paragraphs if not p.lstrip().startswith(INTERACTIVE_PARAGRAPHS))


class Headings:
    """Gives every heading a unique id and remembers ``(level, id, inner html)`` for the contents."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.entries: list[tuple[int, str, str]] = []
        self._used: set[str] = set()

    def __call__(self, fragment: str) -> str:
        def repl(m: re.Match) -> str:
            level, attrs, inner = int(m.group(1)), m.group(2), m.group(3)
            slug = re.sub(r"[^A-Za-z0-9]+", "-", plain_text(inner)).strip("-").lower()[:60] or "section"
            anchor, k = f"{self.prefix}-{slug}", 2
            base = anchor
            while anchor in self._used:
                anchor, k = f"{base}-{k}", k + 1
            self._used.add(anchor)
            self.entries.append((level, anchor, inner))
            attrs = re.sub(r'\s*id="[^"]*"', "", attrs)
            return f'<h{level}{attrs} id="{anchor}">{inner}</h{level}>'

        return HEADING_RE.sub(repl, fragment)


class _Context:
    """What the whole document shares while its sections are rendered."""

    def __init__(self, out: Path, figures_dir: Path | None, notebooks_dir: Path, profile: str | None):
        self.out, self.figures_dir, self.notebooks_dir, self.profile = out, figures_dir, notebooks_dir, profile
        self.math = MathCounter()
        self.next_figure, self.next_table = 1, 1
        self.warnings: list[str] = []
        self.files_match = False  # the current section's figures folder files come from this run
        self.totals = {"figures": 0, "errors": 0, "stderr": 0, "tables": 0, "dropped_captions": 0,
                       "print_resolution": 0}

    def markdown(self, source: str) -> str:
        return markdown_to_html(source, self.math)

    def link(self, target: Path) -> str:
        return _href(target, self.out.parent)


def _split_printed(text: str, ctx: _Context, where: str) -> tuple[list[str], list[str]]:
    """``(result lines, log lines)`` of printed text; warning lines go to the log file only."""
    shown, folded, skip_next = [], [], False
    for line in ANSI_RE.sub("", text).splitlines():
        if skip_next:  # the source line Python's warnings module prints under a warning
            skip_next = False
            if line.startswith("  "):
                ctx.warnings.append(f"{where}: {line}")
                continue
        if any(p.search(line) for p in WARNING_PATTERNS):
            ctx.warnings.append(f"{where}: {line}")
            skip_next = True
            continue
        if not line.strip():
            continue
        (folded if any(p.search(line) for p in LOG_LINE_RES) else shown).append(line)
    return shown, folded


def _alt_text(figure: figs.Figure, caption_html: str, title: str) -> str:
    if figure.caption:
        text = plain_text(caption_html)
        cut = text[:300]
        if len(text) > 300:
            cut = cut[: cut.rfind(" ")] + " …"
        return f"Figure {figure.number}: {cut}"
    names = ", ".join(i["name"] for i in figure.images if i["name"]) or "an unnamed figure"
    return f"Figure {figure.number}: {names} from {title}"


def _figure_html(figure: figs.Figure, ctx: _Context, stem: str, prefix: str, title: str, labels: dict) -> str:
    caption_html = ""
    if figure.caption:
        caption_html = ctx.markdown(figs.rewrite_references(figure.caption, labels))
        caption_html = re.sub(r"^<p>(.*)</p>\s*$", r"\1", caption_html.strip(), flags=re.S)
    alt = _alt_text(figure, caption_html, title)
    images, files = [], []
    for k, image in enumerate(figure.images):
        if image["png"] is not None:
            data, mime = base64.b64encode(image["png"].read_bytes()).decode(), "image/png"
            ctx.totals["print_resolution"] += 1
        else:
            data, mime = image["data"].replace("\n", ""), image["mime"]
            if mime == "image/svg+xml":
                data = base64.b64encode(data.encode()).decode()
        panel = f" (panel {k + 1} of {len(figure.images)})" if len(figure.images) > 1 else ""
        images.append(f'<img src="data:{mime};base64,{data}" alt="{html.escape(alt + panel, quote=True)}">')
        if image["pdf"] is not None:
            files.append(f'<a href="{ctx.link(image["pdf"])}">{html.escape(image["name"])}.pdf</a>')
        elif image["png"] is not None:
            files.append(f'<a href="{ctx.link(image["png"])}">{html.escape(image["name"])}.png</a>')
    notebook = ctx.notebooks_dir / f"{stem}.ipynb"
    made = (f'Made by <a href="#{prefix}-cell-{figure.cell + 1}">cell {figure.cell + 1}</a> of '
            f'<a href="{ctx.link(notebook)}">notebooks/{html.escape(stem)}.ipynb</a>'
            + (f"; print version: {', '.join(files)}" if files else "") + ".")
    n = figure.number
    return (f'<figure class="figure" id="figure-{n}">{"".join(images)}<figcaption>'
            f'<a class="fignum" href="#figure-{n}">Figure {n}.</a> {caption_html} '
            f'<span class="figsource">{made}</span></figcaption></figure>')


def saved_names(source: str, method: str) -> list[str]:
    """The literal names a cell passes to ``run.<method>(obj, "name")``, in call order."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: no names rather than wrong ones
        return []
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == method]
    names = []
    for call in sorted(calls, key=lambda n: (n.lineno, n.col_offset)):
        arg = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "name"), None)
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            names.append(arg.value)
    return names


def _table_html(fragment: str, cell, ctx: _Context) -> str:
    parsed = tables.parse_table(fragment)
    if parsed is None:
        return f'<div class="html">{fragment}</div>'
    names = saved_names(cell.source, "save_table")
    csv = ctx.figures_dir / f"{names[0]}.csv" if names and ctx.figures_dir is not None and ctx.files_match else None
    csv_href = ctx.link(csv) if csv is not None and csv.is_file() else None
    units = cell.get("metadata", {}).get(REPORT_METADATA, {}).get("units", {})
    page = tables.reshape(parsed, csv_href=csv_href, units=units)
    n = ctx.next_table
    ctx.next_table += 1
    ctx.totals["tables"] += 1
    bits = [f'<span class="tabnum">Table {n}.</span>']
    if names:
        bits.append(f"<code>{html.escape(names[0])}</code>.")
    if page.constants:
        bits.append("In every row: " + "; ".join(f"{html.escape(h)} {html.escape(v)}" for h, v in page.constants) + ".")
    if page.shown_rows < page.total_rows:
        bits.append(f"The first {page.shown_rows} of {page.total_rows} rows.")
    if csv_href:
        bits.append(f'<a href="{csv_href}">CSV</a>.')
    return f'<div class="table" id="table-{n}"><p class="table-caption">{" ".join(bits)}</p>{page.html}</div>'


def render_section(nb, stem: str, index: int, ctx: _Context, record: dict | None) -> tuple[str, str, list, dict]:
    """``(html, title html, headings, counts)`` of one executed notebook."""
    prefix = f"nb{index}"
    headings = Headings(prefix)
    # files in the figures folder belong to this run only if its record says the same profile
    use_files = record is not None and (ctx.profile is None or record.get("profile") == ctx.profile)
    ctx.files_match = use_files
    planned, dropped = figs.plan_figures(nb, ctx.next_figure, record if use_files else None, ctx.figures_dir)
    ctx.next_figure += len(planned)
    by_cell = {f.cell: f for f in planned}
    caption_cells = {f.caption_cell for f in planned if f.caption_cell is not None}
    labels = {f.label: f.number for f in planned if f.label}
    counts = {"figures": len(planned), "errors": 0, "stderr": 0}
    ctx.totals["figures"] += len(planned)
    ctx.totals["dropped_captions"] += len(dropped)
    title_src = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    title_match = re.search(r"^#\s+(.+)$", title_src, re.M)
    title = plain_text(ctx.markdown(title_match.group(1))) if title_match else stem
    parts, params = [], []
    for i, cell in enumerate(nb.cells):
        tags = set(cell.get("metadata", {}).get("tags", []))
        if tags & HIDE_TAGS or i in dropped or i in caption_cells:
            continue
        if cell.cell_type == "markdown":
            source = figs.rewrite_references(_drop_interactive(cell.source), labels)
            parts.append(f'<div class="markdown">{headings(ctx.markdown(source))}</div>')
            continue
        if cell.cell_type != "code":
            continue
        if tags & {INJECTED, PARAMETERS}:
            if cell.source.strip():
                label = "injected by papermill" if INJECTED in tags else "the notebook's defaults"
                params.append(f"<p class=\"source\">{label}</p>{_highlight(cell.source)}")
            continue
        shown, folded_log = [], []
        figure_done = False
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            where = f"{stem} cell {i + 1}"
            if kind == "stream":
                result, log = _split_printed(_text(out.get("text", "")), ctx, where)
                if out.get("name") == "stderr":
                    counts["stderr"] += int(bool(result or log))
                    folded_log += result + log
                elif tags & FOLD_OUTPUT_TAGS:
                    folded_log += result + log
                else:
                    folded_log += log
                    if result:
                        shown.append('<div class="printed">' + "".join(f"<p>{html.escape(line)}</p>"
                                                                      for line in result) + "</div>")
                continue
            if kind == "error":
                counts["errors"] += 1
                trace = ANSI_RE.sub("", "\n".join(out.get("traceback", [])))
                shown.append(f'<pre class="error">{html.escape(out.get("ename", "Error"))}: '
                             f'{html.escape(out.get("evalue", ""))}\n{html.escape(trace)}</pre>')
                continue
            data = out.get("data", {})
            if any(k.startswith("image/") for k in data):
                if not figure_done and i in by_cell:
                    shown.append(_figure_html(by_cell[i], ctx, stem, prefix, title, labels))
                    figure_done = True
                continue
            if "text/markdown" in data:
                shown.append(f'<div class="markdown">{headings(ctx.markdown(_text(data["text/markdown"])))}</div>')
            elif "text/html" in data:
                fragment = _text(data["text/html"])
                shown.append(_table_html(fragment, cell, ctx) if "<table" in fragment
                             else f'<div class="html">{fragment}</div>')
            elif "text/plain" in data:
                shown.append(f"<pre>{html.escape(ANSI_RE.sub('', _text(data['text/plain'])))}</pre>")
        if cell.source.strip():
            log_html = (f'<p class="source">printed</p><pre class="log">{html.escape(chr(10).join(folded_log))}</pre>'
                        if folded_log else "")
            summary = "code and its log" if folded_log else "code"
            parts.append(f'<details class="code" id="{prefix}-cell-{i + 1}"><summary>{summary}</summary>'
                         f"{_highlight(cell.source)}{log_html}</details>")
        if shown:
            parts.append(f'<div class="output">{"".join(shown)}</div>')
    ctx.totals["errors"] += counts["errors"]
    ctx.totals["stderr"] += counts["stderr"]
    if params:
        parts.insert(1 if parts else 0, f'<details class="code" id="{prefix}-parameters"><summary>parameters of '
                     f'this run</summary>{"".join(params)}</details>')
    return "\n".join(parts), title, headings.entries, counts


def executed_notebooks(build: Path, names: Sequence[str] | None = None) -> list[Path]:
    """The executed copies in ``build`` in run order (aggregators such as the ledger last)."""
    paths = sorted(p for p in build.glob("*.ipynb") if not p.name.startswith("."))
    if names is not None:
        wanted = set(names)
        paths = [p for p in paths if p.stem in wanted]
    return [p for p in paths if not is_aggregator(p.stem)] + [p for p in paths if is_aggregator(p.stem)]


def _record(figures_dir: Path | None, stem: str) -> dict | None:
    import json

    path = figures_dir / "claims" / f"{stem}.json" if figures_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_manuscript(build: str | os.PathLike, out: str | os.PathLike, *, figures: str | os.PathLike | None = None,
                     profile: str | None = None, names: Sequence[str] | None = None, missing: Iterable[str] = (),
                     notebooks_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write the manuscript of the executed notebooks in ``build`` to ``out`` (one HTML file).

    ``figures`` is the profile's figures folder (claims records, print-resolution figures, CSVs);
    ``names`` restricts and ``missing`` lists notebooks without an executed copy; ``notebooks_dir``
    is where figure captions link the source notebooks (default: the repository's ``notebooks/``).
    Returns ``{"path", "notebooks", "figures", "tables", "errors", "stderr", "claims", "math",
    "math_failed", "warnings", "dropped_captions", "print_resolution"}``.
    """
    import nbformat

    build, out = Path(build), Path(out)
    figures_dir = Path(figures) if figures is not None else None
    if notebooks_dir is None:
        notebooks_dir = repo_root() / "notebooks"
    paths = executed_notebooks(build, names)
    if not paths:
        raise ValueError(f"no executed notebooks in {build}; run `lqtheory reproduce` first")
    ctx = _Context(out, figures_dir, Path(notebooks_dir), profile)
    sections, toc, titles = [], [], {}
    content = [p for p in paths if not is_aggregator(p.stem)]
    for index, path in enumerate(content, start=1):
        nb = nbformat.read(path, as_version=4)
        body, title, headings, counts = render_section(nb, path.stem, index, ctx, _record(figures_dir, path.stem))
        titles[path.stem] = next((inner for level, _a, inner in headings if level == 1), html.escape(title))
        anchor = next((a for level, a, _t in headings if level == 1), f"section-{path.stem}")
        note = f' · <span class="missing">{counts["errors"]} error output(s)</span>' if counts["errors"] else ""
        sub = "".join(f'<li class="level-{level}"><a href="#{a}">{inner}</a></li>'
                      for level, a, inner in headings if level == 2)
        toc.append(f'<li><a href="#{anchor}">{titles[path.stem]}</a> <span class="source">{path.stem}{note}</span>'
                   + (f"<ol>{sub}</ol>" if sub else "") + "</li>")
        sections.append(f'<section class="notebook" id="section-{path.stem}"><p class="source">notebook '
                        f'<a href="{ctx.link(Path(notebooks_dir) / (path.stem + ".ipynb"))}"><code>notebooks/'
                        f'{path.stem}.ipynb</code></a> · {counts["figures"]} figure(s)</p>\n{body}</section>')
    for name in missing:
        toc.append(f'<li class="missing">{html.escape(name)}: no executed copy (failed or not run)</li>')
    rows, no_record = front.read_ledger(figures_dir, [p.stem for p in content], profile)
    toc.append('<li><a href="#claims-ledger">Claims ledger: every claim and its verdict</a></li>')
    no_record_note = (f'<p class="missing">Notebooks without a claims record: {", ".join(map(html.escape, no_record))}.'
                      "</p>" if no_record else "")
    ledger_csv = figures_dir / "claims_ledger.csv" if figures_dir is not None else None
    csv_note = (f' The same ledger, every field and raw numbers: <a href="{ctx.link(ledger_csv)}">'
                "claims_ledger.csv</a>." if ledger_csv is not None and ledger_csv.is_file() else "")
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lqtheory reproduction report{f" ({html.escape(profile)})" if profile else ""}</title>
<style>{CSS}{_pygments_css()}</style>
</head><body><main>
{front.title_block(profile, len(content), ctx.totals["figures"], rows)}
<nav class="toc"><h2 id="contents">Contents</h2><ol>{"".join(toc)}</ol>
<p class="source">Code is folded under <em>code</em> below each result; formulas are MathML (no script, no
network).</p></nav>
{"".join(sections)}
<section class="notebook" id="claims-ledger"><h1>Claims ledger</h1>
<p>Every claim the notebooks of this run recorded, grouped by notebook: the statement and its provenance
([paper]: quoted from the papers; [derived]: proved or conjectured in this project), the verdict, the measured
mean with its 95% interval against the registered threshold, how far the interval clears the threshold on the
claimed side (negative: it does not), the practical-equivalence margin a comparative claim registered (an
interval wholly within it of the threshold reads <em>no practical difference</em>), and what n
counts.{csv_note}</p>
{no_record_note}{front.ledger_table(rows, titles, profile)}</section>
</main></body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(out)
    log = out.with_suffix(".log")
    lines = [f"warning left out of the report: {w}" for w in ctx.warnings]
    lines += [f"formula kept as TeX (latex2mathml could not parse it): {t}" for t in ctx.math.failed]
    if lines:
        log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif log.exists():
        log.unlink()
    return {"path": out, "notebooks": len(paths), "claims": len(rows), "math": ctx.math.typeset,
            "math_failed": len(ctx.math.failed), "warnings": len(ctx.warnings), **ctx.totals}
