"""SHA-256 digests and the canonical forms they are taken over (common room): every hash in the package.

Each canonical form has one function, so a run id, a dense id, a results checksum and a notebook's cache
key cannot drift apart by a separator. The forms are on-disk contracts (run ids, checksums in run
folders): never change one; add a new function instead.
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["canonical_json", "parts_digest", "sha256_bytes", "sha256_hex", "sha256_stream", "sorted_json"]


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_bytes(data: bytes) -> bytes:
    """Raw (32-byte) SHA-256 of ``data``."""
    return hashlib.sha256(data).digest()


def sha256_stream(prefix: bytes = b""):
    """An incremental SHA-256 (``update``/``hexdigest``), started with ``prefix``."""
    return hashlib.sha256(prefix)


def canonical_json(obj) -> str:
    """Compact JSON with sorted keys and no NaN/Infinity: the form run-folder checksums and dense ids hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def sorted_json(obj) -> str:
    """JSON with sorted keys and json's default separators: the form run ids and data-cache keys hash."""
    return json.dumps(obj, sort_keys=True)


def parts_digest(*parts: bytes) -> str:
    """Hex SHA-256 of a sequence of byte strings, each prefixed by its length (8 bytes, little endian), so
    that no two different sequences share a digest: the form of ``lqtheory reproduce``'s cache keys."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()
