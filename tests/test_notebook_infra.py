"""lqtheory.workbench.session: parameter validation, profile merging, stable files, claims, structure checks.

Everything here runs in-process (no kernels): ``setup`` is given a plain dict as the notebook's
globals, with IPython's input history ``In`` faked where papermill's injected cell matters.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lqtheory.common.formatting import format_measured, format_number, markdown_table  # noqa: E402
from lqtheory.workbench import batch, parameters  # noqa: E402
from lqtheory.workbench.linter import check_notebook, percent_to_notebook  # noqa: E402
from lqtheory.workbench.paths import figures_dir  # noqa: E402
from lqtheory.workbench.session import setup  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROFILES = {"ci": {"n": 10, "q": 0.5, "sizes": (1, 2)},
            "default": {"n": 100, "q": 0.5, "sizes": (3, 4)},
            "paper": {"n": 1000, "q": 0.25, "sizes": (5, 6)}}

@pytest.fixture(autouse=True)
def isolated(notebook_env):
    """Every test here runs in a clean notebook session (conftest's ``notebook_env``)."""
    return notebook_env


def namespace(**overrides):
    ns = {"profile": "ci", "device": "cpu", "seed": 0, "n": None, "q": None, "sizes": None}
    ns.update(overrides)
    return ns


def injected(ns, source):
    """Fake IPython history as papermill leaves it: parameters cell, then its injected cell."""
    ns["In"] = ["", 'profile = "ci"\ndevice = "auto"\nseed = 0', source]
    return ns


# ----------------------------------------------------------------------------------------------
# setup: validation


def test_unknown_injected_parameter_is_an_error():
    ns = injected(namespace(), '# Parameters\nprofile = "default"\nn_vector = 3\n')
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) 'n_vector'.*declares: profile, device, seed, n, q"):
        setup("nb", ns, PROFILES)


def test_known_injected_parameters_are_accepted(capsys):
    ns = injected(namespace(profile="default", n=7), '# Parameters\nprofile = "default"\nn = 7\n')
    run = setup("nb", ns, PROFILES)
    assert run.profile == "default" and run.n == 7
    assert run.batch  # papermill's injected cell marks a batch run


def test_non_injected_history_is_ignored():
    # An ordinary cell starting with another comment is not papermill's.
    ns = namespace()
    ns["In"] = ["", "# parameters of my own\nwhatever = 1"]
    assert setup("nb", ns, PROFILES).n == 10


@pytest.mark.parametrize(
    ("overrides", "error", "pattern"),
    [
        ({"profile": "fast"}, ValueError, "profile must be one of ci, default, paper"),
        ({"profile": None}, ValueError, "profile must be one of"),
        ({"device": "tpu"}, ValueError, "tpu"),
        ({"seed": -1}, ValueError, "seed must be a non-negative int"),
        ({"seed": 1.5}, ValueError, "seed must be a non-negative int"),
        ({"seed": True}, ValueError, "seed must be a non-negative int"),
        ({"n": 2.5}, TypeError, "parameter 'n' must be a int"),
        ({"n": True}, TypeError, "parameter 'n' must be a int"),
        ({"q": "half"}, TypeError, "parameter 'q' must be a float"),
        ({"sizes": 3}, TypeError, "parameter 'sizes' must be a tuple"),
    ],
)
def test_bad_values_are_rejected(overrides, error, pattern):
    with pytest.raises(error, match=pattern):
        setup("nb", namespace(**overrides), PROFILES)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_unavailable_device_is_rejected():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        setup("nb", namespace(device="cuda"), PROFILES)


def test_missing_parameter_assignment_is_an_error():
    ns = namespace()
    del ns["q"]
    with pytest.raises(ValueError, match="'q'.*not assigned"):
        setup("nb", ns, PROFILES)


