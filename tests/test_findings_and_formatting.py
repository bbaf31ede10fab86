"""The closing "What we found" section and the table number formatting (issue #13)."""

import pandas as pd
import pytest

from lqtheory.common.formatting import format_number, latex_table, markdown_table
from lqtheory.workbench.findings import findings_markdown, verdict_class

OLD = [  # run.claims as lqtheory.workbench.session.Session.claim records them today
    {"id": "S1.l1", "statement": "Stechkin σ_s(w)_1 ≤ s^(1-1/q)‖w‖_q", "provenance": "derived",
     "kind": "theorem", "measured": "max observed/bound 0.93", "holds": True, "verdict": "holds"},
    {"id": "S7.acc", "statement": "higher accuracy", "provenance": "derived", "kind": "empirical",
     "measured": "min accuracy gain -0.0123", "holds": False, "verdict": "does not reproduce"},
]
NEW = [  # the registry's records: interval, threshold, direction, seeds_needed
    {"id": "E2.keep", "statement": "SI-adaptive keeps accuracy", "provenance": "paper", "kind": "empirical",
     "measured": "", "verdict": "inconclusive", "interval": {"mean": 0.0125, "lo": -0.004, "hi": 0.029, "n": 3},
     "threshold": 0.0, "direction": "above", "seeds_needed": 7},
    {"id": "E2.ratio", "statement": "compresses more", "provenance": "paper", "kind": "empirical",
     "measured": "", "verdict": "supported", "interval": {"mean": 2.5, "lo": 2.1, "hi": 2.9, "n": 3},
     "threshold": 1.5, "direction": "above", "seeds_needed": None},
    {"id": "S2", "statement": "bound", "provenance": "derived", "kind": "theorem", "measured": {"max": 0.5},
     "verdict": "violated"},
]


def test_verdict_classes_cover_old_and_new_words():
    assert [verdict_class(w) for w in ("holds", "supported", "HOLDS")] == ["positive"] * 3
    assert {verdict_class(w) for w in ("does not hold", "does not reproduce", "contradicted", "violated")} == {
        "negative"}
    assert verdict_class("inconclusive") == "open"
    # the fourth verdict is good or bad news by how it reads
    assert verdict_class("no practical difference", "for the paper") == "positive"
    assert verdict_class("No practical difference", "against the paper") == "negative"
    assert verdict_class("no practical difference") == "open"


MARGINS = [  # records of claims with a registered margin
    {"id": "E3.order", "statement": "LT beats SAP", "provenance": "paper", "kind": "empirical", "measured": "",
     "verdict": "no practical difference", "interval": {"mean": 0.001, "lo": -0.002, "hi": 0.004, "n": 3},
     "threshold": 0.0, "direction": "above", "seeds_needed": None, "margin": 0.005, "equivalence": "contradicts",
     "reads": "against the paper"},
    {"id": "E3.global", "statement": "SAP does not beat LT", "provenance": "paper", "kind": "empirical",
     "measured": "", "verdict": "no practical difference",
     "interval": {"mean": 0.001, "lo": -0.002, "hi": 0.004, "n": 3}, "threshold": 0.0, "direction": "below",
     "seeds_needed": None, "margin": 0.005, "equivalence": "supports", "reads": "for the paper"},
    {"id": "E3.local", "statement": "SAP beats LT", "provenance": "paper", "kind": "empirical", "measured": "",
     "verdict": "inconclusive", "interval": {"mean": 0.001, "lo": -0.01, "hi": 0.012, "n": 3},
     "threshold": 0.0, "direction": "above", "seeds_needed": 9, "margin": 0.005, "equivalence": "contradicts",
     "reads": ""},
]


def test_findings_read_no_practical_difference_by_its_reading():
    text = findings_markdown(MARGINS, notes={"E3.order": "too close to call an order", "E3.global": "never shown"})
    assert "Of 3 empirical claims, 1 reproduced, 1 not reproduced, 1 inconclusive" in text
    assert "2 of these decided by no practical difference within a registered margin" in text
    assert "- ✗ **E3.order** (paper): **NO PRACTICAL DIFFERENCE (against the paper)**." in text
    assert "- ✓ **E3.global** (paper): **NO PRACTICAL DIFFERENCE (for the paper)**." in text
    assert r"the claim needs \> 0, no practical difference within ±0.005" in text
    assert "About 9 seeds would decide it" in text
    assert "too close to call an order" in text and "never shown" not in text


def test_findings_from_todays_claims():
    text = findings_markdown(OLD, notes={"S7.acc": "The bound is a worst case.", "S1.l1": "never shown"})
    assert text.startswith("## What we found\n")
    assert "1 of 1 mathematical statement holds" in text
    assert "of 1 empirical claim, 0 reproduced, 1 not reproduced" in text
    assert r"σ\_s(w)\_1" in text  # underscores escaped: no accidental italics
    assert "min accuracy gain -0.0123" in text
    assert "The bound is a worst case." in text and "never shown" not in text  # notes only on failures


def test_findings_from_registry_claims():
    text = findings_markdown(NEW)
    assert "0 of 1 mathematical statement holds" in text
    assert "1 reproduced, 0 not reproduced, 1 inconclusive" in text
    assert r"0.0125 \[-0.004, 0.029\], n = 3; the claim needs \> 0" in text
    assert "About 7 seeds would decide it" in text
    assert "2.5 \\[2.1, 2.9\\]" in text and "max 0.5" in text


def test_findings_reject_notes_for_unknown_ids_and_handle_no_claims():
    with pytest.raises(ValueError, match="S9"):
        findings_markdown(OLD, notes={"S9": "x"})
    assert "No claims were recorded" in findings_markdown([])


def test_numbers_positional_and_integer_columns():
    assert format_number(1030.4) == "1030" and format_number(915.0) == "915"
    assert format_number(1000.0) == "1000" and format_number(999.7) == "1000"
    assert format_number(0.000123) == "0.000123" and format_number(2.5e-7) == "2.5e-07"
    assert format_number(1.5e6) == "1.5e+06" and format_number(0.93412, ".2f") == "0.93"
    df = pd.DataFrame({"kept": [915.0, 1030.0, 20000.0], "fraction": [0.5, 0.25, float("nan")], "n": [1, 2, 3]})
    md = markdown_table(df, ".3g")
    assert "1e+03" not in md and "1.03e+03" not in md
    assert "|    915 |" in md and "|  1,030 |" in md and "| 20,000 |" in md  # a count column: integers, grouped
    assert "0.25" in md and "nan" not in md
    assert r"1,030 & 0.25 & 2 \\" in latex_table(df, ".3g")


def test_table_html_aligns_text_left_and_keeps_numbers_whole():
    from lqtheory.common.formatting import formatted_frame
    from lqtheory.workbench.session import Table

    df = pd.DataFrame({"statement": ["a long statement <b>", "short"], "measured": [2.44e-15, 20000.0]})
    html = Table(formatted_frame(df, ".3g", False))._repr_html_()
    assert '<th style="text-align: left;">statement</th>' in html
    assert '<td style="text-align: left;">a long statement &lt;b&gt;</td>' in html
    assert '<td style="text-align: right; white-space: nowrap;">2.44e-15</td>' in html
    assert ">20000<" in html  # not an integer column (2.44e-15 is not whole): no grouping
