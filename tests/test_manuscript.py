"""The report as a manuscript (lqtheory.workbench.manuscript): math, figures, tables, machinery, ledger."""

import base64
import json
import re

import nbformat
import pytest

from lqtheory.workbench.manuscript import build_manuscript
from lqtheory.workbench.manuscript.mathml import MathCounter, markdown_to_html
from lqtheory.workbench.manuscript.tables import format_value, parse_table, reshape

PNG_INLINE = base64.b64encode(b"\x89PNG\r\n\x1a\ninline-80dpi").decode()
PNG_FILE = b"\x89PNG\r\n\x1a\nfile-120dpi"


def _code(source, *outputs, tags=()):
    cell = nbformat.v4.new_code_cell(source)
    cell.outputs = list(outputs)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def _stream(text, name="stdout"):
    return nbformat.v4.new_output("stream", name=name, text=text)


def _image():
    return nbformat.v4.new_output("display_data", data={"image/png": PNG_INLINE, "text/plain": "<Image>"})


def _html_table(headers, rows):
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in rows)
    return nbformat.v4.new_output("display_data", data={
        "text/html": f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>", "text/plain": "t"})


def _write(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nbformat.write(nb, path)


def test_math_becomes_mathml_and_code_and_escaped_dollars_stay_text():
    counter = MathCounter()
    out = markdown_to_html("Inline $\\sigma_s(w)_1$, display $$\\lceil x \\rceil$$, code `a $b$ c`, price \\$5.",
                           counter)
    assert counter.typeset == 2 and counter.failed == []
    assert out.count("<math ") == 2 and 'display="block"' in out and "⌈" in out
    assert "<code>a $b$ c</code>" in out  # code spans are not math
    assert "price $5" in out  # an escaped dollar is a dollar
    bad = markdown_to_html("$\\notacommand x$", counter)
    assert '<code class="tex">\\notacommand x</code>' in bad and "$" not in bad and counter.failed


def test_figures_are_numbered_through_the_document_with_files_captions_and_references(tmp_path):
    build, figures = tmp_path / "build", tmp_path / "figures"
    build.mkdir()
    (figures / "claims").mkdir(parents=True)
    (figures / "curve.png").write_bytes(PNG_FILE)
    (figures / "curve.pdf").write_bytes(b"%PDF")
    _write(build / "01_a.ipynb", [
        nbformat.v4.new_markdown_cell("# A\n\nSee Figure 1 below."),
        _code('run.save_figure(fig, "curve")', _image()),
        nbformat.v4.new_markdown_cell("**Figure 1.** The curve of $x^2$ rises."),
    ])
    _write(build / "02_b.ipynb", [
        nbformat.v4.new_markdown_cell("# B"),
        _code('run.save_figure(fig, f"panel_{m}")', _image()),
        nbformat.v4.new_markdown_cell("*Figure b_panel.* Two panels."),
        _code("if run.ablation:\n    run.save_figure(fig, 'ablation')"),  # not produced at this profile
        nbformat.v4.new_markdown_cell("*Figure ablations.* Its caption must not stand alone."),
        nbformat.v4.new_markdown_cell("Figure b_panel shows it; Figure 1 of notebook A is elsewhere."),
    ])
    record = {"notebook": "01_a", "profile": "ci", "claims": [], "artifacts": ["curve.png", "curve.pdf"]}
    (figures / "claims" / "01_a.json").write_text(json.dumps(record))
    other = {"notebook": "02_b", "profile": "default", "claims": [], "artifacts": ["panel_x.png"]}
    (figures / "claims" / "02_b.json").write_text(json.dumps(other))
    (figures / "panel_x.png").write_bytes(PNG_FILE)
    out = tmp_path / "report.html"

    summary = build_manuscript(build, out, figures=figures, profile="ci", notebooks_dir=tmp_path / "nbs")

    text = out.read_text()
    assert summary["figures"] == 2 and summary["dropped_captions"] == 1 and summary["print_resolution"] == 1
    assert 'id="figure-1"' in text and 'id="figure-2"' in text and 'id="figure-3"' not in text
    assert "Its caption must not stand alone" not in text
    # notebook A's file is used (its record is of this profile); notebook B's record is of another profile
    assert text.count(base64.b64encode(PNG_FILE).decode()) == 1 and text.count(PNG_INLINE) == 1
    assert 'href="figures/curve.pdf"' in text
    assert 'alt="Figure 1: The curve of x^2 rises."' in text
    assert 'href="#nb1-cell-2">cell 2</a> of <a href="nbs/01_a.ipynb">' in text
    # local labels become the document's numbers, in captions and in the text
    assert '<a class="figref" href="#figure-1">Figure 1</a> below' in text
    # B's own label is linked; "Figure 1" is not one of B's labels, so it is left as written
    assert '<a class="figref" href="#figure-2">Figure 2</a> shows it; Figure 1 of notebook A' in text
    assert re.search(r'<a class="fignum" href="#figure-2">Figure 2\.</a> Two panels', text)


def test_tables_merge_intervals_move_constants_to_the_caption_and_summarise_long_ones(tmp_path):
    parsed = parse_table('<table><thead><tr><th>model</th><th>scope</th><th>dense_acc</th><th>dense_acc_lo</th>'
                         '<th>dense_acc_hi</th><th>difference</th><th>diff_lo</th><th>diff_hi</th></tr></thead>'
                         '<tbody><tr><td>mlp-128</td><td>neuron</td><td>0.8871</td><td>0.885</td><td>0.89</td>'
                         '<td>2.06e+06</td><td>824000</td><td>inf</td></tr>'
                         '<tr><td>mlp-128</td><td>layer</td><td>0.887</td><td>0.88</td><td>0.9</td>'
                         '<td>-0.5</td><td>-1</td><td>0</td></tr></tbody></table>')
    page = reshape(parsed)
    assert page.constants == [("model", "mlp-128")]
    assert "<th class=\"num\">dense accuracy: mean [95% interval]</th>" in page.html
    assert "0.887 [0.885, 0.890]" in page.html and "0.887 [0.880, 0.900]" in page.html
    assert "2,060,000 [824,000, ∞]" in page.html and "−0.500 [−1.00, 0]" in page.html
    assert "e+06" not in page.html and "inf" not in page.html
    assert format_value(2.5e-5) == "2.50×10⁻⁵" and format_value(8832, integer=True) == "8,832"
    # fractions declared by the notebook (cell metadata report.units) read in % and points
    points = reshape(parse_table('<table><thead><tr><th>acc</th><th>effect</th><th>effect_lo</th><th>effect_hi</th>'
                                 '</tr></thead><tbody><tr><td>0.8871</td><td>0.0125</td><td>0.0005</td><td>0.0137</td>'
                                 '</tr></tbody></table>'), units={"acc": "%", "effect": "points"})
    assert "<th class=\"num\">accuracy (%)</th>" in points.html and "88.7" in points.html
    assert "effect (points): mean [95% interval]" in points.html and "1.25 [0.0500, 1.37]" in points.html

    build, figures = tmp_path / "build", tmp_path / "figures"
    build.mkdir()
    (figures / "claims").mkdir(parents=True)
    (figures / "claims" / "01_t.json").write_text(json.dumps({"notebook": "01_t", "profile": "ci", "claims": []}))
    (figures / "effects.csv").write_text("x\n")
    rows = [[f"m{k}", str(k), "3"] for k in range(40)]
    _write(build / "01_t.ipynb", [nbformat.v4.new_markdown_cell("# T"),
                                  _code('run.save_table(df, "effects")', _html_table(["method", "effect", "n"], rows))])
    out = tmp_path / "r" / "report.html"
    build_manuscript(build, out, figures=figures, profile="ci")
    text = out.read_text()
    assert "The first 12 of 40 rows." in text and "28 more rows" in text and 'href="../figures/effects.csv"' in text
    assert "In every row: n 3." in text and "<td class=\"text\">m12</td>" not in text


def test_machinery_is_folded_or_left_out_and_warnings_are_logged(tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    _write(build / "01_m.ipynb", [
        nbformat.v4.new_markdown_cell("# M\n\nWhat it shows.\n\n**Running it.** The parameters cell below says "
                                      "`profile = \"ci\"`; change it."),
        _code('profile = "ci"', tags=["parameters"]),
        _code('profile = "default"', tags=["injected-parameters"]),
        _code("run = setup()", _stream("01_m: profile default, seed 0; n=3\n")),
        _code("prune()", _stream("[S1] HOLDS — a bound (max 0.5)\nexport: 6729 of 8970 parameters kept\n"
                                 "/x/torch_pruning/dependency.py:12: UserWarning: No positional inputs found for "
                                 "a module, assuming batch_size=1.\n  warnings.warn(\n")),
        _code("report()", _stream("# Profile of x\n| a | b |\n"), tags=["report-fold-output"]),
        _code("secret()", _stream("internal\n"), tags=["report-hide"]),
    ])
    out = tmp_path / "report.html"
    summary = build_manuscript(build, out, profile="default")
    text = out.read_text()
    assert "Running it" not in text and "What it shows." in text
    assert summary["warnings"] == 2 and "No positional inputs" not in text
    assert "No positional inputs found for a module" in out.with_suffix(".log").read_text()
    assert '<div class="printed"><p>export: 6729 of 8970 parameters kept</p></div>' in text  # a result: shown
    for folded in ("[S1] HOLDS", "01_m: profile default, seed 0", "# Profile of x"):
        assert f'<pre class="log">{folded}' in text  # inside the closed code fold only
        assert text.count(folded) == 1
    assert "internal" not in text and "secret()" not in text
    assert "injected by papermill" in text and text.count("parameters of this run") == 1


@pytest.mark.parametrize("verdict, label", [("violated", "VIOLATED"), ("contradicted", "contradicted")])
def test_abstract_and_ledger_come_from_the_claims_records(tmp_path, verdict, label):
    build, figures = tmp_path / "build", tmp_path / "figures"
    build.mkdir()
    (figures / "claims").mkdir(parents=True)
    kind = "theorem" if verdict == "violated" else "empirical"
    claims = [{"id": "P1", "statement": "the paper's claim", "provenance": "paper", "kind": kind, "verdict": verdict,
               "measured": "", "threshold": 0.5, "direction": "above", "over": "seeds",
               "interval": {"mean": 0.3, "lo": 0.2, "hi": 0.4, "n": 3}}]
    (figures / "claims" / "01_c.json").write_text(json.dumps({"notebook": "01_c", "profile": "ci", "claims": claims}))
    _write(build / "01_c.ipynb", [nbformat.v4.new_markdown_cell("# C")])
    _write(build / "99_claims_ledger.ipynb", [nbformat.v4.new_markdown_cell("# Ledger"),
                                              _code("display(ledger)", _html_table(["id"], [["P1"]]))])
    out = tmp_path / "report.html"
    build_manuscript(build, out, figures=figures, profile="ci")
    text = out.read_text()
    abstract = text[text.index('id="abstract"'):text.index('<nav class="toc"')]
    assert "A Theoretical Understanding of Neural Network Compression" in abstract
    assert f"1 {label}" in abstract
    if kind == "empirical":
        assert "0.300 [0.200, 0.400]" in abstract and "&gt; 0.5" in abstract and "n = 3 seeds" in abstract
    else:
        assert "1 of 1 mathematical statements are VIOLATED: P1" in abstract
    ledger = text[text.index('id="claims-ledger"'):]
    assert ledger.count('id="claim-P1"') == 1 and text.count("<table") == 1  # notebook 99's table is not repeated
    assert f'<span class="verdict verdict-negative">{label}</span>' in ledger
    assert "−0.300" in ledger  # clears by: the interval's lower end 0.2 is 0.3 below the threshold 0.5
    assert "<th class=\"num\">clears by</th><th class=\"num\">margin</th>" in ledger


@pytest.mark.parametrize("equivalence, reads, label, cls", [
    ("contradicts", "against the paper", "no practical difference (against the paper)", "negative"),
    ("supports", "for the paper", "no practical difference (for the paper)", "positive"),
])
def test_report_reads_no_practical_difference_by_its_registered_equivalence(tmp_path, equivalence, reads, label,
                                                                           cls):
    build, figures = tmp_path / "build", tmp_path / "figures"
    build.mkdir()
    (figures / "claims").mkdir(parents=True)
    claims = [{"id": "P1", "statement": "A beats B", "provenance": "paper", "kind": "empirical",
               "verdict": "no practical difference", "measured": "", "threshold": 0.0, "direction": "above",
               "over": "seeds", "interval": {"mean": 0.001, "lo": -0.002, "hi": 0.004, "n": 3},
               "margin": 0.005, "equivalence": equivalence, "reads": reads}]
    (figures / "claims" / "01_c.json").write_text(json.dumps({"notebook": "01_c", "profile": "ci", "claims": claims}))
    _write(build / "01_c.ipynb", [nbformat.v4.new_markdown_cell("# C"),
                                  _code("run.estimate('P1')", _stream(f"[P1] NO PRACTICAL DIFFERENCE ({reads}) — "
                                                                      "A beats B (measured ...)\n"))])
    out = tmp_path / "report.html"
    build_manuscript(build, out, figures=figures, profile="ci")
    text = out.read_text()
    abstract = text[text.index('id="abstract"'):text.index('<nav class="toc"')]
    assert f"1 {label}" in abstract and f'<span class="verdict verdict-{cls}">{label}</span>' in abstract
    ledger = text[text.index('id="claims-ledger"'):]
    assert f'<span class="verdict verdict-{cls}">{label}</span>' in ledger
    assert "±0.005" in ledger
    assert "<pre class=\"log\">[P1] NO PRACTICAL DIFFERENCE" in text  # the verdict line is machinery: folded


def test_a_claims_record_of_another_profile_is_flagged_not_passed_off_as_this_run(tmp_path):
    build, figures = tmp_path / "build", tmp_path / "figures"
    build.mkdir()
    (figures / "claims").mkdir(parents=True)
    claims = [{"id": "T1", "statement": "a theorem", "provenance": "paper", "kind": "theorem", "verdict": "holds",
               "measured": "max 0.5"}]
    (figures / "claims" / "01_c.json").write_text(json.dumps({"notebook": "01_c", "profile": "default",
                                                              "claims": claims}))
    _write(build / "01_c.ipynb", [nbformat.v4.new_markdown_cell("# C")])
    out = tmp_path / "report.html"
    build_manuscript(build, out, figures=figures, profile="ci")
    text = out.read_text()
    assert "written at another profile than this report's (01_c)" in text
    assert "(record of profile default)" in text


def test_a_cell_showing_one_figure_per_model_is_one_numbered_figure_with_each_file(tmp_path):
    build, figures = tmp_path / "build", tmp_path / "figures"
    build.mkdir()
    (figures / "claims").mkdir(parents=True)
    for name in ("e3_methods_a", "e3_methods_b"):
        (figures / f"{name}.png").write_bytes(PNG_FILE + name.encode())
    (figures / "e3_methods_a.pdf").write_bytes(b"%PDF")
    record = {"notebook": "01_m", "profile": "ci", "claims": [],
              "artifacts": ["e3_phases.png", "e3_methods_a.png", "e3_methods_a.pdf", "e3_methods_b.png"]}
    (figures / "claims" / "01_m.json").write_text(json.dumps(record))
    _write(build / "01_m.ipynb", [
        nbformat.v4.new_markdown_cell("# M"),
        _code('for m in models:\n    run.save_figure(fig, f"e3_methods_{m}")', _image(), _image()),
        nbformat.v4.new_markdown_cell("*Figure (one per model): top, accuracy; bottom, the PQ Index.*"),
    ])
    out = tmp_path / "report.html"
    summary = build_manuscript(build, out, figures=figures, profile="ci")
    text = out.read_text()
    assert summary["figures"] == 1 and summary["print_resolution"] == 2
    for name in ("e3_methods_a", "e3_methods_b"):
        assert base64.b64encode(PNG_FILE + name.encode()).decode() in text
    assert "(panel 1 of 2)" in text and "(panel 2 of 2)" in text
    assert '<a class="fignum" href="#figure-1">Figure 1.</a> top, accuracy; bottom, the PQ Index.' in text
    assert 'href="figures/e3_methods_a.pdf"' in text and 'href="figures/e3_methods_b.png"' in text  # the PDF if any
    assert "e3_phases" not in text
