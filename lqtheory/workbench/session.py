"""What every notebook calls: parameters, profiles, figures, tables and claims.

A notebook has three fixed opening cells (see ``notebooks/README.md``):

1. markdown: title, the claim(s) it checks and their provenance ([paper] / [derived]);
2. code tagged ``parameters``: literals only: ``profile = "ci"``, ``device = "auto"``, ``seed = 0`` and
   the notebook's own parameters, each ``None`` meaning "take it from the profile";
3. code: ``run = setup("<notebook name>", globals(), profiles=PROFILES)``.

:func:`setup` validates the parameters (unknown names injected by papermill are an error, not
papermill's warning), merges the profile's values with explicit overrides, seeds everything, fixes the
plotting style, silences progress bars and warnings when nobody is watching (papermill, nbval, CI) so
that compared outputs stay stable, and returns a :class:`Run` that saves byte-stable figures and tables
and records claims in ``<figures dir>/claims/<notebook>.json``, the file the claims ledger and
``lqtheory reproduce`` read.

Heavy libraries (torch, matplotlib, pandas, seaborn) are imported lazily, so ``lqtheory.workbench.reproduce`` can
use this module's constants and :func:`check_notebook` cheaply.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import math
import numbers
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lqtheory.common.atomic import atomic_write_bytes

KNOWN_PROFILES = ("ci", "default", "paper")
COMMON_PARAMETERS = ("profile", "device", "seed")
CLAIM_KINDS = ("theorem", "empirical")
PROVENANCES = ("paper", "derived")

ENV_FIGURES = "LQTHEORY_FIGURES"  # replaces <repo>/figures as the root of every profile's folder
ENV_PROGRESS = "LQTHEORY_PROGRESS"  # "0" / "1": progress bars off / on, whatever the detection says
ENV_BATCH = "LQTHEORY_BATCH"  # "1" / "0": force batch (non-interactive) / interactive behaviour

# papermill's injected cell starts with this comment (papermill.translators.Translator.codify).
INJECTED_HEADER = "# Parameters"
PNG_DPI = 120
INLINE_DPI = 80  # the copy embedded in batch-run notebooks: readable, a third of the bytes
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None}
FLOATFMT = ".4g"
CSV_FLOAT_FORMAT = "%.8g"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# Absolute paths differ per machine; committed outputs must not contain them.
_MACHINE_PATH_RE = re.compile(r"(?<![\w.])(/(home|tmp|work|Users|root|var|private|opt)/|[A-Za-z]:\\)")


# ----------------------------------------------------------------------------------------------
# Locations


def repo_root() -> Path:
    """The repository root (the folder holding ``pyproject.toml``), else the current directory."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def figures_root() -> Path:
    """``$LQTHEORY_FIGURES`` when set, else ``<repo>/figures``."""
    env = os.environ.get(ENV_FIGURES)
    return Path(env).expanduser().resolve() if env else repo_root() / "figures"


def figures_dir(profile: str, root: str | os.PathLike | None = None) -> Path:
    """Output folder of a profile: the root itself for ``default``, ``<root>/<profile>`` otherwise."""
    _check_profile(profile)
    base = Path(root).expanduser().resolve() if root is not None else figures_root()
    return base if profile == "default" else base / profile


def claims_path(notebook: str, profile: str, root: str | os.PathLike | None = None) -> Path:
    """Where a notebook's claims record lives: ``<figures dir>/claims/<notebook>.json``."""
    _check_name(notebook, "notebook")
    return figures_dir(profile, root) / "claims" / f"{notebook}.json"


# ----------------------------------------------------------------------------------------------
# Batch detection, progress, style


def _history(namespace: Mapping[str, Any] | None) -> list[str]:
    if not namespace:
        return []
    hist = namespace.get("In", namespace.get("_ih", []))
    return [h for h in hist if isinstance(h, str)] if isinstance(hist, (list, tuple)) else []


def _injected_cells(namespace: Mapping[str, Any] | None) -> list[str]:
    return [h for h in _history(namespace) if h.lstrip().startswith(INJECTED_HEADER)]


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


def is_batch(namespace: Mapping[str, Any] | None = None) -> bool:
    """True when nobody watches the outputs: papermill, nbval/pytest, CI or a plain script.

    ``$LQTHEORY_BATCH`` (1/0) overrides the detection. Inside a Jupyter kernel with none of these
    signals the session is interactive.
    """
    forced = _env_flag(ENV_BATCH)
    if forced is not None:
        return forced
    if _injected_cells(namespace) or "PYTEST_CURRENT_TEST" in os.environ or _env_flag("CI"):
        return True
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return True
    shell = get_ipython()
    return shell is None or type(shell).__name__ != "ZMQInteractiveShell"


