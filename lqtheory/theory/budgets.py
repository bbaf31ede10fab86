"""Bound-optimal per-neuron budgets (S7): the separable S4 objective and its minimisers [derived: S7].

The conventions are those of :mod:`lqtheory.theory.bounds`, the entry point that re-exports these names.

Room: theory (the paper's mathematics; imports only lqtheory.common).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lqtheory.common.checks import (
    check_exponent,
    check_tensor,
)
from lqtheory.theory.network_bound import check_network
from lqtheory.theory.neuron_bounds import check_lipschitz
from lqtheory.theory.norms import lq_norm

__all__ = [
    "s4_coefficients",
    "s4_objective",
    "allocate_budgets",
    "uniform_budgets",
]


# --------------------------------------------------------------------------------------------------
# S7: budget allocation
# --------------------------------------------------------------------------------------------------
def s4_coefficients(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    q: float,
    lipschitz: float = 1.0,
    *,
    biases: Sequence[torch.Tensor | None] | None = None,
    activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu,
) -> list[torch.Tensor]:
    """Per-neuron coefficients ``c_j`` of a separable form of the S4 bound, one tensor per layer [derived: S7].

    Keep the S4 argument but track the error of every neuron instead of its maximum:
    ``δ^(l) = |h^(l) - h̃^(l)|`` (a vector) obeys ``δ^(l) <= L_σ (T^(l) ||h^(l-1)||_∞ + |W_l| δ^(l-1))``,
    using ``|W̃_l| <= |W_l|`` entrywise so nothing depends on the budgets. Unrolled, with
    ``A^(l) = |V| (L_σ|W_L|) ... (L_σ|W_{l+1}|)`` (``A^(L+1) = I``) the ℓ1 path weights from layer l to the
    outputs and ``a_l = max_x ||h^(l)(x)||_∞`` over the given inputs:

        Σ_k |f_k - f̃_k|  <=  Σ_l Σ_j c_j^(l) (s_j^(l))^(1-1/q)   for every input in x, with
        c_j^(l) = L_σ a_{l-1} ||W_l[j]||_q Σ_k A^(l)_{kj}      (hidden layers l = 1..L),
        c_k^(V) = a_L ||V[k]||_q                                  (output rows).

    This is the objective :func:`allocate_budgets` minimises (with the Stechkin-factor conventions of
    the module docstring the bound holds with each ``s^(1-1/q)`` term replaced by :func:`stechkin_factor`).
    ``biases`` must be given if the network has biases: the activations ``a_l`` depend on them.
    Returns ``[c^(1), ..., c^(L), c^(V)]``, shaped like the rows of each weight matrix.
    """
    q = check_exponent(q, "q")
    lip = check_lipschitz(lipschitz)
    weights, biases = check_network(weights, biases, x)
    h = x.reshape(-1, x.shape[-1])
    if h.shape[0] == 0:
        raise ValueError("x holds no inputs")
    act_max = []
    for w, b in zip(weights[:-1], biases[:-1], strict=True):
        act_max.append(h.abs().amax())
        h = activation(torch.addmm(b, h, w.T))
    act_max.append(h.abs().amax())
    # downstream[l]: column sums of A^(l+1) (path weights from layer l's outputs), built back to front
    downstream = [weights[-1].abs().sum(0)]
    for w in reversed(weights[1:-1]):
        downstream.append(lip * (downstream[-1] @ w.abs()))
    downstream.reverse()  # downstream[l] belongs to hidden layer l (0-based)
    coefficients = [lip * act_max[layer] * lq_norm(w, q) * downstream[layer] for layer, w in enumerate(weights[:-1])]
    coefficients.append(act_max[-1] * lq_norm(weights[-1], q))
    return coefficients


def s4_objective(coefficients, budgets, q: float) -> torch.Tensor:
    """The continuous S7 objective ``Σ_j c_j s_j^(1-1/q)`` (a 0-d tensor) [derived: S7].

    ``coefficients`` and ``budgets`` are tensors of one shape, or equally long lists of them (as returned
    by :func:`s4_coefficients` / :func:`allocate_budgets`); budgets may be real-valued and must be > 0
    where the coefficient is > 0.
    """
    q = check_exponent(q, "q")
    c, shapes = _flatten_coefficients(coefficients)
    flat, kind = _flatten_bound(budgets, c, "budgets")
    if flat is None:
        raise TypeError("budgets must be given")
    if kind == "per-layer":
        if not isinstance(shapes, list):
            raise TypeError("budgets may be a list only when coefficients is a list of per-layer tensors")
        flat = _per_layer_bound(budgets, flat, shapes, c, "budgets")
    s = flat.double()
    if bool(((s <= 0) & (c > 0)).any()):
        raise ValueError("budgets must be > 0 wherever the coefficient is > 0")
    terms = torch.where(c > 0, c * s.clamp_min(torch.finfo(c.dtype).tiny).pow(1.0 - 1.0 / q), torch.zeros_like(c))
    return terms.sum()


def _flatten_coefficients(coefficients):
    """Coefficients as one flat float64 tensor, plus the shapes to split results back (None for a tensor)."""
    if isinstance(coefficients, torch.Tensor):
        check_tensor(coefficients, "coefficients")
        return coefficients.double().reshape(-1), None
    if not isinstance(coefficients, Sequence) or len(coefficients) == 0:
        raise TypeError("coefficients must be a tensor or a non-empty list of tensors")
    for i, c in enumerate(coefficients):
        check_tensor(c, f"coefficients[{i}]")
    device = coefficients[0].device
    flat = torch.cat([c.double().reshape(-1).to(device) for c in coefficients])
    return flat, [c.shape for c in coefficients]


def _flatten_bound(value, c: torch.Tensor, name: str):
    """An int, None, a tensor or a list of tensors matching the coefficients, as a flat tensor (or None)."""
    if value is None:
        return None, None
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be numeric, got dtype {value.dtype}")
        flat = value.to(c.device).reshape(-1) if value.numel() == c.numel() else value.to(c.device)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        flat = (
            torch.full_like(c, float(value))
            if isinstance(value, float)
            else torch.full(c.shape, value, dtype=torch.long, device=c.device)
        )
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        parts = []
        for i, v in enumerate(value):
            if isinstance(v, torch.Tensor):
                parts.append(v.to(c.device).reshape(-1))
            elif isinstance(v, int) and not isinstance(v, bool):
                parts.append(None)  # an int per layer: broadcast once the layer sizes are known
            else:
                raise TypeError(f"{name}[{i}] must be an int or a tensor, got {type(v).__name__}")
        return parts, "per-layer"
    else:
        raise TypeError(f"{name} must be None, an int, a tensor or a list of tensors, got {type(value).__name__}")
    try:
        flat = torch.broadcast_to(flat, c.shape)
    except RuntimeError as err:
        raise ValueError(f"{name} of shape {tuple(value.shape)} does not match the coefficients") from err
    return flat, None


def _per_layer_bound(value, parts, shapes, c, name):
    """Assemble a list-of-layers bound (ints or tensors) into one flat tensor aligned with ``c``."""
    if len(value) != len(shapes):
        raise ValueError(f"{name} has {len(value)} entries but coefficients has {len(shapes)} layers")
    pieces = []
    for v, part, shape in zip(value, parts, shapes, strict=True):
        n = int(torch.Size(shape).numel())
        if part is None:
            pieces.append(torch.full((n,), v, dtype=torch.long, device=c.device))
        else:
            if part.numel() not in (1, n):
                raise ValueError(f"{name} entry of {part.numel()} values does not match a layer of {n} units")
            pieces.append(torch.broadcast_to(part, (n,)))
    dtypes = {p.dtype for p in pieces}
    if any(dt.is_floating_point for dt in dtypes):
        pieces = [p.double() for p in pieces]
    return torch.cat(pieces)


def _as_int_bound(value: torch.Tensor, name: str) -> torch.Tensor:
    if value.is_floating_point():
        if not bool(torch.isfinite(value).all()) or not bool((value == value.round()).all()):
            raise ValueError(f"{name} must hold finite whole numbers")
    return value.long()


def _clipped_sum(t: float, weight: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> float:
    """``Σ_j clip(t w_j, l_j, u_j)``: one bisection step, over all units at once."""
    return float(torch.minimum(torch.maximum(t * weight, lower), upper).sum())


def _waterfill(weight: torch.Tensor, total: float, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Solve ``Σ_j clip(t w_j, l_j, u_j) = total`` for ``t >= 0`` (float64, ``w >= 0``, total feasible).

    The sum is continuous and non-decreasing in t: bisection on t over all units at once, then the exact
    ``t`` for the active set it identifies (so the result sums to ``total`` up to rounding).
    """
    positive = weight > 0
    if not bool(positive.any()):
        return lower.clone()
    # t large enough that every positive-weight unit sits at its upper bound (or is as large as needed)
    finite_upper = torch.where(torch.isfinite(upper), upper, torch.full_like(upper, total))
    hi = float((finite_upper[positive] / weight[positive]).max()) * 2.0 + 1.0
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _clipped_sum(mid, weight, lower, upper) < total:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    t = 0.5 * (lo + hi)
    s = torch.minimum(torch.maximum(t * weight, lower), upper)
    free = positive & (t * weight > lower) & (t * weight < upper)
    if bool(free.any()):
        fixed_sum = s[~free].sum()
        t_exact = (total - fixed_sum) / weight[free].sum()
        s_free = torch.minimum(torch.maximum(t_exact * weight, lower), upper)
        s = torch.where(free, s_free, s)
    return s


