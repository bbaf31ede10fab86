"""Figures numbered through the whole document, with their captions and their print-resolution files.

A notebook shows a figure as an image output of a code cell and captions it in the markdown cell
right below ("**Figure 1.** …", "*Figure e2_matched.* …", "*Figure: …*"). :func:`plan_figures` pairs
the two, gives each pair the next number of the document and remembers the notebook's own label
("1", "e2_matched") so that references in the text ("Figure 1") can be rewritten to the document's
numbers. A caption whose code cell showed no image (a figure not produced at this profile) is
dropped: it must never stand without its figure.

The file behind each image is found from the notebook's claims record, which lists the files the
notebook saved in order (``run.save_figure`` writes ``<name>.png`` at 120 dpi and ``<name>.pdf``):
the n-th image shown is the n-th PNG saved, checked against the literal names in the cell's
``save_figure`` calls. The report embeds that PNG instead of the 80-dpi inline copy, and links the PDF.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

CAPTION_RE = re.compile(r"^\s*(?P<open>\*\*|\*|__|_)Figures?(?P<label>[^.:*]*?)\s*(?P<punct>[.:])"
                        r"(?P<close>\*\*|\*|__|_)?\s*")
SAVE_FIGURE_RE = re.compile(r"save_figure\(.*?,\s*(?P<f>f?)(?P<q>[\"'])(?P<name>[^\"']+)(?P=q)", re.S)
REFERENCE_RE = re.compile(r"\b(Figures?)\s+(?P<label>\d+|[a-z]\d?_[A-Za-z0-9_]+)\b")


@dataclass
class Figure:
    """One numbered figure: its images (data or file), caption source and where it was made."""

    number: int
    cell: int  # index of the code cell in the notebook
    images: list[dict] = field(default_factory=list)  # {"mime", "data", "name", "png", "pdf"}
    caption: str | None = None  # markdown of the caption, label removed
    caption_cell: int | None = None
    label: str | None = None  # the notebook's own label ("1", "e2_matched")


def image_outputs(cell) -> list[tuple[str, str]]:
    """``(mime, data)`` of every image a code cell shows, in order."""
    found = []
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        for mime in ("image/png", "image/jpeg", "image/svg+xml"):
            if mime in data:
                value = data[mime]
                found.append((mime, "".join(value) if isinstance(value, list) else str(value)))
                break
    return found


def split_caption(source: str) -> tuple[str | None, str] | None:
    """``(label, caption body)`` when ``source`` is a figure caption, else None."""
    m = CAPTION_RE.match(source)
    if m is None:
        return None
    body = source[m.end():].strip()
    if m.group("close") is None and body.endswith(m.group("open")):  # the whole caption is emphasised
        body = body[: -len(m.group("open"))].rstrip()
    label = m.group("label").strip().strip("()").strip() or None
    return label, body


def saved_pngs(record: dict | None) -> list[str]:
    """The PNG names (without suffix) a notebook saved, in order, from its claims record."""
    if not record:
        return []
    return [a[:-4] for a in record.get("artifacts", []) if isinstance(a, str) and a.endswith(".png")]


def _name_pattern(literal: str, is_f: bool) -> re.Pattern:
    if not is_f:
        return re.compile(re.escape(literal) + r"$")
    parts = re.split(r"\{[^}]*\}", literal)
    return re.compile(".+".join(re.escape(p) for p in parts) + "$")


def plan_figures(nb, start: int, record: dict | None, figures_dir: Path | None) -> tuple[list[Figure], set[int]]:
    """The numbered figures of one notebook (numbers from ``start``) and the caption cells to drop.

    ``record`` is the notebook's claims record and ``figures_dir`` where its files are; both may be
    None (no print-resolution files: the inline images are used).
    """
    pngs = saved_pngs(record)
    cursor = 0
    figures: list[Figure] = []
    dropped: set[int] = set()
    cells = nb.cells
    number = start
    for i, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        images = image_outputs(cell)
        nxt = i + 1
        caption = split_caption(cells[nxt].source) if nxt < len(cells) and cells[nxt].cell_type == "markdown" else None
        if not images:
            if caption is not None:
                dropped.add(nxt)  # its figure was not produced at this profile
            continue
        patterns = [_name_pattern(m.group("name"), bool(m.group("f"))) for m in SAVE_FIGURE_RE.finditer(cell.source)]
        names: list[str | None] = []
        for k in range(len(images)):
            name = None
            if patterns:
                # resynchronise on the names this cell saves (a figure saved without show= is skipped)
                pattern = patterns[min(k, len(patterns) - 1)]
                while cursor < len(pngs) and not pattern.match(pngs[cursor]):
                    cursor += 1
                if cursor < len(pngs):
                    name, cursor = pngs[cursor], cursor + 1
            names.append(name)
        fig = Figure(number=number, cell=i)
        for (mime, data), name in zip(images, names, strict=True):
            entry = {"mime": mime, "data": data, "name": name, "png": None, "pdf": None}
            if name and figures_dir is not None:
                png, pdf = figures_dir / f"{name}.png", figures_dir / f"{name}.pdf"
                entry["png"] = png if png.is_file() else None
                entry["pdf"] = pdf if pdf.is_file() else None
            fig.images.append(entry)
        if caption is not None:
            fig.label, fig.caption = caption
            fig.caption_cell = nxt
        figures.append(fig)
        number += 1
    return figures, dropped


def rewrite_references(markdown: str, labels: dict[str, int]) -> str:
    """``Figure 1`` / ``Figure e2_matched`` in ``markdown`` → a link to the document's figure number."""
    def repl(m: re.Match) -> str:
        number = labels.get(m.group("label"))
        if number is None:
            return m.group(0)
        word = "Figure" if m.group(1) == "Figure" else "Figures"
        return f'<a class="figref" href="#figure-{number}">{word} {number}</a>'

    return REFERENCE_RE.sub(repl, markdown)
