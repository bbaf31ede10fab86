"""One self-contained HTML report from the executed notebooks (``lqtheory reproduce --report``).

The report is a single file: every notebook's markdown (with its math left as TeX for MathJax), its
outputs (text, tables, findings, figures embedded as ``data:`` URIs) and its code folded in
``<details>``, a table of contents (notebook titles and section headings) and the claims ledger read
from the notebooks' claims records. Markdown goes through nbconvert's own renderer
(``MarkdownWithMath``), so math survives exactly as JupyterLab shows it.

Math. MathJax is the only resource that is not inlined (it is megabytes of fonts). The report looks
for a local MathJax at build time (``$LQTHEORY_MATHJAX``, Debian's ``libjs-mathjax``, the
``jupyter_server_mathjax`` package) and references it by ``file://`` URL, so it renders offline on
the machine that built it; otherwise it loads MathJax 3 from a CDN. Either way the header says which,
and without MathJax every formula stays readable as its TeX source (``$\\sigma_s(w)_1$``).

``python -m lqtheory.report BUILD_DIR [--figures DIR] [--out FILE]`` builds a report from a folder of
executed notebooks by hand.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ENV_MATHJAX = "LQTHEORY_MATHJAX"  # path or URL of MathJax.js / tex-*.js to reference instead of the search
MATHJAX_CDN = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"
LOCAL_MATHJAX = (  # MathJax 2 copies that may exist on a machine (Debian package, Jupyter server extension)
    "/usr/share/javascript/mathjax/MathJax.js",
    "/usr/share/mathjax/MathJax.js",
)
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
HEADING_RE = re.compile(r"<h([1-6])([^>]*)>(.*?)</h\1>", re.S)
TAG_RE = re.compile(r"<[^>]+>")

CSS = """
body { font-family: "DejaVu Sans", system-ui, sans-serif; line-height: 1.5; color: #222; margin: 0; }
main { max-width: 66rem; margin: 0 auto; padding: 1rem 2rem 4rem; }
header.report { border-bottom: 2px solid #ccc; margin-bottom: 1rem; }
.note { background: #f5f5f0; border-left: 4px solid #aaa; padding: .4rem .8rem; font-size: .9rem; }
nav.toc ol { padding-left: 1.4rem; } nav.toc li { margin: .1rem 0; }
nav.toc .level-3 { font-size: .92rem; } nav.toc .level-4 { font-size: .85rem; }
section.notebook { border-top: 3px solid #4c72b0; margin-top: 3rem; padding-top: .5rem; }
.source { font-size: .8rem; color: #666; }
details.code { margin: .4rem 0; }
details.code > summary { cursor: pointer; color: #666; font-size: .8rem; }
pre { background: #f7f7f7; padding: .5rem; overflow-x: auto; font-size: .8rem; white-space: pre-wrap; }
pre.stderr { background: #fff0f0; }
pre.error { background: #ffe0e0; border-left: 4px solid #c00; }
.output img { max-width: 100%; height: auto; display: block; margin: .5rem auto; }
.output { margin: .3rem 0 1rem; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .85rem; }
th, td { border-bottom: 1px solid #ddd; padding: .2rem .5rem; vertical-align: top; }
th { background: #f0f0f0; text-align: left; }
td { font-variant-numeric: tabular-nums; }
.wide { overflow-x: auto; }
table.ledger { width: 100%; }
table.ledger td.statement { min-width: 16rem; text-align: left; }
table.ledger td.measured { min-width: 9rem; max-width: 16rem; overflow-wrap: break-word; }
table.ledger td.nowrap, table.ledger td:first-child { white-space: nowrap; }
.verdict-positive { color: #176317; font-weight: bold; }
.verdict-negative { color: #a00; font-weight: bold; }
.verdict-open { color: #8a6d00; font-weight: bold; }
.missing { color: #a00; }
"""


# ----------------------------------------------------------------------------------------------
# Pieces


def _markdown(source: str) -> str:
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    return MarkdownWithMath(renderer=IPythonRenderer(escape=False, exclude_anchor_links=True)).render(source)


def _highlight(code: str) -> str:
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer
    except ImportError:  # pragma: no cover - pygments comes with nbconvert
        return f"<pre>{html.escape(code)}</pre>"
    return highlight(code, PythonLexer(), HtmlFormatter(cssclass="highlight"))


def _pygments_css() -> str:
    try:
        from pygments.formatters import HtmlFormatter
    except ImportError:  # pragma: no cover
        return ""
    return HtmlFormatter(cssclass="highlight").get_style_defs(".highlight")


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _render_output(out: dict) -> str:
    """One output of a code cell as HTML (the richest format we can show safely)."""
    kind = out.get("output_type")
    if kind == "stream":
        css = "stderr" if out.get("name") == "stderr" else "stdout"
        return f'<pre class="{css}">{html.escape(ANSI_RE.sub("", _text(out.get("text", ""))))}</pre>'
    if kind == "error":
        trace = ANSI_RE.sub("", "\n".join(out.get("traceback", [])))
        head = f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"
        return f'<pre class="error">{html.escape(head)}\n{html.escape(trace)}</pre>'
    data = out.get("data", {})
    if "image/png" in data:
        b64 = _text(data["image/png"]).replace("\n", "")
        return f'<img alt="figure" src="data:image/png;base64,{b64}">'
    if "image/jpeg" in data:
        b64 = _text(data["image/jpeg"]).replace("\n", "")
        return f'<img alt="figure" src="data:image/jpeg;base64,{b64}">'
    if "image/svg+xml" in data:
        b64 = base64.b64encode(_text(data["image/svg+xml"]).encode()).decode()
        return f'<img alt="figure" src="data:image/svg+xml;base64,{b64}">'
    if "text/markdown" in data:
        return f'<div class="markdown">{_markdown(_text(data["text/markdown"]))}</div>'
    if "text/html" in data:
        return f'<div class="html">{_text(data["text/html"])}</div>'
    if "text/latex" in data:
        return f'<div class="latex">{html.escape(_text(data["text/latex"]))}</div>'
    if "text/plain" in data:
        return f"<pre>{html.escape(ANSI_RE.sub('', _text(data['text/plain'])))}</pre>"
    return ""


class _Headings:
    """Gives every heading a unique id and remembers (level, id, text) for the table of contents."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.entries: list[tuple[int, str, str]] = []
        self._used: set[str] = set()

    def __call__(self, fragment: str) -> str:
        def repl(m: re.Match) -> str:
            level, attrs, inner = int(m.group(1)), m.group(2), m.group(3)
            text = html.unescape(TAG_RE.sub("", inner)).strip()
            slug = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60] or "section"
            anchor = f"{self.prefix}-{slug}"
            base, k = anchor, 2
            while anchor in self._used:
                anchor, k = f"{base}-{k}", k + 1
            self._used.add(anchor)
            self.entries.append((level, anchor, text))
            attrs = re.sub(r'\s*id="[^"]*"', "", attrs)
            return f'<h{level}{attrs} id="{anchor}">{inner}</h{level}>'

        return HEADING_RE.sub(repl, fragment)


def render_notebook(nb, prefix: str) -> tuple[str, list[tuple[int, str, str]], dict[str, int]]:
    """``(html, headings, counts)`` of one executed notebook: markdown rendered, outputs shown, code
    folded. ``counts`` has the number of figures, error outputs and stderr outputs."""
    headings = _Headings(prefix)
    parts, counts = [], {"figures": 0, "errors": 0, "stderr": 0}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(f'<div class="markdown">{headings(_markdown(cell.source))}</div>')
        elif cell.cell_type == "code":
            tags = cell.get("metadata", {}).get("tags", [])
            if "injected-parameters" in tags:
                label = "parameters injected by papermill"
            elif "parameters" in tags:
                label = "parameters"
            else:
                label = "code"
            if cell.source.strip():
                parts.append(f'<details class="code"><summary>{label}</summary>{_highlight(cell.source)}</details>')
            rendered = []
            for out in cell.get("outputs", []):
                counts["figures"] += int(any(k.startswith("image/") for k in out.get("data", {})))
                counts["errors"] += int(out.get("output_type") == "error")
                counts["stderr"] += int(out.get("output_type") == "stream" and out.get("name") == "stderr")
                rendered.append(_render_output(out))
            if rendered:
                parts.append(f'<div class="output">{headings("".join(rendered))}</div>')
    return "\n".join(parts), headings.entries, counts


def _verdict_class(verdict: str) -> str:
    from lqtheory.notebook import verdict_class

    return verdict_class(verdict)


def ledger_html(claims_dir: Path | None) -> tuple[str, int]:
    """The claims ledger as an HTML table (statements left-aligned and wide), and the claim count."""
    records = []
    folder = claims_dir / "claims" if claims_dir is not None else None
    for path in sorted(folder.glob("*.json")) if folder is not None and folder.is_dir() else []:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            records.append((path.stem, [{"id": "?", "statement": "unreadable claims record", "verdict": "?"}]))
            continue
        records.append((record.get("notebook", path.stem), record.get("claims", [])))
    rows = []
    from lqtheory.notebook import format_measured, format_number

    for notebook, claims in records:
        for c in claims:
            verdict = str(c.get("verdict", ""))
            evidence = format_measured(c.get("measured", ""))
            interval = c.get("interval")
            if isinstance(interval, dict) and interval.get("mean") is not None:
                evidence = (f"{format_number(interval['mean'])} [{format_number(interval.get('lo'))}, "
                            f"{format_number(interval.get('hi'))}], n = {interval.get('n')}"
                            + (f"; {evidence}" if evidence else ""))
            rows.append(
                "<tr>"
                f"<td>{html.escape(str(c.get('id', '')))}</td>"
                f'<td class="statement">{html.escape(str(c.get("statement", "")))}</td>'
                f'<td class="nowrap">[{html.escape(str(c.get("provenance", "")).strip("[]"))}]</td>'
                f'<td class="nowrap">{html.escape(str(c.get("kind", "")))}</td>'
                f'<td class="nowrap">{html.escape(notebook)}</td>'
                f'<td class="measured">{html.escape(evidence)}</td>'
                f'<td class="nowrap verdict-{_verdict_class(verdict)}">{html.escape(verdict)}</td>'
                "</tr>")
    if not rows:
        return '<p class="missing">No claims records were found.</p>', 0
    head = "".join(f"<th>{h}</th>" for h in ("id", "statement", "provenance", "kind", "notebook",
                                             "measured", "verdict"))
    return (f'<div class="wide"><table class="ledger"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
            '</tbody></table></div>', len(rows))


def find_mathjax() -> tuple[str, str]:
    """``(script URL, description)`` of the MathJax the report loads: a local copy when one exists."""
    env = os.environ.get(ENV_MATHJAX, "").strip()
    candidates = [env] if env else []
    candidates += list(LOCAL_MATHJAX)
    try:
        import jupyter_server_mathjax  # type: ignore[import-not-found]

        candidates.append(str(Path(jupyter_server_mathjax.__file__).parent / "static" / "MathJax.js"))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate.startswith(("http://", "https://", "file://")):
            return candidate, f"MathJax from {candidate}"
        path = Path(candidate)
        if candidate and path.is_file():
            return path.resolve().as_uri(), f"a local MathJax ({path.resolve()}), so it renders offline on this machine"
    return MATHJAX_CDN, "MathJax 3 from a CDN (needs a network connection)"


def _mathjax_tags(url: str) -> str:
    if url.rstrip("/").endswith("MathJax.js"):  # MathJax 2
        config = ('MathJax.Hub.Config({tex2jax: {inlineMath: [["$","$"], ["\\\\(","\\\\)"]], '
                  'processEscapes: true}, "HTML-CSS": {availableFonts: ["TeX"]}});')
        return (f'<script type="text/x-mathjax-config">{config}</script>\n'
                f'<script async src="{html.escape(url)}?config=TeX-AMS_CHTML"></script>')
    config = ('window.MathJax = {tex: {inlineMath: [["$","$"], ["\\\\(","\\\\)"]], processEscapes: true}, '
              'options: {skipHtmlTags: ["script","noscript","style","textarea","pre","code"]}};')
    return f"<script>{config}</script>\n<script async src=\"{html.escape(url)}\"></script>"


# ----------------------------------------------------------------------------------------------
# The report


def executed_notebooks(build: Path, names: Sequence[str] | None = None) -> list[Path]:
    """The executed copies in ``build`` in run order (aggregators such as the ledger last)."""
    from lqtheory.reproduce import is_aggregator

    paths = sorted(p for p in build.glob("*.ipynb") if not p.name.startswith("."))
    if names is not None:
        wanted = set(names)
        paths = [p for p in paths if p.stem in wanted]
    return [p for p in paths if not is_aggregator(p.stem)] + [p for p in paths if is_aggregator(p.stem)]


def build_report(build: str | os.PathLike, out: str | os.PathLike, *, figures: str | os.PathLike | None = None,
                 profile: str | None = None, names: Sequence[str] | None = None,
                 missing: Iterable[str] = ()) -> dict[str, Any]:
    """Write one self-contained HTML report of the executed notebooks in ``build`` to ``out``.

    Rendered by the manuscript room (:func:`lqtheory.workbench.manuscript.build_manuscript`): formulas
    as MathML, figures numbered through the document, the claims ledger once at the end.
    """
    from lqtheory.workbench.manuscript import build_manuscript

    return build_manuscript(build, out, figures=figures, profile=profile, names=names, missing=missing)


def default_report_path(profile: str, root: str | os.PathLike | None = None) -> Path:
    """``<repo>/build/report/<profile>/report.html`` (git-ignored, like the executed copies)."""
    from lqtheory.notebook import repo_root

    base = Path(root) if root is not None else repo_root() / "build" / "report"
    return base / profile / "report.html"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lqtheory.report", description=__doc__.split("\n\n")[0])
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