def _continuous_budgets(c: torch.Tensor, total: int, q: float, low: torch.Tensor, up) -> torch.Tensor:
    """The continuous optimum of :func:`allocate_budgets` (float64) on the integer box ``[low, up]``."""
    low_f = low.double()
    up_f = torch.full_like(c, float("inf")) if up is None else up.double()
    weight = c.pow(q)  # s_j ∝ c_j^q away from the box
    s = _waterfill(weight, float(total), low_f, up_f)
    remaining = float(total) - float(s.sum())
    zero = weight == 0
    if remaining > 0.5 and bool(zero.any()):
        # positive-weight units are all at their upper bounds: spread the rest over the indifferent units
        s_zero = _waterfill(zero.double(), float(s[zero].sum()) + remaining, low_f * zero, up_f.masked_fill(~zero, 0))
        s = torch.where(zero, s_zero, s)
    return torch.minimum(torch.maximum(s, low_f), up_f)


def allocate_budgets(
    coefficients,
    total: int,
    q: float,
    lower=1,
    upper=None,
    *,
    integer: bool = True,
    rounding: str = "optimal",
):
    """Budgets minimising ``Σ_j c_j s_j^(1-1/q)`` s.t. ``Σ_j s_j = total``, ``lower <= s <= upper`` [derived: S7].

    Continuous relaxation: for ``0 < q < 1`` the objective is convex and decreasing in each ``s_j``, and
    the KKT conditions give ``s_j = clip(t c_j^q, lower_j, upper_j)`` with one multiplier ``t`` chosen so
    the budgets sum to ``total`` (water-filling; found by bisection over all units at once). At ``q = 1``
    the objective does not depend on ``s``; the same ``s ∝ c`` rule (its limit) is used. Units with
    ``c_j = 0`` stay at ``lower`` unless the others are all at ``upper``; the excess is then spread over
    them uniformly (water-filling with equal weights), since the objective cannot tell them apart.

    Integer budgets (``integer=True``, the default) always sum to ``total`` exactly and stay in the box.
    ``rounding="optimal"`` (default) returns the exact integer minimiser: the objective is separable and
    convex, so the best allocation takes the ``total - Σ lower`` largest marginal gains
    ``c_j ((k-1)^(1-1/q) - k^(1-1/q))`` over all units (greedy is exact); it is found by a threshold
    bisection started from the continuous optimum (some integer optimum lies at or above
    ``floor(s_cont)``: those increments all gain at least the relaxation's multiplier), with no loop
    over units; ties go to the lower index. It is therefore never
    worse than any other feasible integer allocation, uniform budgets included.
    ``rounding="largest-remainder"``: floors of the continuous optimum plus one for the largest fractional
    parts (each unit moves by less than 1; can lose to uniform budgets when budgets are tiny).
    At ``q = 1`` (flat objective) largest remainders are used. ``integer=False`` returns the continuous
    optimum in float64.

    ``coefficients``: a tensor of ``c_j >= 0`` (any shape), or a list of per-layer tensors (as from
    :func:`s4_coefficients`), in which case the result is a list of the same shapes. ``lower``/``upper``:
    ints, tensors of the coefficients' shape, or per-layer lists of ints/tensors; ``upper=None`` means no
    upper bound (pass the row lengths ``d_j`` to forbid budgets beyond a row). ``total`` must satisfy
    ``Σ lower <= total <= Σ upper``, else ValueError.
    """
    q = check_exponent(q, "q")
    if not isinstance(integer, bool):
        raise TypeError(f"integer must be a bool, got {type(integer).__name__}")
    if rounding not in ("optimal", "largest-remainder"):
        raise ValueError(f"rounding must be 'optimal' or 'largest-remainder', got {rounding!r}")
    c, shapes = _flatten_coefficients(coefficients)
    if bool((c < 0).any()):
        raise ValueError("coefficients must be >= 0")
    if isinstance(total, bool) or not isinstance(total, int):
        if isinstance(total, torch.Tensor) and total.numel() == 1 and not total.is_floating_point():
            total = int(total)
        else:
            raise TypeError(f"total must be an int, got {type(total).__name__}")

    bounds = {}
    for name, value in (("lower", lower), ("upper", upper)):
        flat, kind = _flatten_bound(value, c, name)
        if kind == "per-layer":
            if not isinstance(shapes, list):
                raise TypeError(f"{name} may be a list only when coefficients is a list of per-layer tensors")
            flat = _per_layer_bound(value, flat, shapes, c, name)
        bounds[name] = None if flat is None else _as_int_bound(flat, name)
    low = bounds["lower"]
    if low is None:
        raise TypeError("lower must be an int, a tensor or a list, not None")
    if bool((low < 0).any()):
        raise ValueError("lower must be >= 0")
    up = bounds["upper"]
    if up is not None and bool((up < low).any()):
        raise ValueError("upper must be >= lower for every unit")
    if total < int(low.sum()):
        raise ValueError(f"total={total} is infeasible: below the sum of the lower bounds, {int(low.sum())}")
    if up is not None and total > int(up.sum()):
        raise ValueError(f"total={total} is infeasible: above the sum of the upper bounds, {int(up.sum())}")

    s = _continuous_budgets(c, total, q, low, up)

    if integer:
        if rounding == "largest-remainder" or q == 1.0:  # at q = 1 every allocation is optimal
            s = _round_keep_total(s, total, low, up)
        else:
            # A positive unit left at 0 weights makes the objective infinite (c s^(1-1/q) at s = 0). When
            # the total lets every positive unit have one weight, every optimum gives each one at least
            # one, so solve on that box: the continuous start must be that box's optimum.
            one = torch.ones_like(low) if up is None else up.clamp_max(1)
            low_finite = torch.where(c > 0, torch.maximum(low, one), low)
            if not torch.equal(low_finite, low) and int(low_finite.sum()) <= total:
                low, s = low_finite, _continuous_budgets(c, total, q, low_finite, up)
            s = _integer_optimum(c, s, total, low, up, 1.0 / q - 1.0)
    if shapes is None:
        return s.reshape(coefficients.shape)
    sizes = [int(torch.Size(shape).numel()) for shape in shapes]
    return [part.reshape(shape) for part, shape in zip(torch.split(s, sizes), shapes, strict=True)]