@pytest.mark.parametrize(
    ("profiles", "error", "pattern"),
    [
        ({"ci": {}, "default": {}}, ValueError, "exactly the keys ci, default, paper"),
        ({"ci": {"n": 1}, "default": {"n": 2}, "paper": {"m": 3}}, ValueError, "differs on m, n"),
        ({"ci": {"seed": 1}, "default": {"seed": 1}, "paper": {"seed": 1}}, ValueError, "common parameter"),
        ({"ci": {"_x": 1}, "default": {"_x": 1}, "paper": {"_x": 1}}, ValueError, "not a public Python name"),
        ({"ci": [], "default": {}, "paper": {}}, TypeError, r"profiles\['ci'\] must be a dict"),
        ([("ci", {})], TypeError, "profiles must be a dict"),
    ],
)
def test_bad_profile_tables_are_rejected(profiles, error, pattern):
    with pytest.raises(error, match=pattern):
        setup("nb", {"profile": "ci", "device": "cpu", "seed": 0, "n": None, "m": None, "_x": None}, profiles)


def test_bad_notebook_name_is_rejected():
    with pytest.raises(ValueError, match="notebook must be a plain file stem"):
        setup("../escape", namespace(), PROFILES)


# ----------------------------------------------------------------------------------------------
# setup: merging, seeding, outputs folder


@pytest.mark.parametrize("profile", ["ci", "default", "paper"])
def test_profile_values_fill_every_none(profile):
    run = setup("nb", namespace(profile=profile), PROFILES)
    assert dict(run.params) == PROFILES[profile]
    assert run.params["n"] == run.n == PROFILES[profile]["n"]


def test_explicit_values_win_and_are_normalised():
    run = setup("nb", namespace(profile="paper", n=3, q=1, sizes=[9, 8]), PROFILES)
    assert run.n == 3
    assert run.q == 1.0 and isinstance(run.q, float)  # an int where the profile has a float
    assert run.sizes == (9, 8)  # a list where the profile has a tuple
    with pytest.raises(TypeError):
        run.params["n"] = 5  # read-only
    with pytest.raises(AttributeError, match="no attribute or parameter 'nope'"):
        _ = run.nope


