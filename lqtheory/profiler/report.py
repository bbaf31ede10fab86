"""The :class:`Profile` a profiling run returns, its exports (JSON, Markdown, one self-contained HTML
file with the plots embedded as base64 PNG) and :func:`compare` for several models of one architecture.

Room: profiler (``lqtheory profile``: how compressible is any model).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field

import pandas as pd

from lqtheory.common.atomic import atomic_write_text
from lqtheory.common.formatting import markdown_table

__all__ = ["Profile", "Comparison", "compare", "combined_html"]

_MASKS_NOTE = (
    "Unstructured budgets are applied as masks (zeroed weights in the same dense tensors): the kept fractions "
    "are theoretical sizes, no wall-clock gain is implied. Only the structured export below is physically smaller."
)


def _md(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    text_cols = [c for c in df.columns  # labels, layer names: HTML-escaped
                 if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))]
    return markdown_table(df.assign(**{c: df[c].map(_md_text) for c in text_cols}), floatfmt=floatfmt)


def _md_text(value) -> str:
    """Markdown renders raw HTML: escape it so that a label such as ``<img src=x onerror=...>`` is text."""
    return html.escape(str(value), quote=False)


def _html_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    def cell(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else format(v, floatfmt)
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _jsonable(df: pd.DataFrame | None):
    if df is None:
        return None
    return json.loads(df.to_json(orient="records"))


def _zero_floor(tails, eps) -> float:
    """Where a zero tail is drawn on the log axis: a decade below the smallest value shown."""
    import numpy as np

    values = np.concatenate([np.asarray(tails, float), np.asarray(eps, float)])
    positive = values[values > 0]
    smallest = positive.min() if positive.size else 1.0
    return float(10.0 ** (np.floor(np.log10(smallest)) - 1))


@dataclass
class Profile:
    """The profile of one model. Tables (pandas DataFrames): ``units`` (one row per unit), ``layers``,
    ``curves`` (kept fraction against ε, S1-predicted and needed), ``skipped`` (parameters not profiled,
    with the reason), ``verification`` (with data: degradation at each ε's budgets, S1 checked per unit),
    ``bound`` (ReLU MLPs: S4), ``export`` (a dict: the structured export's measured size and time).
    ``summary``: the whole model's figures."""

    label: str
    source: str
    settings: object
    units: pd.DataFrame
    layers: pd.DataFrame
    summary: dict
    curves: pd.DataFrame
    skipped: pd.DataFrame
    meta: dict = field(default_factory=dict)
    verification: pd.DataFrame | None = None
    bound: pd.DataFrame | None = None
    export: dict | None = None
    data_name: str | None = None
    degradation: str | None = None
    notes: list = field(default_factory=list)
    prunability: dict | None = None  # one-shot global magnitude pruning (lqtheory.profiler.peers)
    peer_summary: dict = field(default_factory=dict)  # WeightWatcher's means over layers, with [peers]

    # ---------------------------------------------------------------- plots
    def plot_curves(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        c = self.curves
        for _name, grp in c[c.layer != "(model)"].groupby("layer", sort=False):
            ax.plot(grp.eps, grp.needed, color="0.75", lw=0.8)
        m = c[c.layer == "(model)"]
        ax.plot(m.eps, m.needed, "o-", color="C0", label="needed (exact), model")
        ax.plot(m.eps, m.predicted, "s--", color="C1", label="S1 guarantee, model")
        ax.set(xscale="log", xlabel="relative ℓ1 tail ε per unit", ylabel="kept fraction of weights")
        ax.set_title(f"{self.label}: compressibility curve (grey: layers, needed)", parse_math=False)  # literal $
        ax.legend()
        return fig

    def plot_layers(self):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        x = range(len(self.layers))
        ax.plot(x, self.layers.m_over_d, "o-", ms=3, label="implied kept fraction m/d")
        ax.plot(x, self.layers.pqi_mean, "s-", ms=3, label="mean PQI")
        ax.plot(x, self.layers.gini_mean, "^-", ms=3, label="mean Gini")
        ax.set(xlabel="layer (order of the model)", ylabel="value")
        ax.set_title(f"{self.label}: indices by layer", parse_math=False)  # a label like a$\foo$ stays literal
        ax.legend(fontsize=8)
        return fig

    def plot_verification(self):
        import matplotlib.pyplot as plt

        if self.verification is None:
            return None
        fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.6))
        v_all = self.verification
        axes[0].plot(v_all.eps.unique(), v_all.eps.unique(), "k:", label="ε (guaranteed ≥)")
        key = self.degradation if self.degradation in v_all else "drift"
        floor = _zero_floor(v_all.max_unit_tail, v_all.eps)
        every_eps = sorted(v_all.eps.unique())
        points: dict[tuple[float, float], list[float]] = {}  # coinciding points of the right panel share a label
        for c, (budget, v) in enumerate(v_all.groupby("budget", sort=False)):
            positive, zero = v[v.max_unit_tail > 0], v[v.max_unit_tail <= 0]
            if len(positive):
                axes[0].plot(positive.eps, positive.max_unit_tail, "o-", color=f"C{c}", label=f"{budget}: worst unit")
            if len(zero):  # a tail of exactly 0 has no place on a log axis: an open marker on the floor
                axes[0].plot(zero.eps, [floor] * len(zero), "v", color=f"C{c}", markerfacecolor="none",
                             clip_on=False, label=f"{budget}: worst unit tail exactly 0 (drawn at {floor:.0e})")
            axes[1].plot(v.kept_fraction, v[key], "o-", color=f"C{c}", label=f"{budget} budgets")
            for _, r in v.iterrows():
                points.setdefault((round(r.kept_fraction, 3), round(float(r[key]), 4)), []).append(float(r.eps))
        x_span = max(1e-9, float(v_all.kept_fraction.max() - v_all.kept_fraction.min()))
        previous, lift = None, 0
        for (x, y), eps in sorted(points.items()):
            eps = sorted(set(eps))
            text = "every ε" if eps == every_eps and len(eps) > 1 else "ε=" + ", ".join(f"{e:g}" for e in eps)
            # a label close to the previous one (same height, near in x) goes one line higher
            near = previous is not None and abs(x - previous[0]) < 0.15 * x_span and abs(y - previous[1]) < 1e-9
            lift = lift + 1 if near else 0
            axes[1].annotate(text, (x, y), xytext=(-4 if x >= 0.95 else 4, 5 + 9 * lift), textcoords="offset points",
                             fontsize=7, ha="right" if x >= 0.95 else "left")
            previous = (x, y)
        axes[0].set(xscale="log", yscale="log", xlabel="ε", ylabel="relative ℓ1 tail of a unit",
                    title="predicted ε vs measured tail")
        axes[0].set_ylim(bottom=floor / 2)
        axes[0].legend(fontsize=7)
        name = key.replace("_", " ")
        axes[1].set(xlabel="kept fraction of weights", ylabel=f"measured {name}",
                    title="pruned by the budgets (no retraining)")
        handles, names = axes[1].get_legend_handles_labels()
        if self.bound is not None:
            ax2 = axes[1].twinx()
            b = self.bound[self.bound.budget == "exact"]
            ax2.plot(self.verification[self.verification.budget == "exact"].kept_fraction, b.lq_bound_mean, "s--",
                     color="C4", label="S4 lq bound, mean |Δf| (exact budgets)")
            ax2.plot(self.verification[self.verification.budget == "exact"].kept_fraction, b.observed_mean, "^:",
                     color="C5", label="observed mean |Δf|")
            ax2.set(yscale="log", ylabel="output deviation")
            more, more_names = ax2.get_legend_handles_labels()
            handles, names = handles + more, names + more_names
        # one legend below the panel: inside, it covered the curves
        axes[1].legend(handles, names, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
        fig.subplots_adjust(left=0.08, right=0.9, bottom=0.34, top=0.92, wspace=0.35)
        return fig

    def figures(self) -> dict:
        figs = {"compressibility curve": self.plot_curves(), "indices by layer": self.plot_layers()}
        if self.verification is not None:
            figs["predicted vs measured"] = self.plot_verification()
        return figs

    # ---------------------------------------------------------------- exports
    def to_dict(self, units: bool = False) -> dict:
        out = dict(label=self.label, source=self.source, settings=self.settings.__dict__, summary=self.summary,
                   data=self.data_name, degradation=self.degradation, meta=self.meta, notes=self.notes + [_MASKS_NOTE],
                   layers=_jsonable(self.layers), curves=_jsonable(self.curves), skipped=_jsonable(self.skipped),
                   verification=_jsonable(self.verification), bound=_jsonable(self.bound),
                   export=None if self.export is None else {k: v for k, v in self.export.items() if k != "model"},
                   prunability=self.prunability, peers=self.peer_summary or None)
        if units:
            out["units"] = _jsonable(self.units)
        return out

    def to_json(self, path=None, units: bool = False) -> str:
        text = json.dumps(self.to_dict(units), indent=1, default=str)
        if path is not None:
            atomic_write_text(path, text)
        return text

    def _sections(self, timings: bool = True):
        s = self.settings
        yield "h1", f"Profile of {self.label}"
        yield "p", (f"Source: {self.source}. Units: Linear rows, Conv filters, attention/FFN projection rows. "
                    f"Indices: PQI I_(p={s.p:g}, q={s.q:g}), SI/TSI/m at q={s.si_q:g}; S1 kept counts at "
                    f"q={s.s1_q:g} for a relative ℓ1 tail ε per unit; SAP at η={s.eta:g}, γ={s.gamma:g}, β={s.beta:g}.")
        yield "h2", "Model"
        yield "table", pd.DataFrame([self.summary])
        yield "h2", "Layers"
        yield "table", self.layers.drop(columns=["model"])
        yield "figure", "indices by layer"
        yield "h2", "Compressibility curve"
        yield "p", ("Kept fraction of weights for every unit's relative ℓ1 tail ≤ ε: the S1 guarantee "
                    "(sufficient) and the exact count needed.")
        yield "table", self.curves[self.curves.layer == "(model)"].drop(columns=["layer"])
        yield "figure", "compressibility curve"
        if self.verification is not None:
            yield "h2", "Verification: pruned by the predicted budgets (no retraining)"
            yield "p", f"Data: {self.data_name}. Degradation measured as {self.degradation}."
            yield "table", self.verification
            if self.bound is not None:
                yield "p", "S4 (ReLU MLP): observed output deviation against the guaranteed bounds."
                yield "table", self.bound
            yield "figure", "predicted vs measured"
        yield "p", _MASKS_NOTE
        if self.export:
            yield "h2", "Structured export (physically smaller dense model)"
            row = {k: v for k, v in self.export.items() if not isinstance(v, (dict, list))}
            if not timings:
                row = {k: v for k, v in row.items() if k not in _TIMING_KEYS}
                yield "p", ("Measured CPU wall-clock times are left out of this copy of the report so that it is "
                            "byte-stable (they vary run to run); `lqtheory profile --export` reports them.")
            yield "table", pd.DataFrame([row])
        yield "h2", "Skipped parameters"
        yield "table", self.skipped.assign(shape=self.skipped["shape"].astype(str))
        for note in self.notes:
            yield "p", note

    def to_markdown(self, path=None, timings: bool = True) -> str:
        lines = []
        for kind, x in self._sections(timings):
            if kind == "h1":
                lines.append(f"# {_md_text(x)}\n")
            elif kind == "h2":
                lines.append(f"\n## {_md_text(x)}\n")
            elif kind == "p":
                lines.append(f"{_md_text(x)}\n")
            elif kind == "table":
                lines.append(_md(x) + "\n")
        text = "\n".join(lines)
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_html(self, path=None, timings: bool = True) -> str:
        """The self-contained HTML report; ``timings=False`` leaves out the measured wall-clock times of the
        export (machine- and load-dependent), for a copy that must be byte-stable."""
        text = _page(f"lqtheory profile: {self.label}", self.html_body(timings))
        if path is not None:
            atomic_write_text(path, text)
        return text

    def html_body(self, timings: bool = True) -> str:
        """The report's HTML without the page around it (plots embedded as base64 PNG)."""
        figs = self.figures()
        parts = []
        for kind, x in self._sections(timings):
            if kind in ("h1", "h2"):
                parts.append(f"<{kind}>{html.escape(x)}</{kind}>")
            elif kind == "p":
                parts.append(f"<p>{html.escape(x)}</p>")
            elif kind == "table":
                parts.append(_html_table(x))
            elif kind == "figure" and figs.get(x) is not None:
                parts.append(f'<img alt="{html.escape(x)}" src="data:image/png;base64,{_png(figs[x])}">')
        for fig in figs.values():  # figures not shown in a section
            if fig is not None:
                import matplotlib.pyplot as plt

                plt.close(fig)
        return "\n".join(parts)


#: export fields that are measured wall-clock times (left out with ``timings=False``)
_TIMING_KEYS = ("dense_seconds", "seconds", "measured_speedup")

def combined_html(profiles, comparison=None, title: str = "lqtheory profile") -> str:
    """One self-contained page: the comparison (if any), then every profile."""
    parts = [comparison.html_body()] if comparison is not None else []
    parts += [p.html_body() for p in profiles]
    return _page(title, "\n<hr>\n".join(parts))


def _page(title: str, body: str) -> str:
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;}table{border-collapse:collapse;"
             "font-size:12px;margin:0.5em 0;}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;}"
             "img{max-width:100%;}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n{body}\n</body></html>\n")


# -------------------------------------------------------------------------------------------------- comparison
@dataclass
class Comparison:
    """Two or more profiles of one architecture ranked by compressibility (``models``, ``layers``,
    ``units``), and with data the agreement of that ranking with the measured prunability."""

    profiles: list
    models: pd.DataFrame
    layers: pd.DataFrame
    units: pd.DataFrame
    agreement: dict | None
    metrics: pd.DataFrame | None = None  # every metric's Spearman rho with the one-shot prunability
    ranks: pd.DataFrame | None = None  # every metric's value and rank per model, and the prunability

    def to_markdown(self) -> str:
        out = ["# Compressibility comparison\n", _md(self.models), "\n## By layer\n", _md(self.layers),
               "\n## Unit by unit\n", _md(self.units)]
        if self.agreement:
            out += ["\n## Agreement with measured prunability\n", _md(pd.DataFrame([self.agreement]))]
        if self.ranks is not None:
            out += ["\n## Every metric's ranking (peers included with the [peers] extra)\n", _md(self.ranks)]
        if self.metrics is not None and len(self.metrics):
            out += ["\n## Which metric ranks the models like their one-shot prunability\n", _md(self.metrics)]
        return "\n".join(out)

    def to_html(self, path=None) -> str:
        text = _page("lqtheory profile: comparison", self.html_body())
        if path is not None:
            atomic_write_text(path, text)
        return text

    def html_body(self) -> str:
        body = ["<h1>Compressibility comparison</h1>", _html_table(self.models), "<h2>By layer</h2>",
                _html_table(self.layers), "<h2>Unit by unit</h2>", _html_table(self.units)]
        if self.agreement:
            body += ["<h2>Agreement with measured prunability</h2>", _html_table(pd.DataFrame([self.agreement]))]
        if self.ranks is not None:
            body += ["<h2>Every metric's ranking</h2>", _html_table(self.ranks)]
        if self.metrics is not None and len(self.metrics):
            body += ["<h2>Which metric ranks the models like their one-shot prunability</h2>",
                     _html_table(self.metrics)]
        return "\n".join(body)

    def to_dict(self) -> dict:
        return dict(models=_jsonable(self.models), layers=_jsonable(self.layers), units=_jsonable(self.units),
                    agreement=self.agreement, metrics=_jsonable(self.metrics), ranks=_jsonable(self.ranks))


def compare(profiles, key: str = "m_over_d") -> Comparison:
    """Rank profiles of one architecture: lower implied kept fraction ``m/d`` (``key``) = more compressible.

    ``models``: one row per model with its rank; ``layers``: the rank within every layer; ``units``: for
    every pair of models, the fraction of units (matched by layer and row) where the first is the more
    compressible. With verification data on every profile, ``agreement`` compares the compressibility
    ranking with the measured prunability: the degradation each model shows at the same ε budgets
    (the exact budgets: every unit's relative ℓ1 tail at most ε; mean over ε; lower = more prunable) —
    Kendall's τ between the two rankings (with two models: whether the signs of the differences agree)."""
    from scipy.stats import kendalltau

    profiles = list(profiles)
    if len(profiles) < 2:
        raise ValueError("compare needs two or more profiles")
    ref = list(profiles[0].layers.layer)
    for p in profiles[1:]:
        if list(p.layers.layer) != ref or list(p.layers["shape"]) != list(profiles[0].layers["shape"]):
            raise ValueError(f"{p.label} does not have the architecture of {profiles[0].label}: layers differ")
    labels = [p.label for p in profiles]
    if len(set(labels)) != len(labels):
        raise ValueError(f"profiles need distinct labels, got {labels}")
    from lqtheory.profiler.peers import RANKED_METRICS, rank_agreement

    models = pd.DataFrame([{k: p.summary[k] for k in ("model", "pqi_mean", "gini_mean", "m_over_d",
                                                      *[c for c in p.summary if c.startswith("kept@")])}
                           for p in profiles])
    models["rank"] = models[key].rank(method="min").astype(int)
    ranks = pd.DataFrame({"model": labels})
    for metric in RANKED_METRICS:  # every metric's ranking (1 = smallest value), peers included when present
        values = [p.summary.get(metric, p.peer_summary.get(metric)) for p in profiles]
        if all(v is not None and v == v for v in values):
            ranks[metric] = values
            ranks[f"rank_{metric}"] = ranks[metric].rank(method="min").astype(int)
    metrics = None
    if all(p.prunability is not None for p in profiles):
        ranks["prunability_kept"] = [p.prunability["kept_fraction"] for p in profiles]
        metrics = rank_agreement(ranks)
    lay = pd.concat([p.layers[["model", "layer", key, "pqi_mean"]] for p in profiles])
    lay["rank"] = lay.groupby("layer")[key].rank(method="min").astype(int)
    layers = lay.pivot(index="layer", columns="model", values="rank").reindex(ref).reset_index()
    pairs = []
    for i in range(len(profiles)):
        for j in range(i + 1, len(profiles)):
            a, b = profiles[i].units, profiles[j].units
            pairs.append(dict(first=labels[i], second=labels[j], units=len(a),
                              first_sparser_pqi=float((a.pqi.values > b.pqi.values).mean()),
                              first_smaller_m_over_d=float((a.m_over_d.values < b.m_over_d.values).mean())))
    agreement = None
    if all(p.verification is not None for p in profiles):
        deg = []
        for p in profiles:
            v = p.verification[p.verification.budget == "exact"]
            deg.append(float(v[p.degradation if p.degradation in v else "drift"].mean()))
        models["measured_degradation"] = deg
        models["prunability_rank"] = pd.Series(deg).rank(method="min").astype(int).values
        if len(profiles) == 2:
            same = (models[key][0] - models[key][1]) * (deg[0] - deg[1]) > 0
            agreement = dict(models=2, agree=bool(same), measure="sign of the differences")
        else:
            tau = kendalltau(models[key], deg).statistic
            agreement = dict(models=len(profiles), kendall_tau=float(tau), measure="Kendall tau")
    return Comparison(profiles, models, layers, pd.DataFrame(pairs), agreement, metrics, ranks)