def uniform_budgets(row_lengths, total: int, lower=1):
    """The same kept fraction in every row: ``s_j ∝ d_j`` with ``Σ_j s_j = total`` and ``lower <= s_j <= d_j``.

    The baseline S7 compares against ("uniform sparsity"): continuous ``s_j = t d_j`` clipped to the box
    (water-filling), then largest-remainder rounding (ties: lower index), so the total is exact.
    ``row_lengths``: an integer tensor of ``d_j >= 0``, or a list of them / of ints per layer (as
    ``[w.shape[1]] * rows``); the result has the same structure (LongTensors). ``lower``: an int or a
    matching tensor/list. ``Σ lower <= total <= Σ d`` or ValueError.
    """
    if isinstance(row_lengths, torch.Tensor):
        parts, is_list = [row_lengths], False
    elif isinstance(row_lengths, Sequence) and not isinstance(row_lengths, (str, bytes)) and len(row_lengths):
        parts, is_list = list(row_lengths), True
    else:
        raise TypeError("row_lengths must be an integer tensor or a non-empty list of them")
    as_tensors = []
    for i, part in enumerate(parts):
        if not isinstance(part, torch.Tensor) or part.is_floating_point() or part.dtype == torch.bool:
            raise TypeError(f"row_lengths[{i}] must be an integer tensor, got {type(part).__name__}")
        if bool((part < 0).any()):
            raise ValueError("row_lengths must be >= 0")
        as_tensors.append(part.double())
    coefficients = as_tensors if is_list else as_tensors[0]
    # s ∝ c^q with q = 1 is s ∝ d; the upper bounds are the row lengths themselves
    upper = parts if is_list else parts[0]
    return allocate_budgets(coefficients, total, 1.0, lower, upper)


