"""Hierarchies as plain data: the entries (address, value), VMAs and addresses of one fuzzed
page-table tree, with their canonical serialization (:meth:`Hierarchy.to_bytes`) and seeds.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

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


# -- saved hierarchies (``foliowalk fuzz --replay FILE``) -----------------------------------------
#: A replay file is read only if it is a regular file of at most this many bytes (the largest
#: saved hierarchy is a few hundred KiB).
MAX_REPLAY_BYTES = 16 << 20
#: The most entries, table frames, VMAs and addresses one hierarchy may hold (a generated one has
#: at most a few hundred of each; the evaluation is linear in them).
MAX_ENTRIES = 1 << 16
MAX_TABLES = 1 << 12
MAX_VMAS = 1 << 12
MAX_ADDRS = 1 << 14
_U64 = (1 << 64) - 1


class ReplayFileError(FoliowalkError):
    """A ``--replay`` file that is not a saved hierarchy at all (wrong kind of file, too large,
    not JSON, not the hierarchy's structure)."""


class InvalidHierarchy(FoliowalkError):
    """A saved hierarchy this foliowalk cannot build (values out of range for its configuration,
    more than the budget)."""


def _is_integer(_checker: Any, v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@functools.cache
def _validator() -> Any:
    import jsonschema

    schema = json.loads((Path(__file__).parent / "hierarchy.schema.json").read_text())
    base = jsonschema.validators.validator_for(schema)
    strict = jsonschema.validators.extend(base, type_checker=base.TYPE_CHECKER.redefine("integer", _is_integer))
    strict.check_schema(schema)
    return strict(schema)


def load_hierarchy_file(path: Path) -> Hierarchy:
    """The hierarchy saved in ``path`` (``*.hierarchy.json``: the hierarchy itself or a finding's
    spec holding it under ``"hierarchy"``), fully checked before anything is built:

    * :class:`ReplayFileError` -- not a regular file (``/dev/zero``, a FIFO), more than
      :data:`MAX_REPLAY_BYTES`, not JSON (a 5,000-digit integer, ``Infinity``, ``1e400``, a lone
      surrogate included), or not the structure of ``hierarchy.schema.json``;
    * :class:`InvalidHierarchy` -- an unknown configuration or kernel, more than the budget
      (:data:`MAX_ENTRIES`, :data:`MAX_TABLES`, :data:`MAX_VMAS`, :data:`MAX_ADDRS`), a table
      depth outside the configuration, an address or value beyond 64 bits, an empty, unaligned
      or overlapping VMA.
    """
    from emu.files import loads_strict, read_regular

    def fail(fld: str, msg: str) -> NoReturn:
        raise ReplayFileError(f"{path}: not a saved hierarchy: {fld}: {msg}" if fld != "(document)"
                              else f"{path}: not a saved hierarchy: {msg}")

    try:
        data = read_regular(path, MAX_REPLAY_BYTES)
    except FoliowalkError as err:
        msg = str(err)
        msg = msg[len(str(path)) + 2 :] if msg.startswith(f"{path}: ") else msg
        raise ReplayFileError(f"{path}: not a saved hierarchy: {msg}") from None
    doc = loads_strict(data, fail)
    if not isinstance(doc, dict):
        fail("(document)", "the file holds no JSON object")
    where = ""
    if "hierarchy" in doc:
        if not isinstance(doc["hierarchy"], dict):
            fail("hierarchy", "must be an object")
        doc, where = doc["hierarchy"], "hierarchy."
    if doc.get("format") != Hierarchy.FORMAT:
        fail("(document)", f"not a foliowalk fuzz hierarchy (format {str(doc.get('format'))[:60]!r})")
    errors = list(_validator().iter_errors(doc))
    if errors:
        first = min(errors, key=lambda e: (len(e.absolute_path), [(isinstance(p, str), p) for p in e.absolute_path]))
        fld = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.absolute_path).lstrip(".")
        msg = first.message[:200]
        if first.validator == "not" and isinstance(first.instance, str):
            msg = f"{first.instance[:40]!r} holds a control character"
        elif first.validator == "maxLength":
            msg = f"{len(first.instance)} characters, more than the limit of {first.validator_value}"
        fail(where + fld if fld else where.rstrip(".") or "(document)", msg)
    h = Hierarchy.from_json(doc)
    try:
        check_hierarchy(h)
    except InvalidHierarchy as err:
        raise InvalidHierarchy(f"{path}: not a valid hierarchy: {err}") from None
    return h


def check_hierarchy(h: Hierarchy) -> None:
    """Raise :class:`InvalidHierarchy` unless every value of ``h`` is in range for its
    configuration and within the budget (see :func:`load_hierarchy_file`)."""
    try:
        ops = archs.get_ops(h.config, h.kernel)
    except (ValueError, KeyError) as err:  # archs.UnknownConfig is a ValueError
        raise InvalidHierarchy(str(err)) from None
    for name, items, limit in (("entries", h.entries, MAX_ENTRIES), ("tables", h.tables, MAX_TABLES),
                               ("vmas", h.vmas, MAX_VMAS), ("addrs", h.addrs, MAX_ADDRS)):
        if len(items) > limit:
            raise InvalidHierarchy(f"{name}: {len(items)} items, more than the limit of {limit}")
    nlevels = len(ops.config.levels)
    for i, e in enumerate(h.entries):
        if not 0 <= e.depth < nlevels:
            raise InvalidHierarchy(f"entries[{i}].depth: {e.depth} is not a table depth of {h.config} "
                                   f"(0..{nlevels - 1})")
        for fld, val in (("pa", e.pa), ("value", e.value), ("base", e.base)):
            if val is not None and not 0 <= val <= _U64:
                raise InvalidHierarchy(f"entries[{i}].{fld}: {val:#x} is not a 64-bit value")
        if e.pa % 8:
            raise InvalidHierarchy(f"entries[{i}].pa: {e.pa:#x} is not 8-byte aligned")
    for i, (pa, depth) in enumerate(h.tables):
        if not 1 <= depth < nlevels:
            raise InvalidHierarchy(f"tables[{i}]: depth {depth} is not a table depth below the root of "
                                   f"{h.config} (1..{nlevels - 1})")
        if not 0 <= pa <= _U64 - ops.config.levels[depth].table_size:
            raise InvalidHierarchy(f"tables[{i}]: {pa:#x} is not a physical address")
    page = ops.PAGE_SIZE
    for i, v in enumerate(h.vmas):
        if not 0 <= v.start < v.end <= _U64:
            raise InvalidHierarchy(f"vmas[{i}]: {v.start:#x}..{v.end:#x} is empty or not inside the 64-bit "
                                   "address space")
        if v.start % page or v.end % page:
            raise InvalidHierarchy(f"vmas[{i}]: {v.start:#x}..{v.end:#x} is not page aligned")
        if not 0 <= v.flags <= _U64 or not 0 <= v.pgoff <= _U64:
            raise InvalidHierarchy(f"vmas[{i}]: vm_flags / vm_pgoff are not 64-bit values")
    spans = sorted((v.start, v.end, i) for i, v in enumerate(h.vmas))
    for (_s0, e0, i0), (s1, _e1, i1) in zip(spans, spans[1:], strict=False):
        if s1 < e0:
            raise InvalidHierarchy(f"vmas[{i1}] overlaps vmas[{i0}]")
    for i, a in enumerate(h.addrs):
        if not 0 <= a <= _U64:
            raise InvalidHierarchy(f"addrs[{i}]: {a:#x} is not a 64-bit address")