def progress_enabled(namespace: Mapping[str, Any] | None = None) -> bool:
    """Whether tqdm bars should be drawn: ``$LQTHEORY_PROGRESS`` (0/1) if set, else interactive only."""
    forced = _env_flag(ENV_PROGRESS)
    return forced if forced is not None else not is_batch(namespace)


def apply_style() -> None:
    """The one plotting style of the project (seaborn whitegrid, colour-blind palette, fixed sizes)."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font="DejaVu Sans")
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 100,
            "savefig.dpi": PNG_DPI,
            "savefig.bbox": "tight",
            "savefig.pad_inches": 0.05,
            "pdf.fonttype": 42,  # embed TrueType: text stays selectable, files stay small
            "svg.hashsalt": "lqtheory",  # deterministic SVG ids
            "axes.titlesize": "medium",
            "legend.fontsize": "small",
            "legend.frameon": True,
            "image.cmap": "viridis",
        }
    )


# ----------------------------------------------------------------------------------------------
# Formatting helpers


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


# Integer-valued columns at or above this magnitude get thousands separators (20,000).
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


def _formatted_frame(df, floatfmt: str, index: bool):
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

    frame = _formatted_frame(df, floatfmt, index)
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

    frame = _formatted_frame(df, floatfmt, index)
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


# ----------------------------------------------------------------------------------------------
# Files




def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def read_claims(path: str | os.PathLike) -> dict:
    """A claims record written by :meth:`Run.claim` (``{"notebook", "profile", "claims", ...}``)."""
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


# ----------------------------------------------------------------------------------------------
# Validation


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{what} must be a plain file stem (letters, digits, _ . -), got {name!r}")
    return name


def _check_profile(profile: Any) -> str:
    if profile not in KNOWN_PROFILES:
        raise ValueError(f"profile must be one of {', '.join(KNOWN_PROFILES)}; got {profile!r}")
    return profile


def _check_profiles_table(profiles: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(profiles, Mapping):
        raise TypeError(f"profiles must be a dict mapping each of {KNOWN_PROFILES} to a dict, got "
                        f"{type(profiles).__name__}")
    if set(profiles) != set(KNOWN_PROFILES):
        raise ValueError(f"profiles must have exactly the keys {', '.join(KNOWN_PROFILES)}; got "
                         f"{', '.join(map(repr, profiles)) or 'none'}")
    keys = None
    for name in KNOWN_PROFILES:
        table = profiles[name]
        if not isinstance(table, Mapping):
            raise TypeError(f"profiles[{name!r}] must be a dict of parameter values, got {type(table).__name__}")
        for key in table:
            if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
                raise ValueError(f"profiles[{name!r}] has a key {key!r} that is not a public Python name")
            if key in COMMON_PARAMETERS:
                raise ValueError(f"profiles[{name!r}] sets {key!r}, a common parameter given in the parameters "
                                 "cell; remove it from the profile table")
        if keys is None:
            keys = set(table)
        elif set(table) != keys:
            diff = sorted(keys ^ set(table))
            raise ValueError(f"every profile must set the same parameters; profiles[{name!r}] differs on "
                             f"{', '.join(diff)}")
    return {name: dict(profiles[name]) for name in KNOWN_PROFILES}


def _coerce_override(name: str, value: Any, reference: Any) -> Any:
    """An explicit parameter value checked against the profile's value for the same name."""
    if reference is None or value is None:
        return value
    if isinstance(reference, bool):
        ok = isinstance(value, bool)
    elif isinstance(reference, numbers.Integral):
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif isinstance(reference, numbers.Real):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(reference, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        value = type(reference)(value) if ok else value
    else:
        ok = isinstance(value, type(reference))
    if not ok:
        raise TypeError(f"parameter {name!r} must be a {type(reference).__name__} like the profile's value "
                        f"{reference!r}, got {type(value).__name__} {value!r}")
    return value


def _assigned_names(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names


# ----------------------------------------------------------------------------------------------
# The run object


class Table:
    """A rounded table for display: plain text and HTML without the index (stable, compared by nbval)."""

    def __init__(self, frame):
        self.frame = frame

    def __repr__(self) -> str:
        return self.frame.to_string(index=False)

    def _repr_html_(self) -> str:
        return table_html(self.frame)


class Saved(tuple):
    """Paths of the files one artifact was written to; its repr is stable (no machine-specific paths)."""

    def __new__(cls, name: str, paths: Iterable[Path]):
        obj = super().__new__(cls, tuple(paths))
        obj.name = name
        return obj

    def __repr__(self) -> str:
        suffixes = ",".join(p.suffix.lstrip(".") for p in self)
        return f"<saved {self.name}.{{{suffixes}}}>"

    def _ipython_display_(self) -> None:
        # Left as a cell's last value it shows nothing: the figure or table was already displayed.
        return None


class Run:
    """A notebook's resolved parameters and its output helpers. Build it with :func:`setup`."""

    def __init__(self, notebook: str, profile: str, device, seed: int, params: dict[str, Any],
                 batch: bool, progress: bool, figures: Path):
        self.notebook = notebook
        self.profile = profile
        self.device = device
        self.seed = seed
        self.params = MappingProxyType(dict(params))
        self.batch = batch
        self.progress_enabled = progress
        self.figures_dir = figures
        self.claims_path = figures / "claims" / f"{notebook}.json"
        self._claims: dict[str, dict[str, Any]] = {}
        self._registry = None  # loaded at the first claim (lqtheory.workbench.claims.load_registry)
        self._artifacts: list[str] = []
        self._write_record()

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: expose parameters as attributes.
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or parameter {name!r}")

    def __repr__(self) -> str:
        return f"<Run {self.notebook} profile={self.profile} seed={self.seed}>"

    # -- randomness and progress -------------------------------------------------------------

    def generator(self, stream: int = 0):
        """A CPU ``torch.Generator`` seeded from (seed, stream): draws that do not depend on cell order.

        Draw on the CPU and move to ``run.device`` so every device sees the same numbers.
        """
        import torch

        digest = hashlib.sha256(f"{self.notebook}:{self.seed}:{int(stream)}".encode()).hexdigest()
        return torch.Generator(device="cpu").manual_seed(int(digest[:15], 16))

    def progress(self, iterable: Iterable | None = None, **kwargs):
        """``tqdm`` over ``iterable``, switched off in batch runs (papermill, nbval, CI)."""
        try:  # notebook widgets when ipywidgets is installed; tqdm.auto would warn without it
            import ipywidgets  # noqa: F401
            from tqdm.auto import tqdm
        except ImportError:
            from tqdm.std import tqdm

        kwargs.setdefault("disable", not self.progress_enabled)
        return tqdm(iterable, **kwargs)

    # -- figures and tables ------------------------------------------------------------------

    def _artifact(self, filename: str) -> None:
        if filename not in self._artifacts:
            self._artifacts.append(filename)
            self._write_record()

    def save_figure(self, fig, name: str, *, show: bool = True) -> Saved:
        """Save ``fig`` as ``<figures dir>/<name>.png`` and ``.pdf``, byte-stable, then close it.

        Metadata that embeds versions or dates is stripped and the dpi is fixed, so saving the same
        figure twice gives identical bytes. With ``show`` the figure is displayed: live when
        interactive, as a PNG at ``INLINE_DPI`` in batch runs (so committed notebooks show their
        figures at a modest size; nbval does not compare images).
        """
        import matplotlib.pyplot as plt

        _check_name(name, "figure name")
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        png = self.figures_dir / f"{name}.png"
        pdf = self.figures_dir / f"{name}.pdf"
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=PNG_DPI, metadata=PNG_METADATA)
        png_bytes = buf.getvalue()
        atomic_write_bytes(png, png_bytes)
        buf = io.BytesIO()
        fig.savefig(buf, format="pdf", metadata=PDF_METADATA)
        atomic_write_bytes(pdf, buf.getvalue())
        if show:
            from IPython.display import Image, display

            if self.batch:
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=INLINE_DPI, metadata=PNG_METADATA)
                display(Image(data=buf.getvalue(), format="png"))
            else:
                display(fig)
        plt.close(fig)
        self._artifact(png.name)
        self._artifact(pdf.name)
        return Saved(name, (png, pdf))

    def save_table(self, df, name: str, *, floatfmt: str = FLOATFMT, index: bool = False, latex: bool = False,
                   show: bool = True) -> Saved:
        """Save ``df`` as CSV (8 significant digits) and Markdown (``floatfmt``), optionally LaTeX.

        With ``show`` a copy rounded with ``floatfmt`` is displayed, never the raw floats.
        """
        import pandas as pd

        _check_name(name, "table name")
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be a pandas.DataFrame, got {type(df).__name__}")
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        csv = self.figures_dir / f"{name}.csv"
        md = self.figures_dir / f"{name}.md"
        _atomic_write_text(csv, df.to_csv(index=index, float_format=CSV_FLOAT_FORMAT, lineterminator="\n"))
        _atomic_write_text(md, markdown_table(df, floatfmt, index))
        paths = [csv, md]
        if latex:
            tex = self.figures_dir / f"{name}.tex"
            _atomic_write_text(tex, latex_table(df, floatfmt, index))
            paths.append(tex)
        for p in paths:
            self._artifact(p.name)
        if show:
            from IPython.display import display

            display(Table(_formatted_frame(df, floatfmt, index)))
        return Saved(name, paths)

    def save_text(self, filename: str, text: str) -> Saved:
        """Write ``text`` (UTF-8) to ``<figures dir>/<filename>`` atomically and record it as an output.

        For outputs that :meth:`save_table` does not shape, such as the claims ledger's grouped Markdown.
        """
        stem, dot, suffix = filename.rpartition(".")
        _check_name(filename, "file name")
        if not dot or not stem or not suffix.isalnum():
            raise ValueError(f"filename must be a plain name with an extension, got {filename!r}")
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        path = self.figures_dir / filename
        _atomic_write_text(path, text)
        self._artifact(path.name)
        return Saved(stem, [path])

    # -- claims ------------------------------------------------------------------------------

    def _registered(self, claim_id: str, kind: str):
        from lqtheory.workbench import claims as registry_module
        if self._registry is None:
            self._registry = registry_module.load_registry()
        claim = registry_module.lookup(self._registry, claim_id, self.notebook)
        if claim.kind != kind:
            use = "run.claim(id, measured=..., holds=...)" if claim.kind == "theorem" else \
                "run.estimate(id, samples=... or interval=...)"
            raise ValueError(f"claim {claim_id!r} is registered as {claim.kind}; evaluate it with {use}")
        return claim

    def _record_claim(self, entry: dict[str, Any], line: str) -> None:
        self._claims[entry["id"]] = entry
        self._write_record()
        print(line, flush=True)

    def claim(self, claim_id: str, measured: Any = None, holds: Any = None, *legacy: Any) -> None:
        """Check the registered theorem ``claim_id`` and print its verdict line.

        The statement, provenance and kind come from the claims registry (``notebooks/claims.toml``,
        :mod:`lqtheory.workbench.claims`); ``measured`` is the evidence (a short string, a number or a mapping;
        floats are printed with a decimal mark so nbval masks them) and ``holds`` a single bool:
        the notebook's check, tolerances included. A theorem that does not hold is recorded as
        "violated" and raises ``AssertionError`` (a violated theorem is a bug).
        Empirical claims are evaluated with :meth:`estimate`.
        """
        from lqtheory.workbench.claims import format_evidence

        if legacy or (isinstance(holds, str) and isinstance(measured, str)):
            raise TypeError("run.claim(id, statement, provenance, measured, holds) is gone: statements live in "
                            "notebooks/claims.toml; call run.claim(id, measured=..., holds=...) for a theorem "
                            "or run.estimate(id, ...) for an empirical claim")
        claim = self._registered(claim_id, "theorem")
        if holds is None:
            raise TypeError("holds is required: the notebook's check of the theorem, a single bool")
        if hasattr(holds, "numel") and holds.numel() != 1:
            raise ValueError("holds must be a single truth value; reduce the tensor (e.g. .all()) first")
        if hasattr(holds, "item"):
            holds = holds.item()
        if not isinstance(holds, bool):
            raise TypeError(f"holds must be a bool (or a one-element bool array/tensor), got {type(holds).__name__}")
        measured_text = format_evidence(measured)
        verdict = "holds" if holds else "violated"
        entry = {"id": claim.id, "statement": claim.statement, "provenance": claim.provenance, "kind": claim.kind,
                 "measured": measured_text, "holds": holds, "verdict": verdict}
        line = f"[{claim.id}] {verdict.upper()} — {claim.statement}"
        if measured_text:
            line += f" ({measured_text})"
        self._record_claim(entry, line)
        if not holds:
            raise AssertionError(f"theorem claim {claim.id} is violated: {claim.statement} ({measured_text})")

    def estimate(self, claim_id: str, samples: Any = None, *, interval: Any = None, measured: Any = None) -> str:
        """Decide the registered empirical claim ``claim_id`` from an interval; print and return the verdict.

        Give ``samples`` (one value of the registered metric per seed: a Student-t interval of their
        mean, :func:`lqtheory.analysis.stats.mean_interval`) or ``interval`` (a
        :class:`lqtheory.analysis.stats.Interval`, e.g. a paired or bootstrap interval). The verdict
        against the registered threshold and direction is three-way
        (:func:`lqtheory.analysis.stats.three_way`): "supported", "contradicted" or "inconclusive"; for an
        inconclusive one the record says how many samples would decide it
        (:func:`lqtheory.analysis.stats.seeds_needed`). ``measured`` is extra evidence for the record
        and line.
        Never raises on a contradicted claim: that is a finding, not a bug.
        """
        from lqtheory.analysis.stats import Interval, mean_interval, seeds_needed, three_way
        from lqtheory.workbench.claims import format_evidence

        claim = self._registered(claim_id, "empirical")
        if (samples is None) == (interval is None):
            raise TypeError("give exactly one of samples (values per seed) or interval (an Interval)")
        if interval is None:
            interval = mean_interval(samples)
        elif not isinstance(interval, Interval):
            raise TypeError(f"interval must be a lqtheory.analysis.stats.Interval, got {type(interval).__name__}")
        verdict = three_way(interval, claim.threshold, claim.direction)
        needed = seeds_needed(interval, claim.threshold, interval.level) if verdict == "inconclusive" else None
        extra = format_evidence(measured)
        over = claim.over[:-1] if interval.n == 1 and claim.over.endswith("s") else claim.over  # "n=1 seed"
        summary = f"{interval}, threshold {claim.relation}, n={interval.n} {over}"
        entry = {"id": claim.id, "statement": claim.statement, "provenance": claim.provenance, "kind": claim.kind,
                 "measured": f"{claim.metric}: {summary}" + (f"; {extra}" if extra else ""),
                 "holds": verdict == "supported",
                 "verdict": verdict, "metric": claim.metric, "threshold": claim.threshold,
                 "direction": claim.direction, "interval": interval.to_dict(), "over": claim.over, "evidence": extra,
                 "seeds_needed": needed}
        line = f"[{claim.id}] {verdict.upper()} — {claim.statement} (measured {summary})"
        if extra:
            line += f" [{extra}]"
        self._record_claim(entry, line)
        return verdict

    @property
    def claims(self) -> list[dict[str, Any]]:
        """The claims recorded so far in this run, in recording order."""
        return [dict(c) for c in self._claims.values()]

    def _write_record(self) -> None:
        record = {
            "notebook": self.notebook,
            "profile": self.profile,
            "seed": self.seed,
            "parameters": dict(self.params),
            "claims": list(self._claims.values()),
            "artifacts": list(self._artifacts),
        }
        _atomic_write_text(self.claims_path, _json_text(record))