def test_setup_prints_one_stable_line_and_seeds(capsys):
    run = setup("nb", namespace(seed=3), PROFILES)
    assert capsys.readouterr().out == "nb: profile ci, seed 3; n=10, q=0.5, sizes=(1, 2)\n"
    first = torch.rand(3)
    setup("nb", namespace(seed=3), PROFILES)
    assert torch.equal(first, torch.rand(3))
    assert run.device == torch.device("cpu") and run.seed == 3
    # The per-stream generator depends on (notebook, seed, stream) only.
    a = torch.rand(4, generator=run.generator(1))
    b = torch.rand(4, generator=run.generator(1))
    c = torch.rand(4, generator=run.generator(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_figures_folder_per_profile(isolated):
    assert setup("nb", namespace(), PROFILES).figures_dir == isolated / "ci"
    assert setup("nb", namespace(profile="default"), PROFILES).figures_dir == isolated
    os.environ.pop("LQTHEORY_FIGURES")
    assert figures_dir("paper") == REPO / "figures" / "paper"
    assert figures_dir("default") == REPO / "figures"
    with pytest.raises(ValueError):
        figures_dir("huge")


def test_batch_detection_and_progress_switch(monkeypatch):
    ns = namespace()
    assert batch.is_batch(ns)  # under pytest
    monkeypatch.setenv("LQTHEORY_BATCH", "0")
    assert not batch.is_batch(ns) and batch.wants_progress(ns)
    monkeypatch.setenv("LQTHEORY_PROGRESS", "0")
    assert not batch.wants_progress(ns)
    monkeypatch.setenv("LQTHEORY_BATCH", "1")
    monkeypatch.setenv("LQTHEORY_PROGRESS", "1")
    assert batch.is_batch(ns) and batch.wants_progress(ns)
    monkeypatch.delenv("LQTHEORY_PROGRESS")
    run = setup("nb", ns, PROFILES)
    assert not run.show_progress and os.environ["LQTHEORY_PROGRESS"] == "0"
    assert run.progress(range(3)).disable
    assert matplotlib.get_backend().lower() == "agg"


# ----------------------------------------------------------------------------------------------
# Figures and tables


def _figure(slope: float = 2.0):
    fig, ax = plt.subplots()
    x = np.linspace(0.0, 1.0, 50)
    ax.plot(x, slope * x, label="line")
    ax.set(title="τ σ_s ‖w‖_q", xlabel="s", ylabel="error")
    ax.legend()
    return fig


def test_save_figure_is_byte_stable_and_metadata_free(capsys):
    run = setup("nb", namespace(), PROFILES)
    png, pdf = run.save_figure(_figure(), "line")
    assert not plt.get_fignums()  # closed after saving
    first = (png.read_bytes(), pdf.read_bytes())
    run.save_figure(_figure(), "line")
    assert (png.read_bytes(), pdf.read_bytes()) == first
    assert first[0].startswith(b"\x89PNG\r\n\x1a\n") and first[1].startswith(b"%PDF-")
    for key in (b"Software", b"matplotlib"):
        assert key not in first[0]
    for key in (b"CreationDate", b"Producer", b"Matplotlib"):
        assert key not in first[1]
    image = plt.imread(io.BytesIO(first[0]))
    assert image.ndim == 3 and image.shape[0] > 100
    other, _ = run.save_figure(_figure(slope=-1.0), "other")
    assert other.read_bytes() != first[0]  # the comparison above can fail
    out = capsys.readouterr().out
    assert "/" not in out.split("\n", 1)[1]  # nothing machine-specific displayed
    saved = run.save_figure(_figure(), "line", show=False)
    assert repr(saved) == "<saved line.{png,pdf}>"
    assert saved._ipython_display_() is None  # a cell ending in save_figure shows no extra output
    umask = os.umask(0)
    os.umask(umask)
    for path in (png, pdf, run.claims_path):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # ordinary files, not mkstemp's 0600
    assert json.loads(run.claims_path.read_text())["artifacts"] == ["line.png", "line.pdf", "other.png", "other.pdf"]


def test_save_table_outputs(capsys):
    run = setup("nb", namespace(), PROFILES)
    df = pd.DataFrame({"q": [0.1, 0.5], "ratio": [0.123456789, 2.5e-7], "name": ["a|b", "c"], "count": [3, 12]})
    capsys.readouterr()
    csv, md, tex = run.save_table(df, "tab", latex=True)
    assert csv.read_text() == "q,ratio,name,count\n0.1,0.12345679,a|b,3\n0.5,2.5e-07,c,12\n"
    assert md.read_text() == (
        "|   q |   ratio | name | count |\n"
        "|----:|--------:|------|------:|\n"
        "| 0.1 |  0.1235 | a\\|b |     3 |\n"
        "| 0.5 | 2.5e-07 | c    |    12 |\n"
    )
    assert tex.read_text().splitlines()[:4] == [r"\begin{tabular}{rrlr}", r"\toprule",
                                                r"q & ratio & name & count \\", r"\midrule"]
    assert r"0.1 & 0.1235 & a|b & 3 \\" in tex.read_text()
    shown = capsys.readouterr().out
    assert "0.1235" in shown and "0.123456789" not in shown and "0.12345679" not in shown
    pd.testing.assert_frame_equal(pd.read_csv(csv), df.assign(ratio=[0.12345679, 2.5e-7]))
    with pytest.raises(TypeError, match="pandas.DataFrame"):
        run.save_table({"a": [1]}, "bad")
    with pytest.raises(ValueError, match="table name"):
        run.save_table(df, "sub/dir")


def test_markdown_table_alignment_and_index():
    df = pd.DataFrame({"v": [1.0, 22.5]}, index=pd.Index(["x", "y"], name="k"))
    assert markdown_table(df, index=True) == "| k   |    v |\n|-----|-----:|\n| x   |    1 |\n| y   | 22.5 |\n"


# ----------------------------------------------------------------------------------------------
# Claims


# Run.claim / Run.estimate and collect_claims are tested in tests/test_claims.py (they need a registry).


def test_number_formatting():
    assert format_number(0.93412) == "0.934"
    assert format_number(np.int64(12000)) == "12000"
    assert format_number(torch.tensor(-0.0)) == "0"
    assert format_number(float("inf")) == "inf" and format_number(float("nan")) == "nan"
    assert format_number(True) == "yes"
    assert format_measured({"a": 1.23456, "b": 2}) == "a 1.23, b 2"
    assert format_measured("as is") == "as is"


# ----------------------------------------------------------------------------------------------
# Structure checks


def _good_notebook_text(name: str) -> str:
    return f'''# %% [markdown]
# # Title
#
# **Claim [derived].** Something true.

# %% tags=["parameters"]
profile = "ci"
device = "auto"
seed = 0
n = None

# %%
from lqtheory.workbench.session import setup

PROFILES = {{"ci": dict(n=1), "default": dict(n=2), "paper": dict(n=3)}}
run = setup("{name}", globals(), profiles=PROFILES)

# %%
run.claim("A", measured=run.n, holds=run.n > 0)
'''


def _write(tmp_path, name, text):
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(percent_to_notebook(text), path)
    return path


def test_check_notebook_accepts_the_skeleton(tmp_path):
    path = _write(tmp_path, "05_good", _good_notebook_text("05_good"))
    assert check_notebook(path, committed=False) == []
    # Unexecuted, it is not fit to be committed.
    assert any("was not executed" in p for p in check_notebook(path))


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("# # Title", "Title", "cell 1 must be markdown starting with a '# ' title"),
        ("**Claim [derived].** Something true.", "Something.", "provenance"),
        ('profile = "ci"', 'profile = "default"', "profile must default to 'ci'"),
        ('device = "auto"', 'device = "cpu"', "device must default to 'auto'"),
        ("seed = 0\n", "", "must assign seed"),
        ("n = None", "n = 5", "n must default to None"),
        ("n = None", "n = None\nm = n", "m must be assigned a literal"),
        ("n = None", "n = None\nimport os", "only 'name = literal' assignments"),
        ('tags=["parameters"]', "", "exactly cell 2 must be tagged 'parameters'"),
        ('setup("05_bad"', 'setup("other"', "setup's first argument must be the file stem '05_bad'"),
        ("run = setup(", "run = set_up(", "cell 3 must call setup"),
        ("dict(n=1), \"default\": dict(n=2), \"paper\": dict(n=3)",
         "dict(k=1), \"default\": dict(k=2), \"paper\": dict(k=3)", "differ on k, n"),
    ],
)
def test_check_notebook_names_each_problem(tmp_path, old, new, problem):
    text = _good_notebook_text("05_bad")
    assert old in text
    problems = check_notebook(_write(tmp_path, "05_bad", text.replace(old, new)), committed=False)
    assert any(problem in p for p in problems), problems