def _round_keep_total(s: torch.Tensor, total: int, low: torch.Tensor, up: torch.Tensor | None) -> torch.Tensor:
    """Largest-remainder rounding of a feasible real allocation: exact total, inside the integer box."""
    floor = s.floor().long()
    floor = torch.maximum(floor, low)
    if up is not None:
        floor = torch.minimum(floor, up)
    extra = total - int(floor.sum())
    remainder = s - floor.double()
    room = torch.ones_like(floor, dtype=torch.bool) if up is None else floor < up
    if extra < 0 or extra > int(room.sum()):
        raise RuntimeError(f"internal rounding error: {extra} units left for {int(room.sum())} open slots")
    key = remainder.masked_fill(~room, float("-inf"))
    order = torch.sort(key, descending=True, stable=True).indices  # ties: lower index first
    bump = torch.zeros_like(floor)
    bump[order[:extra]] = 1
    return floor + bump


def _marginal_gain(c: torch.Tensor, k: torch.Tensor, a: float) -> torch.Tensor:
    """``c ((k-1)^(-a) - k^(-a))``: the objective's drop from a unit's k-th weight (``inf`` at k = 1).

    Written as ``c k^(-a) expm1(-a log1p(-1/k))`` to avoid the cancellation of the plain difference.
    """
    kf = k.clamp_min(1).double()
    gain = c * kf.pow(-a) * torch.expm1(-a * torch.log1p(-1.0 / kf))
    return torch.where(k <= 1, torch.full_like(gain, float("inf")), gain)


