"""The report itself in a real browser (Debian's Chromium through Playwright), offline, at 1,280 px.

The report is built from two tiny notebooks executed here (a kernel runs them: real matplotlib PNGs,
real pandas tables, a printed library warning), not from a full reproduction. Every request other
than file:/data: is aborted and fails the test. Skips cleanly without /usr/bin/chromium or playwright.
"""

import json
import re

import nbformat
import pytest

from lqtheory.workbench.manuscript import browser, build_manuscript

pytestmark = pytest.mark.skipif(browser.missing_requirements() is not None,
                                reason=str(browser.missing_requirements()))

FIRST = [
    ("markdown", "# The $\\ell_q$ ball and its tails\n\nFor $0 < q < 1$ the quasi-norm "
                 "$\\|w\\|_q = \\big(\\sum_i |w_i|^q\\big)^{1/q}$ and Stechkin's bound\n\n"
                 "$$\\sigma_s(w)_1 \\le s^{1 - 1/q}\\,\\|w\\|_q, \\qquad "
                 "\\lceil d\\,(1 + \\eta)^{-q/(q - p)} \\rceil .$$\n\n"
                 "**Running it.** The parameters cell below says `profile = \"ci\"`; change it and run all cells."),
    ("parameters", 'profile = "ci"'),
    ("code", "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nimport pandas as pd\n"
             "from IPython.display import Image, display\nimport io\n"
             "print('01_tiny: profile ci, seed 0; n=3')"),
    ("code", "fig, ax = plt.subplots(figsize=(11, 3.5))\nax.plot([1, 2, 3], [1, 4, 9], label='$x^2$')\n"
             "ax.legend()\nbuf = io.BytesIO()\nfig.savefig(buf, format='png', dpi=80)\n"
             "display(Image(data=buf.getvalue(), format='png'))\nplt.close(fig)\n"
             "print('/site-packages/torch_pruning/dependency.py:1: UserWarning: No positional inputs found for a "
             "module, assuming batch_size=1.')"),
    ("markdown", "**Figure 1.** The curve $x^2$ against $x$: look at the slope."),
    ("code", "cols = {'model': ['mlp-128-1-2-relu-very-long-constant-name'] * 3,\n"
             "        'scope': ['neuron', 'layer', 'global']}\n"
             "for k in range(6):\n"
             "    cols[f'metric_{k}'] = [0.8871, 0.887, 2.06e6]\n"
             "    cols[f'metric_{k}_lo'] = [0.85, 0.86, 824000.0]\n"
             "    cols[f'metric_{k}_hi'] = [0.9, float('inf'), 3e6]\n"
             "cols['n_seeds'] = [3, 3, 3]\n"
             "display(pd.DataFrame(cols))"),
]
SECOND = [
    ("markdown", "# Second notebook: $\\mathrm{SI}$ and $\\mathrm{TSI}$\n\nFigure 1 below shows the rise."),
    ("code", "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nimport pandas as pd\n"
             "from IPython.display import Image, display\nimport io\n"
             "fig, ax = plt.subplots()\nax.bar(['a', 'b'], [1, 2])\nbuf = io.BytesIO()\n"
             "fig.savefig(buf, format='png', dpi=80)\ndisplay(Image(data=buf.getvalue(), format='png'))\n"
             "print('[T1] HOLDS — a theorem (max 0.5)')"),
    ("markdown", "*Figure 1.* Two bars; the second is $2\\times$ the first."),
    ("code", "display(pd.DataFrame({'method': [f'm{k}' for k in range(40)], 'effect': [k / 7 for k in range(40)],"
             " 'effect_lo': [k / 8 for k in range(40)], 'effect_hi': [k / 6 for k in range(40)]}))"),
]


