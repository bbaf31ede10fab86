"""``lqtheory.profile(model, data=None, ...)``: how compressible is a model, and how far can it be pruned.

Steps (each a batched call per block of equal row width, never a per-neuron loop):

1. units, layers and the whole model: PQI, SI, TSI, Gini, the implied kept fraction ``m(w)/d``, the S1
   kept counts for every ε, SAP's counts, and the compressibility curve (kept weights against ε,
   predicted by S1 and actually needed) — :mod:`lqtheory.profiler.measure`;
2. with data: prune every unit to its S1 budget at each ε (masks, no retraining), measure the
   degradation, and check the S1 guarantee unit by unit; for plain ReLU MLPs also the S4 bound
   (:func:`lqtheory.theory.bounds.network_bound`) beside the observed deviation;
3. optionally (``export=True``): a physically smaller dense model (:mod:`lqtheory.profiler.export`).

Room: profiler (``lqtheory profile``: how compressible is any model).
"""

from __future__ import annotations

import time

import pandas as pd
import torch

from lqtheory.engine.masks import unit_view
from lqtheory.engine.models import mlp_biases, mlp_weights
from lqtheory.profiler.evaluate import Evaluator, resolve_data
from lqtheory.profiler.export import export_structured
from lqtheory.profiler.loading import Loaded, ProfileInputError, load_model
from lqtheory.profiler.masking import budget_masks, masked_weights, model_parameter
from lqtheory.profiler.measure import CURVE_EPS, Settings, measure_units, needed_terms, profiled_weights
from lqtheory.profiler.peers import attach_peer_metrics, one_shot_prunability
from lqtheory.profiler.report import Profile
from lqtheory.theory.approximation import best_s_term_error, required_terms
from lqtheory.theory.bounds import network_bound
from lqtheory.theory.norms import gini_index, pq_index, si_implied_size, sparsity_index

__all__ = ["profile", "budget_masks", "masked_weights"]


def _eps_label(e: float) -> str:
    return f"{e:g}"


def _with_effective_weights(model: torch.nn.Module) -> tuple[torch.nn.Module, list[str]]:
    """``model``, or, when it has parametrized weights (``weight_norm``, ``spectral_norm``, any
    ``torch.nn.utils.parametrize``), a copy with each replaced by its effective weight as a plain
    parameter: the tensor the forward pass uses, and one that masks can zero in place. The user's model is
    not changed."""
    from torch.nn.utils import parametrize

    if not any(parametrize.is_parametrized(m) for m in model.modules()):
        return model, []
    import copy

    model = copy.deepcopy(model)
    baked = []
    for mname, module in list(model.named_modules()):
        if parametrize.is_parametrized(module):
            for pname in list(module.parametrizations):
                parametrize.remove_parametrizations(module, pname, leave_parametrized=True)
                baked.append(f"{mname}.{pname}" if mname else pname)
    return model, baked


def _layer_scope(weights, mask, s: Settings, scope: str) -> dict[str, torch.Tensor]:
    view = unit_view(weights, scope, mask)

    def one(v, m):
        m = None if mask is None else m
        return torch.stack([
            pq_index(v, s.p, s.q, mask=m).double(), sparsity_index(v, s.si_q, mask=m).double(),
            gini_index(v, mask=m).double(), si_implied_size(v, s.si_q, mask=m).double(),
        ], -1)

    vals = view.per_unit(one)
    return {k: vals[:, i] for i, k in enumerate(("pqi", "si", "gini", "m"))}


