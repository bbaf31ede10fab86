"""``lqtheory prune``'s options, generated from :class:`~lqtheory.runs.config.ExperimentConfig`'s fields (cli room).

Every field of the configuration is one option ``--<field-name>`` (underscores as dashes) whose default is
the field's default, so the command and the dataclass cannot drift apart: a new field without an entry in
:data:`FIELD_OPTIONS` is an error at parser construction (and in the tests). An entry only adds what the
dataclass cannot say: the help text, the option group, a short alias, choices, and the CLI's defaults for
the three fields the dataclass requires (data set, model, method).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from lqtheory.common.checks import nonnegative_int_argument, positive_int_argument
from lqtheory.engine.bank import PRECISIONS
from lqtheory.engine.data import DATASETS
from lqtheory.engine.masks import SCOPES
from lqtheory.engine.models import MODEL_PATTERNS, MODELS
from lqtheory.engine.pruning import METHODS
from lqtheory.engine.training import SCHEDULES
from lqtheory.runs.config import ExperimentConfig

__all__ = ["FIELD_OPTIONS", "GROUPS", "add_config_arguments", "config_kwargs", "option_name"]

#: option groups, in the order ``--help`` shows them
GROUPS = {
    "what": "what to run",
    "pruning": "pruning (SAP / SI-adaptive: p, q, eta, gamma, beta; rate methods: rate)",
    "training": "training (SGD, Nesterov momentum, cosine schedule)",
    "statistics": "recorded statistics (the same exponents for every method, so runs compare)",
    "data": "data and machine",
}


def _models() -> str:
    return ", ".join([*sorted(MODELS), *(p.form for p in MODEL_PATTERNS)])


#: per field: group, help, and argparse extras (``type`` defaults from the field's annotation)
FIELD_OPTIONS: dict[str, dict[str, Any]] = {
    "dataset": dict(group="what", cli_default="fashion-mnist", metavar="NAME",
                    help=lambda: f"data set: {', '.join(sorted(DATASETS))}"),
    "model": dict(group="what", cli_default="mlp-128-1-2-relu", metavar="NAME", help=lambda: f"model: {_models()}"),
    "method": dict(group="what", cli_default="sap", choices=lambda: sorted(METHODS), help="pruning method"),
    "scope": dict(group="what", choices=lambda: SCOPES, help="pruning unit: a neuron, a layer, or all"),
    "iterations": dict(group="what", alias="-T", help="pruning iterations T after the dense run"),
    "epochs": dict(group="what", alias="-E", help="training epochs per iteration"),
    "dense_epochs": dict(group="what", metavar="E",
                         help="epochs of the dense training at t = 0 (default: --epochs); the dense model is "
                              "trained once per setting and shared by every method and scope"),
    "seed": dict(group="what", help="seed of the initialisation, batch orders and random pruning"),
    "p": dict(group="pruning", help="PQ Index exponent p (0 < p < q); si-adaptive's q_small"),
    "q": dict(group="pruning", help="PQ Index exponent q (si-adaptive requires 1)"),
    "eta": dict(group="pruning", help="tail-mass ratio eta_r >= 0 of SAP's retained count"),
    "gamma": dict(group="pruning", help="SAP scale gamma > 0 (SI-adaptive's c)"),
    "beta": dict(group="pruning", help="SAP cap beta in [0, 1] on the per-unit prune ratio"),
    "rate": dict(group="pruning", help="fraction of the remaining weights removed per iteration by one-shot, "
                                       "lottery-ticket, random and bound-optimal"),
    "lr": dict(group="training", help="learning rate (E2: 0.03, E3: 0.1)"),
    "momentum": dict(group="training", help="SGD momentum"),
    "nesterov": dict(group="training", help="plain momentum (default: Nesterov momentum)"),
    "weight_decay": dict(group="training", help="weight decay"),
    "schedule": dict(group="training", choices=lambda: SCHEDULES, help="learning-rate schedule"),
    "grad_clip": dict(group="training", none_as=0.0, help="gradient-norm clip (0 disables clipping)"),
    "batch_size": dict(group="training", type=positive_int_argument, help="mini-batch size"),
    "l1_penalty": dict(group="training", help="l1 penalty on the prunable weights"),
    "stat_p": dict(group="statistics", help="exponent p of the recorded PQ Index"),
    "stat_q": dict(group="statistics", help="exponent q of the recorded PQ Index"),
    "si_q": dict(group="statistics", help="exponent q of the recorded sparsity index SI (0 < q < 1)"),
    "n_train": dict(group="data", type=positive_int_argument,
                    help="use a class-balanced subset of this many training examples (default: all)"),
    "n_test": dict(group="data", type=positive_int_argument,
                   help="use a class-balanced subset of this many test examples (default: all)"),
    "data_seed": dict(group="data", help="seed of the data subsets"),
    "device": dict(group="data", help="auto | cpu | cuda | cuda:N | mps"),
    "precision": dict(group="data", choices=lambda: PRECISIONS,
                      help="training precision: float32, or bfloat16 (autocast for the products, fp32 master "
                           "weights; for CPUs with AMX and GPUs); part of the run id when not float32"),
}

_TYPES = {"int": nonnegative_int_argument, "int | None": nonnegative_int_argument, "float": float,
          "float | None": float, "str": str}


def option_name(field: str) -> str:
    """``dense_epochs`` -> ``--dense-epochs``."""
    return "--" + field.replace("_", "-")


def _fields() -> dict[str, dataclasses.Field]:
    fields = {f.name: f for f in dataclasses.fields(ExperimentConfig) if f.init}
    missing = sorted(set(fields) - set(FIELD_OPTIONS))
    unknown = sorted(set(FIELD_OPTIONS) - set(fields))
    if missing or unknown:
        raise RuntimeError(f"lqtheory prune's options and ExperimentConfig differ: fields without an option "
                           f"{missing}, options without a field {unknown} (see lqtheory/cli/prune_options.py)")
    return fields


def add_config_arguments(parser: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """One option per :class:`ExperimentConfig` field on ``parser``; returns the groups (by key) so that
    the caller can add its own options (threads, output folder, ...) to them."""
    fields = _fields()
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for name, spec in FIELD_OPTIONS.items():
        field = fields[name]
        group = groups[spec["group"]]
        default = spec.get("cli_default", field.default)
        help_text = spec["help"]() if callable(spec["help"]) else spec["help"]
        flags = [option_name(name), *([spec["alias"]] if "alias" in spec else [])]
        if field.type == "bool":  # the default is True: the option switches it off
            group.add_argument(f"--no-{name.replace('_', '-')}", dest=name, action="store_false", default=default,
                               help=help_text)
            continue
        if "none_as" in spec and default is None:
            default = spec["none_as"]
        extras: dict[str, Any] = {}
        if "choices" in spec:
            extras["choices"] = spec["choices"]()
        else:
            extras["type"] = spec.get("type", _TYPES[field.type])
        if "metavar" in spec:
            extras["metavar"] = spec["metavar"]
        group.add_argument(*flags, dest=name, default=default, help=help_text, **extras)
    return groups


def config_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`ExperimentConfig` keyword arguments from parsed options (``--grad-clip 0`` is None)."""
    out = {}
    for name in _fields():
        value = getattr(args, name)
        spec = FIELD_OPTIONS[name]
        if "none_as" in spec and not value:
            value = None
        out[name] = value
    return out
