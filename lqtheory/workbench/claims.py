"""The claims registry: every claim the notebooks check, registered before it is measured.

``notebooks/claims.toml`` holds one ``[[claim]]`` table per claim::

    [[claim]]
    id = "E2.keep"
    notebook = "05_iterative_pruning"
    statement = "SI-adaptive (q=0.5, c=1) stays within 2 points of dense accuracy at every iteration"
    provenance = "paper"          # "paper" (quoted from the papers) | "derived" (proved or conjectured here)
    kind = "empirical"            # "theorem" (holds / VIOLATED) | "empirical" (decided from an interval)
    metric = "largest drop below dense accuracy over iterations (accuracy points, fraction)"
    threshold = 0.02
    direction = "below"           # the claim says: the metric lies below the threshold
    rationale = "the paper's 'within 2 points'"
    over = "seeds"                # what the interval's n counts (default "seeds")
    profiles = ["paper"]          # optional: only these profiles evaluate it (default: all)

Empirical claims need ``metric``, ``threshold``, ``direction`` and a one-line ``rationale`` for the
threshold; theorems have none of them. A comparative empirical claim may also register a
practical-equivalence margin, all three keys together or none::

    margin = 0.005                # positive, in the metric's units (here half an accuracy point)
    equivalence = "contradicts"   # what "no practical difference" says: "contradicts" | "supports"
    margin_rationale = "half a point: about one dense model's seed spread"

An interval that lies wholly within ``threshold ± margin`` reads "no practical difference"
(:func:`lqtheory.analysis.stats.four_way`): an ordering claim ("A beats B") is then decided against,
an equality or "does not beat" claim for. Ids are unique, and ``notebook`` must name a notebook next to
the registry file. Notebooks evaluate registered claims only (``run.claim`` / ``run.estimate`` in
:mod:`lqtheory.workbench.session`), so changing a threshold is a visible diff of this one file.

The registry used by a notebook run is ``$LQTHEORY_CLAIMS`` when set, else
``<repo>/notebooks/claims.toml``.

Room: workbench (what turns the notebooks into a reproducible paper).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lqtheory.common.vocabulary import ENV_CLAIMS, EQUIVALENCES, PROFILES

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

PROVENANCES = ("paper", "derived")
KINDS = ("theorem", "empirical")
DIRECTIONS = ("above", "below")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.<>=\-]*$")
_REQUIRED = ("id", "notebook", "statement", "provenance", "kind")
_EMPIRICAL = ("metric", "threshold", "direction", "rationale")
_OPTIONAL = ("over", "note")
_MARGIN = ("margin", "equivalence", "margin_rationale")  # all three or none, empirical claims only


class RegistryError(ValueError):
    """The claims registry is malformed (message names the file and the claim)."""


@dataclass(frozen=True)
class RegisteredClaim:
    """One registered claim. ``metric``/``threshold``/``direction``/``rationale`` only for empirical ones."""

    id: str
    notebook: str
    statement: str
    provenance: str
    kind: str
    metric: str | None = None
    threshold: float | None = None
    direction: str | None = None
    rationale: str | None = None
    over: str = "seeds"
    note: str | None = None
    profiles: tuple[str, ...] = PROFILES  # the profiles whose notebook run evaluates it
    margin: float | None = None  # practical-equivalence margin, in the metric's units (comparative claims)
    equivalence: str | None = None  # "contradicts" | "supports": what "no practical difference" says
    margin_rationale: str | None = None

    @property
    def margin_text(self) -> str:
        """``"±0.005"``: the registered margin around the threshold ('' when none); always a float."""
        return "" if self.margin is None else f"±{format_value(self.margin)}"

    @property
    def relation(self) -> str | None:
        """``"> 0.02"`` or ``"< 0.02"``: the registered side of the threshold (None for theorems)."""
        if self.kind != "empirical":
            return None
        return f"{'>' if self.direction == 'above' else '<'} {self.threshold:g}"

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def default_registry_path() -> Path:
    """``$LQTHEORY_CLAIMS`` if set, else ``<repo>/notebooks/claims.toml``."""
    env = os.environ.get(ENV_CLAIMS)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "notebooks" / "claims.toml"


def _known_notebooks(path: Path) -> set[str]:
    return {p.stem for p in path.parent.glob("*.ipynb")}


def _check_entry(entry: Any, where: str, known: set[str] | None) -> RegisteredClaim:
    if not isinstance(entry, dict):
        raise RegistryError(f"{where}: each [[claim]] must be a table")
    unknown = set(entry) - set(_REQUIRED) - set(_EMPIRICAL) - set(_OPTIONAL) - set(_MARGIN) - {"profiles"}
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise RegistryError(f"{where}: missing {', '.join(missing)}")
    for key in ("id", "notebook", "statement"):
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise RegistryError(f"{where}: {key} must be a non-empty string")
    cid = entry["id"]
    where = f"{where} (id {cid!r})"
    if not _ID_RE.match(cid):
        raise RegistryError(f"{where}: id must be a short label (letters, digits, '.', '-', '_', '<', '>', '=')")
    if "\n" in entry["statement"]:
        raise RegistryError(f"{where}: statement must be one line")
    if known is not None and entry["notebook"] not in known:
        raise RegistryError(f"{where}: notebook {entry['notebook']!r} is not one of {', '.join(sorted(known))}")
    if entry["provenance"] not in PROVENANCES:
        raise RegistryError(f"{where}: provenance must be one of {PROVENANCES}, got {entry['provenance']!r}")
    if entry["kind"] not in KINDS:
        raise RegistryError(f"{where}: kind must be one of {KINDS}, got {entry['kind']!r}")
    if entry["kind"] == "theorem":
        extra = [k for k in ("metric", "threshold", "direction") if k in entry]
        extra += [k for k in _MARGIN if k in entry]
        if extra:
            raise RegistryError(f"{where}: a theorem has no {', '.join(extra)} (it holds or is violated)")
    else:
        missing = [k for k in _EMPIRICAL if k not in entry]
        if missing:
            raise RegistryError(f"{where}: an empirical claim needs {', '.join(missing)}")
        for key in ("metric", "rationale"):
            if not isinstance(entry[key], str) or not entry[key].strip():
                raise RegistryError(f"{where}: {key} must be a non-empty string")
        t = entry["threshold"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(float(t)):
            raise RegistryError(f"{where}: threshold must be a finite number, got {t!r}")
        if entry["direction"] not in DIRECTIONS:
            raise RegistryError(f"{where}: direction must be one of {DIRECTIONS}, got {entry['direction']!r}")
        _check_margin(entry, where)
    for key in _OPTIONAL:
        if key in entry and (not isinstance(entry[key], str) or not entry[key].strip()):
            raise RegistryError(f"{where}: {key} must be a non-empty string")
    if "profiles" in entry:
        prof = entry["profiles"]
        if not isinstance(prof, list) or not prof or any(p not in PROFILES for p in prof):
            raise RegistryError(f"{where}: profiles must be a non-empty list of {PROFILES}, got {prof!r}")
    values = {k: v.strip() if isinstance(v, str) else v for k, v in entry.items()}
    if "profiles" in values:
        values["profiles"] = tuple(values["profiles"])
    if "threshold" in values:
        values["threshold"] = float(values["threshold"])
    if "margin" in values:
        values["margin"] = float(values["margin"])
    return RegisteredClaim(**values)


def _check_margin(entry: dict, where: str) -> None:
    """``margin``, ``equivalence`` and ``margin_rationale``: all three or none, each well formed."""
    given = [k for k in _MARGIN if k in entry]
    if not given:
        return
    if len(given) != len(_MARGIN):
        absent = [k for k in _MARGIN if k not in entry]
        raise RegistryError(f"{where}: {', '.join(given)} without {', '.join(absent)} (a margin registers "
                            f"margin, equivalence and margin_rationale together)")
    m = entry["margin"]
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(float(m)) or m <= 0:
        raise RegistryError(f"{where}: margin must be a positive finite number (in the metric's units), got {m!r}")
    if entry["equivalence"] not in EQUIVALENCES:
        raise RegistryError(f"{where}: equivalence must be one of {EQUIVALENCES}, got {entry['equivalence']!r}")
    r = entry["margin_rationale"]
    if not isinstance(r, str) or not r.strip():
        raise RegistryError(f"{where}: margin_rationale must be a non-empty string, got {r!r}")


def parse_registry(text: str, source: str = "<claims registry>", notebooks: set[str] | None = None
                   ) -> dict[str, RegisteredClaim]:
    """Parse and validate registry TOML text; ``notebooks`` (if given) are the allowed notebook names."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{source}: not valid TOML: {exc}") from exc
    extra = set(data) - {"claim"}
    if extra:
        raise RegistryError(f"{source}: unknown top-level key(s) {', '.join(sorted(extra))} (only [[claim]])")
    entries = data.get("claim", [])
    if not isinstance(entries, list):
        raise RegistryError(f"{source}: claims must be an array of tables, [[claim]]")
    registry: dict[str, RegisteredClaim] = {}
    for i, entry in enumerate(entries):
        claim = _check_entry(entry, f"{source}: claim #{i + 1}", notebooks)
        if claim.id in registry:
            raise RegistryError(f"{source}: claim id {claim.id!r} is registered twice")
        registry[claim.id] = claim
    return registry