def _tables(label, weights, kinds, units, mask, s: Settings, curve_eps):
    names = list(units.names)
    layer = units.layer.cpu()
    cols = {
        "layer": [names[i] for i in layer.tolist()], "kind": [kinds[names[i]] for i in layer.tolist()],
        "unit": units.row.cpu().numpy(), "d": units.d.cpu().numpy(),
        "pqi": units.pqi.double().cpu().numpy(), "si": units.si.double().cpu().numpy(),
        "tsi": units.tsi.double().cpu().numpy(), "gini": units.gini.double().cpu().numpy(),
        "m_over_d": (units.m.double() / units.d.clamp_min(1)).cpu().numpy(),
        "sap_keep": (units.d - units.sap_prune).cpu().numpy(),
    }
    for i, e in enumerate(s.eps):
        cols[f"keep@{_eps_label(e)}"] = units.keep[i].cpu().numpy()
    unit_df = pd.DataFrame(cols)
    unit_df.insert(0, "model", label)

    # per layer: the layer's weights as one vector (layer scope), and sums of the unit budgets
    ls = _layer_scope(weights, mask, s, "layer")
    gs = _layer_scope(weights, mask, s, "global")
    n_layers = len(names)

    def per_layer(x):
        return torch.zeros(n_layers, dtype=torch.float64).index_add_(0, layer, x.double().cpu())

    n_units = torch.bincount(layer, minlength=n_layers)
    total = per_layer(units.d)
    rows = {
        "layer": names, "kind": [kinds[n] for n in names], "shape": [str(tuple(weights[n].shape)) for n in names],
        "units": n_units.numpy(), "weights": total.long().numpy(),
        "pqi_mean": (per_layer(units.pqi) / n_units).numpy(), "si_mean": (per_layer(units.si) / n_units).numpy(),
        "gini_mean": (per_layer(units.gini) / n_units).numpy(),
        "pqi_layer": ls["pqi"].cpu().numpy(), "gini_layer": ls["gini"].cpu().numpy(),
        "m_over_d": (per_layer(units.m) / total).numpy(),
        "sap_kept_fraction": (per_layer(units.d - units.sap_prune) / total).numpy(),
    }
    for i, e in enumerate(s.eps):
        rows[f"kept@{_eps_label(e)}"] = (per_layer(units.keep[i]) / total).numpy()
    layer_df = pd.DataFrame(rows)
    layer_df.insert(0, "model", label)

    all_d = float(units.d.sum())
    summary = {
        "model": label, "layers": n_layers, "units": int(units.d.numel()), "weights": int(all_d),
        "pqi_mean": float(units.pqi.double().mean()), "si_mean": float(units.si.double().mean()),
        "gini_mean": float(units.gini.double().mean()),
        "pqi_global": float(gs["pqi"][0]), "gini_global": float(gs["gini"][0]),
        "m_over_d": float(units.m.double().sum()) / all_d,
        "sap_kept_fraction": float((units.d - units.sap_prune).sum()) / all_d,
    }
    for i, e in enumerate(s.eps):
        summary[f"kept@{_eps_label(e)}"] = float(units.keep[i].sum()) / all_d

    # compressibility curve: kept fraction against ε, S1-predicted and actually needed, per layer and model
    view = unit_view(weights, "neuron", mask)
    pred = torch.cat([required_terms(v, s.s1_q, list(curve_eps), mask=None if mask is None else m)
                      for v, m in view.blocks], dim=1)
    need = torch.cat([needed_terms(v, curve_eps, None if mask is None else m) for v, m in view.blocks], dim=1)
    recs = []
    for j, e in enumerate(curve_eps):
        p_l, n_l = per_layer(pred[j]) / total, per_layer(need[j]) / total
        for li, name in enumerate(names):
            recs.append(dict(model=label, layer=name, eps=e, predicted=float(p_l[li]), needed=float(n_l[li])))
        recs.append(dict(model=label, layer="(model)", eps=e, predicted=float(pred[j].sum()) / all_d,
                         needed=float(need[j].sum()) / all_d))
    return unit_df, layer_df, summary, pd.DataFrame(recs)


def _budgets(units, weights, mask, s: Settings):
    """``{"S1": (eps, units), "exact": (eps, units)}``: the S1 guarantee's kept counts and the exact counts
    that reach a relative ℓ1 tail ε in every unit (:func:`needed_terms`)."""
    view = unit_view(weights, "neuron", mask)
    exact = torch.cat([needed_terms(v, s.eps, None if mask is None else m) for v, m in view.blocks], dim=1)
    return {"S1": units.keep, "exact": exact.to(units.keep.device)}


