"""lqtheory.workbench.reproduce on tiny throwaway notebooks, with real papermill kernels.

Kernel launches are the cost here (a few seconds each), so one module-scoped first run executes
three notebooks (two in parallel) and the later tests reuse its folders: 6 launches in all.
"""

from __future__ import annotations

import argparse
import io
import json
import re

import nbformat
import papermill
import pytest

from lqtheory.workbench import cache, execution, reproduce
from lqtheory.workbench.linter import check_notebook, percent_to_notebook
from lqtheory.workbench.records import read_claims

PROFILES = '{"ci": dict(n=1), "default": dict(n=2), "paper": dict(n=3)}'


def notebook_text(name: str, body: str, before_setup: str = "") -> str:
    return f'''# %% [markdown]
# # {name}
#
# Claims [derived] for the tests of lqtheory.workbench.reproduce.

# %% tags=["parameters"]
profile = "ci"
device = "auto"
seed = 0
n = None

# %%
from lqtheory.workbench.session import setup
{before_setup}
PROFILES = {PROFILES}
run = setup("{name}", globals(), profiles=PROFILES)

# %%
{body}
'''


OK_BODY = '''import matplotlib.pyplot as plt
import pandas as pd

fig, ax = plt.subplots()
ax.plot([1, 2, 3], [1, 4, 9])
run.save_figure(fig, "curve")
run.save_table(pd.DataFrame({"n": [run.n], "half": [run.n / 2]}), "sizes")
run.claim("A1", measured={"n": run.n}, holds=run.n > 0)
run.estimate("E1", samples=[run.n] * 3)'''

REGISTRY = '''
[[claim]]
id = "A1"
notebook = "01_ok"
statement = "n is positive"
provenance = "derived"
kind = "theorem"

[[claim]]
id = "E1"
notebook = "01_ok"
statement = "n exceeds two"
provenance = "paper"
kind = "empirical"
metric = "n"
threshold = 2.0
direction = "above"
rationale = "the statement"

[[claim]]
id = "T1"
notebook = "03_theorem"
statement = "n is negative"
provenance = "derived"
kind = "theorem"
'''

NOTEBOOKS = {
    "01_ok": notebook_text("01_ok", OK_BODY),
    # fails in the setup cell, before setup() runs: no claims file at all
    "02_fail": notebook_text("02_fail", "print('never')", before_setup="ratio = 1 / 0"),
    "03_theorem": notebook_text("03_theorem", 'run.claim("T1", measured=run.n, holds=run.n < 0)'),
}


def package_key(ws: dict, name: str) -> str:
    """What reproduce hashes as the package for ``name``: the package's files and its registered claims."""
    return cache.package_digest() + cache.registry_digest(ws["notebooks"], name)


def args_for(ws: dict, *extra: str) -> argparse.Namespace:
    parser = reproduce.add_arguments(argparse.ArgumentParser())
    # these notebooks run no grid: no Dask cluster (tests/test_sweep.py covers reproduce's cluster)
    return parser.parse_args(["--notebooks-dir", str(ws["notebooks"]), "--build-dir", str(ws["build"]),
                              "--figures-dir", str(ws["figures"]), "--executor", "serial", *extra])