def _taken(mu: float, c, base, cap, a: float) -> torch.Tensor:
    """Per unit, how many increments above ``base`` (up to ``cap``) have a marginal gain ``>= mu``.

    The gain of increment k lies in ``[-c g'(k), -c g'(k-1)]`` (``g(s) = s^(-a)`` convex), so the last k
    with gain ``>= mu`` is ``floor(k̂)`` or ``floor(k̂) + 1`` with ``k̂ = (a c / mu)^(1/(1+a))``; two exact
    checks each way absorb rounding. O(1) vector operations, no loop over units.
    """
    k_hat = (a * c / mu).pow(1.0 / (1.0 + a))
    k = torch.minimum(k_hat, cap.double() + 1.0).floor().long().clamp_min(1)
    for _ in range(2):
        k = torch.where(_marginal_gain(c, k + 1, a) >= mu, k + 1, k)
    for _ in range(2):
        k = torch.where((k > 1) & (_marginal_gain(c, k, a) < mu), k - 1, k)
    return torch.minimum(torch.maximum(k, base), cap) - base


def _integer_optimum(c, s_cont, total: int, low, up, a: float) -> torch.Tensor:
    """Exact integer minimiser of ``Σ c_j s_j^(-a)`` (``a = 1/q - 1 > 0``) on the box with ``Σ s = total``."""
    positive = c > 0
    result = low.clone()
    if up is not None and bool(positive.any()) and total >= int(up[positive].sum()) + int(low[~positive].sum()):
        # every positive unit is full; the indifferent (c = 0) units share the rest as in the relaxation
        result[positive] = up[positive]
        if bool((~positive).any()):
            rest = total - int(up[positive].sum())
            result[~positive] = _round_keep_total(s_cont[~positive], rest, low[~positive], up[~positive])
        return result
    if not bool(positive.any()):
        return _round_keep_total(s_cont, total, low, up)
    # otherwise the c = 0 units stay at their lower bounds (the relaxation puts them there too)
    c_p, s_p, l_p = c[positive], s_cont[positive], low[positive]
    u_p = None if up is None else up[positive]
    target = total - int(low[~positive].sum())
    base = torch.maximum(s_p.floor().long() - 1, l_p)
    if u_p is not None:
        base = torch.minimum(base, u_p)
    need = target - int(base.sum())
    if need < 0:
        raise RuntimeError("internal error: the continuous optimum exceeds the total")
    if need > 0:
        cap = base + need if u_p is None else torch.minimum(u_p, base + need)
        base = base + _take_top_increments(c_p, base, cap, need, a)
    result[positive] = base
    return result


