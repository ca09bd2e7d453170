"""The digest of a conformance campaign: what every case it ran came out as, independent of how
the cases were cut into tasks, of the order they came back in and of the number of workers
(local processes or Dask workers).

Each case's outcome is a canonical line -- the machine's answer (the #PF error code, the physical
address, or no answer), the Accessed/Dirty flags it left in the entries, and the fields that
mismatched the model with their class -- hashed to 8 bytes (BLAKE2b).  The campaign's digest is
SHA-256 over ``(case index, outcome hash)`` pairs, 8 bytes little-endian each, in case order.
Kept as numpy columns: 16 bytes a case, 25 MB for the whole x86-64 space.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def outcome_hash(text: str) -> int:
    """The 8-byte hash of one case's canonical outcome line."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class Outcomes:
    """Per-case outcome hashes of a campaign, or of the part of it one task ran."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, cases: Sequence[int], hashes: Sequence[int]) -> None:
        if len(cases):
            self._parts.append((np.asarray(cases, dtype=np.uint64), np.asarray(hashes, dtype=np.uint64)))

    def extend(self, other: Outcomes) -> None:
        self._parts.extend(other._parts)

    def __len__(self) -> int:
        return sum(len(c) for c, _h in self._parts)

    def digest(self) -> str:
        """SHA-256 over the ``(case, outcome hash)`` pairs in case order (a case reported twice --
        a task the scheduler ran again -- counts once)."""
        if not self._parts:
            return hashlib.sha256(b"").hexdigest()
        cases = np.concatenate([c for c, _h in self._parts])
        hashes = np.concatenate([h for _c, h in self._parts])
        cases, first = np.unique(cases, return_index=True)  # sorted, duplicates dropped
        pairs = np.stack([cases, hashes[first]], axis=1).astype("<u8")
        return hashlib.sha256(pairs.tobytes()).hexdigest()
