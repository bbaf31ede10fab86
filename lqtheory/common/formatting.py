"""Number and table formatting shared by every room that prints or writes tables (common room).

One Markdown, one LaTeX and one HTML table writer over one cell formatter: numbers rounded to
significant digits, integer columns grouped by thousands from :data:`GROUP_THOUSANDS_FROM`, so the
notebooks' tables, the profiler's reports and the claims ledger print numbers the same way.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "FLOATFMT",
    "GROUP_THOUSANDS_FROM",
    "format_measured",
    "format_number",
    "formatted_frame",
    "latex_table",
    "markdown_table",
    "table_html",
]

FLOATFMT = ".4g"


def format_number(x: Any, fmt: str = ".3g") -> str:
    """A scalar (Python, NumPy or 0-d torch) as a short, rounded, stable string.

    With a ``g`` format (``".3g"``: 3 significant digits) numbers between 1e-4 and 1e6 are written
    positionally (``1030``, not ``1.03e+03``) and integer-valued floats as integers (``1000``);
    others in scientific notation (``2.5e-07``). Any other format spec is applied as given.
    """
    if hasattr(x, "item") and callable(x.item):
        x = x.item()
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, numbers.Integral):
        return str(int(x))
    if isinstance(x, numbers.Real):
        x = float(x)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        digits = _significant_digits(fmt)
        text = format(x, fmt) if digits is None else _format_significant(x, digits)
        return "0" if text in ("-0", "0") else text
    return str(x)


def _significant_digits(fmt: str) -> int | None:
    """``n`` of a plain ``".ng"`` format spec, else None (the spec is then used as is)."""
    m = re.fullmatch(r"\.(\d+)g", fmt)
    return max(int(m.group(1)), 1) if m else None


def _format_significant(x: float, digits: int) -> str:
    """``x`` with ``digits`` significant digits: positional for 1e-4 <= |x| < 1e6, else scientific."""
    if x == 0:
        return "0"
    if not 1e-4 <= abs(x) < 1e6:
        return format(x, f".{digits}g")
    rounded = float(f"{x:.{digits - 1}e}")  # round to the significant digits first (999.7 -> 1000)
    if rounded == int(rounded) and abs(rounded) >= 10 ** (digits - 1):
        return str(int(rounded))
    exponent = math.floor(math.log10(abs(rounded)))
    text = f"{rounded:.{max(digits - 1 - exponent, 0)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_measured(measured: Any) -> str:
    """``str`` as is; a number rounded to 3 significant digits; a mapping as ``"key value, ..."``."""
    if isinstance(measured, str):
        return measured
    if isinstance(measured, Mapping):
        return ", ".join(f"{k} {format_number(v)}" for k, v in measured.items())
    return format_number(measured)


def _format_cell(value: Any, floatfmt: str, integer: bool = False, group: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if integer and not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value):
        return f"{int(round(value)):,}" if group else str(int(round(value)))
    if isinstance(value, (numbers.Real, bool)) or hasattr(value, "item"):
        return format_number(value, floatfmt)
    return str(value)


GROUP_THOUSANDS_FROM = 10_000


def _integer_column(values: list) -> bool:
    """True when every finite entry of a numeric column is a whole number (counts stored as floats)."""
    seen = False
    for v in values:
        if hasattr(v, "item") and callable(v.item):
            v = v.item()
        if v is None or isinstance(v, bool) or not isinstance(v, numbers.Real):
            return False
        v = float(v)
        if math.isnan(v):
            continue
        if not math.isfinite(v) or v != int(v) or abs(v) >= 1e15:
            return False
        seen = True
    return seen


def formatted_frame(df, floatfmt: str, index: bool):
    """A copy of ``df`` with every cell a rounded string (the index becomes columns if kept).

    Columns whose values are all whole numbers (counts, even when stored as floats) print as
    integers, with thousands separators from ``GROUP_THOUSANDS_FROM``; other numbers get
    ``floatfmt``'s significant digits (see :func:`format_number`).
    """
    import pandas as pd

    frame = df.reset_index() if index else df
    out = frame.copy()
    for col in frame.columns:
        values = frame[col].tolist()
        numeric = pd.api.types.is_numeric_dtype(frame[col]) and not pd.api.types.is_bool_dtype(frame[col])
        integer = numeric and _integer_column(values)
        group = integer and any(abs(float(v)) >= GROUP_THOUSANDS_FROM for v in values if v == v)
        out[col] = [_format_cell(v, floatfmt, integer, group) for v in values]
    return out


def markdown_table(df, floatfmt: str = FLOATFMT, index: bool = False) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned and rounded with ``floatfmt``."""
    import pandas as pd

    frame = formatted_frame(df, floatfmt, index)
    source = df.reset_index() if index else df
    numeric = [pd.api.types.is_numeric_dtype(source[c]) and not pd.api.types.is_bool_dtype(source[c])
               for c in source.columns]
    headers = [str(c) for c in frame.columns]
    rows = [[str(v).replace("|", "\\|") for v in row] for row in frame.itertuples(index=False)]
    widths = [max([len(h)] + [len(r[i]) for r in rows] + [3]) for i, h in enumerate(headers)]

    def line(cells):
        padded = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric, strict=True)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)]) + "\n"


def latex_table(df, floatfmt: str = FLOATFMT, index: bool = False) -> str:
    """A booktabs ``tabular`` (no float environment), numbers rounded with ``floatfmt``."""
    import pandas as pd

    frame = formatted_frame(df, floatfmt, index)
    source = df.reset_index() if index else df
    align = "".join("r" if pd.api.types.is_numeric_dtype(source[c]) else "l" for c in source.columns)

    def esc(text: str) -> str:
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                     ("_", r"\_"), ("{", r"\{"), ("}", r"\}")):
            text = text.replace(a, b)
        return text

    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(esc(str(c)) for c in frame.columns) + r" \\",
             r"\midrule"]
    lines += [" & ".join(esc(str(v)) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


_NUMBER_TEXT = re.compile(r"^\s*(-?[\d,]*\.?\d+(e[+-]?\d+)?|-?inf|nan|yes|no|)\s*$", re.IGNORECASE)


def table_html(frame) -> str:
    """A formatted (all-string) frame as an HTML table: text left-aligned and free to wrap, numbers
    right-aligned and never split across lines (JupyterLab right-aligns every cell otherwise)."""
    import html as _html

    columns = [str(c) for c in frame.columns]
    rows = [[("" if v is None else str(v)) for v in row] for row in frame.itertuples(index=False)]
    numeric = [all(_NUMBER_TEXT.match(r[i]) for r in rows) for i in range(len(columns))]

    def cell(tag: str, text: str, num: bool) -> str:
        style = "text-align: right; white-space: nowrap;" if num else "text-align: left;"
        return f'<{tag} style="{style}">{_html.escape(text)}</{tag}>'

    head = "".join(cell("th", c, n) for c, n in zip(columns, numeric, strict=True))
    body = "".join("<tr>" + "".join(cell("td", v, n) for v, n in zip(r, numeric, strict=True)) + "</tr>"
                   for r in rows)
    return f'<table class="lqtheory-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
