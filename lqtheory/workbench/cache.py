"""What decides whether ``lqtheory reproduce`` runs a notebook again (workbench room): its source cells,
the parameters, the package's ``*.py`` files, its entries of the claims registry and, for aggregators,
the other notebooks' claims files. Digests are :func:`lqtheory.common.digests.parts_digest`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lqtheory.common.digests import parts_digest
from lqtheory.workbench.claims import for_notebook, load_registry
from lqtheory.workbench.paths import is_aggregator
from lqtheory.workbench.records import read_claims

__all__ = [
    "PACKAGE_DIR",
    "cache_key",
    "cache_valid",
    "package_digest",
    "registry_digest",
    "source_digest",
    "training_digest",
]


PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the whole lqtheory package


def source_digest(path: str | os.PathLike) -> str:
    """Hash of a notebook's cells' types, sources and tags: outputs and metadata do not count."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [[c.cell_type, c.source, sorted(c.get("metadata", {}).get("tags", []))] for c in nb.cells]
    return parts_digest(json.dumps(cells, sort_keys=True).encode())


def package_digest(package_dir: str | os.PathLike | None = None) -> str:
    """Hash of every ``*.py`` file of the package (relative path and bytes)."""
    root = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    parts = []
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts += [path.relative_to(root).as_posix().encode(), path.read_bytes()]
    return parts_digest(*parts)


#: The rooms whose code decides what a training run computes (the run cache of the grid notebooks).
TRAINING_ROOMS = ("common", "engine", "runs", "theory")


def training_digest(package_dir: str | os.PathLike | None = None) -> str:
    """Hash of the code a training run's numbers depend on: the rooms of :data:`TRAINING_ROOMS`, the
    package's ``__init__.py`` and the kernel pins in force. The grid notebooks keep their runs under
    ``build/runs/<training_digest()[:12]>``, so a change to the analysis, the notebooks' tables or the
    workbench reuses the trained runs, and a change to training retrains."""
    from lqtheory.common.kernels import kernel_pins

    root = Path(package_dir) if package_dir is not None else PACKAGE_DIR
    files = [root / "__init__.py"] + [p for room in TRAINING_ROOMS for p in sorted((root / room).rglob("*.py"))]
    parts = [json.dumps(kernel_pins(), sort_keys=True).encode()]
    for path in files:
        if "__pycache__" not in path.parts:
            parts += [path.relative_to(root).as_posix().encode(), path.read_bytes()]
    return parts_digest(*parts)


def cache_key(path: Path, parameters: dict[str, Any], figures: Path, package: str,
              extra_files: Iterable[Path] = ()) -> str:
    """What decides whether a notebook must run again."""
    extra = [p.name.encode() + b"\0" + p.read_bytes() for p in sorted(extra_files) if p.is_file()]
    params = json.dumps(parameters, sort_keys=True, default=repr).encode()
    return parts_digest(source_digest(path).encode(), params, str(figures).encode(), package.encode(), *extra)


def cache_valid(stamp: Path, key: str, claims: Path) -> bool:
    """The stamp matches and the outputs the notebook recorded still exist."""
    try:
        if json.loads(stamp.read_text())["key"] != key:
            return False
        record = read_claims(claims)
    except (OSError, ValueError, KeyError):
        return False
    return all((claims.parent.parent / name).exists() for name in record.get("artifacts", []))


def registry_digest(notebooks_dir: Path, name: str) -> str:
    """Hash of the claims registered for ``name`` (all of them for an aggregator): a changed threshold reruns."""
    path = notebooks_dir / "claims.toml"
    if not path.is_file():
        return ""
    try:
        registry = load_registry(path)
    except (OSError, ValueError):
        return parts_digest(path.read_bytes())  # a broken registry: the notebook will report it when it runs
    entries = list(registry.values()) if is_aggregator(name) else for_notebook(registry, name)
    return parts_digest(json.dumps([c.as_dict() for c in entries], sort_keys=True).encode())
