"""The claims registry (lqtheory.workbench.claims) and the notebook API that evaluates registered claims only."""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lqtheory.analysis.stats import Interval, mean_interval, seeds_needed, seeds_to_decide  # noqa: E402
from lqtheory.workbench import claims as claims_mod  # noqa: E402
from lqtheory.workbench.claims import (  # noqa: E402
    RegistryError,
    format_evidence,
    format_value,
    load_registry,
    parse_registry,
)
from lqtheory.workbench.paths import claims_path  # noqa: E402
from lqtheory.workbench.records import collect_claims, read_claims
from lqtheory.workbench.session import setup

REPO = Path(__file__).resolve().parents[1]
PROFILES = {"ci": {"n": 10}, "default": {"n": 100}, "paper": {"n": 1000}}
REGISTRY = """
[[claim]]
id = "S1"
notebook = "nb"
statement = "Stechkin bound on 12000 vectors"
provenance = "derived"
kind = "theorem"

[[claim]]
id = "E2"
notebook = "nb"
statement = "SI-adaptive stays within 2 points of dense accuracy"
provenance = "paper"
kind = "empirical"
metric = "largest drop (fraction)"
threshold = 0.02
direction = "below"
rationale = "the paper's 2 points"

[[claim]]
id = "D1"
notebook = "nb"
statement = "our conjecture: a gain"
provenance = "derived"
kind = "empirical"
metric = "gain (fraction)"
threshold = 0
direction = "above"
rationale = "a sign claim"
over = "vectors"

[[claim]]
id = "X"
notebook = "other"
statement = "another notebook's claim"
provenance = "paper"
kind = "theorem"
"""


@pytest.fixture(autouse=True)
def isolated(notebook_env, tmp_path):
    """A clean notebook session (conftest's ``notebook_env``) whose registry is REGISTRY, in tmp."""
    registry = tmp_path / "notebooks" / "claims.toml"
    registry.parent.mkdir()
    registry.write_text(REGISTRY)
    for name in ("nb", "other", "01_a", "02_b", "99_ledger"):
        (registry.parent / f"{name}.ipynb").write_text("{}")
    os.environ["LQTHEORY_CLAIMS"] = str(registry)  # notebook_env restores it
    return notebook_env


def new_run(name="nb"):
    return setup(name, {"profile": "ci", "device": "cpu", "seed": 0, "n": None}, PROFILES)


# ----------------------------------------------------------------------------------------------
# Registry


def entry(**changes) -> str:
    base = {"id": "E9", "notebook": "nb", "statement": "s", "provenance": "paper", "kind": "empirical",
            "metric": "m", "threshold": 0.5, "direction": "above", "rationale": "r"}
    base.update(changes)
    lines = ["[[claim]]"]
    for k, v in base.items():
        if v is None:
            continue
        lines.append(f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"')
    return "\n".join(lines) + "\n"


def test_registry_parses_in_file_order():
    reg = load_registry()
    assert list(reg) == ["S1", "E2", "D1", "X"]
    assert reg["E2"].threshold == 0.02 and reg["E2"].direction == "below" and reg["E2"].over == "seeds"
    assert reg["D1"].threshold == 0.0 and isinstance(reg["D1"].threshold, float) and reg["D1"].over == "vectors"
    assert reg["E2"].relation == "< 0.02" and reg["D1"].relation == "> 0" and reg["S1"].relation is None
    assert reg["S1"].metric is None and reg["S1"].kind == "theorem"


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (entry() + entry(), "registered twice"),
        (entry(notebook="nope"), "notebook 'nope' is not one of"),
        (entry(provenance="folklore"), "provenance must be one of"),
        (entry(kind="conjecture"), "kind must be one of"),
        (entry(threshold=None), "needs threshold"),
        (entry(direction=None, metric=None), "needs metric, direction"),
        (entry(rationale=None), "needs rationale"),
        (entry(direction="greater"), "direction must be one of"),
        (entry(threshold="high"), "threshold must be a finite number"),
        (entry(threshold=float("nan")).replace("nan", "nan"), "threshold must be a finite number"),
        (entry(kind="theorem"), "a theorem has no metric, threshold, direction"),
        (entry(id="[E9]"), "id must be a short label"),
        (entry(statement=""), "statement must be a non-empty string"),
        (entry(colour="red"), "unknown key"),
        (entry(id=None), "missing id"),
        ("claim = 3\n", "array of tables"),
        ("[[claims]]\nid = 'x'\n", "unknown top-level key"),
        ("[[claim]\n", "not valid TOML"),
    ],
)
def test_registry_validation_errors(text, pattern):
    with pytest.raises(RegistryError, match=pattern):
        parse_registry(text, "test.toml", notebooks={"nb"})


