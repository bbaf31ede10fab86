"""The notebook linter (:func:`check_notebook`: the three fixed opening cells, literal parameters,
profiles, no machine paths in committed outputs) and py:percent conversion (workbench room).
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

from lqtheory.workbench.parameters import COMMON_PARAMETERS, literal_value, papermill_parameters

__all__ = [
    "CLAIM_KINDS",
    "PROVENANCES",
    "check_notebook",
    "percent_to_notebook",
    "write_percent_notebook",
]

CLAIM_KINDS = ("theorem", "empirical")
PROVENANCES = ("paper", "derived")
_MACHINE_PATH_RE = re.compile(r"(?<![\w.])(/(home|tmp|work|Users|root|var|private|opt)/|[A-Za-z]:\\)")


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
                value = literal_value(node.value)
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
                table = literal_value(prof) if prof is not None else None
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