# ----------------------------------------------------------------------------------------------
# setup


def setup(notebook: str, namespace: Mapping[str, Any], profiles: Mapping[str, Mapping[str, Any]]) -> Run:
    """Validate a notebook's parameters and prepare its run; call it in the third cell.

    ``namespace`` is the notebook's ``globals()``. Declared parameters are ``profile``, ``device``,
    ``seed`` and the keys of ``profiles`` (``{"ci": {...}, "default": {...}, "paper": {...}}``, all
    with the same keys); each must be assigned in the parameters cell, the notebook-specific ones to
    ``None`` ("take it from the profile"). A non-``None`` value is an explicit override and wins.
    A name papermill injected that is not declared is an error (papermill itself only warns).
    """
    _check_name(notebook, "notebook")
    if not isinstance(namespace, Mapping):
        raise TypeError(f"namespace must be the notebook's globals() dict, got {type(namespace).__name__}")
    table = _check_profiles_table(profiles)
    own = list(table["ci"])
    declared = set(COMMON_PARAMETERS) | set(own)

    # papermill's injected cell(s) ran before us and are in IPython's input history.
    injected = {n for cell in _injected_cells(namespace) for n in _assigned_names(cell)}
    unknown = sorted(injected - declared)
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(map(repr, unknown))} passed to notebook {notebook}; "
                         f"it declares: {', '.join(COMMON_PARAMETERS + tuple(own))}")
    missing = [n for n in (*COMMON_PARAMETERS, *own) if n not in namespace]
    if missing:
        raise ValueError(f"parameter(s) {', '.join(map(repr, missing))} of notebook {notebook} are not assigned; "
                         "the parameters cell must assign profile, device, seed and every profile key (= None)")

    profile = _check_profile(namespace["profile"])
    seed = namespace["seed"]
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    seed = int(seed)
    from lqtheory.engine.device import resolve_device, set_determinism

    device = resolve_device(namespace["device"])

    params = {}
    for name in own:
        value = namespace[name]
        params[name] = table[profile][name] if value is None else _coerce_override(name, value, table[profile][name])

    batch = is_batch(namespace)
    progress = progress_enabled(namespace)
    if not progress:
        # Package code (training loops) reads this too, so its bars stay off in compared outputs.
        os.environ.setdefault(ENV_PROGRESS, "0")
    if batch:
        # stderr is compared by nbval: warnings would make outputs depend on library versions.
        warnings.simplefilter("ignore")
        import matplotlib.pyplot as plt

        plt.switch_backend("Agg")
    apply_style()
    set_determinism(seed)

    run = Run(notebook, profile, device, seed, params, batch, progress, figures_dir(profile))
    shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
    print(f"{notebook}: profile {profile}, seed {seed}" + (f"; {shown}" if shown else ""), flush=True)
    return run