_CACHE: dict[tuple, dict[str, RegisteredClaim]] = {}


def load_registry(path: str | os.PathLike | None = None, notebooks: set[str] | None = None
                  ) -> dict[str, RegisteredClaim]:
    """The registered claims by id, in file order.

    ``path`` defaults to :func:`default_registry_path`. ``notebooks`` are the notebook names a claim
    may name; by default the ``*.ipynb`` files next to the registry (not checked if there are none).
    """
    path = Path(path) if path is not None else default_registry_path()
    if not path.is_file():
        raise FileNotFoundError(f"claims registry {path} does not exist (set ${ENV_CLAIMS} or create it)")
    if notebooks is None:
        notebooks = _known_notebooks(path) or None
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size,
           None if notebooks is None else frozenset(notebooks))
    if key not in _CACHE:
        _CACHE[key] = parse_registry(path.read_text(encoding="utf-8"), str(path), notebooks)
    return dict(_CACHE[key])


def lookup(registry: dict[str, RegisteredClaim], claim_id: str, notebook: str) -> RegisteredClaim:
    """The registered claim ``claim_id`` of ``notebook``; an unknown id or another notebook's is an error."""
    if not isinstance(claim_id, str):
        raise TypeError(f"claim_id must be a str, got {type(claim_id).__name__}")
    claim = registry.get(claim_id)
    if claim is None:
        raise KeyError(f"claim {claim_id!r} is not registered in the claims registry; register it (with its "
                       f"threshold, for an empirical claim) in notebooks/claims.toml before measuring it")
    if claim.notebook != notebook:
        raise ValueError(f"claim {claim_id!r} is registered for notebook {claim.notebook!r}, not {notebook!r}")
    return claim


def for_notebook(registry: dict[str, RegisteredClaim], notebook: str) -> list[RegisteredClaim]:
    """The claims registered for ``notebook``, in file order."""
    return [c for c in registry.values() if c.notebook == notebook]


def format_value(x: Any) -> str:
    """A number for a verdict line: integers as integers, floats always with a decimal mark or exponent.

    nbval's sanitizer masks decimal numbers, so a float never reaches the compared text however it
    rounds on another CPU, while an integer count (compared) stays an integer.
    """
    if hasattr(x, "item") and callable(x.item):
        x = x.item()
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        text = f"{x:.3g}"
        if re.fullmatch(r"-?\d+", text):  # 3.0 or 123.4 at 3 digits: keep it visibly a float
            text = f"{x:.1f}"
        return "0.0" if text == "-0.0" else text
    return str(x)


def format_evidence(measured: Any) -> str:
    """``str`` as is; a number via :func:`format_value`; a mapping as ``"key value, ..."``."""
    if measured is None:
        return ""
    if isinstance(measured, str):
        return measured.strip()
    if isinstance(measured, dict):
        return ", ".join(f"{k} {format_value(v)}" for k, v in measured.items())
    return format_value(measured)