MARGIN = {"margin": 0.005, "equivalence": "contradicts", "margin_rationale": "half a point"}


def test_registry_margin_fields_parse_together():
    reg = parse_registry(entry(**MARGIN) + entry(id="E10", margin=1, equivalence="supports",
                                                 margin_rationale="one point") + entry(id="E11"),
                         "test.toml", notebooks={"nb"})
    e9, e10, e11 = reg["E9"], reg["E10"], reg["E11"]
    assert (e9.margin, e9.equivalence, e9.margin_rationale) == (0.005, "contradicts", "half a point")
    assert e10.margin == 1.0 and isinstance(e10.margin, float) and e10.equivalence == "supports"
    assert e9.margin_text == "±0.005" and e10.margin_text == "±1.0"
    assert (e11.margin, e11.equivalence, e11.margin_rationale, e11.margin_text) == (None, None, None, "")


def _with(**changes) -> str:
    return entry(**{**MARGIN, **changes})


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (entry(margin=0.005), r"id 'E9'.*margin without equivalence, margin_rationale"),
        (entry(margin=0.005, equivalence="supports"), r"id 'E9'.*margin, equivalence without margin_rationale"),
        (entry(equivalence="supports", margin_rationale="r"), r"id 'E9'.*without margin\b"),
        (entry(margin_rationale="r"), r"id 'E9'.*margin_rationale without margin, equivalence"),
        (_with(margin=0), r"id 'E9'.*margin must be a positive finite number"),
        (_with(margin=-0.5), r"id 'E9'.*margin must be a positive finite number"),
        (_with(margin=float("inf")), r"id 'E9'.*margin must be a positive finite number"),
        (_with(margin=float("nan")), r"id 'E9'.*margin must be a positive finite number"),
        (_with(margin="half a point"), r"id 'E9'.*margin must be a positive finite number"),
        (_with(margin=None) + "margin = true\n", r"id 'E9'.*margin must be a positive finite number"),
        (_with(equivalence="refutes"), r"id 'E9'.*equivalence must be one of \('contradicts', 'supports'\)"),
        (_with(margin_rationale=""), r"id 'E9'.*margin_rationale must be a non-empty string"),
        (_with(margin_rationale="   "), r"id 'E9'.*margin_rationale must be a non-empty string"),
        (_with(margin_rationale=3), r"id 'E9'.*margin_rationale must be a non-empty string"),
        (entry(kind="theorem", metric=None, threshold=None, direction=None, rationale=None, **MARGIN),
         r"id 'E9'.*a theorem has no margin, equivalence, margin_rationale"),
    ],
)
def test_registry_margin_validation_errors(text, pattern):
    with pytest.raises(RegistryError, match=pattern):
        parse_registry(text, "test.toml", notebooks={"nb"})


def test_registry_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="claims registry"):
        load_registry(tmp_path / "none.toml")


def test_the_project_registry_is_valid_and_every_notebook_claim_is_registered():
    reg = load_registry(REPO / "notebooks" / "claims.toml")
    notebooks = {p.stem for p in (REPO / "notebooks").glob("*.ipynb")}
    assert {c.notebook for c in reg.values()} <= notebooks
    for c in reg.values():
        if c.kind == "empirical":
            assert c.rationale and c.metric and c.direction in ("above", "below")
        if c.margin is not None:  # a registered margin comes with what it says and why
            assert c.margin > 0 and c.equivalence in ("contradicts", "supports") and c.margin_rationale
    assert any(c.margin is not None for c in reg.values())


# ----------------------------------------------------------------------------------------------
# Run.claim (theorems)


