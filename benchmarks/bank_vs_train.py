"""What a bank changes in the numbers: ``train`` against ``train_bank`` in float32 and bfloat16.

    python benchmarks/bank_vs_train.py [--epochs 3] [--threads 1] [--json OUT]

At the default profile's model, data (40,000 Fashion-MNIST images), learning rate and batch size, for
seeds 0-2, dense and under a 50% random mask: each run trained alone by :func:`lqtheory.engine.training.train`,
then the same runs as one bank (fp32, then bf16). Prints per seed the final test accuracy of each, whether
the fp32 bank's records and weights equal ``train``'s bit for bit, and the largest weight difference.
Not a timing (the numbers do not depend on the load).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:
    sys.path.insert(0, str(_HERE.parent))

import torch  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from benchmarks.bench_engine import default_settings, load_data
    from lqtheory.engine.bank import BankMember, train_bank
    from lqtheory.engine.models import build_model
    from lqtheory.engine.training import TrainConfig, train

    torch.set_num_threads(args.threads)
    settings = default_settings()
    data, _ = load_data(settings, torch.device("cpu"))
    cfg = TrainConfig(epochs=args.epochs, batch_size=settings["batch_size"], lr=settings["lr"])

    def model(seed):
        torch.manual_seed(seed)
        return build_model(settings["model"], data.input_shape, data.num_classes)

    def mask_of(m, seed):
        g = torch.Generator().manual_seed(100 + seed)
        return {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in m.named_parameters() if p.dim() > 1}

    def strip(h):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in h]

    seeds = [0, 1, 2]
    out = {}
    for masked in (False, True):
        lone_models, lone = [], []
        for s in seeds:
            m = model(s)
            lone.append(train(m, data, cfg, seed=s, mask=mask_of(m, s) if masked else None, progress=False))
            lone_models.append(m)
        res = {"train": [h[-1]["test_accuracy"] for h in lone]}
        for precision in ("float32", "bfloat16"):
            members = [BankMember(model(s), data, cfg, seed=s, mask=mask_of(model(s), s) if masked else None)
                       for s in seeds]
            histories = train_bank(members, precision=precision, progress=False)
            pairs = [(a.model, b) for a, b in zip(members, lone_models, strict=True)]
            res[precision] = [h[-1]["test_accuracy"] for h in histories]
            res[f"{precision}_records_equal_train"] = [
                strip(a) == strip(b) for a, b in zip(histories, lone, strict=True)]
            res[f"{precision}_weights_equal_train"] = [
                all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True)) for a, b in pairs]
            res[f"{precision}_max_abs_weight_diff"] = max(
                float((x.detach() - y.detach()).abs().max()) for a, b in pairs
                for x, y in zip(a.parameters(), b.parameters(), strict=True))
        out["pruned50" if masked else "dense"] = res
    print(json.dumps(out, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