def test_check_notebook_committed_state(tmp_path):
    path = _write(tmp_path, "06_c", _good_notebook_text("06_c"))
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = i + 1
    assert any("was not executed" in p for p in check_notebook(path))
    nbformat.write(nb, path)
    assert check_notebook(path) == []
    nb.metadata["papermill"] = {"duration": 1.0}
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", name="stderr", text="/home/me/x.py:1: Warning\n"),
                           nbformat.v4.new_output("error", ename="ValueError", evalue="x", traceback=[])]
    nbformat.write(nb, path)
    problems = check_notebook(path)
    assert any("papermill metadata" in p for p in problems)
    assert any("machine-specific path" in p for p in problems)
    assert any("error output (ValueError)" in p for p in problems)


def test_percent_conversion_keeps_cells_and_tags():
    nb = percent_to_notebook(_good_notebook_text("x"))
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code", "code"]
    assert nb.cells[0].source == "# Title\n\n**Claim [derived].** Something true."
    assert nb.cells[1].metadata["tags"] == ["parameters"]
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_the_guides_skeleton_passes_the_checks(tmp_path):
    guide = (REPO / "notebooks" / "README.md").read_text()
    skeleton = re.search(r"## Copy-paste skeleton.*?```python\n(.*?)```", guide, re.S).group(1)
    assert check_notebook(_write(tmp_path, "01_lq_geometry", skeleton), committed=False) == []


