"""Tables for a page: the report's reshaping of the HTML tables the notebooks displayed.

The notebooks' own outputs stay as they are (nbval compares them); the report reads each displayed
``<table>`` back into rows of cells and reshapes them for reading:

- an interval stored as three columns (``x``, ``x_lo``, ``x_hi``, or ``x``, ``x lo``, ``x hi``, or a
  mean column followed by ``<prefix>_lo``/``<prefix>_hi``) becomes one column "x: mean [lo, hi]";
- a column with one value in every row moves into the caption ("model: mlp-128-1-2-relu");
- headers that are variable names become words (``dense_acc`` → "dense accuracy");
- every number of a column is printed the same way: three significant digits, whole numbers with
  thousands separators, infinities as ∞, never ``e+06`` (×10ⁿ only in a column of tiny numbers);
- a column the notebook declares a fraction of accuracy (cell metadata ``report.units``, e.g.
  ``{"effect": "points", "acc": "%"}``) is shown ×100 with its unit in the header, so accuracies read
  in % and their differences in points, as the claims are worded;
- a table longer than :data:`LONG_TABLE` rows shows its first :data:`SHOWN_ROWS` rows and links the
  full CSV in the figures folder.

Tables with several header rows or spanning cells are left as they are (but still wrapped to the
text column by the report's CSS).
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field

LONG_TABLE = 25
SHOWN_ROWS = 12
_NUMBER = re.compile(r"^[+\-−]?(\d[\d,\u202f\u2009 ]*)?(\.\d+)?([eE][+\-]?\d+)?$")
# variable-name headers the notebooks print, in words; anything else only loses its underscores
HEADER_WORDS = {
    "acc": "accuracy", "dense_acc": "dense accuracy", "control_acc": "control accuracy",
    "dense_longer_acc": "dense accuracy, trained longer", "dense_longer": "dense, trained longer",
    "dense_epochs": "dense epochs", "longer_epochs": "longer epochs", "n_seeds": "seeds",
    "remaining_pct": "remaining (%)", "speedup": "speed-up", "control_mean": "control mean",
    "gain_longer": "gain when trained longer", "control_loss": "loss of the control against dense",
    "pqi_mean": "mean PQI", "gini_mean": "mean Gini", "m_over_d": "m/d", "sap_kept_fraction": "SAP kept fraction",
    "kept_fraction": "kept fraction", "max_unit_tail": "max unit tail", "mean_unit_tail": "mean unit tail",
    "tail_within_eps": "tail within ε", "eps": "ε", "cosine_drift": "cosine drift", "lam": "λ",
    "rel_mse": "relative MSE", "train_mse": "train MSE", "mse_teacher": "teacher MSE", "mse": "MSE",
    "diff": "difference",
}
_SUPERSCRIPT = str.maketrans("0123456789-+", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺")


@dataclass
class ParsedTable:
    """A displayed table as header names and rows of cell strings."""

    headers: list[str]
    rows: list[list[str]]


@dataclass
class PageTable:
    """A reshaped table: HTML of the table and what its caption must say."""

    html: str
    constants: list[tuple[str, str]] = field(default_factory=list)
    total_rows: int = 0
    shown_rows: int = 0


def parse_table(fragment: str) -> ParsedTable | None:
    """The first plain table of ``fragment`` (one header row, no spanning cells), else None."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(fragment, "html.parser")
    table = soup.find("table")
    if table is None:
        return None
    head_rows = table.find("thead").find_all("tr") if table.find("thead") else []
    body = table.find("tbody") or table
    body_rows = [tr for tr in body.find_all("tr") if tr.find("td")]
    if len(head_rows) > 1 or any(c.get("colspan") or c.get("rowspan") for c in table.find_all(["td", "th"])):
        return None
    if head_rows:
        headers = [c.get_text(" ", strip=True) for c in head_rows[0].find_all(["th", "td"])]
    else:
        first = table.find("tr")
        if first is None or not first.find("th"):
            return None
        headers = [c.get_text(" ", strip=True) for c in first.find_all("th")]
        body_rows = [tr for tr in body_rows if tr is not first]
    rows = [[c.get_text(" ", strip=True) for c in tr.find_all(["td", "th"])] for tr in body_rows]
    if not headers or any(len(r) != len(headers) for r in rows):
        return None
    return ParsedTable(headers, rows)


def to_number(text: str) -> float | None:
    """The number a cell shows (``"8,832"``, ``"-0.5"``, ``"2.06e+06"``, ``"inf"``), else None."""
    t = text.strip().replace("−", "-")
    if t.lower() in ("inf", "+inf", "∞"):
        return math.inf
    if t.lower() in ("-inf", "-∞"):
        return -math.inf
    if t.lower() == "nan":
        return math.nan
    if not t or not _NUMBER.match(t) or not any(ch.isdigit() for ch in t):
        return None
    try:
        return float(re.sub(r"[,\u202f\u2009 ]", "", t))
    except ValueError:
        return None


def format_value(x: float, *, integer: bool = False, scientific: bool = True) -> str:
    """One number for a page: grouped integers, three significant digits, ×10ⁿ for the very small
    (unless ``scientific`` is False: a small value among larger ones keeps the column's fixed form)."""
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    sign = "−" if x < 0 else ""
    a = abs(x)
    if integer or a >= 1000:
        return f"{sign}{round(a):,}"
    if a == 0:
        return "0"
    if a < 1e-3 and scientific:
        mantissa, exponent = f"{a:.2e}".split("e")
        return f"{sign}{mantissa}×10{str(int(exponent)).translate(_SUPERSCRIPT)}"
    digits = max(0, 2 - math.floor(math.log10(a)))
    return f"{sign}{a:.{digits}f}"


