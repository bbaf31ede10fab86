"""The notebook session (workbench room): what every notebook calls: parameters, profiles, figures, tables and claims.

A notebook has three fixed opening cells (see ``notebooks/README.md``):

1. markdown: title, the claim(s) it checks and their provenance ([paper] / [derived]);
2. code tagged ``parameters``: literals only: ``profile = "ci"``, ``device = "auto"``, ``seed = 0`` and
   the notebook's own parameters, each ``None`` meaning "take it from the profile";
3. code: ``run = setup("<notebook name>", globals(), profiles=PROFILES)``.

:func:`setup` validates the parameters (unknown names injected by papermill are an error, not
papermill's warning), merges the profile's values with explicit overrides, seeds everything, fixes the
plotting style, silences progress bars and warnings when nobody is watching (papermill, nbval, CI) so
that compared outputs stay stable, and returns a :class:`Session` that saves byte-stable figures and tables
and records claims in ``<figures dir>/claims/<notebook>.json``, the file the claims ledger and
``lqtheory reproduce`` read.

matplotlib, seaborn and pandas are imported when a figure or table is saved. ``lqtheory reproduce``
does not import this module: the parameters, paths, records and the linter it needs live in their own
modules of the workbench.
"""

from __future__ import annotations

import io
import numbers
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lqtheory.analysis.stats import Interval, four_way, mean_interval, seeds_to_decide
from lqtheory.common.atomic import atomic_write_bytes, atomic_write_text
from lqtheory.common.digests import sha256_hex
from lqtheory.common.formatting import FLOATFMT, formatted_frame, latex_table, markdown_table, table_html
from lqtheory.common.vocabulary import ENV_PROGRESS, NO_PRACTICAL_DIFFERENCE
from lqtheory.engine.device import resolve_device, set_determinism
from lqtheory.workbench import claims as registry_module
from lqtheory.workbench.batch import injected_cells, is_batch, wants_progress
from lqtheory.workbench.claims import format_evidence
from lqtheory.workbench.parameters import (
    COMMON_PARAMETERS,
    assigned_names,
    check_name,
    check_profile,
    check_profiles_table,
    coerce_override,
)
from lqtheory.workbench.paths import figures_dir
from lqtheory.workbench.records import reads, record_json_text

__all__ = [
    "Saved",
    "Session",
    "Table",
    "apply_style",
    "setup",
]

PNG_DPI = 120
INLINE_DPI = 80  # the copy embedded in batch-run notebooks: readable, a third of the bytes
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None}
CSV_FLOAT_FORMAT = "%.8g"


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


