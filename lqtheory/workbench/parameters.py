"""A notebook's parameters: names, profiles, overrides and the literal-only parameters cell
(workbench room). Shared by the session (:func:`lqtheory.workbench.session.setup`), the linter and
``lqtheory reproduce``.
"""

from __future__ import annotations

import ast
import numbers
import os
import re
from collections.abc import Mapping
from typing import Any

from lqtheory.common.vocabulary import PROFILES

__all__ = [
    "COMMON_PARAMETERS",
    "assigned_names",
    "check_name",
    "check_profile",
    "check_profiles_table",
    "coerce_override",
    "literal_value",
    "papermill_parameters",
    "parameters_cell",
]

COMMON_PARAMETERS = ("profile", "device", "seed")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{what} must be a plain file stem (letters, digits, _ . -), got {name!r}")
    return name


def check_profile(profile: Any) -> str:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    return profile


def check_profiles_table(profiles: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(profiles, Mapping):
        raise TypeError(f"profiles must be a dict mapping each of {PROFILES} to a dict, got "
                        f"{type(profiles).__name__}")
    if set(profiles) != set(PROFILES):
        raise ValueError(f"profiles must have exactly the keys {', '.join(PROFILES)}; got "
                         f"{', '.join(map(repr, profiles)) or 'none'}")
    keys = None
    for name in PROFILES:
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
    return {name: dict(profiles[name]) for name in PROFILES}


def coerce_override(name: str, value: Any, reference: Any) -> Any:
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


def assigned_names(source: str) -> list[str]:
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


def literal_value(node: ast.AST) -> Any:
    """``ast.literal_eval`` plus ``dict(key=literal, ...)`` calls; raises ValueError otherwise."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        if any(k.arg is None for k in node.keywords):
            raise ValueError("dict(**...) is not a literal")
        return {k.arg: literal_value(k.value) for k in node.keywords}
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError("{**...} is not a literal")
        return {literal_value(k): literal_value(v) for k, v in zip(node.keys, node.values, strict=True)}
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
                        values[node.targets[0].id] = literal_value(node.value)
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
