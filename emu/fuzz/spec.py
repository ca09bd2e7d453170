"""Hierarchies as plain data: the entries (address, value), VMAs and addresses of one fuzzed
page-table tree, with their canonical serialization (:meth:`Hierarchy.to_bytes`) and seeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import archs
from archs.linux import (
    DEFAULT_KERNEL,
    LinuxPgtable,
)
from emu.errors import FoliowalkError


# -- hierarchies as data ------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One entry the hierarchy writes: at physical ``pa`` in a table of hardware ``depth``.

    ``base`` is the canonical table pointer (``mk_table``) the skeleton put in this slot, or None
    if the slot was empty; an entry is *fuzzed* when ``value != base``.  ``kind`` names the
    generator that made it (:data:`KINDS`, or ``table`` for a skeleton pointer).
    """

    pa: int
    depth: int
    value: int
    base: int | None = None
    kind: str = "table"

    @property
    def fuzzed(self) -> bool:
        return self.value != self.base

    def to_json(self) -> dict[str, Any]:
        return {"pa": self.pa, "depth": self.depth, "value": self.value, "base": self.base, "kind": self.kind}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Entry:
        return cls(int(d["pa"]), int(d["depth"]), int(d["value"]), d.get("base"), str(d.get("kind", "table")))


@dataclass(frozen=True)
class VmaSpec:
    """A VMA of the hierarchy: ``[start, end)`` with ``vm_flags`` and ``vm_pgoff``."""

    start: int
    end: int
    flags: int
    pgoff: int = 0
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start, "end": self.end, "flags": self.flags, "pgoff": self.pgoff, "name": self.name,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VmaSpec:
        return cls(
            int(d["start"]), int(d["end"]), int(d["flags"]), int(d.get("pgoff", 0)), str(d.get("name", ""))
        )


@dataclass(frozen=True)
class Hierarchy:
    """A generated page-table hierarchy: pure data, rebuilt in any process by :class:`Target`.

    ``tables``: ``(pa, depth)`` of every table frame it uses besides the root; ``addrs``: the
    cases (virtual addresses) to walk and probe.
    """

    config: str
    kernel: str
    entries: tuple[Entry, ...]
    tables: tuple[tuple[int, int], ...]
    vmas: tuple[VmaSpec, ...]
    addrs: tuple[int, ...]
    seed: int | None = None
    index: int | None = None

    FORMAT = "foliowalk-fuzz-hierarchy/1"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "config": self.config,
            "kernel": self.kernel,
            "seed": self.seed,
            "index": self.index,
            "tables": [list(t) for t in self.tables],
            "entries": [e.to_json() for e in self.entries],
            "vmas": [v.to_json() for v in self.vmas],
            "addrs": list(self.addrs),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Hierarchy:
        if d.get("format") != cls.FORMAT:
            raise FoliowalkError(f"not a foliowalk fuzz hierarchy (format {d.get('format')!r})")
        return cls(
            config=str(d["config"]),
            kernel=str(d.get("kernel", DEFAULT_KERNEL)),
            entries=tuple(Entry.from_json(e) for e in d["entries"]),
            tables=tuple((int(a), int(b)) for a, b in d["tables"]),
            vmas=tuple(VmaSpec.from_json(v) for v in d["vmas"]),
            addrs=tuple(int(a) for a in d["addrs"]),
            seed=d.get("seed"),
            index=d.get("index"),
        )

    def to_bytes(self) -> bytes:
        """Canonical serialization: same seed and index, same bytes."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def fuzzed(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.fuzzed)

    def set_bits(self) -> int:
        return sum(bin(e.value).count("1") for e in self.fuzzed)

    def describe(self, ops: LinuxPgtable | None = None) -> list[str]:
        """One line per entry, fuzzed ones decoded through the arch's formats when it can."""
        ops = ops or archs.get_ops(self.config, self.kernel)
        levels = ops.config.levels
        out = []
        for e in sorted(self.entries, key=lambda e: (e.depth, e.pa)):
            lv = levels[e.depth]
            line = f"{lv.linux}/{lv.name} @{e.pa:#x} = {e.value:#018x}  [{e.kind}]"
            if e.fuzzed:
                dec = getattr(ops, "decode", None)
                if dec is not None:
                    with contextlib.suppress(Exception):
                        fields = dec(lv.linux, e.value)
                        line += "  " + " ".join(f"{k}={v:#x}" if isinstance(v, int) else f"{k}={v}"
                                                for k, v in fields.items() if v)
            out.append(line)
        return out


def hierarchy_seed(seed: int, index: int, config: str) -> str:
    """The string that seeds hierarchy ``index`` of a campaign (random.Random hashes it with
    SHA-512: stable across processes and Python runs)."""
    return f"foliowalk-fuzz/{seed}/{index}/{config}"