def call(ws: dict, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    code = reproduce.run(args_for(ws, *extra), out=out)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    # Other engineers edit lqtheory/ concurrently: hash a frozen stand-in package instead.
    package = root / "package"
    package.mkdir()
    (package / "mod.py").write_text("X = 1\n")
    saved_dir = cache.PACKAGE_DIR
    cache.PACKAGE_DIR = package
    ws = {"notebooks": root / "notebooks", "build": root / "build", "figures": root / "figures",
          "package": package}
    ws["notebooks"].mkdir()
    for name, text in NOTEBOOKS.items():
        nbformat.write(percent_to_notebook(text), ws["notebooks"] / f"{name}.ipynb")
    (ws["notebooks"] / "claims.toml").write_text(REGISTRY)
    ws["first"] = call(ws, "--profile", "ci", "--jobs", "2")
    yield ws
    cache.PACKAGE_DIR = saved_dir


def test_first_run_executes_reports_and_fails(ws):
    code, out = ws["first"]
    assert code == 1
    build = ws["build"] / "ci"
    for name in NOTEBOOKS:
        assert (build / f"{name}.ipynb").is_file(), out  # executed copies, failures included
    executed = nbformat.read(build / "01_ok.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    figures = ws["figures"] / "ci"
    for artifact in ("curve.png", "curve.pdf", "sizes.csv", "sizes.md"):
        assert (figures / artifact).is_file()
    assert "01_ok: done in" in out
    # the failing notebook is named with its cell, exception and source
    assert "02_fail: FAILED" in out
    assert "cell 3 failed with ZeroDivisionError: division by zero" in out
    assert "> ratio = 1 / 0" in out
    assert not (figures / "claims" / "02_fail.json").exists()
    # the violated theorem: the notebook fails and the summary names the claim
    assert "03_theorem: FAILED" in out and "AssertionError: theorem claim T1 is violated" in out
    assert "theorem VIOLATED: 03_theorem [T1] n is negative (1)" in out
    assert read_claims(figures / "claims" / "03_theorem.json")["claims"][0]["verdict"] == "violated"
    # the contradicted paper claim is listed, not fatal on its own
    assert "contradicted [paper]: 01_ok [E1] n exceeds two (n: 1.0 [1.0, 1.0], threshold > 2, n=3 seeds)" in out
    assert "[E1] CONTRADICTED — n exceeds two (measured 1.0 [1.0, 1.0], threshold > 2, n=3 seeds)" in "".join(
        o.get("text", "") for c in nbformat.read(build / "01_ok.ipynb", as_version=4).cells
        if c.cell_type == "code" for o in c.outputs)
    assert ("1/3 notebook(s) ok, 2 failed; 1 theorem claim(s) violated, 1 paper claim(s) contradicted, "
            "0 derived conjecture(s) contradicted") in out
    summary = {line.split()[0]: line.split()[1] for line in out.splitlines()
               if line.split() and line.split()[0] in NOTEBOOKS and len(line.split()) > 2}
    assert summary == {"01_ok": "done", "02_fail": "FAILED", "03_theorem": "FAILED"}


def test_second_run_hits_the_cache(ws):
    copy = ws["build"] / "ci" / "01_ok.ipynb"
    before = copy.stat().st_mtime_ns
    code, out = call(ws, "--profile", "ci", "--only", "01")
    assert code == 0, out
    assert "01_ok: skipped (cached)" in out and "started" not in out
    assert copy.stat().st_mtime_ns == before


def test_cache_is_invalidated_by_inputs(ws):
    path = ws["notebooks"] / "01_ok.ipynb"
    params = {"profile": "ci", "device": "auto"}
    figures = ws["figures"] / "ci"
    key = cache.cache_key(path, params, figures, package_key(ws, "01_ok"))
    stamp = json.loads((ws["build"] / "ci" / "01_ok.cache.json").read_text())["key"]
    assert key == stamp
    assert cache.cache_key(path, {**params, "seed": 1}, figures, package_key(ws, "01_ok")) != key
    assert cache.cache_key(path, params, figures, cache.package_digest()) != key  # registry entries count
    assert cache.cache_key(path, params, figures, "another package") != key
    nb = nbformat.read(path, as_version=4)
    nb.cells[3].source += "\n# changed"
    changed = ws["build"].parent / "01_ok.ipynb"
    nbformat.write(nb, changed)
    assert cache.cache_key(changed, params, figures, package_key(ws, "01_ok")) != key
    nb.cells[3].source = nbformat.read(path, as_version=4).cells[3].source
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text="outputs do not count\n")]
    nbformat.write(nb, changed)
    assert cache.cache_key(changed, params, figures, package_key(ws, "01_ok")) == key
    # a deleted output invalidates the cache too (checked without running anything)
    claims = figures / "claims" / "01_ok.json"
    (figures / "sizes.md").rename(figures / "sizes.md.bak")
    try:
        assert not cache.cache_valid(ws["build"] / "ci" / "01_ok.cache.json", key, claims)
    finally:
        (figures / "sizes.md.bak").rename(figures / "sizes.md")
    assert cache.cache_valid(ws["build"] / "ci" / "01_ok.cache.json", key, claims)


def test_force_runs_again(ws, capfd):
    code, out = call(ws, "--profile", "ci", "--only", "01_ok", "--force")
    assert code == 0, out
    assert "01_ok: started" in out and "01_ok: done in" in out and "cached" not in out
    # the kernel gets CurveZMQ keys, so ipykernel's plain-TCP warning is not printed for every notebook
    assert "without encryption" not in capfd.readouterr().err


def test_unknown_parameter_is_rejected_before_running(ws, capsys):
    code, out = call(ws, "--profile", "ci", "--only", "01_ok", "-p", "n_vector=3")
    assert code == reproduce.USAGE_ERROR and out == ""
    err = capsys.readouterr().err
    assert "01_ok: unknown parameter(s) n_vector; it declares profile, device, seed, n" in err


