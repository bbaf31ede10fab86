"""Structured export: turn budgets into a physically smaller dense model with Torch-Pruning.

Whole neurons or filters can only go where a layer's *units* are compressible as a set. The budget is
the same question one level up: for every prunable layer, the vector of its units' ℓ1 norms is a weight
vector like any other, and the layer keeps the fewest units that carry all but at most ``eps`` of its ℓ1
mass (:func:`lqtheory.profiler.measure.needed_terms`, exact). S1's sufficient count
(:func:`lqtheory.theory.approximation.required_terms`) is reported beside it; on real weights it is usually
the whole layer, so it would export nothing. Torch-Pruning
(``torch_pruning.pruner.MagnitudePruner``, ℓ1 group importance) removes the rest, together with every
coupled layer (the next layer's inputs, BatchNorm channels, depthwise convolutions, residual adds).
The output layer is never pruned; in transformers only the FFN intermediate neurons are (attention
heads stay whole). The result is measured: parameters, multiply-adds, CPU wall-clock time of a forward
pass on the verification data, and the output drift against the dense model.

Room: profiler (``lqtheory profile``: how compressible is any model).
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from lqtheory.profiler.evaluate import Evaluator
from lqtheory.profiler.measure import needed_terms
from lqtheory.theory.approximation import required_terms

__all__ = ["export_structured"]


def _time(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def export_structured(loaded, evaluator, *, s1_q: float = 0.5, eps: float = 0.1, repeats: int = 5) -> dict:
    """A smaller copy of ``loaded.model`` (see the module docstring) and its measured figures (a dict;
    the model itself under ``"model"`` is dropped from reports)."""
    try:
        import torch_pruning as tp
    except ImportError:
        return {"status": "skipped: torch-pruning is not installed (pip install torch-pruning, or .[models])"}
    text = loaded.modality == "text"
    original = loaded.model
    if text:  # a sentence-transformers model: prune the Hugging Face model inside it
        inner = getattr(original[0], "auto_model", None) if isinstance(original, nn.Sequential) else original
        if inner is None:
            return {"status": "skipped: not a sentence-transformers model with a Hugging Face backbone"}
        tok = original.tokenizer if hasattr(original, "tokenizer") else None
        example = dict(tok(evaluator.batch.x[:2], padding=True, return_tensors="pt")) if tok else None
        if example is None:
            return {"status": "skipped: no tokenizer to build example inputs"}
    else:
        inner = original
        example = evaluator.batch.x[:2]
    if isinstance(inner, torch.jit.ScriptModule):
        return {"status": "skipped: TorchScript modules cannot be restructured"}
    linears = [m for m in inner.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    if text:
        roots = [m for n, m in inner.named_modules() if n.endswith("intermediate.dense") and isinstance(m, nn.Linear)]
        ignored = [m for m in linears if m not in roots]
    else:
        ignored = [linears[-1]] if linears else []
        roots = [m for m in linears if m not in ignored and not (isinstance(m, nn.Conv2d) and m.groups > 1)]
    if not roots:
        return {"status": "skipped: no layer whose neurons or filters can be removed"}
    ratios, guaranteed = {}, {}
    for m in roots:
        norms = m.weight.detach().flatten(1).abs().sum(1).double()
        keep = int(needed_terms(norms.unsqueeze(0), (eps,))[0, 0])  # exact: tail of the norm vector <= eps
        keep = max(keep, 1)  # a layer keeps at least one unit (eps = 1 would ask for none)
        guaranteed[m] = int(required_terms(norms, s1_q, eps))  # S1's sufficient count, reported beside it
        # Torch-Pruning keeps int(n * (1 - ratio)) units: aim half a unit above `keep` so rounding gives `keep`
        ratios[m] = max(0.0, (norms.numel() - keep - 0.5) / norms.numel())
    dense_out = evaluator.outputs()
    dense_params = sum(p.numel() for p in original.parameters())
    smaller = copy.deepcopy(inner)
    roots_copy = {dict(smaller.named_modules())[n]: ratios[m] for n, m in inner.named_modules() if m in ratios}
    ignored_copy = [dict(smaller.named_modules())[n] for n, m in inner.named_modules() if m in ignored]
    try:
        ops_dense, _ = tp.utils.count_ops_and_params(inner, example)
        pruner = tp.pruner.MagnitudePruner(smaller, example, importance=tp.importance.MagnitudeImportance(p=1),
                                           pruning_ratio=0.0, pruning_ratio_dict=roots_copy,
                                           ignored_layers=ignored_copy, global_pruning=False)
        pruner.step()
        ops_small, _ = tp.utils.count_ops_and_params(smaller, example)
    except Exception as err:  # Torch-Pruning could not trace this model: say so, keep the profile
        return {"status": f"failed: Torch-Pruning could not restructure the model ({type(err).__name__}: {err})"[:300]}
    if text:
        wrapped = copy.deepcopy(original)
        holder = wrapped[0]  # sentence-transformers >= 5 exposes the backbone as the read-only `auto_model`
        attr = "model" if isinstance(getattr(type(holder), "auto_model", None), property) else "auto_model"
        setattr(holder, attr, smaller)
        small_model = wrapped
    else:
        small_model = smaller
    small_loaded = copy.copy(loaded)
    small_loaded.model = small_model
    if text:
        def encode(texts, _st=small_model):
            return _st.encode(list(texts), convert_to_tensor=True, batch_size=64, show_progress_bar=False).float()
        small_loaded.encode = encode
    small_eval = Evaluator(small_loaded, evaluator.batch)
    small_out = small_eval.outputs()
    measures = evaluator.compare(dense_out, small_out)
    with torch.no_grad():
        t_dense = _time(evaluator.outputs, repeats)
        t_small = _time(small_eval.outputs, repeats)
    small_params = sum(p.numel() for p in small_model.parameters())
    return {
        "status": "ok", "eps": eps,
        # counted in the exported model itself, so the counts and the parameters always agree
        "layers_pruned": sum(m.weight.shape[0] < m0.weight.shape[0] for m, m0 in zip(roots_copy, ratios, strict=True)),
        "units_kept_exact": sum(m.weight.shape[0] for m in roots_copy),
        "units_kept_s1": sum(guaranteed.values()), "units": sum(m.weight.shape[0] for m in ratios),
        "dense_params": int(dense_params), "params": int(small_params),
        "size_ratio": small_params / dense_params,
        "theoretical_speedup": float(ops_dense) / float(ops_small) if ops_small else float("nan"),
        "dense_seconds": t_dense, "seconds": t_small, "measured_speedup": t_dense / t_small,
        "threads": torch.get_num_threads(), "inputs": len(evaluator.batch),
        **{f"export_{k}": v for k, v in measures.items()},
        "model": small_model,
    }