def test_theorem_claims_are_recorded_printed_and_replaced(capsys, isolated):
    run = new_run()
    capsys.readouterr()
    run.claim("S1", measured={"max ratio": np.float64(0.93412), "vectors": 12000}, holds=True)
    run.claim("S1", measured={"max ratio": torch.tensor(0.5)}, holds=torch.tensor(True))
    out = capsys.readouterr().out.splitlines()
    assert out == ["[S1] HOLDS — Stechkin bound on 12000 vectors (max ratio 0.934, vectors 12000)",
                   "[S1] HOLDS — Stechkin bound on 12000 vectors (max ratio 0.5)"]
    record = read_claims(claims_path("nb", "ci"))
    assert record["claims"] == [{"id": "S1", "statement": "Stechkin bound on 12000 vectors", "provenance": "derived",
                                 "kind": "theorem", "measured": "max ratio 0.5", "holds": True, "verdict": "holds"}]
    assert not list((isolated / "ci" / "claims").glob(".*"))  # no temporary files left behind
    new_run()  # a fresh setup starts a fresh record
    assert read_claims(claims_path("nb", "ci"))["claims"] == []


def test_violated_theorem_is_recorded_then_raises(capsys):
    run = new_run()
    capsys.readouterr()
    with pytest.raises(AssertionError, match="theorem claim S1 is violated"):
        run.claim("S1", measured="max ratio 1.2", holds=False)
    assert capsys.readouterr().out == "[S1] VIOLATED — Stechkin bound on 12000 vectors (max ratio 1.2)\n"
    assert read_claims(run.claims_path)["claims"][0]["verdict"] == "violated"


