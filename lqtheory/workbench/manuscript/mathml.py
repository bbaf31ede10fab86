"""Markdown to HTML with every formula typeset as MathML when the report is built.

The markdown goes through nbconvert's own parser (``MarkdownWithMath``, the one JupyterLab's export
uses), so exactly the spans JupyterLab treats as math (``$…$``, ``$$…$$``, ``\\(…\\)``, ``\\[…\\]``,
``\\begin{env}…\\end{env}``) become math; code spans, code blocks and escaped dollars (``\\$``) stay
text. Each formula is converted by ``latex2mathml`` (with the few commands it does not know,
:data:`DELIMITERS`, written as characters first) into a ``<math>`` element that any current browser
displays without a script or a network connection; its TeX source is kept in ``alttext`` (screen
readers, copy and paste). A formula ``latex2mathml`` cannot parse, or whose MathML still shows a TeX
command, is shown as its TeX source in a ``<code class="tex">`` element (never between dollar signs)
and counted.
"""

from __future__ import annotations

import html
import re

from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

# commands latex2mathml 3.81 leaves as literal text, written as the characters they stand for
DELIMITERS = {r"\lceil": "⌈", r"\rceil": "⌉", r"\lfloor": "⌊", r"\rfloor": "⌋"}
_DELIMITER_RE = re.compile("|".join(re.escape(k) + r"(?![A-Za-z])" for k in DELIMITERS))
# \operatorname{a\_b} (an operator name with escaped underscores) falls apart into single letters in
# latex2mathml; as upright text with plain underscores it reads as written
_OPERATOR_WITH_UNDERSCORE_RE = re.compile(r"\\operatorname\{([A-Za-z]+(?:\\_[A-Za-z]+)+)\}")
# a TeX command still visible in the converted MathML: the conversion did not understand it
_LEFTOVER_RE = re.compile(r">[^<]*\\[A-Za-z]+[^<]*<")


class MathCounter:
    """How many formulas were typeset and which could not be (their TeX source)."""

    def __init__(self) -> None:
        self.typeset = 0
        self.failed: list[str] = []


def _operator_as_text(m: re.Match) -> str:
    return "\\text{" + m.group(1).replace("\\_", "_") + "}"


def tex_to_mathml(tex: str, *, display: bool, counter: MathCounter | None = None) -> str:
    """One formula as a MathML ``<math>`` element (``display="block"`` for display math)."""
    from latex2mathml.converter import convert

    source = tex.strip()
    try:
        prepared = _DELIMITER_RE.sub(lambda m: DELIMITERS[m.group(0)], source)
        prepared = _OPERATOR_WITH_UNDERSCORE_RE.sub(_operator_as_text, prepared)
        mathml = convert(prepared, display="block" if display else "inline")
        if _LEFTOVER_RE.search(mathml):
            raise ValueError("unknown command")
    except Exception:  # noqa: BLE001 - any parse failure falls back to the visible source
        if counter is not None:
            counter.failed.append(source)
        return f'<code class="tex">{html.escape(source)}</code>'
    if counter is not None:
        counter.typeset += 1
    alt = html.escape(source, quote=True)
    return mathml.replace("<math ", f'<math alttext="{alt}" ', 1)


class _MathMLRenderer(IPythonRenderer):
    def __init__(self, counter: MathCounter | None):
        super().__init__(escape=False, exclude_anchor_links=True)
        self.counter = counter

    def inline_math(self, body: str) -> str:
        return tex_to_mathml(body, display=False, counter=self.counter)

    def block_math(self, body: str) -> str:
        return tex_to_mathml(body, display=True, counter=self.counter)

    def latex_environment(self, name: str, body: str) -> str:
        return tex_to_mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", display=True, counter=self.counter)


def markdown_to_html(source: str, counter: MathCounter | None = None) -> str:
    """``source`` (a markdown cell or a ``text/markdown`` output) as HTML with MathML formulas."""
    return MarkdownWithMath(renderer=_MathMLRenderer(counter)).render(source)