def _verify(loaded: Loaded, weights, units, transposed, evaluator: Evaluator, s: Settings, mask):
    """Prune by the budgets at each ε, measure; check the relative ℓ1 tail of every unit against ε."""
    dense = evaluator.outputs()
    base = evaluator.compare(dense, dense)
    view = unit_view(weights, "neuron", mask)
    rows = []
    for budget, counts in _budgets(units, weights, mask, s).items():
        for i, e in enumerate(s.eps):
            keep = counts[i]
            # S1 check: every unit's actual relative ℓ1 tail after keeping its budget is at most ε
            parts = view.split_units(keep.to(units.d.device))
            tails = torch.cat([
                best_s_term_error(v.double(), k, p=1.0, mask=None if mask is None else m)
                / v.double().abs().sum(-1).clamp_min(1e-300) for (v, m), k in zip(view.blocks, parts, strict=True)
            ])
            masks = budget_masks(weights, keep, mask)
            with masked_weights(loaded.model, masks, transposed):
                pruned = evaluator.outputs()
            m = evaluator.compare(dense, pruned)
            row = dict(model=loaded.label, budget=budget, eps=e, kept_fraction=float(keep.sum()) / float(units.d.sum()),
                       max_unit_tail=float(tails.max()), mean_unit_tail=float(tails.mean()),
                       tail_within_eps=bool((tails <= e * (1 + 1e-9)).all()), **m)
            if "accuracy" in m:
                row["accuracy_drop"] = base["accuracy"] - m["accuracy"]
            rows.append(row)
    frame = pd.DataFrame(rows)
    if "accuracy" in base:
        frame.insert(4, "dense_accuracy", base["accuracy"])
    return frame, dense


def _mlp_bound(loaded: Loaded, all_budgets, evaluator: Evaluator, s: Settings, units):
    """S4 for a plain ReLU MLP: the observed deviation and the oracle and lq bounds at each ε's budgets."""
    try:
        ws = [w.detach() for w in mlp_weights(loaded.model)]
        bs = [b.detach() for b in mlp_biases(loaded.model)]
    except ValueError:
        return None
    # each layer's budget is its profiled weight's, found by identity: a tied matrix was profiled once
    # and its budget serves every layer that uses it
    name_of = {id(p): n for n, p in loaded.model.named_parameters()}
    names = list(units.names)
    layer_names = [name_of.get(id(lin_w)) for lin_w in mlp_weights(loaded.model)]
    if any(n not in names for n in layer_names):
        return None
    rows_of = [units.layer == names.index(n) for n in layer_names]
    x = evaluator.batch.x.reshape(len(evaluator.batch), -1).to(ws[0].dtype)
    rows = []
    for budget, counts in all_budgets.items():
        for i, e in enumerate(s.eps):
            budgets = [counts[i][r.to(counts.device)] for r in rows_of]
            nb = network_bound(ws, bs, x, budgets, q=s.s1_q)
            rows.append(dict(model=loaded.label, budget=budget, eps=e, observed_max=float(nb.observed.max()),
                             observed_mean=float(nb.observed.mean()), oracle_bound_mean=float(nb.oracle.mean()),
                             lq_bound_mean=float(nb.lq.mean()),
                             bound_holds=bool((nb.observed <= nb.lq * (1 + 1e-5) + 1e-6).all())))
    return pd.DataFrame(rows)