def test_unknown_id_and_wrong_notebook_are_errors():
    run = new_run()
    with pytest.raises(KeyError, match="'S9' is not registered"):
        run.claim("S9", holds=True)
    with pytest.raises(ValueError, match="registered for notebook 'other', not 'nb'"):
        run.claim("X", holds=True)
    with pytest.raises(ValueError, match="registered as empirical; evaluate it with run.estimate"):
        run.claim("E2", holds=True)
    with pytest.raises(ValueError, match="registered as theorem; evaluate it with run.claim"):
        run.estimate("S1", samples=[1.0, 2.0])
    assert read_claims(run.claims_path)["claims"] == []


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"holds": 0.99}, TypeError, "holds must be a bool"),
        ({"holds": torch.tensor([True, False])}, ValueError, "single truth value"),
        ({}, TypeError, "holds is required"),
    ],
)
def test_claim_argument_errors(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        new_run().claim("S1", **kwargs)


def test_the_old_signature_is_refused_with_a_pointer():
    with pytest.raises(TypeError, match="statements live in notebooks/claims.toml"):
        new_run().claim("S1", "Stechkin", "[derived]", 1, True)


# ----------------------------------------------------------------------------------------------
# Run.estimate (empirical, three-way)


@pytest.mark.parametrize(
    ("samples", "verdict"),
    [
        ([0.010, 0.011, 0.012], "supported"),  # below 0.02, the claimed side
        ([0.030, 0.031, 0.032], "contradicted"),
        ([0.010, 0.020, 0.030], "inconclusive"),
        ([0.020, 0.020, 0.020], "inconclusive"),  # an interval on the threshold covers it
        ([0.015], "inconclusive"),  # one seed: no interval
    ],
)
def test_estimate_three_way_verdicts(samples, verdict, capsys):
    run = new_run()
    capsys.readouterr()
    assert run.estimate("E2", samples=samples) == verdict
    line = capsys.readouterr().out
    assert line.startswith(f"[E2] {verdict.upper()} — SI-adaptive stays within 2 points of dense accuracy "
                           "(measured ")
    assert f"threshold < 0.02, n={len(samples)} {'seed' if len(samples) == 1 else 'seeds'})" in line
    c = read_claims(run.claims_path)["claims"][0]
    assert c["verdict"] == verdict and c["holds"] == (verdict == "supported")
    assert c["threshold"] == 0.02 and c["direction"] == "below" and c["interval"]["n"] == len(samples)
    iv = mean_interval(samples)
    expected = seeds_needed(iv, 0.02) if verdict == "inconclusive" else None
    assert c["seeds_needed"] == expected
    assert (c["margin"], c["equivalence"], c["margin_rationale"]) == (None, None, None)  # none registered
    assert c["reads"] == {"supported": "for the paper", "contradicted": "against the paper"}.get(verdict, "")
    assert "margin" not in line


def test_estimate_inconclusive_records_seeds_needed():
    run = new_run()
    run.estimate("E2", samples=[0.005, 0.025, 0.012])
    c = read_claims(run.claims_path)["claims"][0]
    assert c["verdict"] == "inconclusive" and isinstance(c["seeds_needed"], int) and c["seeds_needed"] > 3
    iv = mean_interval([0.005, 0.025, 0.012])
    assert c["seeds_needed"] == seeds_needed(iv, 0.02)


def test_estimate_from_an_interval_and_the_over_label(capsys):
    run = new_run()
    capsys.readouterr()
    iv = Interval(0.3, 0.1, 0.5, 400, 2.0, method="bootstrap")
    assert run.estimate("D1", interval=iv, measured={"vectors": 400}) == "supported"
    out = capsys.readouterr().out
    assert out == ("[D1] SUPPORTED — our conjecture: a gain (measured 0.3 [0.1, 0.5], threshold > 0, "
                   "n=400 vectors) [vectors 400]\n")
    c = read_claims(run.claims_path)["claims"][0]
    assert c["measured"] == "gain (fraction): 0.3 [0.1, 0.5], threshold > 0, n=400 vectors; vectors 400"
    assert c["evidence"] == "vectors 400"
    assert c["interval"] == {"mean": 0.3, "lo": 0.1, "hi": 0.5, "n": 400, "sd": 2.0, "level": 0.95,
                             "method": "bootstrap"}
    assert c["provenance"] == "derived"
    assert run.estimate("D1", interval=Interval(-0.3, -0.5, -0.1, 400, 2.0)) == "contradicted"  # no exception


MARGIN_CLAIMS = """
[[claim]]
id = "M.order"
notebook = "nb"
statement = "A beats B"
provenance = "paper"
kind = "empirical"
metric = "accuracy of A minus B (fraction)"
threshold = 0.0
direction = "above"
rationale = "a sign claim"
margin = 0.005
equivalence = "contradicts"
margin_rationale = "half a point"

[[claim]]
id = "M.not-beat"
notebook = "nb"
statement = "A does not beat B"
provenance = "paper"
kind = "empirical"
metric = "accuracy of A minus B (fraction)"
threshold = 0.0
direction = "below"
rationale = "a sign claim"
margin = 0.005
equivalence = "supports"
margin_rationale = "half a point"
"""


def _with_margin_claims() -> None:
    Path(os.environ["LQTHEORY_CLAIMS"]).write_text(REGISTRY + MARGIN_CLAIMS)


@pytest.mark.parametrize(
    ("cid", "lo", "hi", "verdict", "reading", "holds"),
    [
        ("M.order", -0.002, 0.004, "no practical difference", "against the paper", False),
        ("M.not-beat", -0.002, 0.004, "no practical difference", "for the paper", True),
        ("M.order", 0.001, 0.003, "no practical difference", "against the paper", False),  # negligible gain
        ("M.not-beat", 0.001, 0.003, "no practical difference", "for the paper", True),
        ("M.order", 0.002, 0.010, "supported", "for the paper", True),
        ("M.order", -0.010, -0.006, "contradicted", "against the paper", False),
        ("M.not-beat", -0.010, -0.006, "supported", "for the paper", True),
        ("M.not-beat", 0.006, 0.010, "contradicted", "against the paper", False),
        ("M.order", -0.005, 0.004, "inconclusive", "", False),  # an end on the margin is not inside
    ],
)
def test_estimate_with_a_margin_four_way(cid, lo, hi, verdict, reading, holds, capsys):
    _with_margin_claims()
    run = new_run()
    capsys.readouterr()
    iv = Interval((lo + hi) / 2, lo, hi, 5, 0.004, method="paired-t")
    assert run.estimate(cid, interval=iv) == verdict
    line = capsys.readouterr().out
    shown = verdict.upper() + (f" ({reading})" if verdict == "no practical difference" else "")
    assert line.startswith(f"[{cid}] {shown} — A ")
    assert line.endswith(f"threshold {'>' if cid == 'M.order' else '<'} 0, margin ±0.005, n=5 seeds)\n")
    c = read_claims(run.claims_path)["claims"][0]
    assert (c["verdict"], c["reads"], c["holds"]) == (verdict, reading, holds)
    assert (c["margin"], c["equivalence"], c["margin_rationale"]) == (
        0.005, "contradicts" if cid == "M.order" else "supports", "half a point")
    assert "margin ±0.005" in c["measured"]
    assert (c["seeds_needed"] is None) == (verdict != "inconclusive")


def test_estimate_with_a_margin_records_the_seeds_that_would_decide_it():
    _with_margin_claims()
    run = new_run()
    # mean 0.001, sd 0.004, n 3: [-0.0089, 0.0109] covers 0 and crosses the margin. Fitting 0 ± 0.005
    # needs a half-width below 0.004 = sd, t_{0.975,n-1}/sqrt(n) < 1: n = 7 (n = 6 gives 1.049);
    # excluding 0 alone would need about (1.96 * 4)^2 = 62.
    half = 4.302652729911275 * 0.004 / math.sqrt(3)
    iv = Interval(0.001, 0.001 - half, 0.001 + half, 3, 0.004)
    assert run.estimate("M.order", interval=iv) == "inconclusive"
    c = read_claims(run.claims_path)["claims"][0]
    assert c["seeds_needed"] == 7 == seeds_to_decide(iv, 0.0, "above", 0.005)
    assert seeds_needed(iv, 0.0) > 60


def test_estimate_argument_errors():
    run = new_run()
    with pytest.raises(TypeError, match="exactly one of samples"):
        run.estimate("E2")
    with pytest.raises(TypeError, match="exactly one of samples"):
        run.estimate("E2", samples=[1.0], interval=Interval(0.0, 0.0, 0.0, 1, 0.0))
    with pytest.raises(TypeError, match="Interval"):
        run.estimate("E2", interval=(0.0, 1.0))
    with pytest.raises(ValueError, match="NaN"):
        run.estimate("E2", samples=[0.1, math.nan])


# ----------------------------------------------------------------------------------------------
# Formatting and collection


def test_floats_always_look_like_floats():
    assert format_value(0.93412) == "0.934"
    assert format_value(3.0) == "3.0" and format_value(123.4) == "123.4" and format_value(0.0) == "0.0"
    assert format_value(-0.0) == "0.0" and format_value(2.33e-15) == "2.33e-15"
    assert format_value(np.int64(12000)) == "12000" and format_value(7) == "7"
    assert format_value(np.float64(1234567.0)) == "1.23e+06"
    assert format_value(True) == "yes" and format_value(float("inf")) == "inf"
    assert format_evidence({"a": 1.0, "b": 2}) == "a 1.0, b 2"
    assert format_evidence(None) == "" and format_evidence(" x ") == "x"


def test_collect_claims_lists_missing_notebooks(isolated):
    reg_text = REGISTRY + "".join(
        f'\n[[claim]]\nid = "T.{n}"\nnotebook = "{n}"\nstatement = "claim of {n}"\nprovenance = "paper"\n'
        f'kind = "theorem"\n' for n in ("01_a", "02_b"))
    Path(os.environ["LQTHEORY_CLAIMS"]).write_text(reg_text)
    new_run("01_a").claim("T.01_a", measured=1, holds=True)
    new_run("nb").estimate("E2", samples=[0.03, 0.031, 0.032])
    new_run("99_ledger")
    table, missing = collect_claims(isolated / "ci", expected=["01_a", "nb", "03_c"], exclude=["99_ledger"])
    assert list(table["notebook"]) == ["01_a", "nb"]
    assert list(table["verdict"]) == ["holds", "contradicted"]
    assert list(table["provenance"]) == ["[paper]", "[paper]"]
    assert missing == ["03_c"]
    empty, missing = collect_claims(isolated / "nowhere", expected=["01_a"])
    assert empty.empty and missing == ["01_a"]


def test_registry_cache_sees_edits(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(entry(notebook="a"))
    assert load_registry(path, notebooks={"a"})["E9"].threshold == 0.5
    path.write_text(entry(notebook="a", threshold=0.75))
    os.utime(path, ns=(1, 1))  # a new mtime even within the clock's resolution
    assert load_registry(path, notebooks={"a"})["E9"].threshold == 0.75
    assert claims_mod.for_notebook(load_registry(path, notebooks={"a"}), "a")[0].id == "E9"


# ----------------------------------------------------------------------------------------------
# The ledger


def _ledger_inputs(isolated):
    run = new_run()
    run.claim("S1", measured={"max ratio": 0.5}, holds=True)
    run.estimate("E2", samples=[0.005, 0.025, 0.012], measured={"scopes": 3})  # inconclusive
    run.estimate("D1", interval=Interval(-2.44e-15, -3e-15, -1.9e-15, 400, 1e-14))  # contradicted, derived
    return load_registry()


def test_ledger_words_match_kind_and_provenance(isolated):
    from lqtheory.workbench.ledger import ledger_frame, verdict_counts, verdict_label

    registry = _ledger_inputs(isolated)
    frame, missing, unregistered = ledger_frame(isolated / "ci", ["nb", "other"], registry)
    assert list(frame["id"]) == ["S1", "E2", "D1", "X"]
    assert list(frame["verdict"]) == ["holds", "inconclusive", "contradicted (our conjecture)", "not evaluated"]
    assert missing == ["other"] and unregistered == []
    e2 = frame.set_index("id").loc["E2"]
    assert e2["threshold"] == "< 0.02" and e2["n"] == "3 seeds" and e2["provenance"] == "[paper]"
    assert e2["to decide"] == f"≈{seeds_needed(mean_interval([0.005, 0.025, 0.012]), 0.02)} seeds"
    assert frame.set_index("id").loc["S1", "evidence"] == "max ratio 0.5"
    assert e2["evidence"] == "scopes 3"  # only what the notebook added, not the metric text
    assert verdict_counts(frame) == {"holds": 1, "contradicted (our conjecture)": 1, "inconclusive": 1,
                                     "not evaluated": 1}
    assert verdict_label("empirical", "contradicted", "paper") == "contradicted"
    assert verdict_label("theorem", "violated", "derived") == "VIOLATED"


def test_ledger_markdown_is_grouped_left_aligned_and_keeps_numbers_whole(isolated):
    from lqtheory.workbench.ledger import ledger_frame, ledger_markdown, ledger_styler

    registry = _ledger_inputs(isolated)
    frame, missing, _ = ledger_frame(isolated / "ci", ["nb", "other"], registry)
    text = ledger_markdown(frame, "Ledger", missing)
    assert text == ledger_markdown(frame, "Ledger", missing)  # deterministic
    assert "## nb\n" in text and "## other\n" in text
    assert all(set(line.strip("|")) <= {":", "-", "|"} and ":---" in line
               for line in text.splitlines() if line.startswith("|:"))  # every column left-aligned
    d1 = next(line for line in text.splitlines() if line.startswith("| D1 "))
    assert "contradicted (our conjecture)" in d1
    assert "\u20112.44e\u201115\u00a0[" in d1 and "e-15" not in d1  # no break opportunity inside a number
    assert "Notebooks without a claims record at this profile: other" in text
    html = ledger_styler(frame).to_html()
    assert html == ledger_styler(frame).to_html()  # a fixed uuid: byte-identical reruns
    assert "background-color: #fde8cc" in html and "text-align: left" in html and "white-space: nowrap" in html


def test_every_claim_call_in_the_notebooks_is_registered_for_its_notebook():
    import re as _re

    import nbformat

    reg = load_registry(REPO / "notebooks" / "claims.toml")
    call = _re.compile(r"run\.(claim|estimate)\(\s*(f?)\"([^\"]+)\"")
    seen = set()
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        for method, fstring, cid in call.findall(source):
            if fstring:  # f"E3.order.{m}" / f"S6.{name}": some registered id of this notebook has the prefix
                prefix = cid.split("{")[0]
                matches = [c for c in reg.values() if c.id.startswith(prefix) and c.notebook == path.stem]
                assert matches, f"{path.name}: no claim registered for {cid!r}"
                seen.update(c.id for c in matches)
                continue
            assert cid in reg, f"{path.name}: {cid!r} is not registered"
            assert reg[cid].notebook == path.stem, f"{path.name}: {cid!r} is registered for {reg[cid].notebook}"
            assert (reg[cid].kind == "theorem") == (method == "claim"), f"{path.name}: {cid!r} is {reg[cid].kind}"
            seen.add(cid)
        # ids passed through a variable (run.estimate(tag, ...)) appear as string literals in the code
        seen.update(c.id for c in reg.values() if c.notebook == path.stem and f'"{c.id}"' in source)
    assert set(reg) == seen, f"registered but never evaluated: {sorted(set(reg) - seen)}"


def test_profiles_restrict_where_a_claim_is_expected(isolated):
    from lqtheory.workbench.ledger import ledger_frame

    with pytest.raises(RegistryError, match="profiles must be a non-empty list"):
        parse_registry(entry() + 'profiles = ["huge"]\n', "t.toml", notebooks={"nb"})
    reg = parse_registry(entry() + 'profiles = ["paper"]\n', "t.toml", notebooks={"nb"})
    assert reg["E9"].profiles == ("paper",) and load_registry()["E2"].profiles == ("ci", "default", "paper")
    new_run()  # an empty record for nb
    frame, _, _ = ledger_frame(isolated / "ci", ["nb"], reg, profile="ci")
    assert frame.empty  # a paper-only claim is not "not evaluated" at ci
    frame, _, _ = ledger_frame(isolated / "ci", ["nb"], reg, profile="paper")
    assert list(frame["verdict"]) == ["not evaluated"]


def test_reads_of_every_verdict_and_of_older_records():
    from lqtheory.workbench.records import reads, record_reads

    assert reads("supported") == reads("supported", "contradicts") == "for the paper"
    assert reads("contradicted") == "against the paper" and reads("inconclusive", "supports") == ""
    assert reads("no practical difference", "supports") == "for the paper"
    assert reads("no practical difference", "contradicts") == "against the paper"
    # a record with ``reads`` is taken at its word; an older one is read from its verdict
    assert record_reads({"kind": "empirical", "verdict": "supported", "reads": "for the paper"}) == "for the paper"
    assert record_reads({"kind": "empirical", "verdict": "contradicted"}) == "against the paper"
    assert record_reads({"kind": "empirical", "verdict": "no practical difference",
                         "equivalence": "supports"}) == "for the paper"
    assert record_reads({"kind": "theorem", "verdict": "holds"}) == ""


def test_ledger_labels_colours_and_margin_column_for_no_practical_difference(isolated):
    from lqtheory.workbench.ledger import (
        VERDICT_COLOURS,
        label_class,
        ledger_frame,
        ledger_markdown,
        ledger_styler,
        verdict_counts,
        verdict_label,
    )

    _with_margin_claims()
    run = new_run()
    run.estimate("M.order", interval=Interval(0.001, -0.002, 0.004, 5, 0.004))  # against the paper
    run.estimate("M.not-beat", interval=Interval(0.001, -0.002, 0.004, 5, 0.004))  # for the paper
    run.estimate("E2", samples=[0.010, 0.011, 0.012])  # supported, no margin
    frame, _, _ = ledger_frame(isolated / "ci", ["nb"], load_registry())
    rows = frame.set_index("id")
    assert rows.loc["M.order", "verdict"] == "no practical difference (against the paper)"
    assert rows.loc["M.not-beat", "verdict"] == "no practical difference (for the paper)"
    assert rows.loc["M.order", "reads"] == "against the paper" and rows.loc["E2", "reads"] == "for the paper"
    assert rows.loc["M.order", "margin"] == "±0.005" and rows.loc["M.order", "margin_value"] == 0.005
    assert rows.loc["E2", "margin"] == "" and rows.loc["D1", "margin"] == ""  # blank without one
    assert rows.loc["M.order", "to decide"] == ""  # decided
    assert label_class(rows.loc["M.order", "verdict"]) == "negative"
    assert label_class(rows.loc["M.not-beat", "verdict"]) == "positive"
    assert VERDICT_COLOURS[rows.loc["M.order", "verdict"]] == VERDICT_COLOURS["contradicted"]
    assert VERDICT_COLOURS[rows.loc["M.not-beat", "verdict"]] == VERDICT_COLOURS["supported"]
    counts = verdict_counts(frame)
    assert counts["no practical difference (against the paper)"] == 1
    assert counts["no practical difference (for the paper)"] == 1
    # a [derived] claim reads against our conjecture, not the paper
    assert verdict_label("empirical", "no practical difference", "derived", "against the paper") == \
        "no practical difference (against our conjecture)"
    text = ledger_markdown(frame)
    header = next(line for line in text.splitlines() if line.startswith("| id "))
    assert "| threshold | margin | n |" in header
    assert "±0.005" in next(line for line in text.splitlines() if line.startswith("| M.order "))
    assert "**no practical difference**:" in text  # in the legend
    html = ledger_styler(frame).to_html()
    assert "±0.005" in html
