"""The checked file formats of run folders and dense artifacts: checksummed JSON and checkpoints.

Part of the runs room. Every file is written atomically (:mod:`lqtheory.common.atomic`); ``*.json``
carries a SHA-256 over its canonical form and ``*.pt`` checkpoints a magic header plus the SHA-256 of the
payload, so a corrupt, truncated or foreign file raises :class:`CorruptRunError` naming it. Standard JSON
only: a compression ratio or speed-up that is infinite is written as ``null`` and read back as ``inf``.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import torch

from lqtheory.common.atomic import atomic_write_bytes
from lqtheory.common.digests import canonical_json, sha256_bytes, sha256_hex

__all__ = [
    "CorruptRunError",
    "DataMismatchError",
    "INFINITE_WHEN_NULL",
    "checkpoint_file",
    "config_file",
    "json_safe",
    "mask_file",
    "read_checked_json",
    "read_checkpoint",
    "records_from_json",
    "remove_stale_temporaries",
    "results_file",
    "merge_timings",
    "split_timings",
    "timings_file",
    "verified_checkpoint_payload",
    "write_checked_json",
    "write_checkpoint",
]

_CKPT_MAGIC = b"LQTCKPT1"


class CorruptRunError(RuntimeError):
    """A run folder holds a file that is corrupt, truncated, foreign or inconsistent with the others."""



class DataMismatchError(CorruptRunError):
    """A stored run or dense artifact was made on other data than the data loaded now (its data
    fingerprint differs, or it has none). The message names both fingerprints."""



#: Record fields whose value is infinite when nothing remains (``total / 0``): written as JSON ``null``
#: (standard JSON has no Infinity) and read back as ``math.inf``.
INFINITE_WHEN_NULL = ("compression", "speedup")


def json_safe(value, key: str | None = None):
    """``value`` with every non-finite float replaced by ``None`` (JSON ``null``), recursively.

    ``compression`` / ``speedup`` of a run with nothing left are ``inf`` (see :data:`INFINITE_WHEN_NULL`);
    any other non-finite number means "no finite value" and is read back as ``None``.
    """
    if isinstance(value, dict):
        return {k: json_safe(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def records_from_json(records: list) -> list:
    """Inverse of :func:`json_safe` on records: ``null`` compression / speed-up is ``inf`` again."""
    for record in records:
        for key in INFINITE_WHEN_NULL:
            if key in record and record[key] is None:
                record[key] = math.inf
    return records


def _reject_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def write_checked_json(path: Path, body: dict) -> None:
    body = json_safe(body)
    body = {**body, "sha256": sha256_hex(canonical_json(body).encode())}
    # The checksum is over the canonical (sorted) form; the file keeps the records' key order.
    atomic_write_bytes(path, (json.dumps(body, indent=1, allow_nan=False) + "\n").encode())


def read_checked_json(path: Path) -> dict:
    try:  # strict: standard JSON only (NaN / Infinity are not JSON)
        body = json.loads(path.read_text(), parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CorruptRunError(f"{path} is not readable JSON (corrupt or truncated): {err}") from err
    if not isinstance(body, dict) or "sha256" not in body:
        raise CorruptRunError(f"{path} has no checksum: not written by lqtheory.runs")
    digest = body.pop("sha256")
    if sha256_hex(canonical_json(body).encode()) != digest:
        raise CorruptRunError(f"{path} does not match its checksum: the file was modified or damaged")
    return body


def write_checkpoint(path: Path, obj: dict) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, _CKPT_MAGIC + sha256_bytes(payload) + payload)


def verified_checkpoint_payload(path: Path, data: bytes | None = None) -> bytes:
    """The pickled payload of a checkpoint file after checking its header and SHA-256."""
    data = path.read_bytes() if data is None else data
    head = len(_CKPT_MAGIC) + 32
    if len(data) < head or data[: len(_CKPT_MAGIC)] != _CKPT_MAGIC:
        raise CorruptRunError(f"{path} is not an lqtheory checkpoint (bad header)")
    payload = data[head:]
    if sha256_bytes(payload) != data[len(_CKPT_MAGIC) : head]:
        raise CorruptRunError(f"{path} does not match its checksum: truncated or damaged")
    return payload


def read_checkpoint(path: Path) -> dict:
    data = path.read_bytes()
    payload = verified_checkpoint_payload(path, data)
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # the checksum matched, so this is a foreign or incompatible payload
        raise CorruptRunError(f"{path} could not be unpickled: {err}") from err


def mask_file(run_dir: Path, t: int) -> Path:
    return run_dir / f"mask_{t}.pt"


def config_file(run_dir: Path) -> Path:
    return run_dir / "config.json"


def results_file(run_dir: Path) -> Path:
    return run_dir / "results.json"


def timings_file(run_dir: Path) -> Path:
    return run_dir / "timings.json"


#: Record fields that measure time, not results: kept in ``timings.json`` so that ``results.json`` is
#: bit-identical wherever and however fast the run was computed.
TIMING_FIELDS = ("wall_time",)


def split_timings(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """``records`` without :data:`TIMING_FIELDS`, and those fields per record."""
    results = [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]
    timings = [{k: r[k] for k in TIMING_FIELDS if k in r} for r in records]
    return results, timings


def merge_timings(records: list[dict], timings: list[dict]) -> list[dict]:
    """Inverse of :func:`split_timings` (records of older folders, with the fields inline, are unchanged)."""
    for record, timing in zip(records, timings, strict=False):
        record.update(timing)
    return records


def checkpoint_file(run_dir: Path) -> Path:
    return run_dir / "checkpoint.pt"


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete the temporary files (``.<name>.*.tmp``) of atomic writes that a killed process left."""
    if run_dir.is_dir():
        for tmp in run_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
