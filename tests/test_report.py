"""The HTML report of executed notebooks (lqtheory.workbench.report, `lqtheory reproduce --report`)."""

import base64
import json

import nbformat
import pytest

from lqtheory.workbench.report import build_report, executed_notebooks

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


def _notebook(path, title, *, error=False):
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("print('hello')\nx = 1 < 2")
    code.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="[S1] HOLDS — bound\n"),
        nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"}),
        nbformat.v4.new_output("display_data", data={"text/markdown": "## What we found\n\n- ✓ **S1** holds",
                                                     "text/plain": "<Markdown>"}),
    ]
    if error:
        code.outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue="bad",
                                                   traceback=["\x1b[31mValueError\x1b[0m: bad"]))
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\nThe bound $\\sigma_s(w)_1 \\le s^{{1-1/q}}\\|w\\|_q$ and\n\n"
                                      "$$\\|w\\|_q = \\Big(\\sum_i |w_i|^q\\Big)^{1/q}$$\n\n## Section & more"),
        code,
        nbformat.v4.new_markdown_cell("**Figure 1.** Look at the slope."),
    ]
    nbformat.write(nb, path)


def test_report_is_one_file_with_toc_math_figures_folded_code_and_ledger(tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    _notebook(build / "99_claims_ledger.ipynb", "Ledger")
    _notebook(build / "01_first.ipynb", "First notebook")
    _notebook(build / "02_second.ipynb", "Second", error=True)
    figures = tmp_path / "figures"
    (figures / "claims").mkdir(parents=True)
    (figures / "claims" / "01_first.json").write_text(json.dumps({"notebook": "01_first", "claims": [
        {"id": "S1", "statement": "a long statement < with markup", "provenance": "derived", "kind": "theorem",
         "measured": "max 0.5", "verdict": "holds"},
        {"id": "E2", "statement": "keeps accuracy", "provenance": "paper", "kind": "empirical", "measured": "",
         "verdict": "inconclusive", "threshold": 0.02, "direction": "below",
         "interval": {"mean": 0.01, "lo": -0.01, "hi": 0.03, "n": 3}}]}))
    out = tmp_path / "report" / "report.html"

    summary = build_report(build, out, figures=figures, profile="ci", missing=["05_gone"])

    text = out.read_text()
    assert [p.stem for p in executed_notebooks(build)] == ["01_first", "02_second", "99_claims_ledger"]
    # the ledger notebook's own copy of the ledger is not repeated: two sections, its figure left out
    assert summary["notebooks"] == 3 and summary["figures"] == 2 and summary["errors"] == 1
    assert summary["claims"] == 2
    assert text.count(f"data:image/png;base64,{PNG}") == 2  # embedded, no external image files
    assert "<script" not in text and "mathjax" not in text.lower()  # math needs no script
    assert "$" not in text.replace("$$", "")  # (no dollar signs at all in this fixture's output)
    assert text.count("<math ") == 4  # two formulas per notebook: MathML, the TeX kept in alttext
    assert 'alttext="\\sigma_s(w)_1 \\le s^{1-1/q}\\|w\\|_q"' in text
    assert text.count('<details class="code"') == 2 and "print" in text
    assert "1 < 2" not in text  # code is escaped
    # table of contents: titles (in run order, ledger last) and section headings link to unique ids
    assert text.index("First notebook</a>") < text.index("Second</a>") < text.index("Claims ledger: every claim")
    for anchor in ("nb1-first-notebook", "nb1-section-more", "nb2-section-more"):
        assert f'href="#{anchor}"' in text and f'id="{anchor}"' in text
    assert "What we found" in text
    assert "05_gone: no executed copy" in text
    assert "1 error output(s)" in text and "ValueError: bad" in text and "\x1b[" not in text
    assert 'a long statement &lt; with markup <span class="provenance">[derived]' in text
    assert "0.0100 [−0.0100, 0.0300]" in text and "&lt; 0.02" in text and "verdict-open" in text
    assert "verdict-positive" in text
    # the verdict line a notebook prints is folded with its code, not shown as a result
    assert '<pre class="log">[S1] HOLDS' in text


def test_report_needs_executed_notebooks(tmp_path):
    with pytest.raises(ValueError, match="no executed notebooks"):
        build_report(tmp_path, tmp_path / "r.html")


def test_reproduce_report_option_writes_the_report(tmp_path):
    """`lqtheory reproduce --report FILE` executes, then renders the executed copy with its ledger."""
    import argparse
    import io

    from lqtheory.workbench import reproduce
    from lqtheory.workbench.linter import percent_to_notebook

    text = '''# %% [markdown]
# # Tiny: $\\sigma_s(w)_1$
#
# Claims [derived] for the report test.

# %% tags=["parameters"]
profile = "ci"
device = "auto"
seed = 0
n = None

# %%
from lqtheory.workbench.session import setup
PROFILES = {"ci": dict(n=1), "default": dict(n=2), "paper": dict(n=3)}
run = setup("01_tiny", globals(), profiles=PROFILES)

# %%
import matplotlib.pyplot as plt
from lqtheory.workbench.findings import findings
fig, ax = plt.subplots()
ax.plot([1, 2], [1, 4])
run.save_figure(fig, "curve")
run.claim("A1", measured={"n": run.n}, holds=run.n > 0)
findings(run)
'''
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nbformat.write(percent_to_notebook(text), notebooks / "01_tiny.ipynb")
    (notebooks / "claims.toml").write_text(
        '[[claim]]\nid = "A1"\nnotebook = "01_tiny"\nstatement = "n is positive"\nprovenance = "derived"\n'
        'kind = "theorem"\n')
    report = tmp_path / "out" / "report.html"
    parser = reproduce.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--notebooks-dir", str(notebooks), "--build-dir", str(tmp_path / "build"),
                              "--figures-dir", str(tmp_path / "figures"), "--profile", "ci",
                              "--report", str(report), "--executor", "serial"])
    out = io.StringIO()
    assert reproduce.run(args, out=out) == 0, out.getvalue()
    assert f"report: {report} (1 notebooks, 1 figures, 1 claims)" in out.getvalue()
    html_text = report.read_text()
    assert "data:image/png;base64," in html_text and 'alttext="\\sigma_s(w)_1"' in html_text
    assert "What we found" in html_text and 'class="statement">n is positive' in html_text
    assert 'id="figure-1"' in html_text and "curve.pdf" in html_text  # the 120-dpi file, its PDF linked