def profile(model, data=None, *, arch: str | None = None, eps=None, settings: Settings | None = None,
            n_data: int = 256, export: bool | float = False, input_shape=None, label: str | None = None,
            curve_eps=CURVE_EPS, trust_pickle: bool = False, peers: bool = True) -> Profile:
    """Profile ``model`` (an ``nn.Module`` or a path, see :func:`lqtheory.profiler.load_model`).

    ``data`` (a registry data set name, ``"english"``, ``"sample-images"``, a path, a tensor, ``(x, y)``
    or a list of texts) turns on verification: pruning by the predicted budgets at every ε and measuring
    the degradation. ``eps``: the relative ℓ1 tails (default 0.3, 0.1, 0.03, 0.01). ``export``: also
    build a physically smaller model with Torch-Pruning (True: at ε = 0.1; a float: at that ε).
    ``trust_pickle``: allow unpickling a whole pickled module from a file (it can run arbitrary code).
    ``peers``: add WeightWatcher's per-layer metrics when the ``[peers]`` extra is installed (False skips
    them: WeightWatcher costs seconds per conv net) and, with data, the one-shot prunability.
    Returns a :class:`Profile`. Raises :class:`ProfileInputError` on bad input.
    """
    start = time.perf_counter()
    s = settings or Settings()
    if eps is not None:
        s = Settings(**{**s.__dict__, "eps": tuple(eps)})
    loaded = load_model(model, arch=arch, input_shape=input_shape, trust_pickle=trust_pickle)
    if label:
        loaded.label = label
    if any(t.is_meta for t in loaded.model.parameters()):
        raise ProfileInputError(f"{loaded.label}: its weights are on the meta device (shapes without values); "
                                "load real weights first (e.g. load_state_dict(..., assign=True))")
    effective = []
    if loaded.modality == "tensor":  # a text model's encode() holds the original module: left as it is
        loaded.model, effective = _with_effective_weights(loaded.model)
    weights, kinds, skipped = profiled_weights(loaded.model)
    if not weights:
        raise ProfileInputError(f"{loaded.label}: no prunable layers (no Linear, Conv or attention projection "
                                f"weights; {len(skipped)} other parameter(s))")
    transposed = {n for n, w in weights.items() if w.shape != model_parameter(loaded.model, n).shape}
    mask = None
    if loaded.mask is not None:
        mask = {n: (loaded.mask[n].t() if n in transposed else loaded.mask[n]) for n in weights if n in loaded.mask}
        mask.update({n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items() if n not in mask})
    with torch.no_grad():
        units = measure_units(weights, s, mask)
        unit_df, layer_df, summary, curves = _tables(loaded.label, weights, kinds, units, mask, s,
                                                     sorted(set(curve_eps) | set(s.eps), reverse=True))
    prof = Profile(label=loaded.label, source=loaded.source, settings=s, units=unit_df, layers=layer_df,
                   summary=summary, curves=curves, skipped=pd.DataFrame(skipped, columns=["name", "shape", "reason"]),
                   meta=dict(loaded.meta))
    if effective:
        prof.notes.append(f"parametrized weights ({', '.join(effective)}) profiled as their effective weights")

    if peers:
        attach_peer_metrics(prof, loaded.model, list(weights))  # WeightWatcher's metrics, or how to get them
    batch = resolve_data(data, loaded, n_data)
    if batch is not None:
        evaluator = Evaluator(loaded, batch)
        prof.data_name = batch.name
        prof.degradation = evaluator.degradation_key()
        prof.verification, _ = _verify(loaded, weights, units, transposed, evaluator, s, mask)
        if peers and mask is None:  # the peers' yardstick: one-shot global magnitude pruning (issue #21)
            prof.prunability = one_shot_prunability(loaded, evaluator, weights, transposed)
        if loaded.modality == "tensor":
            prof.bound = _mlp_bound(loaded, _budgets(units, weights, mask, s), evaluator, s, units)
        if export is not False:
            at = 0.1 if export is True else float(export)
            prof.export = export_structured(loaded, evaluator, s1_q=s.s1_q, eps=at)
    elif export is not False:
        prof.notes.append("export skipped: it needs data to run the model (example inputs and timing)")
    prof._loaded = loaded
    prof.meta["seconds"] = time.perf_counter() - start
    return prof