class Session:
    """A notebook's resolved parameters and its output helpers. Build it with :func:`setup`."""

    def __init__(self, notebook: str, profile: str, device, seed: int, params: dict[str, Any],
                 batch: bool, progress: bool, figures: Path):
        self.notebook = notebook
        self.profile = profile
        self.device = device
        self.seed = seed
        self.params = MappingProxyType(dict(params))
        self.batch = batch
        self.show_progress = progress
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
        return f"<Session {self.notebook} profile={self.profile} seed={self.seed}>"

    # -- randomness and progress -------------------------------------------------------------

    def generator(self, stream: int = 0):
        """A CPU ``torch.Generator`` seeded from (seed, stream): draws that do not depend on cell order.

        Draw on the CPU and move to ``run.device`` so every device sees the same numbers.
        """
        import torch

        digest = sha256_hex(f"{self.notebook}:{self.seed}:{int(stream)}".encode())
        return torch.Generator(device="cpu").manual_seed(int(digest[:15], 16))

    def progress(self, iterable: Iterable | None = None, **kwargs):
        """``tqdm`` over ``iterable``, switched off in batch runs (papermill, nbval, CI)."""
        try:  # notebook widgets when ipywidgets is installed; tqdm.auto would warn without it
            import ipywidgets  # noqa: F401
            from tqdm.auto import tqdm
        except ImportError:
            from tqdm.std import tqdm

        kwargs.setdefault("disable", not self.show_progress)
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

        check_name(name, "figure name")
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

        check_name(name, "table name")
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"df must be a pandas.DataFrame, got {type(df).__name__}")
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        csv = self.figures_dir / f"{name}.csv"
        md = self.figures_dir / f"{name}.md"
        atomic_write_text(csv, df.to_csv(index=index, float_format=CSV_FLOAT_FORMAT, lineterminator="\n"))
        atomic_write_text(md, markdown_table(df, floatfmt, index))
        paths = [csv, md]
        if latex:
            tex = self.figures_dir / f"{name}.tex"
            atomic_write_text(tex, latex_table(df, floatfmt, index))
            paths.append(tex)
        for p in paths:
            self._artifact(p.name)
        if show:
            from IPython.display import display

            display(Table(formatted_frame(df, floatfmt, index)))
        return Saved(name, paths)

    def save_text(self, filename: str, text: str) -> Saved:
        """Write ``text`` (UTF-8) to ``<figures dir>/<filename>`` atomically and record it as an output.

        For outputs that :meth:`save_table` does not shape, such as the claims ledger's grouped Markdown.
        """
        stem, dot, suffix = filename.rpartition(".")
        check_name(filename, "file name")
        if not dot or not stem or not suffix.isalnum():
            raise ValueError(f"filename must be a plain name with an extension, got {filename!r}")
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        path = self.figures_dir / filename
        atomic_write_text(path, text)
        self._artifact(path.name)
        return Saved(stem, [path])

    # -- claims ------------------------------------------------------------------------------

    def _registered(self, claim_id: str, kind: str):
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
        against the registered threshold and direction (:func:`lqtheory.analysis.stats.four_way`) is
        "supported", "contradicted" or "inconclusive", or, for a claim that registers a margin,
        "no practical difference" when the whole interval lies within the margin of the threshold.
        The record keeps the margin, its ``equivalence`` and rationale, and ``reads``: "for the paper"
        (supported; no practical difference with equivalence "supports"), "against the paper"
        (contradicted; no practical difference with equivalence "contradicts") or "" (inconclusive);
        ``holds`` is True when it reads for the claim. For an inconclusive one the record says how many
        samples would decide it (:func:`lqtheory.analysis.stats.seeds_to_decide`: excluding the
        threshold, or fitting the margin). ``measured`` is extra evidence for the record and line.
        Never raises on a contradicted claim: that is a finding, not a bug.
        """
        claim = self._registered(claim_id, "empirical")
        if (samples is None) == (interval is None):
            raise TypeError("give exactly one of samples (values per seed) or interval (an Interval)")
        if interval is None:
            interval = mean_interval(samples)
        elif not isinstance(interval, Interval):
            raise TypeError(f"interval must be a lqtheory.analysis.stats.Interval, got {type(interval).__name__}")
        verdict = four_way(interval, claim.threshold, claim.direction, claim.margin)
        needed = seeds_to_decide(interval, claim.threshold, claim.direction, claim.margin) \
            if verdict == "inconclusive" else None
        reading = reads(verdict, claim.equivalence)
        extra = format_evidence(measured)
        over = claim.over[:-1] if interval.n == 1 and claim.over.endswith("s") else claim.over  # "n=1 seed"
        margin = f", margin {claim.margin_text}" if claim.margin is not None else ""
        summary = f"{interval}, threshold {claim.relation}{margin}, n={interval.n} {over}"
        entry = {"id": claim.id, "statement": claim.statement, "provenance": claim.provenance, "kind": claim.kind,
                 "measured": f"{claim.metric}: {summary}" + (f"; {extra}" if extra else ""),
                 "holds": verdict == "supported" or (verdict == NO_PRACTICAL_DIFFERENCE
                                                     and claim.equivalence == "supports"),
                 "verdict": verdict, "metric": claim.metric, "threshold": claim.threshold,
                 "direction": claim.direction, "interval": interval.to_dict(), "over": claim.over, "evidence": extra,
                 "seeds_needed": needed, "margin": claim.margin, "equivalence": claim.equivalence,
                 "margin_rationale": claim.margin_rationale, "reads": reading}
        shown = verdict.upper() + (f" ({reading})" if verdict == NO_PRACTICAL_DIFFERENCE else "")
        line = f"[{claim.id}] {shown} — {claim.statement} (measured {summary})"
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
        atomic_write_text(self.claims_path, record_json_text(record))


def setup(notebook: str, namespace: Mapping[str, Any], profiles: Mapping[str, Mapping[str, Any]]) -> Session:
    """Validate a notebook's parameters and prepare its run; call it in the third cell.

    ``namespace`` is the notebook's ``globals()``. Declared parameters are ``profile``, ``device``,
    ``seed`` and the keys of ``profiles`` (``{"ci": {...}, "default": {...}, "paper": {...}}``, all
    with the same keys); each must be assigned in the parameters cell, the notebook-specific ones to
    ``None`` ("take it from the profile"). A non-``None`` value is an explicit override and wins.
    A name papermill injected that is not declared is an error (papermill itself only warns).
    """
    check_name(notebook, "notebook")
    if not isinstance(namespace, Mapping):
        raise TypeError(f"namespace must be the notebook's globals() dict, got {type(namespace).__name__}")
    table = check_profiles_table(profiles)
    own = list(table["ci"])
    declared = set(COMMON_PARAMETERS) | set(own)

    # papermill's injected cell(s) ran before us and are in IPython's input history.
    injected = {n for cell in injected_cells(namespace) for n in assigned_names(cell)}
    unknown = sorted(injected - declared)
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(map(repr, unknown))} passed to notebook {notebook}; "
                         f"it declares: {', '.join(COMMON_PARAMETERS + tuple(own))}")
    missing = [n for n in (*COMMON_PARAMETERS, *own) if n not in namespace]
    if missing:
        raise ValueError(f"parameter(s) {', '.join(map(repr, missing))} of notebook {notebook} are not assigned; "
                         "the parameters cell must assign profile, device, seed and every profile key (= None)")

    profile = check_profile(namespace["profile"])
    seed = namespace["seed"]
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    seed = int(seed)
    device = resolve_device(namespace["device"])

    params = {}
    for name in own:
        value = namespace[name]
        params[name] = table[profile][name] if value is None else coerce_override(name, value, table[profile][name])

    batch = is_batch(namespace)
    progress = wants_progress(namespace)
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

    run = Session(notebook, profile, device, seed, params, batch, progress, figures_dir(profile))
    shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
    print(f"{notebook}: profile {profile}, seed {seed}" + (f"; {shown}" if shown else ""), flush=True)
    return run