def human_header(name: str) -> str:
    """A header in words: known variable names replaced, other underscores become spaces."""
    if name in HEADER_WORDS:
        return HEADER_WORDS[name]
    return name.replace("_", " ") if re.fullmatch(r"[A-Za-z0-9_]+", name) else name


def _interval_groups(headers: list[str]) -> list[tuple[int, int, int]]:
    """``(mean, lo, hi)`` column positions of the intervals stored as three columns."""
    groups, used = [], set()
    for j, h in enumerate(headers):
        m = re.fullmatch(r"(.*?)(_| )lo", h)
        if not m or j in used:
            continue
        base, sep = m.group(1), m.group(2)
        hi = headers.index(f"{base}{sep}hi") if f"{base}{sep}hi" in headers else None
        if hi is None:
            continue
        if base in headers:
            mean = headers.index(base)
        elif j > 0 and headers[j - 1].startswith(base):  # difference, diff_lo, diff_hi
            mean = j - 1
        else:
            continue
        if len({mean, j, hi} & used) == 0:
            groups.append((mean, j, hi))
            used |= {mean, j, hi}
    return groups


UNIT_WORDS = {"%": "%", "percent": "%", "points": "points"}


def reshape(table: ParsedTable, *, csv_href: str | None = None, units: dict[str, str] | None = None) -> PageTable:
    """The table for a page (see the module docstring); ``csv_href`` links the full table and
    ``units`` maps a column holding a fraction to the unit it is shown in ("%" or "points")."""
    headers, rows = list(table.headers), [list(r) for r in table.rows]
    numbers = [[to_number(c) for c in col] for col in zip(*rows, strict=True)] if rows else [[] for _ in headers]
    units = {k: UNIT_WORDS[v] for k, v in (units or {}).items() if v in UNIT_WORDS}
    unit_of: dict[int, str] = {}
    for mean, lo, hi in _interval_groups(headers):
        if headers[mean] in units:
            unit_of.update(dict.fromkeys((mean, lo, hi), units[headers[mean]]))
    unit_of.update({j: units[h] for j, h in enumerate(headers) if h in units and j not in unit_of})
    for j in unit_of:
        numbers[j] = [None if v is None else 100.0 * v for v in numbers[j]]

    def columns_text(*js: int) -> list[list[str]]:
        """The columns ``js`` printed alike: whole numbers only if every value of all of them is one."""
        values = [v for j in js for v in numbers[j]]
        if values and all(v is not None for v in values):
            integer = all(math.isinf(v) or math.isnan(v) or float(v).is_integer() for v in values)
            scientific = max((abs(v) for v in values if math.isfinite(v)), default=0.0) < 1e-3
            return [[format_value(v, integer=integer and math.isfinite(v), scientific=scientific)
                     for v in numbers[j]] for j in js]
        return [[r[j] for r in rows] for j in js]

    groups = {g[0]: g for g in _interval_groups(headers)}
    texts: dict[int, list[str]] = {}
    for j in range(len(headers)):
        if j in groups:
            texts.update(zip(groups[j], columns_text(*groups[j]), strict=True))
        elif j not in texts:
            texts[j] = columns_text(j)[0]
    out_headers: list[str] = []
    out_cols: list[list[str]] = []
    skip = {j for g in groups.values() for j in g[1:]}
    for j, h in enumerate(headers):
        if j in skip:
            continue
        if j in groups:
            _, lo, hi = groups[j]
            unit = f" ({unit_of[j]})" if j in unit_of else ""
            out_headers.append(f"{human_header(h)}{unit}: mean [95% interval]")
            out_cols.append([f"{m} [{a}, {b}]" for m, a, b in zip(texts[j], texts[lo], texts[hi], strict=True)])
        else:
            out_headers.append(human_header(h) + (f" ({unit_of[j]})" if j in unit_of else ""))
            out_cols.append(texts[j])
    constants = []
    if len(rows) >= 2:
        keep = []
        for h, col in zip(out_headers, out_cols, strict=True):
            if len(set(col)) == 1 and len(out_headers) - len(constants) > 2:
                constants.append((h, col[0]))
            else:
                keep.append((h, col))
        out_headers, out_cols = [h for h, _ in keep], [c for _, c in keep]
    total = len(rows)
    shown = total if total <= LONG_TABLE else SHOWN_ROWS
    numeric = [all(to_number(c.split(" [")[0]) is not None for c in col) if col else False for col in out_cols]
    head = "".join(f'<th class="{"num" if n else "text"}">{html.escape(h)}</th>'
                   for h, n in zip(out_headers, numeric, strict=True))
    body = []
    for i in range(shown):
        cells = "".join(f'<td class="{"num" if n else "text"}">{html.escape(col[i])}</td>'
                        for col, n in zip(out_cols, numeric, strict=True))
        body.append(f"<tr>{cells}</tr>")
    if shown < total:
        more = f"{total - shown} more rows"
        link = f' in the <a href="{html.escape(csv_href)}">full table (CSV)</a>' if csv_href else " in the notebook"
        body.append(f'<tr class="more"><td colspan="{len(out_headers)}">… {more}{link}</td></tr>')
    return PageTable(f'<table class="page"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>',
                     constants, total, shown)