def _take_top_increments(c, base, cap, need: int, a: float) -> torch.Tensor:
    """Per-unit counts of the ``need`` largest marginal gains above ``base`` (ties: lower index)."""
    room = cap > base
    infinite = room & (base == 0)  # a positive unit going from 0 to 1 weight: infinite gain
    if int(infinite.sum()) >= need:
        # some positive unit must get no weight at all: every allocation has an infinite objective
        order = torch.sort((c * infinite).double(), descending=True, stable=True).indices
        taken = torch.zeros_like(base)
        taken[order[:need]] = 1
        return taken
    # The largest finite gain of each unit: its next increment, or the one after it when the next one
    # is the infinite 0 -> 1 step (gains fall with k, so nothing above ``hi`` stays finite).
    first_finite_k = torch.maximum(base + 1, torch.full_like(base, 2))
    finite_first = torch.where(cap >= first_finite_k, _marginal_gain(c, first_finite_k, a), torch.zeros_like(c))
    last_finite = room & (cap >= 2)
    last = _marginal_gain(c, cap.clamp_min(2), a)
    lo = float(last[last_finite].min())  # <= the need-th largest gain (see _integer_optimum's notes)
    hi = float(finite_first[torch.isfinite(finite_first)].max()) * 2.0 + 1e-300
    if _taken(lo, c, base, cap, a).sum() < need:
        raise RuntimeError("internal error: the lower threshold selects too few increments")
    for _ in range(200):
        if lo > 0 and hi / lo - 1.0 < 1e-14:
            break
        mid = (lo * hi) ** 0.5 if lo > 0 else 0.5 * hi
        count = int(_taken(mid, c, base, cap, a).sum())
        if count == need:
            return _taken(mid, c, base, cap, a)
        if count > need:
            lo = mid
        else:
            hi = mid
    taken = _taken(hi, c, base, cap, a)  # fewer than `need`; the rest lie in the narrow band [lo, hi)
    band = _taken(lo, c, base, cap, a) - taken
    missing = need - int(taken.sum())
    while missing > 0:  # at most a few rounds: the band holds (near-)equal gains
        candidates = band > 0
        gain = torch.where(candidates, _marginal_gain(c, base + taken + 1, a), torch.full_like(c, -1.0))
        order = torch.sort(gain, descending=True, stable=True).indices[: min(missing, int(candidates.sum()))]
        taken[order] += 1
        band[order] -= 1
        missing = need - int(taken.sum())
    return taken