COMMITTED = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_notebooks_follow_the_guide(path):
    assert check_notebook(path) == []


def test_check_notebook_flags_lines_papermill_cannot_parse(tmp_path):
    text = _good_notebook_text("07_p").replace("n = None", "n = None  # budgets s = d/50")
    path = _write(tmp_path, "07_p", text)
    assert check_notebook(path, committed=False) == []  # runs fine: papermill still injects n
    assert any("papermill cannot parse the line(s) assigning n" in p for p in check_notebook(path))
    assert "n" not in parameters.papermill_parameters(path)


# ----------------------------------------------------------------------------------------------
# nbval sanitizer: what nbval compares


def _sanitizer():
    from nbval.plugin import get_sanitize_patterns  # nbval's own parser of the cfg file

    patterns = get_sanitize_patterns((REPO / "notebooks" / "nbval_sanitize.cfg").read_text())

    def sanitize(text: str) -> str:  # as nbval.plugin.IPyNbCell.sanitize: every pair in file order
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    return sanitize


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("max relative spread over c 1.23e-15", "max relative spread over c 1.1e-15"),
        ("accuracy 0.513 with 52.1% of the weights", "accuracy 0.514 with 52.3% of the weights"),
        ("<td>0.513</td><td>7</td>", "<td>0.5129999</td><td>7</td>"),  # text/html tables too
        ("error 5e-15, change -2.66e-05, scale 1.2E+03", "error 3e-16, change -2.71e-05, scale 1.3E+03"),
        ("[E2.keep] SUPPORTED — s (measured 0.012 [0.004, 0.020], threshold < 0.02, n=3 seeds)",
         "[E2.keep] SUPPORTED — s (measured 0.013 [0.005, 0.021], threshold < 0.02, n=3 seeds)"),
    ],
)
def test_sanitizer_masks_float_digits(a, b):
    sanitize = _sanitizer()
    assert sanitize(a) == sanitize(b)
    assert not re.search(r"\d\.\d", sanitize(a))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("[S1.l1] HOLDS — s (triples 56160)", "[S1.l1] VIOLATED — s (triples 56160)"),  # verdict words
        ("[E2.keep] SUPPORTED — s (measured 0.1 [0.0, 0.2])", "[E2.keep] INCONCLUSIVE — s (measured 0.1 [0.0, 0.2])"),
        ("triples 56160", "triples 56161"),  # integers
        ("n=3 seeds", "n=5 seeds"),
        ("<td>12</td>", "<td>13</td>"),
        ("[S6.D1] HOLDS", "[S6.D2] HOLDS"),  # ids with digits
        ("[S1.l1] HOLDS", "[S1.l2] HOLDS"),
        ("[E1.edges] x", "[E1.tails] x"),
    ],
)
def test_sanitizer_keeps_verdicts_integers_and_ids(a, b):
    sanitize = _sanitizer()
    assert sanitize(a) != sanitize(b)
    for text in ("[S1.l1]", "E2.keep", "S6.D1", "ID.m-half", "E3.order.pqi-mlp", "56160", "n=3 seeds", "3e", "HOLDS"):
        assert sanitize(text) == text