# ----------------------------------------------------------------------------------------------
# Static checks of a notebook file (used by the tests and by `lqtheory reproduce` before running)


def _literal(node: ast.AST) -> Any:
    """``ast.literal_eval`` plus ``dict(key=literal, ...)`` calls; raises ValueError otherwise."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        if any(k.arg is None for k in node.keywords):
            raise ValueError("dict(**...) is not a literal")
        return {k.arg: _literal(k.value) for k in node.keywords}
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError("{**...} is not a literal")
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    return ast.literal_eval(node)


def parameters_cell(nb) -> tuple[int, dict[str, Any]] | None:
    """Index and literal assignments of the cell tagged ``parameters`` (None if there is none)."""
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            values = {}
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                return i, {}
            for node in tree.body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    try:
                        values[node.targets[0].id] = _literal(node.value)
                    except (ValueError, TypeError, SyntaxError):
                        pass
            return i, values
    return None


def papermill_parameters(path: str | os.PathLike) -> dict[str, str]:
    """Parameter names and default source text as papermill infers them (its warnings silenced)."""
    import logging

    import papermill

    logger = logging.getLogger("papermill")
    level = logger.level
    logger.setLevel(logging.ERROR)  # "Unable to parse line ..." is reported by check_notebook instead
    try:
        return {name: info.get("default") for name, info in papermill.inspect_notebook(str(path)).items()}
    finally:
        logger.setLevel(level)


def check_notebook(path: str | os.PathLike, committed: bool = True) -> list[str]:
    """Problems with a notebook's structure (empty list = fine); see ``notebooks/README.md``.

    Structure: a markdown title cell naming the provenance, a ``parameters`` cell of literal
    assignments (profile "ci", device "auto", an int seed, every other name None), then a cell
    calling ``setup("<file stem>", globals(), profiles=...)`` whose profile table, when literal, has
    the parameters cell's notebook-specific names. With ``committed`` also repository hygiene:
    papermill can parse every parameter line (one ``=`` per line), and the committed copy was
    executed at the ci profile, without papermill metadata, injected cell, errors or
    machine-specific paths in text outputs.
    """
    import nbformat

    path = Path(path)
    stem = path.stem
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # noqa: BLE001 - any parse failure is the problem to report
        return [f"cannot be read as a notebook: {type(err).__name__}: {err}"]
    problems: list[str] = []
    cells = nb.cells
    if len(cells) < 3:
        return [f"has {len(cells)} cell(s); needs a markdown title cell, a parameters cell and a setup cell"]

    first = cells[0]
    if first.cell_type != "markdown" or not first.source.lstrip().startswith("# "):
        problems.append("cell 1 must be markdown starting with a '# ' title")
    elif "[paper]" not in first.source and "[derived]" not in first.source:
        problems.append("cell 1 must state the provenance of its claims: [paper] and/or [derived]")

    tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if tagged != [1]:
        problems.append(f"exactly cell 2 must be tagged 'parameters' (tagged cells: {[i + 1 for i in tagged]})")
    param_names: list[str] = []
    second = cells[1]
    if second.cell_type == "code":
        try:
            tree = ast.parse(second.source)
        except SyntaxError as err:
            tree = None
            problems.append(f"parameters cell does not parse: {err.msg}")
        for node in tree.body if tree else []:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
                problems.append(f"parameters cell line {node.lineno}: only 'name = literal' assignments are allowed")
                continue
            name = node.targets[0].id
            try:
                value = _literal(node.value)
            except (ValueError, TypeError, SyntaxError):
                problems.append(f"parameters cell: {name} must be assigned a literal (derive values in the next cell)")
                continue
            param_names.append(name)
            if name == "profile" and value != "ci":
                problems.append(f"parameters cell: profile must default to 'ci' (committed outputs), got {value!r}")
            elif name == "device" and value != "auto":
                problems.append(f"parameters cell: device must default to 'auto', got {value!r}")
            elif name == "seed" and (isinstance(value, bool) or not isinstance(value, int)):
                problems.append(f"parameters cell: seed must be an int, got {value!r}")
            elif name not in COMMON_PARAMETERS and value is not None:
                problems.append(f"parameters cell: {name} must default to None (its value comes from the profile)")
        for name in COMMON_PARAMETERS:
            if name not in param_names:
                problems.append(f"parameters cell must assign {name}")
    else:
        problems.append("cell 2 must be a code cell (the parameters cell)")

    third = cells[2]
    setup_call = None
    if third.cell_type == "code":
        try:
            tree3 = ast.parse(third.source)
        except SyntaxError:
            tree3 = None
        assigned = {}
        for node in ast.walk(tree3) if tree3 else []:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                assigned[node.targets[0].id] = node.value
            if isinstance(node, ast.Call):
                func = node.func
                fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if fname == "setup":
                    setup_call = node
        if setup_call is None:
            problems.append("cell 3 must call setup(\"<notebook name>\", globals(), profiles=PROFILES)")
        else:
            first_arg = setup_call.args[0] if setup_call.args else None
            if not (isinstance(first_arg, ast.Constant) and first_arg.value == stem):
                problems.append(f"cell 3: setup's first argument must be the file stem {stem!r}")
            prof = next((k.value for k in setup_call.keywords if k.arg == "profiles"), None)
            if prof is None and len(setup_call.args) >= 3:
                prof = setup_call.args[2]
            if isinstance(prof, ast.Name):
                prof = assigned.get(prof.id)
            try:
                table = _literal(prof) if prof is not None else None
            except (ValueError, TypeError, SyntaxError):
                table = None  # not a literal table: setup checks it at run time
            if isinstance(table, dict) and all(isinstance(v, dict) for v in table.values()):
                own = set(next(iter(table.values()), {}))
                declared = set(param_names) - set(COMMON_PARAMETERS)
                if own != declared:
                    problems.append(
                        "cell 3: the profile table's keys must equal the parameters cell's own names; differ on "
                        f"{', '.join(sorted(own ^ declared))}")
    else:
        problems.append("cell 3 must be a code cell calling setup(...)")

    if any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in cells):
        problems.append("contains papermill's injected-parameters cell")
    if committed and param_names:
        unparsed = [n for n in param_names if n not in papermill_parameters(path)]
        if unparsed:
            problems.append(f"parameters cell: papermill cannot parse the line(s) assigning {', '.join(unparsed)}; "
                            "a line may contain only one '=' (none in comments or values)")
    if committed:
        refresh = f"refresh it with: python -m lqtheory.workbench.reproduce --update-notebooks --only {stem}"
        if "papermill" in nb.metadata or any("papermill" in c.get("metadata", {}) for c in cells):
            problems.append(f"carries papermill metadata; {refresh}")
        for i, cell in enumerate(cells):
            if cell.cell_type != "code":
                continue
            if cell.get("execution_count") is None and cell.source.strip():
                problems.append(f"code cell {i + 1} was not executed; commit outputs of a ci run ({refresh})")
                break
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    problems.append(f"code cell {i + 1} has an error output ({out.get('ename')})")
                texts = [out.get("text", "")] if out.get("output_type") == "stream" else []
                texts += [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
                for text in texts:
                    text = "".join(text) if isinstance(text, list) else str(text)
                    if _MACHINE_PATH_RE.search(text):
                        problems.append(f"code cell {i + 1} prints a machine-specific path")
                        break
    return problems


# ----------------------------------------------------------------------------------------------
# Writing notebooks from text (no jupytext needed)

_PERCENT_HEADER = re.compile(r"^# %%(?P<rest>.*)$")


def percent_to_notebook(text: str):
    """A notebook from a ``py:percent`` script: ``# %%`` starts a code cell, ``# %% [markdown]`` a
    markdown cell (its lines written as ``# text``), ``# %% tags=["parameters"]`` tags a cell.
    The kernelspec is ``python3``. Outputs are empty: execute it with
    ``python -m lqtheory.workbench.reproduce --update-notebooks --only <name>``.
    """
    import nbformat

    cells, kind, tags, lines = [], None, [], []

    def flush():
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in body.splitlines())
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            cell = nbformat.v4.new_code_cell(body)
        if tags:
            cell.metadata["tags"] = list(tags)
        cells.append(cell)

    for line in text.splitlines():
        m = _PERCENT_HEADER.match(line)
        if m:
            flush()
            rest = m.group("rest")
            kind = "markdown" if "[markdown]" in rest or "[md]" in rest else "code"
            t = re.search(r"tags\s*=\s*(\[[^\]]*\])", rest)
            tags = ast.literal_eval(t.group(1)) if t else []
            lines = []
        elif kind is not None:
            lines.append(line)
    flush()
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def write_percent_notebook(script: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Convert a ``py:percent`` script into ``target`` (an ``.ipynb``) with :func:`percent_to_notebook`."""
    import nbformat

    nb = percent_to_notebook(Path(script).read_text(encoding="utf-8"))
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return target


# ----------------------------------------------------------------------------------------------
# "What we found": a notebook's closing section, generated from its recorded claims

_POSITIVE_VERDICTS = ("holds", "supported")
_NEGATIVE_VERDICTS = ("does not hold", "does not reproduce", "contradicted", "violated")
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_<>|~$\[\]#])")


def verdict_class(verdict: str) -> str:
    """``"positive"`` (holds, supported), ``"negative"`` (does not hold/reproduce, contradicted,
    violated) or ``"open"`` (inconclusive, or any verdict word this module does not know)."""
    word = str(verdict).strip().lower()
    if word in _POSITIVE_VERDICTS:
        return "positive"
    if word in _NEGATIVE_VERDICTS:
        return "negative"
    return "open"


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
    return text


def findings_markdown(claims: Iterable[Mapping[str, Any]], *, notes: Mapping[str, str] | None = None,
                      title: str = "What we found") -> str:
    """Markdown for a notebook's closing section, written only from computed values.

    ``claims`` is ``run.claims`` (dicts with at least ``id, statement, provenance, kind, verdict,
    measured``; empirical ones may also carry ``interval`` (mean, lo, hi, n), ``threshold``,
    ``direction`` and ``seeds_needed``). Every claim gets one line: its verdict, statement and the
    measured evidence. ``notes`` maps a claim id to a Markdown paragraph printed under that claim
    only when its verdict is not positive: the place to discuss a negative result, written so it
    holds whatever the numbers (they are on the line above it). A summary sentence counts the
    verdicts, so nothing in the section is typed by hand.
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
        ok = sum(verdict_class(c.get("verdict", "")) == "positive" for c in theorems)
        summary.append(f"{ok} of {len(theorems)} mathematical statement{'s' if len(theorems) != 1 else ''} "
                       f"hold{'s' if len(theorems) == 1 else ''} on every case checked")
    if empirical:
        classes = [verdict_class(c.get("verdict", "")) for c in empirical]
        parts = [f"{classes.count('positive')} reproduced", f"{classes.count('negative')} not reproduced"]
        if classes.count("open"):
            parts.append(f"{classes.count('open')} inconclusive")
        summary.append(f"of {len(empirical)} empirical claim{'s' if len(empirical) != 1 else ''}, "
                       + ", ".join(parts))
    lines += ["; ".join(summary)[:1].upper() + "; ".join(summary)[1:] + ".", ""]

    marks = {"positive": "✓", "negative": "✗", "open": "?"}
    for group, heading in ((theorems, "Mathematical statements"), (empirical, "Empirical claims")):
        if not group:
            continue
        lines += [f"**{heading}**", ""]
        for c in group:
            verdict = str(c.get("verdict", ""))
            cls = verdict_class(verdict)
            prov = str(c.get("provenance", "")).strip("[]")
            line = (f"- {marks[cls]} **{_md_escape(c.get('id', ''))}** ({prov}): **{verdict.upper()}**. "
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


def findings(run: Run, *, notes: Mapping[str, str] | None = None, title: str = "What we found"):
    """:func:`findings_markdown` of ``run.claims`` as an ``IPython.display.Markdown`` object.

    End a notebook with ``findings(run)`` (optionally ``notes={"S7.acc": "..."}``): it renders as
    the closing section in JupyterLab and in the HTML report.
    """
    from IPython.display import Markdown

    return Markdown(findings_markdown(run.claims, notes=notes, title=title))


# ----------------------------------------------------------------------------------------------
# HTML tables that read well in JupyterLab and in the report

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