def _notebook(cells):
    nb = nbformat.v4.new_notebook()
    for kind, source in cells:
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            cell = nbformat.v4.new_code_cell(source)
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from nbclient import NotebookClient

    root = tmp_path_factory.mktemp("browser_report")
    build, figures = root / "build", root / "figures"
    build.mkdir()
    (figures / "claims").mkdir(parents=True)
    for name, cells in (("01_tiny", FIRST), ("02_second", SECOND)):
        nb = _notebook(cells)
        NotebookClient(nb, timeout=120, kernel_name="python3").execute()
        nbformat.write(nb, build / f"{name}.ipynb")
    claims = [{"id": "E1", "statement": "a long empirical statement about tails that has to wrap inside its column "
               "without pushing the verdict out of the window", "provenance": "derived", "kind": "empirical",
               "verdict": "contradicted", "measured": "", "threshold": 0.005, "direction": "below", "over": "seeds",
               "interval": {"mean": 0.0123456, "lo": 0.0100001, "hi": 0.0150002, "n": 3}},
              {"id": "T1", "statement": "a theorem", "provenance": "paper", "kind": "theorem", "verdict": "holds",
               "measured": "max 0.5"}]
    (figures / "claims" / "01_tiny.json").write_text(json.dumps({"notebook": "01_tiny", "profile": "ci",
                                                                 "claims": claims}))
    out = root / "report" / "report.html"
    summary = build_manuscript(build, out, figures=figures, profile="ci", notebooks_dir=root / "notebooks")
    return out, summary


def test_report_renders_offline_with_math_figures_and_nothing_wider_than_the_column(report):
    out, summary = report
    assert summary["figures"] == 2 and summary["warnings"] == 1 and summary["math_failed"] == 0

    found = browser.inspect_report(out)

    assert found["problems"] == [], "\n".join(found["problems"])
    assert found["blocked"] == [] and found["dollars"] == [] and found["wide"] == []
    assert len(found["figures"]) == 2 and [f["id"] for f in found["figures"]] == ["figure-1", "figure-2"]
    assert all(i["loaded"] and i["visible"] for i in found["images"]) and len(found["images"]) == 2
    assert found["figrefs"] == ["#figure-2"]  # notebook 2's "Figure 1" is the document's Figure 2
    assert found["math"] >= 7 and found["flat_math"] == 0
    text = out.read_text()
    outputs = re.findall(r'<div class="output">.*?</div>|<pre class="log">.*?</pre>', text, re.S)
    assert outputs and not any("No positional inputs" in o for o in outputs)  # only in the folded source
    assert "Running it" not in text


def test_the_checks_fail_on_a_report_with_each_problem(tmp_path):
    """A control: every check reports the fault it exists for (a CDN script, raw TeX, a wide table, a broken
    image, duplicate figure numbers, a dangling link)."""
    bad = tmp_path / "bad.html"
    bad.write_text("""<!DOCTYPE html><html><head><script src="https://cdn.jsdelivr.net/npm/mathjax@3/x.js"></script>
<style>main { max-width: 40rem; margin: 0 auto; padding: 0 1rem; }</style></head><body><main>
<p>The bound $\\sigma_s(w)_1$ in raw TeX.</p>
<table><tr><td style="white-space: nowrap">""" + "wide cell " * 80 + """</td></tr></table>
<figure class="figure" id="figure-1"><img src="data:image/png;base64,AAAA" alt="figure">
<figcaption><a class="fignum" href="#figure-1">Figure 1.</a> one</figcaption></figure>
<figure class="figure" id="figure-1"><img src="data:image/png;base64,AAAA" alt="Figure 1: a duplicate number">
<figcaption><a class="fignum" href="#figure-1">Figure 1.</a> two</figcaption></figure>
<a href="#figure-9">Figure 9</a></main></body></html>""")

    found = browser.inspect_report(bad)

    problems = "\n".join(found["problems"])
    assert found["blocked"] == ["https://cdn.jsdelivr.net/npm/mathjax@3/x.js"]
    assert "raw $ in rendered text" in problems
    assert "px wide, the column" in problems
    assert "image not shown" in problems and "without meaningful alt text" in problems
    assert "duplicate figure anchors" in problems and "figure 2 is numbered 'Figure 1.'" in problems
    assert "link to a missing anchor: #figure-9" in problems
