"""Where the workbench reads and writes: the repository root, each profile's figures folder, the claims
records (workbench room). ``$LQTHEORY_FIGURES`` replaces ``<repo>/figures`` as the root.
"""

from __future__ import annotations

import os
from pathlib import Path

from lqtheory.common.vocabulary import ENV_FIGURES
from lqtheory.workbench.parameters import check_name, check_profile

__all__ = [
    "AGGREGATOR_PREFIX",
    "claims_path",
    "figures_dir",
    "figures_root",
    "is_aggregator",
    "repo_root",
]

AGGREGATOR_PREFIX = "99_"  # notebooks that read the others' results (the claims ledger)


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
    check_profile(profile)
    base = Path(root).expanduser().resolve() if root is not None else figures_root()
    return base if profile == "default" else base / profile


def claims_path(notebook: str, profile: str, root: str | os.PathLike | None = None) -> Path:
    """Where a notebook's claims record lives: ``<figures dir>/claims/<notebook>.json``."""
    check_name(notebook, "notebook")
    return figures_dir(profile, root) / "claims" / f"{notebook}.json"


def is_aggregator(name: str) -> bool:
    """Aggregators read the other notebooks' results, so they run after all of them."""
    return name.startswith(AGGREGATOR_PREFIX)