def test_unknown_notebook_is_rejected_with_the_names(ws, capsys):
    code, _ = call(ws, "--only", "04_nope")
    assert code == reproduce.USAGE_ERROR
    assert "'04_nope' is not a notebook; notebooks: 01_ok, 02_fail, 03_theorem" in capsys.readouterr().err
    code, _ = call(ws, "--only", "0")
    assert "is ambiguous" in capsys.readouterr().err


def test_setup_rejects_unknown_parameter_inside_the_kernel(ws, tmp_path):
    # papermill only warns on unknown names; setup() turns the injected name into an error.
    with pytest.raises(papermill.PapermillExecutionError) as info:
        papermill.execute_notebook(str(ws["notebooks"] / "01_ok.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"n_vector": 3}, kernel_name="python3", progress_bar=False,
                                   cwd=str(tmp_path))
    assert info.value.ename == "ValueError"
    assert "unknown parameter(s) 'n_vector' passed to notebook 01_ok" in info.value.evalue


def _fake_cached(ws, name: str, claims: list[dict]) -> None:
    """A notebook whose cache is valid and whose recorded claims are ``claims`` (nothing runs)."""
    path = ws["notebooks"] / f"{name}.ipynb"
    nbformat.write(percent_to_notebook(notebook_text(name, "pass")), path)
    figures = ws["figures"] / "ci"
    params = {"profile": "ci", "device": "auto"}
    key = cache.cache_key(path, params, figures, package_key(ws, name))
    (ws["build"] / "ci" / f"{name}.cache.json").write_text(json.dumps({"key": key}))
    record = {"notebook": name, "profile": "ci", "claims": claims, "artifacts": []}
    (figures / "claims" / f"{name}.json").write_text(json.dumps(record))


def _claim(cid: str, kind: str, verdict: str, provenance: str = "paper") -> dict:
    return {"id": cid, "statement": f"statement {cid}", "provenance": provenance, "kind": kind,
            "measured": "1", "holds": verdict in ("holds", "supported"), "verdict": verdict}


def test_recorded_claims_decide_the_exit_code(ws):
    _fake_cached(ws, "05_empirical", [_claim("E", "empirical", "contradicted"), _claim("S", "theorem", "holds"),
                                      _claim("I", "empirical", "inconclusive"), _claim("P", "empirical", "supported")])
    _fake_cached(ws, "06_broken", [_claim("T", "theorem", "violated")])
    _fake_cached(ws, "07_ours", [_claim("D", "empirical", "contradicted", "derived")])
    try:
        code, out = call(ws, "--profile", "ci", "--only", "05_empirical")
        assert code == 0 and "05_empirical: skipped (cached)" in out
        assert re.search(r"05_empirical\s+cached\s+-\s+1/1 hold; 1 supported, 1 contradicted, 1 inconclusive", out)
        assert "contradicted [paper]: 05_empirical [E] statement E (1)" in out
        code, out = call(ws, "--profile", "ci", "--only", "05_empirical", "--strict")
        assert code == 1
        # our own conjecture contradicted: reported as such, and never fails the run, even with --strict
        code, out = call(ws, "--profile", "ci", "--only", "07_ours", "--strict")
        assert code == 0 and "contradicted (our conjecture) [derived]: 07_ours [D] statement D (1)" in out
        code, out = call(ws, "--profile", "ci", "--only", "06_broken")
        assert code == 1 and "theorem VIOLATED: 06_broken [T] statement T (1)" in out
    finally:
        for name in ("05_empirical", "06_broken", "07_ours"):
            (ws["notebooks"] / f"{name}.ipynb").unlink()


def _npd(cid: str, reads: str, provenance: str = "paper") -> dict:
    claim = _claim(cid, "empirical", "no practical difference", provenance)
    claim.update(holds=reads == "for the paper", reads=reads, margin=0.005,
                 equivalence="supports" if reads == "for the paper" else "contradicts")
    return claim


def test_no_practical_difference_against_the_paper_counts_as_contradicted(ws):
    _fake_cached(ws, "05_against", [_npd("A", "against the paper"), _claim("P", "empirical", "supported")])
    _fake_cached(ws, "06_for", [_npd("F", "for the paper"), _npd("G", "for the paper")])
    _fake_cached(ws, "07_ours", [_npd("D", "against the paper", "derived")])
    try:
        code, out = call(ws, "--profile", "ci", "--only", "05_against")
        assert code == 0
        assert re.search(r"05_against\s+cached\s+-\s+1 supported, 1 no practical difference \(against the paper\)",
                         out)
        assert "no practical difference (against the paper) [paper]: 05_against [A] statement A (1)" in out
        assert "1 paper claim(s) contradicted (1 of them by no practical difference), 0 derived" in out
        code, out = call(ws, "--profile", "ci", "--only", "05_against", "--strict")
        assert code == 1  # an ordering claim of the paper decided against it by its margin
        # read for the paper: never a contradiction, even with --strict
        code, out = call(ws, "--profile", "ci", "--only", "06_for", "--strict")
        assert code == 0 and re.search(r"06_for\s+cached\s+-\s+2 no practical difference \(for the paper\)", out)
        assert "0 paper claim(s) contradicted, 0 derived conjecture(s) contradicted;" in out
        # our own conjecture decided against by its margin: reported, never fails the run
        code, out = call(ws, "--profile", "ci", "--only", "07_ours", "--strict")
        assert code == 0
        assert "no practical difference (against our conjecture) [derived]: 07_ours [D] statement D (1)" in out
        assert ("0 paper claim(s) contradicted, 1 derived conjecture(s) contradicted "
                "(1 of them by no practical difference);") in out
    finally:
        for name in ("05_against", "06_for", "07_ours"):
            (ws["notebooks"] / f"{name}.ipynb").unlink()


def test_update_notebooks_writes_clean_committed_copies(ws):
    source = ws["notebooks"] / "01_ok.ipynb"
    code, out = call(ws, "--update-notebooks", "--only", "01_ok")
    assert code == 0, out
    assert re.search(r"01_ok\s+done.*written back", out)
    nb = nbformat.read(source, as_version=4)
    assert "papermill" not in nb.metadata
    assert all("papermill" not in c.metadata and "execution" not in c.metadata for c in nb.cells)
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert check_notebook(source) == []
    texts = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "[A1] HOLDS — n is positive (n 1)" in texts
    assert "01_ok: profile ci, seed 0; n=1" in texts
    code, _ = call(ws, "--update-notebooks", "--profile", "default")
    assert code == reproduce.USAGE_ERROR
    code, _ = call(ws, "--update-notebooks", "-p", "n=2")
    assert code == reproduce.USAGE_ERROR


def test_list_and_cli_wiring(ws):
    parser = argparse.ArgumentParser(prog="lqtheory")
    sub = parser.add_subparsers(dest="command")
    reproduce.add_arguments(sub.add_parser("reproduce"))
    args = parser.parse_args(["reproduce", "--list", "--notebooks-dir", str(ws["notebooks"])])
    out = io.StringIO()
    assert reproduce.run(args, out=out) == 0
    text = out.getvalue()
    assert text.index("01_ok") < text.index("02_fail") < text.index("03_theorem")
    assert 'parameters: profile="ci", device="auto", seed=0, n=None' in text


def test_run_order_puts_aggregators_last(tmp_path):
    for name in ("99_ledger", "10_b", "02_a", "99_a_summary"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    assert [p.stem for p in reproduce.list_notebooks(tmp_path)] == ["02_a", "10_b", "99_a_summary", "99_ledger"]


def test_clean_executed_strips_volatile_parts():
    nb = percent_to_notebook(notebook_text("x", "pass"))
    nb.metadata["papermill"] = {"start_time": "2024-01-01"}
    nb.cells.insert(2, nbformat.v4.new_code_cell("# Parameters\nn = 2", metadata={"tags": ["injected-parameters"]}))
    nb.cells[3].metadata.update({"papermill": {"duration": 1.0}, "execution": {"iopub.status.idle": "t"}, "tags": []})
    cleaned = execution.clean_executed(nb)
    assert "papermill" not in cleaned.metadata and len(cleaned.cells) == 4
    assert cleaned.cells[2].metadata == {}
    assert cleaned.cells[1].metadata == {"tags": ["parameters"]}


def test_parse_param():
    assert reproduce.parse_param("n=3") == ("n", 3)
    assert reproduce.parse_param("qs=[0.1, 0.5]") == ("qs", [0.1, 0.5])
    assert reproduce.parse_param("data=fashion") == ("data", "fashion")
    with pytest.raises(argparse.ArgumentTypeError):
        reproduce.parse_param("no_equals")


def test_declared_parameters_include_lines_papermill_skips(tmp_path):
    text = notebook_text("07_p", "pass").replace("n = None", "n = None  # budgets s = d/50")
    path = tmp_path / "07_p.ipynb"
    nbformat.write(percent_to_notebook(text), path)
    declared = reproduce.declared_parameters(path)
    assert list(declared) == ["profile", "device", "seed", "n"]
    reproduce.preflight([path], {"profile": "ci", "n": 3})  # accepted: papermill injects n correctly
    with pytest.raises(reproduce.UsageError, match="unknown parameter"):
        reproduce.preflight([path], {"m": 3})


def test_failed_rerun_keeps_the_last_good_claims_record(ws, monkeypatch):
    # issue #14 item 5: a rerun that fails before setup() (here: a parameter the notebook rejects)
    # deleted the notebook's last good claims record, which git tracks at the default profile
    claims = ws["figures"] / "ci" / "claims" / "01_ok.json"
    code, out = call(ws, "--profile", "ci", "--only", "01", "--force")
    good = claims.read_text()
    assert read_claims(claims)["claims"]
    monkeypatch.setattr(reproduce, "preflight", lambda *a: None)  # let the kernel be the one to reject it
    code, out = call(ws, "--profile", "ci", "--only", "01", "--force", "-p", "n='not a number'")
    assert code == 1 and "01_ok: FAILED" in out
    assert claims.read_text() == good, out
    assert "kept the previous claims record" in out
    assert not list(claims.parent.glob(".*.previous"))


def test_parameter_of_the_wrong_type_is_rejected_before_running(ws, capsys):
    # issue #22 6b: `-p n_vectors=abc` failed inside the kernel (rc 1) after the run had started
    code, out = call(ws, "--profile", "ci", "--only", "01_ok", "-p", "n=abc")
    assert code == reproduce.USAGE_ERROR and out == ""
    assert "parameter 'n' must be a int like the profile's value 1, got str 'abc'" in capsys.readouterr().err
    assert reproduce.profile_table(ws["notebooks"] / "01_ok.ipynb")["default"] == {"n": 2}


def test_malformed_claims_registry_is_rejected_before_running(ws, tmp_path, capsys):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nbformat.write(percent_to_notebook(NOTEBOOKS["01_ok"]), notebooks / "01_ok.ipynb")
    (notebooks / "claims.toml").write_text('[[claim]]\nid = "A1"\nnotebook = "01_ok"\nstatement = "x"\n[[claim\n')
    out = io.StringIO()
    args = args_for({**ws, "notebooks": notebooks, "build": tmp_path / "build"}, "--profile", "ci")
    assert reproduce.run(args, out=out) == reproduce.USAGE_ERROR and out.getvalue() == ""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "claims.toml" in err, err


def _reproduce_process(*argv, **popen):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.Popen([sys.executable, "-c", "import sys; from lqtheory.cli import main; sys.exit(main())",
                             "reproduce", *map(str, argv)], env=env, stderr=subprocess.PIPE, text=True, **popen)


def test_list_into_a_closed_pipe_is_quiet(ws):
    import subprocess

    proc = _reproduce_process("--list", "--notebooks-dir", ws["notebooks"], stdout=subprocess.PIPE)
    proc.stdout.close()  # the reader (`| head`) is gone before anything is written
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


SLOW_BODY = """import time
run.claim("S1", measured=run.n, holds=run.n > 0)
print("claimed", flush=True)
time.sleep(300)
run.claim("S2", measured=run.n, holds=True)"""

SLOW_REGISTRY = """
[[claim]]
id = "S1"
notebook = "04_slow"
statement = "n is positive"
provenance = "derived"
kind = "theorem"

[[claim]]
id = "S2"
notebook = "04_slow"
statement = "never reached"
provenance = "derived"
kind = "theorem"
"""


def test_sigint_is_one_line_and_marks_the_partial_claims_record(tmp_path):
    import os
    import signal
    import time

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nbformat.write(percent_to_notebook(notebook_text("04_slow", SLOW_BODY)), notebooks / "04_slow.ipynb")
    (notebooks / "claims.toml").write_text(SLOW_REGISTRY)
    record = tmp_path / "figures" / "ci" / "claims" / "04_slow.json"
    proc = _reproduce_process("--notebooks-dir", notebooks, "--build-dir", tmp_path / "build", "--figures-dir",
                              tmp_path / "figures", "--executor", "serial", "--profile", "ci",
                              stdout=open(os.devnull, "w"), start_new_session=True)
    deadline = time.monotonic() + 240
    while not record.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert record.is_file(), proc.stderr.read() if proc.poll() is not None else "no claims record in 240 s"
    time.sleep(1.0)  # the kernel is asleep in the cell after its first claim
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole process group, as a terminal does
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == reproduce.INTERRUPTED, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0], err
    body = read_claims(record)
    assert body["interrupted"] is True and [c["id"] for c in body["claims"]] == ["S1"]
