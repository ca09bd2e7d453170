"""Fuzzing entry encodings: the walker against the MMU against the architecture.

A *hierarchy* is a whole page-table tree in guest RAM whose entries are random encodings, a set of
VMAs over it and the addresses to check.  A *case* is one address: walked by folio_walk_start()
with every FW_* flag combination, probed once on the MMU, each (address, flags) row judged by
:func:`emu.verify.judge`.

Everything the generators know comes from ``archs/``: the paging configuration (levels, spans,
leaf sizes), the Linux builders of the arch module (``mk_table``, ``pfn_pte``/``pfn_pmd``/
``pfn_pud``, ``swp_entry_to_pte``/``_pmd``, ``make_pfn_swp_entry``, ``clear_value``, ``mk_bad``)
and its construct entry formats (``FORMATS``: fields and masks, for field-level mutations and
reserved bits).  There is no per-architecture code here.

Entry kinds (:data:`KINDS`): valid leaves and table pointers; near-valid ones (one flipped bit, a
format field set to an edge value, reserved/ignored fields set, a leaf built for another level,
``pXd_bad`` tables); swap and migration entries with edge types and offsets; PROT_NONE,
special, devmap and zero-page leaves; hostile table pointers (to their own table, the parent,
the root, a data page, the middle of a table, beyond RAM); pure noise.

Memory layout (:class:`Layout`): the fuzzer's own frames -- table frames for every level, tagged
data folios, leaf-sized folios -- live in a *pool* at a fixed physical address, the same in every
process, so a hierarchy is plain data (entry addresses and values) that any process can rebuild.
The pool starts at ``3 << k`` above everything else (the mm's pgd, zero pages, the probe
machine's frames), so no single flipped address bit of a pool pointer lands on the probe
machine; values that could still point there under any level's interpretation are re-drawn
(the MMU sets accessed/dirty bits in the entries it walks, and must never do so in the machine's
own code and tables).

Determinism: hierarchy ``i`` of a campaign with seed ``s`` comes from ``Random("…/s/i")`` alone;
worker ``w`` of ``J`` takes indices ``w, w+J, …``, so ``--jobs`` never changes the cases, and
:meth:`Hierarchy.to_bytes` is their canonical serialization.

Shrinking (:func:`shrink`): a finding is cut to the one address that shows it, then
delta-debugging (ddmin) removes fuzzed entries (an entry that replaced a table pointer reverts to
that pointer), then the table pointers nobody needs, then clears every set bit it can -- each
step keeps a candidate only if the same *signature* (verdict class and text, walk reason,
deciding level, with numbers blanked) still shows.  The table pointers on the path stay
canonical ``mk_table()`` values: they are the structure, the rest is the finding.

Campaigns (:func:`run_campaign`, ``foliowalk fuzz``): every row is counted by verdict class and by
the level of the entry the walk decided on; the first row of every distinct ``disagree``
signature and of every ``emulator-deviation`` kind is shrunk and saved under ``--out`` as a
fixture set (emu/fixtures.py; rows recomputed on a fresh machine first) plus its
``*.hierarchy.json``.  Workers are spawned processes (never forked: they hold Unicorn engines and
threads); one that dies (an emulator abort) or hangs is replaced, its hierarchy saved as a
``crash``/``hang`` finding, and the campaign goes on.  Ctrl-C stops the workers after their
current hierarchy and keeps everything found.  ``bench/fuzz_rate.py`` measures the rate.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

import archs
from archs.base import U64, EntryFormat, HwLevel
from archs.linux import (
    DEFAULT_KERNEL,
    MAX_SWAPFILES,
    SWP_DEVICE_EXCLUSIVE,
    SWP_DEVICE_READ,
    SWP_DEVICE_WRITE,
    SWP_HWPOISON,
    SWP_MIGRATION_READ,
    SWP_MIGRATION_READ_EXCLUSIVE,
    SWP_MIGRATION_WRITE,
    SWP_OFFSET_MASK,
    SWP_PTE_MARKER,
    LinuxPgtable,
    Prot,
    SwpEntry,
)
from emu.errors import ConfigError, FoliowalkError, MemoryLayoutError
from emu.machines.base import Fault, ProbeError, ProbeResult
from emu.mm.mm_types import (
    VM_HUGETLB,
    VM_IO,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    VMA,
)
from emu.mm.pagewalk import FLAG_COMBINATIONS, LEVEL_NAMES, FolioWalk, folio_walk_end, folio_walk_start
from emu.mm.scenarios import Case, Scenario, new_address_space, ram_size_for
from emu.verify import VERDICT_CLASSES, Row, WalkResult, judge, walk_result

__all__ = [
    "KINDS",
    "DEFAULT_WEIGHTS",
    "BENCH_WEIGHTS",
    "GenParams",
    "Layout",
    "plan_layout",
    "Entry",
    "VmaSpec",
    "Hierarchy",
    "EntryGenerator",
    "HierarchyGenerator",
    "Target",
    "materialize",
    "Evaluation",
    "signature",
    "shrink",
    "Shrunk",
    "CampaignOptions",
    "CampaignResult",
    "run_campaign",
    "hierarchy_seed",
    "format_report",
    "batch_results",
    "deciding_level",
]

# -- layout -------------------------------------------------------------------------------------
MiB = 1 << 20
GUARD = 16 * MiB  # room below the pool for the probe machine's frames
TABLES_PER_LEVEL = 40  # table frames in the pool for every level below the root
SMALL_FOLIOS = ((0, 16), (1, 2), (2, 4), (4, 2))  # (order, how many): tagged data folios
BIG_FOLIOS = {"pmd": 3, "pud": 1}  # leaf-sized folios (PMD_SIZE, PUD_SIZE) for valid leaves
MAX_BIG_FOLIO = 2 << 30  # larger leaves (arm64 16K/64K upper levels) point beyond RAM instead
MAX_TAGGED = 4 * MiB  # larger folios stay zero (a probe then asks uc_vmem_translate)
FREE_ABOVE = 16 * MiB  # empty RAM above the pool: pointers there read none entries


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


@dataclass(frozen=True)
class Layout:
    """Where a configuration's fuzzing frames live; identical in every process.

    ``tables[d]``: table frames of hardware depth ``d`` (``tables[0] == (root,)``, the mm's pgd).
    ``folios``: ``(pfn, order)`` of every folio the pool registers with the memmap (tagged
    small ones, then leaf-sized ones); ``leaf_folios[linux]``: pfns of folios exactly one leaf
    of that Linux level big.  ``forbidden``: physical ranges no generated pointer may reach
    (the probe machine's frames), ``reserved_va``: virtual ranges the probe machine keeps.
    """

    config: str
    ram_size: int
    reserved_low: int
    root: int
    zero_pfn: int
    huge_zero_pfn: int
    pool_start: int
    pool_end: int
    tables: tuple[tuple[int, ...], ...]
    folios: tuple[tuple[int, int], ...]
    small_pfns: tuple[int, ...]
    leaf_folios: tuple[tuple[str, tuple[int, ...]], ...]
    tagged: tuple[tuple[int, int], ...]
    forbidden: tuple[tuple[int, int], ...]
    reserved_va: tuple[tuple[int, int], ...]
    oracle: bool

    def leaf_pfns(self, linux: str) -> tuple[int, ...]:
        return dict(self.leaf_folios).get(linux, ())

    def in_forbidden(self, pa: int) -> bool:
        return any(lo <= pa < hi for lo, hi in self.forbidden)


def _low_allocations(ops: LinuxPgtable, ram_size: int) -> tuple[Any, ...]:
    reserved_low = int(getattr(ops, "RESERVED_LOW", 0))
    ram, alloc, memmap, mm, builder = new_address_space(ops, ram_size=ram_size, reserved_low=reserved_low)
    hz = mm.alloc_huge_zero_folio()
    return ram, alloc, memmap, mm, builder, hz, reserved_low


@cache
def plan_layout(key: str) -> Layout:
    """The fuzzing layout of configuration ``key`` (computed once per process).

    Builds a throw-away address space to learn where the pgd and the zero pages land, and a
    throw-away probe machine (if the architecture has one) to learn its reserved VA ranges.
    """
    ops = archs.get_ops(key)
    cfg = ops.config
    ram, alloc, memmap, mm, builder, hz, reserved_low = _low_allocations(ops, ram_size_for(ops))
    root, root_size = mm.pgd, cfg.levels[0].table_size
    zero_end = (mm.zero_pfn + mm.zero_page_nr) << ops.PAGE_SHIFT
    low_end = max(root + root_size, zero_end, (hz << ops.PAGE_SHIFT) + ops.PMD_SIZE)
    reserved_va: tuple[tuple[int, int], ...] = ()
    has_oracle = True
    try:
        from emu.machines.oracle import make_oracle

        oracle = make_oracle(ops, ram, alloc)
    except (ConfigError, ImportError):
        has_oracle = False
    else:
        reserved_va = tuple((int(a), int(b)) for a, b in oracle.reserved_va())
        oracle.close()
    ram.close()

    k = (low_end + GUARD - 1).bit_length()
    cur = pool_start = 3 << k  # two address bits set: one flip never lands below 1 << k
    tables: list[tuple[int, ...]] = [(root,)]
    for lv in cfg.levels[1:]:
        size = lv.table_size
        cur = _align(cur, max(size, 8))
        tables.append(tuple(cur + i * size for i in range(TABLES_PER_LEVEL)))
        cur += TABLES_PER_LEVEL * size
    folios: list[tuple[int, int]] = []
    tagged: list[tuple[int, int]] = []
    small: list[int] = []
    for order, count in SMALL_FOLIOS:
        size = ops.PAGE_SIZE << order
        for _ in range(count):
            cur = _align(cur, size)
            folios.append((cur >> ops.PAGE_SHIFT, order))
            tagged.append((cur, size))
            small += [(cur >> ops.PAGE_SHIFT) + i for i in range(1 << order)]
            cur += size
    leaf_folios: list[tuple[str, tuple[int, ...]]] = []
    for linux in ("pmd", "pud"):
        leaf = cfg.leaf_size(linux) if not ops.folded(linux) else None
        if not leaf or leaf > MAX_BIG_FOLIO:
            continue
        size = leaf
        order = (size >> ops.PAGE_SHIFT).bit_length() - 1
        pfns = []
        for _ in range(BIG_FOLIOS[linux]):
            cur = _align(cur, size)
            folios.append((cur >> ops.PAGE_SHIFT, order))
            pfns.append(cur >> ops.PAGE_SHIFT)
            if size <= MAX_TAGGED:
                tagged.append((cur, size))
            cur += size
        leaf_folios.append((linux, tuple(pfns)))
    pool_end = _align(cur, ops.PAGE_SIZE)
    ram_size = _align(pool_end + FREE_ABOVE, max(ops.PMD_SIZE, ops.PAGE_SIZE))
    zero_lo = mm.zero_pfn << ops.PAGE_SHIFT
    zero_hi = zero_lo + (mm.zero_page_nr << ops.PAGE_SHIFT)
    hz_lo = hz << ops.PAGE_SHIFT
    allowed = sorted([(root, root + root_size), (zero_lo, zero_hi), (hz_lo, hz_lo + ops.PMD_SIZE)])
    forbidden: list[tuple[int, int]] = []
    lo = 0
    for a, b in allowed:
        if a > lo:
            forbidden.append((lo, a))
        lo = max(lo, b)
    if lo < pool_start:
        forbidden.append((lo, pool_start))
    return Layout(
        config=cfg.key,
        ram_size=ram_size,
        reserved_low=reserved_low,
        root=root,
        zero_pfn=mm.zero_pfn,
        huge_zero_pfn=hz,
        pool_start=pool_start,
        pool_end=pool_end,
        tables=tuple(tables),
        folios=tuple(folios),
        small_pfns=tuple(small),
        leaf_folios=tuple(leaf_folios),
        tagged=tuple(tagged),
        forbidden=tuple(forbidden),
        reserved_va=reserved_va,
        oracle=has_oracle,
    )


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


# -- entry generators ---------------------------------------------------------------------------
KINDS = (
    "valid",  # a leaf built by pfn_pte/pfn_pmd/pfn_pud, or a table pointer (mk_table)
    "prot",  # a leaf with PROT_NONE / special / devmap / read-only / exec
    "zero",  # the shared zero page (special PTE) or the huge zero folio (PMD)
    "flip",  # a valid entry with one bit flipped
    "field",  # a valid entry with one format field set to an edge value
    "reserved",  # a valid entry with a reserved or ignored field set
    "wrong-level",  # a leaf built for another level
    "bad",  # a table pointer pXd_bad() rejects (mk_bad)
    "swap",  # a swap / hwpoison / device / marker entry with edge type and offset
    "migration",  # a migration entry (young/dirty variants) for a real or edge pfn
    "hostile",  # a table pointer to its own table, the parent, the root, data, mid-table, beyond RAM
    "noise",  # random bits
    "none",  # pXd_clear()'s value
)

DEFAULT_WEIGHTS: dict[str, float] = {
    "valid": 24, "prot": 7, "zero": 3, "flip": 14, "field": 8, "reserved": 5, "wrong-level": 4,
    "bad": 2, "swap": 7, "migration": 6, "hostile": 6, "noise": 8, "none": 3,
}
#: The benchmark's mix: mostly valid mappings, about one probe in ten faults.
BENCH_WEIGHTS: dict[str, float] = {
    "valid": 84, "prot": 2, "zero": 1, "flip": 1.5, "field": 0.5, "reserved": 0.5, "wrong-level": 0.5,
    "bad": 0, "swap": 3, "migration": 3, "hostile": 0.5, "noise": 1, "none": 3,
}

_RESERVED_FIELD = re.compile(r"^(reserved|res\d|rsvd|rsv|sbz|mbz|must_be_zero)", re.I)
_IGNORED_FIELD = re.compile(r"^(ignored|ign|unused|avail|sw|soft)", re.I)
_SWAP_TYPES = (
    0, 1, 2, MAX_SWAPFILES - 1, SWP_HWPOISON, SWP_MIGRATION_READ, SWP_MIGRATION_READ_EXCLUSIVE,
    SWP_MIGRATION_WRITE, SWP_DEVICE_WRITE, SWP_DEVICE_READ, SWP_DEVICE_EXCLUSIVE, SWP_PTE_MARKER, 31,
)
_MIGRATION_TYPES = (SWP_MIGRATION_READ, SWP_MIGRATION_READ_EXCLUSIVE, SWP_MIGRATION_WRITE)


@dataclass(frozen=True)
class GenParams:
    """Shape and mix of generated hierarchies."""

    max_tables: int = 16
    entries_per_table: tuple[int, int] = (4, 16)
    addrs_per_entry: tuple[int, int] = (2, 6)
    max_addrs: int = 1024
    weights: tuple[tuple[str, float], ...] = tuple(DEFAULT_WEIGHTS.items())
    #: Probability of an address in a none slot / anywhere below a table pointer (mostly none).
    p_none_addr: float = 1.0
    #: Probability that a "valid" entry where a leaf is allowed is a leaf (else a table pointer).
    p_valid_leaf: float = 0.7
    #: Probability that a leaf maps an edge pfn (a table frame, beyond RAM, the top pfn).
    p_edge_pfn: float = 0.12
    #: Fuzzed entries at levels that allow no leaf, relative to the others.
    upper_fuzz: float = 1.0
    #: Probability that a stretch between VMA cuts is a hole (outside every VMA).
    p_vma_hole: float = 0.07
    #: Probability that a table pointer of the skeleton is itself fuzzed (its subtree stays).
    p_fuzz_pointer: float = 0.12

    @classmethod
    def bench(cls, **kw: Any) -> GenParams:
        """The benchmark's hierarchies: mostly valid mappings, about one probe in ten faults."""
        args: dict[str, Any] = dict(p_none_addr=0.05, p_valid_leaf=0.97, p_edge_pfn=0.0, upper_fuzz=0.0,
                                    p_vma_hole=0.01, p_fuzz_pointer=0.0)
        return cls.with_weights(BENCH_WEIGHTS, **{**args, **kw})

    @classmethod
    def with_weights(cls, weights: dict[str, float], **kw: Any) -> GenParams:
        unknown = set(weights) - set(KINDS)
        if unknown:
            raise ConfigError(f"unknown entry kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        return cls(weights=tuple((k, float(weights.get(k, 0))) for k in KINDS), **kw)


@dataclass
class _Ctx:
    """Where an entry goes: its table, the parent table and every table of the hierarchy."""

    depth: int
    table: int
    parent: int | None
    tables: list[tuple[int, int]]  # (pa, depth), root included
    spare: Callable[[int], int | None]  # an empty frame of a depth, or None


class EntryGenerator:
    """Random entry encodings for one paging configuration, from what ``archs`` provides.

    ``entry(rng, depth, ctx)`` returns ``(value, kind)``.  Every value is masked to the entry
    width and re-drawn (deterministically) if any level's interpretation of it could send the MMU
    into the probe machine's frames (:attr:`Layout.forbidden`).
    """

    def __init__(
        self, ops: LinuxPgtable, layout: Layout, weights: Sequence[tuple[str, float]] | None = None
    ) -> None:
        self.ops = ops
        self.layout = layout
        self.levels: tuple[HwLevel, ...] = ops.config.levels
        module = importlib.import_module(archs.ARCHES[ops.arch])
        self.formats: tuple[EntryFormat, ...] = tuple(getattr(module, "FORMATS", ()))
        w = list(weights if weights is not None else DEFAULT_WEIGHTS.items())
        self.kinds = [k for k, x in w if x > 0]
        self.cum: list[float] = []
        total = 0.0
        for _k, x in w:
            if x > 0:
                total += x
                self.cum.append(total)
        self.leaf_levels = [
            lv.linux for lv in self.levels
            if lv.leaf_size and not ops.folded(lv.linux) and hasattr(ops, f"pfn_{lv.linux}")
        ]
        self.last = len(self.levels) - 1
        # The smallest alignment mk_table() accepts per depth (table pointers into mid-table).
        self.min_align = [self._min_align(d) for d in range(len(self.levels))]
        self.p_valid_leaf = 0.7
        self.p_edge_pfn = 0.12
        # Every Linux level's reading of an entry as a table pointer / a leaf pfn (guard).
        self._table_readers = [
            (lv, getattr(ops, f"{lv}_leaf", None)) for lv in ("pgd", "p4d", "pud", "pmd") if not ops.folded(lv)
        ]
        self._own_pfn = [(lv.linux, getattr(ops, f"{lv.linux}_pfn", None)) for lv in self.levels]

    # -- helpers ------------------------------------------------------------------------------
    def width(self, depth: int) -> int:
        return self.levels[depth].entry_size * 8

    def _min_align(self, depth: int) -> int:
        if depth >= self.last:
            return 0
        base = self.layout.tables[depth + 1][0]
        a = 8
        while a < self.ops.PAGE_SIZE:
            try:
                self.ops.mk_table(self.levels[depth].linux, base + a)  # type: ignore[attr-defined]
                return a
            except (ValueError, FoliowalkError):
                a <<= 1
        return self.ops.PAGE_SIZE

    def _mk_table(self, depth: int, pa: int) -> int:
        return int(self.ops.mk_table(self.levels[depth].linux, pa))  # type: ignore[attr-defined]

    def clear_value(self, depth: int) -> int:
        return int(self.ops.clear_value(self.levels[depth].linux))

    def forbidden(self, value: int, depth: int | None = None) -> bool:
        """Could the MMU walk the probe machine's frames through ``value`` -- read at any level
        where Linux takes it for a table pointer (also with the address bits above 32..52
        dropped) -- or does it map them as a leaf at its own ``depth``?"""
        ops = self.ops
        hit = self.layout.in_forbidden
        for linux, leaf in self._table_readers:
            try:
                if ops.entry_none(linux, value) or (leaf is not None and leaf(value)):
                    continue
                pa = int(ops.table_pa(linux, value))
            except Exception:
                continue
            if hit(pa):
                return True
            if pa >> 32:
                for bits in (52, 48, 44, 40, 36, 32):
                    if hit(pa & ((1 << bits) - 1)):
                        return True
        if depth is not None:
            linux, reader = self._own_pfn[depth]
            if reader is not None and not ops.entry_none(linux, value):
                with contextlib.suppress(Exception):
                    if hit(int(reader(value)) << ops.PAGE_SHIFT):
                        return True
        return False

    def prot(self, rng: random.Random) -> Prot:
        return Prot(
            write=rng.random() < 0.6,
            exec=rng.random() < 0.3,
            user=rng.random() < 0.7,
            young=rng.random() < 0.9,
            dirty=rng.random() < 0.6,
        )

    def leaf_pfn(self, rng: random.Random, linux: str) -> int:
        """A pfn a ``linux``-level leaf may map (aligned to the leaf size): mostly a folio of the
        pool, with probability ``p_edge_pfn`` an edge (a table frame as data, beyond RAM, the
        highest pfn MAX_PHYSMEM_BITS allows)."""
        lay, ops = self.layout, self.ops
        size = ops.config.leaf_size(linux) or ops.PAGE_SIZE
        npages = size >> ops.PAGE_SHIFT
        own = lay.small_pfns if linux == "pte" else lay.leaf_pfns(linux)
        if own and rng.random() >= self.p_edge_pfn:
            if linux == "pte" and lay.leaf_folios and rng.random() < 0.1:  # inside a big folio
                return rng.choice(rng.choice(lay.leaf_folios)[1]) + rng.randrange(512)
            return rng.choice(own)
        r = rng.random()
        if r < 0.3:  # a table frame of the pool, as data
            d = rng.randrange(1, len(lay.tables)) if len(lay.tables) > 1 else 0
            pa = rng.choice(lay.tables[d])
            return pa // size * npages
        if r < 0.85:  # beyond RAM: the memmap has no struct page for it
            return _align(lay.ram_size, size) // ops.PAGE_SIZE + rng.randrange(4) * npages
        top = (1 << (ops.max_physmem_bits() - ops.PAGE_SHIFT)) - npages
        return top - top % npages

    def leaf(self, rng: random.Random, linux: str, prot: Prot | None = None) -> int:
        builder = getattr(self.ops, f"pfn_{linux}")
        pfn = self.leaf_pfn(rng, linux)
        return int(builder(pfn, prot or self.prot(rng)))

    def valid(self, rng: random.Random, depth: int, ctx: _Ctx | None) -> int:
        """A valid entry for ``depth``: a leaf where leaves are allowed, else a table pointer."""
        lv = self.levels[depth]
        can_leaf = lv.linux in self.leaf_levels
        if depth == self.last or (can_leaf and rng.random() < self.p_valid_leaf):
            if can_leaf:
                return self.leaf(rng, lv.linux)
        if depth < self.last:
            return self._mk_table(depth, self.table_target(rng, depth, ctx))
        return self.leaf(rng, self.leaf_levels[-1])

    def table_target(self, rng: random.Random, depth: int, ctx: _Ctx | None) -> int:
        """A next-level table for a valid pointer at ``depth``: an empty spare or a shared one."""
        if ctx is not None:
            if rng.random() < 0.6:
                spare = ctx.spare(depth + 1)
                if spare is not None:
                    return spare
            same = [pa for pa, d in ctx.tables if d == depth + 1]
            if same:
                return rng.choice(same)
        return rng.choice(self.layout.tables[depth + 1])

    def swap_entry(self, rng: random.Random) -> SwpEntry:
        t = rng.choice(_SWAP_TYPES)
        bits = self.ops.swp_pfn_bits()
        off = rng.choice((
            0, 1, rng.choice(self.layout.small_pfns), (1 << bits) - 1, 1 << bits, (1 << (bits + 1)) | 5,
            SWP_OFFSET_MASK, rng.getrandbits(bits), rng.getrandbits(58) & SWP_OFFSET_MASK,
        ))
        return SwpEntry(t, off & SWP_OFFSET_MASK)

    def _swap_value(self, rng: random.Random, depth: int, entry: SwpEntry) -> int:
        linux = self.levels[depth].linux
        if linux == "pmd" or (linux != "pte" and rng.random() < 0.5):
            fn = getattr(self.ops, "swp_entry_to_pmd", None)
            if fn is not None:
                return int(fn(entry))
        return int(self.ops.swp_entry_to_pte(entry, exclusive=rng.random() < 0.3))  # type: ignore[attr-defined]

    def format_of(self, depth: int, value: int) -> EntryFormat | None:
        fn = getattr(self.ops, "entry_format", None)
        if fn is not None:
            with contextlib.suppress(Exception):
                return fn(self.levels[depth].linux, value)  # type: ignore[no-any-return]
        return None

    def hostile_target(self, rng: random.Random, depth: int, ctx: _Ctx | None) -> int:
        lay, ops = self.layout, self.ops
        choices: list[int] = [lay.root, rng.choice(lay.small_pfns) << ops.PAGE_SHIFT,
                              lay.zero_pfn << ops.PAGE_SHIFT, lay.huge_zero_pfn << ops.PAGE_SHIFT,
                              lay.ram_size + ops.PAGE_SIZE * rng.randrange(8),
                              (1 << ops.max_physmem_bits()) - ops.PAGE_SIZE,
                              lay.pool_end + ops.PAGE_SIZE * rng.randrange(16)]
        if ctx is not None:
            choices += [ctx.table, ctx.table]  # a table pointing to itself
            if ctx.parent is not None:
                choices.append(ctx.parent)
            d, pa = rng.choice([(d, pa) for pa, d in ctx.tables])
            choices.append(pa)  # any table of the hierarchy, any level
            align = self.min_align[depth] or ops.PAGE_SIZE
            size = self.levels[d].table_size
            if align < size:  # into the middle of a table
                choices.append(pa + align * rng.randrange(1, size // align))
        else:
            d = rng.randrange(1, len(lay.tables)) if len(lay.tables) > 1 else 0
            choices.append(rng.choice(lay.tables[d]))
        return rng.choice(choices)

    # -- the generator ------------------------------------------------------------------------
    def pick_kind(self, rng: random.Random) -> str:
        x = rng.random() * self.cum[-1]
        for k, c in zip(self.kinds, self.cum, strict=True):
            if x < c:
                return k
        return self.kinds[-1]

    def entry(
        self, rng: random.Random, depth: int, ctx: _Ctx | None = None, kind: str | None = None
    ) -> tuple[int, str]:
        """A random entry value for hardware ``depth`` and the kind that made it."""
        mask = (1 << self.width(depth)) - 1
        for _ in range(8):
            k = kind or self.pick_kind(rng)
            try:
                value = self._make(rng, depth, ctx, k) & mask
            except (ValueError, KeyError, AttributeError, NotImplementedError, FoliowalkError):
                continue  # this arch has no such builder or the draw did not fit: draw again
            if not self.forbidden(value, depth):
                return value, k
        return self.clear_value(depth) & mask, "none"

    def _make(self, rng: random.Random, depth: int, ctx: _Ctx | None, kind: str) -> int:
        ops = self.ops
        lv = self.levels[depth]
        linux = lv.linux
        if kind == "valid":
            return self.valid(rng, depth, ctx)
        if kind == "prot":
            if linux not in self.leaf_levels:
                raise ValueError("no leaves here")
            p = self.prot(rng)
            which = rng.choice(("protnone", "special", "devmap", "ro", "exec", "old", "kernel"))
            p = {
                "protnone": replace(p, protnone=True),
                "special": replace(p, special=True),
                "devmap": replace(p, devmap=True),
                "ro": replace(p, write=False),
                "exec": replace(p, exec=True),
                "old": replace(p, young=False, dirty=False),
                "kernel": replace(p, user=False),
            }[which]
            return self.leaf(rng, linux, p)
        if kind == "zero":
            if linux == "pte":
                return int(ops.pfn_pte(self.layout.zero_pfn, Prot(write=False, special=rng.random() < 0.8)))  # type: ignore[attr-defined]
            if linux == "pmd" and "pmd" in self.leaf_levels:
                return int(ops.pfn_pmd(self.layout.huge_zero_pfn, Prot(write=False)))  # type: ignore[attr-defined]
            raise ValueError("no zero page at this level")
        if kind == "flip":
            return self.valid(rng, depth, ctx) ^ (1 << rng.randrange(self.width(depth)))
        if kind in ("field", "reserved"):
            value = self.valid(rng, depth, ctx)
            fmt = self.format_of(depth, value)
            if fmt is None:
                if not self.formats:
                    raise ValueError("no formats")
                fmt = rng.choice(self.formats)
            names = fmt.fields
            if kind == "reserved":
                names = [f for f in fmt.fields if _RESERVED_FIELD.match(f) or _IGNORED_FIELD.match(f)]
                if not names:
                    raise ValueError("no reserved fields")
            name = rng.choice(names)
            width = fmt.width(name)
            top = (1 << width) - 1
            old = fmt.get(value, name)
            v = rng.choice((top, 1, 1 << rng.randrange(width), rng.getrandbits(width), 0, old ^ 1))
            return fmt.with_field(value, name, v & top)
        if kind == "wrong-level":
            others = [x for x in self.leaf_levels if x != linux] or self.leaf_levels
            return self.leaf(rng, rng.choice(others))
        if kind == "bad":
            if depth == self.last:
                raise ValueError("no table pointers at the last level")
            value = self._mk_table(depth, self.table_target(rng, depth, ctx))
            return int(ops.mk_bad(linux, value))  # type: ignore[attr-defined]
        if kind == "swap":
            return self._swap_value(rng, depth, self.swap_entry(rng))
        if kind == "migration":
            linux_leaf = linux if linux in ("pte", "pmd") else rng.choice(("pte", "pmd"))
            pfn = self.leaf_pfn(rng, linux_leaf)
            if rng.random() < 0.15:
                pfn = rng.getrandbits(ops.swp_pfn_bits())
            entry = ops.make_pfn_swp_entry(rng.choice(_MIGRATION_TYPES), pfn,
                                           young=rng.random() < 0.3, dirty=rng.random() < 0.3)
            return self._swap_value(rng, depth, entry)
        if kind == "hostile":
            if depth == self.last:
                raise ValueError("no table pointers at the last level")
            return self._mk_table(depth, self.hostile_target(rng, depth, ctx))
        if kind == "noise":
            r = rng.random()
            w = self.width(depth)
            if r < 0.5:
                return rng.getrandbits(w)
            if r < 0.85:
                v = 0
                for _ in range(rng.randint(1, 4)):
                    v |= 1 << rng.randrange(w)
                return v
            return rng.choice(((1 << w) - 1, 1, (1 << w) - 2, 1 << (w - 1)))
        if kind == "none":
            return self.clear_value(depth)
        raise ValueError(f"unknown kind {kind!r}")


# VMA flag sets a hierarchy's VMAs are drawn from (include/linux/mm.h).
_ANON = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE
_VMA_FLAGS = (
    (60, _ANON, "anon"),
    (8, VM_READ | VM_MAYREAD | VM_MAYWRITE, "anon-ro"),
    (10, _ANON | VM_SHARED | VM_MAYSHARE | VM_PFNMAP | VM_IO, "pfnmap"),
    (4, _ANON | VM_PFNMAP | VM_IO, "pfnmap-cow"),
    (10, _ANON | VM_SHARED | VM_MAYSHARE | VM_MIXEDMAP, "mixedmap"),
    (5, _ANON | VM_SHARED | VM_MAYSHARE, "shared"),
    (3, _ANON | VM_HUGETLB, "hugetlb"),
)


class HierarchyGenerator:
    """Whole random hierarchies for one configuration (tables, entries, VMAs, addresses)."""

    def __init__(self, key: str, kernel: str = DEFAULT_KERNEL, params: GenParams | None = None) -> None:
        self.ops = archs.get_ops(key, kernel)
        self.key = self.ops.config.key
        self.kernel = kernel
        self.layout = plan_layout(self.key)
        self.params = params or GenParams()
        self.entries = EntryGenerator(self.ops, self.layout, self.params.weights)
        self.entries.p_valid_leaf = self.params.p_valid_leaf
        self.entries.p_edge_pfn = self.params.p_edge_pfn
        self.levels = self.ops.config.levels
        self.root_slots = self._root_slots()

    def _root_slots(self) -> list[tuple[int, int]]:
        """(index, VA base) of root entries whose whole span is canonical and not reserved."""
        ops = self.ops
        top = self.levels[0]
        span = 1 << top.shift
        ext = (U64 << ops.config.va_bits) & U64
        out = []
        for i in range(top.entries):
            raw = i << top.shift
            base = raw if ops.va_valid(raw) else raw | ext
            if not (ops.va_valid(base) and ops.va_valid(base + span - 1)):
                continue
            if any(base < hi and lo < base + span for lo, hi in self.layout.reserved_va):
                continue
            out.append((i, base))
        if not out:
            raise ConfigError(f"{self.key}: no usable top-level entry")
        return out

    def generate(self, seed: int, index: int) -> Hierarchy:
        """Hierarchy ``index`` of a campaign seeded ``seed`` (pure function of both)."""
        rng = random.Random(hierarchy_seed(seed, index, self.key))
        return self.from_random(rng, seed=seed, index=index)

    def from_random(
        self, rng: random.Random, *, seed: int | None = None, index: int | None = None
    ) -> Hierarchy:
        p = self.params
        lay = self.layout
        levels = self.levels
        last = len(levels) - 1
        used = [0] * len(levels)  # frames taken per depth
        tables: list[tuple[int, int]] = [(lay.root, 0)]
        spare_used: list[tuple[int, int]] = []
        entries: list[Entry] = []
        addrs: list[int] = []
        leaves: list[tuple[int, int, int]] = []  # (va, depth, value) of fuzzed entries, for VMAs
        budget = [p.max_tables]

        def take(depth: int) -> int | None:
            if used[depth] >= len(lay.tables[depth]) or budget[0] <= 0:
                return None
            pa = lay.tables[depth][used[depth]]
            used[depth] += 1
            budget[0] -= 1
            return pa

        def spare(depth: int) -> int | None:
            pa = take(depth)
            if pa is not None:
                spare_used.append((pa, depth))
            return pa

        def add_addrs(va: int, span: int, k: int) -> None:
            for _ in range(k):
                if len(addrs) >= p.max_addrs:
                    return
                off = 0 if rng.random() < 0.1 else rng.randrange(span) & ~7
                addrs.append(va + off)

        def fill(depth: int, table: int, parent: int | None, slots: list[tuple[int, int]]) -> None:
            lv = levels[depth]
            span = 1 << lv.shift
            n_child = 0 if depth == last else rng.choice((1, 1, 2, 2, 3))
            n_fuzz = rng.randint(*p.entries_per_table)
            if lv.linux not in self.entries.leaf_levels:
                n_fuzz = round(n_fuzz * p.upper_fuzz)
            picks = rng.sample(slots, min(len(slots), n_child + n_fuzz + 1))
            child_slots, rest = picks[:n_child], picks[n_child:]
            none_slot, fuzz_slots = (rest[0], rest[1:]) if rest else (None, [])
            ctx = _Ctx(depth, table, parent, tables, spare)
            children: list[tuple[int, int]] = []
            for idx, va in child_slots:
                child = take(depth + 1)
                if child is None:
                    fuzz_slots.append((idx, va))
                    continue
                tables.append((child, depth + 1))
                ptr = self.entries._mk_table(depth, child)
                pa = table + idx * lv.entry_size
                if rng.random() < p.p_fuzz_pointer:  # fuzz the pointer; the subtree stays below it
                    how = rng.choice(("flip", "field", "reserved", "bad"))
                    value, kind = self.entries.entry(rng, depth, ctx, kind=how)
                    entries.append(Entry(pa, depth, value, ptr, kind))
                    leaves.append((va, depth, value))
                else:
                    entries.append(Entry(pa, depth, ptr, ptr, "table"))
                children.append((child, va))
            for idx, va in fuzz_slots:
                value, kind = self.entries.entry(rng, depth, ctx)
                entries.append(Entry(table + idx * lv.entry_size, depth, value, None, kind))
                leaves.append((va, depth, value))
                add_addrs(va, span, rng.randint(*p.addrs_per_entry))
            if none_slot is not None and rng.random() < p.p_none_addr:
                add_addrs(none_slot[1], span, 1)
            for child, va in children:
                sub = levels[depth + 1]
                sub_slots = [(i, va + (i << sub.shift)) for i in range(sub.entries)]
                if rng.random() < p.p_none_addr:
                    add_addrs(va, span, 1)
                fill(depth + 1, child, table, sub_slots)

        roots = list(self.root_slots)
        fill(0, lay.root, None, roots)
        vmas = self._vmas(rng, addrs, leaves)
        return Hierarchy(
            config=self.key,
            kernel=self.kernel,
            entries=tuple(entries),
            tables=tuple(t for t in tables if t[1] > 0) + tuple(spare_used),
            vmas=vmas,
            addrs=tuple(addrs),
            seed=seed,
            index=index,
        )

    def _vmas(
        self, rng: random.Random, addrs: list[int], leaves: list[tuple[int, int, int]]
    ) -> tuple[VmaSpec, ...]:
        """VMAs around the addresses: split at entry boundaries, some holes, random flags."""
        page = self.ops.PAGE_SIZE
        levels = self.levels
        if not addrs:
            return ()
        lo = min(addrs) & ~(page - 1)
        hi = _align(max(addrs) + 1, page)
        cuts = {lo, hi}
        for va, depth, _v in rng.sample(leaves, min(len(leaves), rng.randint(0, 6))):
            span = 1 << levels[depth].shift
            for c in (va, va + span, va + rng.randrange(span) // page * page):
                if lo < c < hi:
                    cuts.add(c)
        points = sorted(cuts)
        total = sum(w for w, _f, _n in _VMA_FLAGS)
        out = []
        for a, b in zip(points, points[1:], strict=False):
            if b <= a or rng.random() < self.params.p_vma_hole:
                continue  # a hole: addresses there are outside every VMA
            x = rng.random() * total
            flags, name = _VMA_FLAGS[-1][1:]
            for w, fl, nm in _VMA_FLAGS:
                x -= w
                if x < 0:
                    flags, name = fl, nm
                    break
            pgoff = 0
            if flags & VM_PFNMAP:
                inside = [(va, v) for va, d, v in leaves if a <= va < b and levels[d].linux == "pmd"]
                if inside and rng.random() < 0.5:
                    va, v = rng.choice(inside)
                    with contextlib.suppress(Exception):
                        pgoff = int(self.ops.pmd_pfn(v)) - ((va - a) >> self.ops.PAGE_SHIFT)  # type: ignore[attr-defined]
                if pgoff <= 0:
                    pgoff = rng.choice(self.layout.small_pfns)
            out.append(VmaSpec(a, b, flags, max(pgoff, 0), name))
        return tuple(out)


# -- materializing and evaluating -----------------------------------------------------------
@dataclass
class Evaluation:
    """One hierarchy run: walks (per address, per flags), probes and verdicts."""

    hierarchy: Hierarchy
    addrs: list[int]
    vmas: list[VMA]
    walks: list[list[WalkResult]]
    probes: list[ProbeResult]
    verdicts: list[list[str]]
    seconds: dict[str, float] = field(default_factory=dict)

    def rows(self, config: str, name: str = "fuzz") -> list[Row]:
        return [
            Row(config, name, a, w, self.probes[i], self.verdicts[i][j])
            for i, a in enumerate(self.addrs)
            for j, w in enumerate(self.walks[i])
        ]


def deciding_level(w: WalkResult) -> str:
    """The Linux level of the entry the walk decided on (its last read), or '-'."""
    return w.trace[-1][0] if w.trace else "-"


_HEX = re.compile(r"0x[0-9a-fA-F]+|\b\d{3,}\b|(?<=-)\d+\b")


def signature(w: WalkResult, mmu: ProbeResult, verdict: str) -> str:
    """What identifies a finding while it is shrunk: verdict (with numbers blanked), the walk's
    reason, the deciding level, and what the MMU did."""
    cls = verdict.split(":", 1)[0]
    mmu_kind = type(mmu).__name__
    if isinstance(mmu, Fault):
        mmu_kind = f"Fault:{mmu.kind}"
    return "|".join((cls, _HEX.sub("#", verdict), _HEX.sub("#", w.reason), deciding_level(w), mmu_kind))


class Target:
    """A configuration's fuzzing machine: guest RAM with the pool, an mm, optionally the MMU
    oracle.  ``load(h)`` writes a hierarchy (wiping the previous one); ``evaluate(h)`` walks,
    probes and judges it.  Also usable as a context manager (closes the oracle and RAM)."""

    def __init__(
        self, key: str, kernel: str = DEFAULT_KERNEL, *, oracle: bool = True, walker: str = "auto"
    ) -> None:
        if walker not in ("auto", "batch", "scalar"):
            raise ConfigError(f"walker must be auto, batch or scalar, not {walker!r}")
        self.ops = archs.get_ops(key, kernel)
        self.key = self.ops.config.key
        self.kernel = kernel
        self.layout = lay = plan_layout(self.key)
        ram, alloc, memmap, mm, builder, hz, _low = _low_allocations(self.ops, lay.ram_size)
        if (mm.pgd, mm.zero_pfn, hz) != (lay.root, lay.zero_pfn, lay.huge_zero_pfn):
            raise MemoryLayoutError(
                f"{self.key}: the fuzzing layout moved (pgd {mm.pgd:#x}, planned {lay.root:#x})"
            )
        alloc.reserve(lay.pool_start, lay.pool_end)
        for pfn, order in lay.folios:
            memmap.add_folio(pfn, order)
        for pa, size in lay.tagged:
            ram.tag(pa, size)
        levels = self.ops.config.levels
        self._clear: list[bytes] = []
        byteorder: Literal["little", "big"] = "big" if self.ops.big_endian else "little"
        for d, lv in enumerate(levels):
            cv = int(self.ops.clear_value(lv.linux))
            self._clear.append(cv.to_bytes(lv.entry_size, byteorder) * lv.entries)
            for pa in lay.tables[d]:
                ram.buf[pa : pa + lv.table_size] = self._clear[d]
        self.sc = Scenario(self.ops, ram, alloc, memmap, mm, builder)
        self.oracle: Any = None
        if oracle:
            from emu.machines.oracle import make_oracle

            self.oracle = make_oracle(self.ops, ram, alloc)
            self.sc.oracle = self.oracle
            builder.reserved = list(self.oracle.reserved_va())
            got = tuple((int(a), int(b)) for a, b in builder.reserved)
            if got != lay.reserved_va:
                raise MemoryLayoutError(
                    f"{self.key}: the probe machine's reserved VA moved: {got} != {lay.reserved_va}"
                )
        self._loaded: list[tuple[int, int]] = []
        self.hierarchy: Hierarchy | None = None
        self._batch = _batch_walker(walker)

    # -- context manager ----------------------------------------------------------------------
    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sc.close()
        self.oracle = None

    # -- loading ------------------------------------------------------------------------------
    def load(self, h: Hierarchy) -> None:
        """Write ``h`` into guest RAM: wipe the previous hierarchy's tables, write every entry,
        install the VMAs and the cases (``self.sc.cases``)."""
        if h.config != self.key:
            raise ConfigError(f"hierarchy is for {h.config}, this target is {self.key}")
        ram, levels, lay = self.sc.ram, self.ops.config.levels, self.layout
        buf = ram.buf
        for pa, d in self._loaded:
            buf[pa : pa + levels[d].table_size] = self._clear[d]
        root_size = levels[0].table_size
        buf[lay.root : lay.root + root_size] = self._clear[0]
        pool_lo, pool_hi = lay.pool_start, lay.pool_end
        for pa, _d in h.tables:
            if not (pool_lo <= pa < pool_hi):
                raise MemoryLayoutError(f"table frame {pa:#x} is outside the fuzzing pool")
        self._loaded = list(h.tables)
        for e in h.entries:
            if not (lay.root <= e.pa < lay.root + root_size or pool_lo <= e.pa < pool_hi):
                raise MemoryLayoutError(f"entry address {e.pa:#x} is outside the hierarchy's tables")
            ram.write_u64(e.pa, e.value)
        mm = self.sc.mm
        mm.vmas = []
        for v in h.vmas:
            mm.add_vma(VMA(v.start, v.end, v.flags, v.pgoff, name=v.name or "fuzz"))
        self.sc.builder.tables = [(lay.root, root_size)] + [(pa, levels[d].table_size) for pa, d in h.tables]
        self.sc.cases = [Case(f"fuzz {h.config} #{h.index}", a, self.vma_for(a)) for a in h.addrs]
        if self.oracle is not None:
            # The probe machine's own root entry (x86-64 slot 511) is part of the tables Linux
            # walks too, like the kernel half of a real pgd: a hostile pointer may reach it.
            self.oracle.attach(self.sc.mm)
        self.hierarchy = h

    def vma_for(self, addr: int) -> VMA:
        """The VMA holding ``addr``, else the nearest one (the walk then says outside-vma)."""
        mm = self.sc.mm
        vma = mm.find_vma(addr)
        if vma is not None:
            return vma
        if not mm.vmas:  # no VMA at all: a placeholder one page long at the address
            start = addr & ~(self.ops.PAGE_SIZE - 1)
            start = start if start + self.ops.PAGE_SIZE < 1 << 64 else start - self.ops.PAGE_SIZE
            return mm.add_vma(VMA(start, start + self.ops.PAGE_SIZE, _ANON, name="placeholder"))
        return min(mm.vmas, key=lambda v: min(abs(v.vm_start - addr), abs(v.vm_end - addr)))

    # -- running ------------------------------------------------------------------------------
    def walk(self, flag_sets: Sequence[int] = FLAG_COMBINATIONS) -> list[list[WalkResult]]:
        """folio_walk_start()/folio_walk_end() of every case with every flag set: through
        ``walk_many()`` (the batch walker) unless ``walker="scalar"``; both give identical
        results (tests/test_fuzz.py)."""
        if self._batch is not None:
            return self._batch(self.sc, self.sc.cases, tuple(flag_sets))
        return self._scalar_walk(flag_sets)

    def _scalar_walk(self, flag_sets: Sequence[int]) -> list[list[WalkResult]]:
        sc = self.sc
        ops, mm, ram = sc.ops, sc.mm, sc.ram
        out = []
        with mm.mmap_read():
            for case in sc.cases:
                vma, va = case.vma, case.addr
                row = []
                for f in flag_sets:
                    with ram.undo():
                        fw = FolioWalk()
                        folio = folio_walk_start(fw, vma, va, f)
                        row.append(walk_result(ops, fw, va, f))
                        if folio is not None:
                            folio_walk_end(fw, vma)
                out.append(row)
        return out

    def probe(self) -> list[ProbeResult]:
        """The MMU on every case (tables restored afterwards: the MMU sets accessed/dirty)."""
        sc = self.sc
        if self.oracle is None:
            return [ProbeError("no MMU oracle") for _ in sc.cases]
        saved = sc.ram.snapshot(sc.builder.tables)
        try:
            self.oracle.attach(sc.mm)
            return list(self.oracle.probe_many([c.addr for c in sc.cases]))
        finally:
            sc.ram.restore(saved)

    def evaluate(self, h: Hierarchy, flag_sets: Sequence[int] = FLAG_COMBINATIONS) -> Evaluation:
        t0 = time.perf_counter()
        self.load(h)
        t1 = time.perf_counter()
        walks = self.walk(flag_sets)
        t2 = time.perf_counter()
        probes = self.probe()
        t3 = time.perf_counter()
        ops, oracle = self.ops, self.oracle
        verdicts = []
        for i, row in enumerate(walks):
            mmu = probes[i]
            first = row[0]
            addr = self.sc.cases[i].addr
            v0 = judge(ops, first, mmu, oracle, addr=addr)
            # A row that batch_results() copied from the first (same record, other flags: it
            # shares the trace list) gets the same verdict: judge() does not read the flags.
            verdicts.append(
                [v0] + [v0 if w.trace is first.trace else judge(ops, w, mmu, oracle, addr=addr) for w in row[1:]]
            )
        t4 = time.perf_counter()
        return Evaluation(
            h, [c.addr for c in self.sc.cases], [c.vma for c in self.sc.cases], walks, probes, verdicts,
            {"load": t1 - t0, "walk": t2 - t1, "probe": t3 - t2, "judge": t4 - t3},
        )


def _batch_walker(walker: str) -> Callable[..., list[list[WalkResult]]] | None:
    """``emu.mm.pagewalk_batch.walk_many`` (the batch walker) adapted to rows per case, or None for the
    per-address walker (``walker="scalar"``, or no emu.mm.pagewalk_batch)."""
    if walker == "scalar":
        return None
    try:
        mod = importlib.import_module("emu.mm.pagewalk_batch")
    except ImportError:
        if walker == "batch":
            raise ConfigError("walker=batch needs emu.mm.pagewalk_batch") from None
        return None
    fn = getattr(mod, "walk_many", None)
    return _adapt_walk_many(fn) if fn is not None else None


def _adapt_walk_many(fn: Callable[..., Any]) -> Callable[..., list[list[WalkResult]]]:
    """``walk_many(vma, addrs, flags, isolated=True)`` per (VMA, flags), back to rows per case."""

    def call(sc: Scenario, cases: list[Case], flag_sets: tuple[int, ...]) -> list[list[WalkResult]]:
        ops = sc.ops
        groups: dict[int, tuple[VMA, list[int]]] = {}
        for i, c in enumerate(cases):
            groups.setdefault(id(c.vma), (c.vma, []))[1].append(i)
        out: list[list[WalkResult | None]] = [[None] * len(flag_sets) for _ in cases]
        with sc.mm.mmap_read():
            for vma, idx in groups.values():
                addrs = [cases[i].addr for i in idx]
                first: list[WalkResult] | None = None
                for j, f in enumerate(flag_sets):
                    res = batch_results(ops, fn(vma, addrs, f, isolated=True), addrs, f, first)
                    first = first or res
                    for k, wr in enumerate(res):
                        out[idx[k]][j] = wr
        return out  # type: ignore[return-value]

    return call


def batch_results(
    ops: LinuxPgtable, b: Any, addrs: Sequence[int], flags: int, same: Sequence[WalkResult] | None = None
) -> list[WalkResult]:
    """:func:`emu.verify.walk_result` of every record of a ``WalkBatch``, read from its columns
    for the addresses the vectorised walk decided (found normal leaves, none entries) instead of
    materialising a FolioWalk for each; records of the per-address walker go through
    walk_result() itself.  ``same``: the results of the same addresses under another flag set;
    a vector-decided record equal to it (the flags change nothing there) is a copy of it that
    shares its ``trace`` list -- :meth:`Target.evaluate` judges such a row once.
    tests/test_fuzz.py proves all of it equal to walk_result() on every record."""
    from emu.verify import leaf_expectations

    n = len(addrs)
    scalar = b.scalar.tolist()
    found = b.found.tolist()
    level = b.level.tolist()
    entry_pa = b.entry_pa.tolist()
    entry = b.entry.tolist()
    folio_pfn = b.folio_pfn.tolist()
    folio_order = b.folio_order.tolist()
    page_pfn = b.page_pfn.tolist()
    out: list[WalkResult] = []
    for i in range(n):
        reason = b.reason(i)
        if scalar[i] or reason == "outside-vma":
            out.append(walk_result(ops, b[i], addrs[i], flags))
            continue
        lv = LEVEL_NAMES[level[i]] if level[i] >= 0 else None
        ent = entry[i] if lv is not None else None
        epa = entry_pa[i] if lv is not None else None
        if same is not None:
            o = same[i]
            if (o.reason == reason and o.level == lv and o.entry == ent and o.entry_pa == epa
                    and (not found[i] or (o.folio_pfn == folio_pfn[i] and o.page_pfn == page_pfn[i]))
                    and not o.cleared and not o.warnings):
                wr = object.__new__(WalkResult)  # copy.copy() without its generic machinery
                wr.__dict__.update(o.__dict__)
                wr.flags = flags
                out.append(wr)
                continue
        wr = WalkResult(
            flags=flags, reason=reason, kind=b.kind(i) if found[i] else "", level=lv,
            entry_pa=epa, entry=ent, trace=b.trace(i),
        )
        if found[i]:
            wr.folio_pfn, wr.folio_order = folio_pfn[i], folio_order[i]
            wr.page_pfn = page_pfn[i] if page_pfn[i] >= 0 else None
        leaf_expectations(ops, wr, addrs[i])  # as walk_result()
        out.append(wr)
    return out


@contextlib.contextmanager
def materialize(h: Hierarchy, *, oracle: bool = False) -> Iterator[Scenario]:
    """``with materialize(h) as sc:`` -- ``h`` built in fresh guest RAM: ``sc.mm``, ``sc.cases``
    (one :class:`~emu.mm.scenarios.Case` per address, in its VMA), ``sc.oracle`` if ``oracle``."""
    t = Target(h.config, h.kernel, oracle=oracle)
    try:
        t.load(h)
        yield t.sc
    finally:
        t.close()


# -- shrinking ----------------------------------------------------------------------------------
def _ddmin(items: list[Any], fails: Callable[[list[Any]], bool]) -> list[Any]:
    """Zeller's ddmin: a 1-minimal subset of ``items`` for which ``fails`` still holds."""
    n = 2
    while len(items) >= 2:
        chunk = max(1, len(items) // n)
        subsets = [items[i : i + chunk] for i in range(0, len(items), chunk)]
        reduced = False
        for s in subsets:
            if fails(s):
                items, n, reduced = s, 2, True
                break
        if not reduced:
            for s in subsets:
                comp = [x for x in items if x not in s]
                if comp and fails(comp):
                    items, n, reduced = comp, max(n - 1, 2), True
                    break
        if not reduced:
            if n >= len(items):
                break
            n = min(len(items), n * 2)
    if len(items) == 1 and fails([]):
        return []
    return items


@dataclass
class Shrunk:
    """A minimized finding: the hierarchy (one address), its signature and what shrinking did."""

    hierarchy: Hierarchy
    signature: str
    evaluations: int
    seconds: float
    before: tuple[int, int, int]  # (entries, fuzzed entries, set bits) before shrinking
    complete: bool = True


def _single(h: Hierarchy, addr: int, vmas: tuple[VmaSpec, ...]) -> Hierarchy:
    return replace(h, addrs=(addr,), vmas=vmas)


def shrink(target: Target, h: Hierarchy, addr: int, sig: str, *, budget_s: float = 30.0) -> Shrunk:
    """The smallest hierarchy (fewest fuzzed entries, then table pointers, then set bits) in which
    ``addr`` still gives a row with signature ``sig``."""
    t0 = time.perf_counter()
    count = [0]
    lay = target.layout
    guard = EntryGenerator(target.ops, lay)  # clearing address bits must not aim at the machine
    before = (len(h.entries), len(h.fuzzed), h.set_bits())

    def shows(cand: Hierarchy) -> bool:
        count[0] += 1
        ev = target.evaluate(cand)
        return any(signature(w, ev.probes[0], ev.verdicts[0][j]) == sig for j, w in enumerate(ev.walks[0]))

    def out_of_time() -> bool:
        return time.perf_counter() - t0 > budget_s

    # The one VMA the walk uses (the address's, else its nearest).
    target.load(_single(h, addr, h.vmas))
    vma = target.sc.cases[0].vma
    vmas = tuple(v for v in h.vmas if v.start == vma.vm_start and v.end == vma.vm_end) or h.vmas
    cur = _single(h, addr, vmas)
    if not shows(cur):
        cur = _single(h, addr, h.vmas)
        if not shows(cur):
            raise FoliowalkError(f"finding at {addr:#x} does not reproduce on its own: {sig}")

    def rebuild(entries: list[Entry]) -> Hierarchy:
        return _tidy(replace(cur, entries=tuple(sorted(entries, key=lambda e: (e.depth, e.pa)))), lay)

    def phase(select: Callable[[Entry], bool], remove: Callable[[Entry], Entry | None]) -> None:
        nonlocal cur
        keep = [e for e in cur.entries if not select(e)]
        cands = [e for e in cur.entries if select(e)]

        def with_only(sub: list[Any]) -> Hierarchy:
            chosen = set(id(e) for e in sub)
            removed = [remove(e) for e in cands if id(e) not in chosen]
            return rebuild(keep + list(sub) + [e for e in removed if e is not None])

        if not cands or out_of_time():
            return
        best = _ddmin(cands, lambda sub: not out_of_time() and shows(with_only(sub)))
        cur = with_only(best)

    # 1. fuzzed entries: revert to the skeleton pointer, or drop.
    phase(lambda e: e.fuzzed, lambda e: None if e.base is None else Entry(e.pa, e.depth, e.base, e.base))
    # 2. skeleton pointers nobody needs.
    phase(lambda e: not e.fuzzed, lambda e: None)
    # 3. bits of the fuzzed entries, high to low, until nothing more can go.
    changed = True
    while changed and not out_of_time():
        changed = False
        for i, e in enumerate(cur.entries):
            if not e.fuzzed:
                continue
            value = e.value
            for bit in reversed(range(e.value.bit_length())):
                if not value >> bit & 1 or out_of_time() or guard.forbidden(value & ~(1 << bit), e.depth):
                    continue
                trial = list(cur.entries)
                trial[i] = replace(e, value=value & ~(1 << bit))
                cand = rebuild(trial)
                if shows(cand):
                    value &= ~(1 << bit)
                    changed = True
            if value != e.value:
                ents = list(cur.entries)
                ents[i] = replace(e, value=value)
                cur = rebuild(ents)
    # The shrunk hierarchy must still show the signature as it stands.
    if not shows(cur):  # pragma: no cover - every step above checked it
        raise FoliowalkError("shrinking lost the finding")
    return Shrunk(cur, sig, count[0], time.perf_counter() - t0, before, complete=not out_of_time())


def _tidy(h: Hierarchy, lay: Layout) -> Hierarchy:
    """Keep only the table frames that hold entries or that an entry points to."""
    ops = archs.get_ops(h.config, h.kernel)
    levels = ops.config.levels
    targets: set[int] = set()
    for e in h.entries:
        with contextlib.suppress(Exception):
            targets.add(int(ops.table_pa(levels[e.depth].linux, e.value)))
    used = []
    for pa, d in h.tables:
        size = levels[d].table_size
        if pa in targets or any(pa <= e.pa < pa + size for e in h.entries):
            used.append((pa, d))
    return replace(h, tables=tuple(used))


# -- campaigns ----------------------------------------------------------------------------------
@dataclass
class CampaignOptions:
    """What ``foliowalk fuzz`` runs.  ``hierarchies``: stop after this many (all indices below
    it), ``seconds``: stop after this long -- whichever comes first (at least one of them)."""

    configs: list[str]
    seed: int = 0
    seconds: float | None = 60.0
    hierarchies: int | None = None
    jobs: int = 1
    out: Path | None = None
    kernel: str = DEFAULT_KERNEL
    params: GenParams = field(default_factory=GenParams)
    shrink: bool = True
    shrink_budget_s: float = 30.0
    max_findings: int = 50
    hang_timeout_s: float = 120.0
    #: Test double hook: called in the worker with the hierarchy index before it runs.
    before_hierarchy: Callable[[int], None] | None = None
    progress: bool = True
    #: auto | batch | scalar: which walker evaluates the rows (auto: the batch walker when
    #: emu.mm.pagewalk_batch is there; see :meth:`Target.walk`).
    walker: str = "auto"


@dataclass
class Stats:
    """Counts a worker sends for each hierarchy and the campaign adds up."""

    hierarchies: int = 0
    cases: int = 0
    rows: int = 0
    faults: int = 0
    cpu_s: float = 0.0  # process CPU time the hierarchies took (what one core did)
    verdicts: Counter[str] = field(default_factory=Counter)
    by_level: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, o: Stats) -> None:
        self.hierarchies += o.hierarchies
        self.cases += o.cases
        self.rows += o.rows
        self.faults += o.faults
        self.cpu_s += o.cpu_s
        self.verdicts.update(o.verdicts)
        self.by_level.update(o.by_level)
        for k, v in o.seconds.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v

    def to_json(self) -> dict[str, Any]:
        return {
            "hierarchies": self.hierarchies,
            "cases": self.cases,
            "rows": self.rows,
            "faults": self.faults,
            "cpu_s": round(self.cpu_s, 3),
            "verdicts": dict(self.verdicts),
            "by_level": {f"{lv}/{cls}": n for (lv, cls), n in sorted(self.by_level.items())},
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }


@dataclass
class FindingRecord:
    """A finding as the campaign reports it (``path``: its fixture set or spec file)."""

    kind: str  # disagree | emulator-deviation | crash | hang
    key: str
    config: str
    index: int | None
    addr: int | None
    verdict: str
    path: str | None
    entries: int | None = None
    fuzzed: int | None = None
    set_bits: int | None = None
    note: str = ""
    shrunk_entries: list[str] = field(default_factory=list)  # the fuzzed entries left, decoded

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class CampaignResult:
    options: CampaignOptions
    stats: Stats
    findings: list[FindingRecord]
    wall_s: float
    worker_busy_s: float
    interrupted: bool
    crashes: int
    digest: str | None = None  # over the hierarchies run, in index order (count-limited runs)
    indices: list[int] = field(default_factory=list)

    @property
    def cases_per_s(self) -> float:
        return self.stats.cases / self.wall_s if self.wall_s else 0.0

    @property
    def cases_per_core_s(self) -> float:
        """Cases per second of one worker's busy time (what one core does)."""
        return self.stats.cases / self.worker_busy_s if self.worker_busy_s else 0.0

    @property
    def cases_per_cpu_s(self) -> float:
        """Cases per CPU second of the workers (per core, whatever else shares the machine)."""
        return self.stats.cases / self.stats.cpu_s if self.stats.cpu_s else 0.0

    @property
    def fault_rate(self) -> float:
        return self.stats.faults / self.stats.cases if self.stats.cases else 0.0

    @property
    def ok(self) -> bool:
        return self.stats.verdicts.get("disagree", 0) == 0 and not any(
            f.kind in ("disagree", "crash", "hang") for f in self.findings
        )

    def to_json(self) -> dict[str, Any]:
        o = self.options
        return {
            "format": "foliowalk-fuzz-campaign/1",
            "configs": o.configs,
            "kernel": o.kernel,
            "seed": o.seed,
            "jobs": o.jobs,
            "seconds_limit": o.seconds,
            "hierarchies_limit": o.hierarchies,
            "wall_s": round(self.wall_s, 3),
            "worker_busy_s": round(self.worker_busy_s, 3),
            "cases_per_s": round(self.cases_per_s, 1),
            "cases_per_core_s": round(self.cases_per_core_s, 1),
            "cases_per_cpu_s": round(self.cases_per_cpu_s, 1),
            "fault_rate": round(self.fault_rate, 4),
            "interrupted": self.interrupted,
            "crashes": self.crashes,
            "digest": self.digest,
            "stats": self.stats.to_json(),
            "findings": [f.to_json() for f in self.findings],
        }


class _Worker:
    """What runs in a worker process (or in-process with ``jobs=0``): generate, evaluate,
    judge; shrink and save findings the campaign lets it claim."""

    def __init__(
        self, opts: CampaignOptions, claim: Callable[[str], bool], report: Callable[..., None]
    ) -> None:
        self.opts = opts
        self.claim = claim
        self.report = report
        self.targets: dict[str, Target] = {}
        self.gens: dict[str, HierarchyGenerator] = {}

    def target(self, key: str) -> Target:
        if key not in self.targets:
            self.targets[key] = Target(key, self.opts.kernel, walker=self.opts.walker)
            self.gens[key] = HierarchyGenerator(key, self.opts.kernel, self.opts.params)
        return self.targets[key]

    def close(self) -> None:
        for t in self.targets.values():
            t.close()
        self.targets.clear()

    def run_one(self, index: int) -> tuple[Stats, str]:
        opts = self.opts
        key = opts.configs[index % len(opts.configs)]
        target = self.target(key)
        c0 = time.process_time()
        t0 = time.perf_counter()
        h = self.gens[key].generate(opts.seed, index)
        t1 = time.perf_counter()
        if opts.before_hierarchy is not None:
            opts.before_hierarchy(index)
        ev = target.evaluate(h)
        st = Stats(hierarchies=1, cases=len(ev.addrs))
        st.seconds["generate"] = t1 - t0
        st.seconds.update(ev.seconds)
        seen: dict[str, tuple[int, int]] = {}
        for i, row in enumerate(ev.walks):
            mmu = ev.probes[i]
            if isinstance(mmu, Fault):
                st.faults += 1
            for j, w in enumerate(row):
                verdict = ev.verdicts[i][j]
                cls = verdict.split(":", 1)[0]
                st.rows += 1
                st.verdicts[cls] += 1
                st.by_level[(deciding_level(w), cls)] += 1
                if cls in ("disagree", "emulator-deviation"):
                    seen.setdefault(signature(w, mmu, verdict), (i, j))
        t2 = time.perf_counter()
        for sig, (i, j) in seen.items():
            cls = sig.split("|", 1)[0]
            key_ = sig if cls == "disagree" else f"emulator-deviation|{ev.verdicts[i][j]}"
            if self.claim(f"{h.config}|{key_}"):
                self.save_finding(target, h, ev, i, j, sig)
        st.seconds["findings"] = time.perf_counter() - t2
        st.cpu_s = time.process_time() - c0
        return st, h.digest()

    def save_finding(self, target: Target, h: Hierarchy, ev: Evaluation, i: int, j: int, sig: str) -> None:
        opts = self.opts
        addr = ev.addrs[i]
        verdict = ev.verdicts[i][j]
        kind = verdict.split(":", 1)[0]
        name = f"{kind}-{h.config.replace(':', '-')}-s{opts.seed}-h{h.index}-{addr:x}"
        note = ""
        small = h
        try:
            if opts.shrink:
                res = shrink(target, h, addr, sig, budget_s=opts.shrink_budget_s)
                small = res.hierarchy
                n, nf, nb = res.before
                note = (f"shrunk from {n} entries ({nf} fuzzed, {nb} set bits) in {res.evaluations} "
                        f"evaluations, {res.seconds:.1f} s" + ("" if res.complete else " (time budget hit)"))
            else:
                small = _single(h, addr, h.vmas)
        except FoliowalkError as exc:
            note = f"not shrunk: {exc}"
            small = _single(h, addr, h.vmas)
        # The verdict as the minimized hierarchy gives it (addresses in it may have changed).
        sev = target.evaluate(small)
        for jj, w in enumerate(sev.walks[0]):
            if signature(w, sev.probes[0], sev.verdicts[0][jj]) == sig:
                verdict = sev.verdicts[0][jj]
                break
        path = None
        if opts.out is not None:
            path, extra_note = save_hierarchy_finding(opts.out, small, name, sig, verdict)
            note = "; ".join(x for x in (note, extra_note) if x)
        self.report(FindingRecord(
            kind, sig, h.config, h.index, addr, verdict, str(path) if path else None,
            len(small.entries), len(small.fuzzed), small.set_bits(), note,
            [line for e, line in zip(sorted(small.entries, key=lambda e: (e.depth, e.pa)),
                                     small.describe(target.ops), strict=True) if e.fuzzed],
        ))


def save_hierarchy_finding(out: Path, h: Hierarchy, name: str, sig: str, verdict: str) -> tuple[Path, str]:
    """Save a (shrunk, one-address) finding: its hierarchy spec, and a fixture set when the
    fixtures API is there.  The rows are recomputed on a fresh machine first: a finding must
    not depend on the state of the machine that found it.  Returns (path, note)."""
    out.mkdir(parents=True, exist_ok=True)
    spec = {"signature": sig, "verdict": verdict, "hierarchy": h.to_json()}
    spec_path = out / f"{name}.hierarchy.json"
    _atomic_write(spec_path, json.dumps(spec, indent=1).encode())
    try:
        fixtures = importlib.import_module("emu.fixtures")
    except ImportError:
        return spec_path, "fixture not written: emu.fixtures is not available"
    from emu.verify import verify_scenario

    with Target(h.config, h.kernel) as fresh:
        fresh.load(h)
        # verify_scenario() tags the frames the walks expect: never the probe machine's.
        ev = fresh.evaluate(h)
        if any(w.expected_pa is not None and fresh.layout.in_forbidden(w.expected_pa)
               for row in ev.walks for w in row):
            return spec_path, "fixture not written: a leaf maps the probe machine's frames"
        fresh.load(h)
        rows = verify_scenario(fresh.sc)
        if not any(signature(r.walk, r.mmu, r.verdict) == sig for r in rows):
            return spec_path, "fixture not written: the finding did not reproduce on a fresh machine"
        path = fixtures.write_fixture_set(
            out, fresh.sc, rows, name=name,
            extra={"fuzz": {"signature": sig, "hierarchy": h.to_json()}},
        )
    return Path(path), ""


def _atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` whole: a temporary file, fsync, rename, fsync the folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finding_claimer(opts: CampaignOptions, claimed: set[str]) -> Callable[[str], bool]:
    def claim(key: str) -> bool:
        if key in claimed or len(claimed) >= opts.max_findings:
            return False
        claimed.add(key)
        return True

    return claim


def _worker_main(conn: Any, opts: CampaignOptions, first: int, stride: int, deadline: float | None) -> None:
    """A worker process: hierarchies ``first, first+stride, ...`` until the deadline, the count
    or a "stop" from the campaign.  Messages to the campaign: ("start", i), ("done", i, stats,
    digest, busy_s), ("claim", key) -> ("claim", bool), ("finding", record), ("exit",)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the campaign decides when to stop
    stop = [False]

    def recv_reply(tag: str) -> Any:
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                stop[0] = True
            elif msg[0] == tag:
                return msg[1]

    def claim(key: str) -> bool:
        conn.send(("claim", key))
        return bool(recv_reply("claim"))

    def report(rec: FindingRecord) -> None:
        conn.send(("finding", rec))

    worker = _Worker(opts, claim, report)
    try:
        idx = first
        while not stop[0]:
            if opts.hierarchies is not None and idx >= opts.hierarchies:
                break
            if deadline is not None and time.time() >= deadline:
                break
            while conn.poll():
                if conn.recv()[0] == "stop":
                    stop[0] = True
            if stop[0]:
                break
            conn.send(("start", idx))
            t0 = time.perf_counter()
            st, dg = worker.run_one(idx)
            conn.send(("done", idx, st, dg, time.perf_counter() - t0))
            idx += stride
    finally:
        worker.close()
    conn.send(("exit",))


class _Progress:
    """The live line on stderr (a TTY: rewritten in place; else one line every 10 s)."""

    def __init__(self, enabled: bool, label: str) -> None:
        import sys

        self.out = sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.out.isatty()
        self.label = label
        self.t0 = time.monotonic()
        self.last = 0.0 if self.tty else self.t0
        self.width = 0
        self.shown: tuple[int, int, int] | None = None

    def update(self, stats: Stats, findings: int, crashes: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < (0.5 if self.tty else 10.0):
            return
        state = (stats.cases, findings, crashes)
        if force and state == self.shown:
            return
        self.last, self.shown = now, state
        el = now - self.t0
        rate = stats.cases / el if el > 0 else 0.0
        fr = stats.faults / stats.cases if stats.cases else 0.0
        v = stats.verdicts
        text = (f"fuzz {self.label} {el:6.1f}s {stats.cases:>10,} cases {rate:>8,.0f}/s faults {fr:4.0%} | "
                + " ".join(f"{_SHORT[c]} {v.get(c, 0):,}" for c in VERDICT_CLASSES)
                + f" | findings {findings} crashes {crashes}")
        if self.tty:
            pad = max(0, self.width - len(text))
            self.out.write("\r" + text + " " * pad)
            self.width = len(text)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def done(self) -> None:
        if self.tty and self.width:
            self.out.write("\n")
            self.out.flush()


_SHORT = {
    "agree": "agree", "linux-only": "linux-only", "emulator-deviation": "emu-dev",
    "oracle-cannot-check": "cannot-check", "oracle-error": "oracle-error", "disagree": "DISAGREE",
}


def check_campaign_configs(configs: Sequence[str]) -> list[str]:
    """Full configuration keys, each with an MMU oracle (else ConfigError)."""
    keys = []
    for c in configs:
        key = archs.get_config(c).key
        if not plan_layout(key).oracle:
            raise ConfigError(f"{key}: this architecture has no MMU oracle yet; nothing to fuzz against")
        keys.append(key)
    if not keys:
        raise ConfigError("no configuration to fuzz")
    return list(dict.fromkeys(keys))


def run_campaign(opts: CampaignOptions) -> CampaignResult:
    """Run a campaign: in-process with ``jobs=0`` (no crash isolation), else in ``jobs`` worker
    processes.  Ctrl-C stops it and keeps what was found."""
    if opts.seconds is None and opts.hierarchies is None:
        raise ConfigError("a campaign needs --seconds or --hierarchies")
    opts.configs = check_campaign_configs(opts.configs)
    if opts.out is not None:
        opts.out = Path(opts.out)
        opts.out.mkdir(parents=True, exist_ok=True)
    if opts.jobs <= 0:
        result = _run_inline(opts)
    else:
        result = _run_processes(opts)
    if opts.out is not None:
        _atomic_write(opts.out / "campaign.json", json.dumps(result.to_json(), indent=1).encode())
        # findings.jsonl accumulates over runs: the old lines plus this run's, replaced whole.
        index = opts.out / "findings.jsonl"
        old = index.read_bytes() if index.exists() else b""
        if old and not old.endswith(b"\n"):
            old = old[: old.rfind(b"\n") + 1]  # a line torn by a run killed before this fix
        new = "".join(json.dumps(rec.to_json()) + "\n" for rec in result.findings).encode()
        _atomic_write(index, old + new)
    return result


def _digest(digests: dict[int, str]) -> str:
    h = hashlib.sha256()
    for i in sorted(digests):
        h.update(f"{i}:{digests[i]}\n".encode())
    return h.hexdigest()


def _run_inline(opts: CampaignOptions) -> CampaignResult:
    stats = Stats()
    findings: list[FindingRecord] = []
    claimed: set[str] = set()
    digests: dict[int, str] = {}
    busy = 0.0
    progress = _Progress(opts.progress, ",".join(opts.configs))
    worker = _Worker(opts, _finding_claimer(opts, claimed), findings.append)
    t0 = time.perf_counter()
    deadline = t0 + opts.seconds if opts.seconds is not None else None
    interrupted = False
    idx = 0
    try:
        while opts.hierarchies is None or idx < opts.hierarchies:
            if deadline is not None and time.perf_counter() >= deadline:
                break
            t1 = time.perf_counter()
            st, dg = worker.run_one(idx)
            busy += time.perf_counter() - t1
            stats.add(st)
            digests[idx] = dg
            idx += 1
            progress.update(stats, len(findings), 0)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        worker.close()
        progress.update(stats, len(findings), 0, force=True)
        progress.done()
    return CampaignResult(opts, stats, findings, time.perf_counter() - t0, busy, interrupted, 0,
                          _digest(digests), sorted(digests))


@dataclass
class _Slot:
    """One worker process and where it is."""

    first: int
    proc: Any = None
    conn: Any = None
    current: int | None = None
    started: float = 0.0
    next_index: int = 0
    exited: bool = False
    respawns: int = 0


def _run_processes(opts: CampaignOptions) -> CampaignResult:
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")  # never fork a process that holds Unicorn engines and threads
    stats = Stats()
    findings: list[FindingRecord] = []
    claimed: set[str] = set()
    claim = _finding_claimer(opts, claimed)
    digests: dict[int, str] = {}
    busy = 0.0
    crashes = 0
    progress = _Progress(opts.progress, ",".join(opts.configs))
    t0 = time.perf_counter()
    deadline = time.time() + opts.seconds if opts.seconds is not None else None
    slots = [_Slot(first=w, next_index=w) for w in range(opts.jobs)]

    def spawn(slot: _Slot) -> None:
        import signal
        import threading

        parent, child = ctx.Pipe(duplex=True)
        slot.proc = ctx.Process(
            target=_worker_main, args=(child, opts, slot.next_index, opts.jobs, deadline),
            name=f"foliowalk-fuzz-{slot.first}", daemon=True,
        )
        # The worker starts with SIGINT ignored (inherited through exec), so a Ctrl-C meant for
        # the campaign cannot kill it while it is still importing; the campaign tells it to stop.
        main_thread = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
        try:
            slot.proc.start()
        finally:
            if main_thread:
                signal.signal(signal.SIGINT, old)
        child.close()
        slot.conn, slot.current, slot.exited = parent, None, False

    def more_to_do(slot: _Slot) -> bool:
        if opts.hierarchies is not None and slot.next_index >= opts.hierarchies:
            return False
        return deadline is None or time.time() < deadline

    def stop_all() -> None:
        for s in slots:
            if s.proc is not None and s.proc.is_alive():
                with contextlib.suppress(OSError, BrokenPipeError):
                    s.conn.send(("stop",))

    def crashed(slot: _Slot, why: str, kind: str) -> None:
        nonlocal crashes
        if interrupted[0] and kind == "crash" and slot.proc.exitcode in (-2, 1):
            slot.exited = True  # stopped by the user's Ctrl-C, not by the emulator
            return
        crashes += 1
        idx = slot.current
        rec = FindingRecord(kind, f"{kind}|{why}", "?", idx, None, f"{kind}: {why}", None,
                            note="the worker was replaced; the campaign went on")
        if idx is not None:
            key = opts.configs[idx % len(opts.configs)]
            rec.config = key
            try:
                h = HierarchyGenerator(key, opts.kernel, opts.params).generate(opts.seed, idx)
                rec.entries, rec.fuzzed, rec.set_bits = len(h.entries), len(h.fuzzed), h.set_bits()
                if opts.out is not None:
                    name = f"{kind}-{key.replace(':', '-')}-s{opts.seed}-h{idx}"
                    path = opts.out / f"{name}.hierarchy.json"
                    _atomic_write(path, json.dumps({"signature": rec.key, "verdict": rec.verdict,
                                                    "hierarchy": h.to_json()}, indent=1).encode())
                    rec.path = str(path)
            except Exception as exc:  # the record itself still counts
                rec.note += f"; hierarchy not saved: {exc!r}"
            slot.next_index = idx + opts.jobs
        findings.append(rec)
        slot.current = None
        slot.exited = True
        if slot.conn is not None:
            slot.conn.close()
        slot.respawns += 1
        if more_to_do(slot) and slot.respawns <= 100 and not interrupted[0]:
            spawn(slot)

    interrupted = [False]
    for s in slots:
        spawn(s)
    grace_until: float | None = None
    try:
        while any(not s.exited for s in slots):
            try:
                live = [s for s in slots if not s.exited]
                waitables: list[Any] = [s.conn for s in live] + [s.proc.sentinel for s in live]
                ready = wait(waitables, timeout=0.25)
                for s in live:
                    # Drain messages first: a worker that exited normally sent ("exit",) before.
                    while not s.exited and s.conn in ready or (not s.exited and s.conn.poll()):
                        try:
                            msg = s.conn.recv()
                        except (EOFError, OSError):
                            break
                        tag = msg[0]
                        s.started = time.monotonic()  # any message shows the worker is alive
                        if tag == "start":
                            s.current, s.started = msg[1], time.monotonic()
                        elif tag == "done":
                            _tag, idx, st, dg, b = msg
                            stats.add(st)
                            digests[idx] = dg
                            busy += b
                            s.current = None
                            s.next_index = idx + opts.jobs
                        elif tag == "claim":
                            s.conn.send(("claim", claim(msg[1]) and not interrupted[0]))
                        elif tag == "finding":
                            findings.append(msg[1])
                        elif tag == "exit":
                            s.exited = True
                            s.proc.join(5)
                            s.conn.close()
                        if s.exited:
                            break
                        ready = []
                    if s.exited:
                        continue
                    if not s.proc.is_alive():
                        s.proc.join(1)
                        code = s.proc.exitcode
                        why = f"worker exited with {_exit_text(code)} while running hierarchy {s.current}"
                        crashed(s, why, "crash")
                    elif s.current is not None and time.monotonic() - s.started > opts.hang_timeout_s:
                        s.proc.kill()
                        s.proc.join(5)
                        why = f"hierarchy {s.current} ran longer than {opts.hang_timeout_s:.0f} s"
                        crashed(s, why, "hang")
                progress.update(stats, len(findings), crashes)
                if grace_until is not None and time.monotonic() > grace_until:
                    for s in slots:
                        if not s.exited and s.proc.is_alive():
                            s.proc.kill()
                            s.proc.join(5)
                            s.exited = True
            except KeyboardInterrupt:
                if interrupted[0]:  # a second Ctrl-C: do not wait for the workers any more
                    grace_until = time.monotonic()
                    continue
                interrupted[0] = True
                grace_until = time.monotonic() + 30
                stop_all()
    finally:
        for s in slots:
            if s.proc is not None and s.proc.is_alive():
                s.proc.kill()
                s.proc.join(5)
        progress.update(stats, len(findings), crashes, force=True)
        progress.done()
    return CampaignResult(opts, stats, findings, time.perf_counter() - t0, busy, interrupted[0], crashes,
                          _digest(digests), sorted(digests))


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        import signal

        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


# -- the report ---------------------------------------------------------------------------------
def format_report(res: CampaignResult) -> str:
    """The end-of-run summary: rate, verdicts by class and by deciding entry level, findings."""
    st = res.stats
    o = res.options
    lines = [
        f"foliowalk fuzz: {', '.join(o.configs)}  kernel {o.kernel}  seed {o.seed}  jobs {o.jobs}"
        + ("  (interrupted)" if res.interrupted else ""),
        f"  {st.hierarchies:,} hierarchies, {st.cases:,} cases (addresses), {st.rows:,} rows "
        f"(x{len(FLAG_COMBINATIONS)} FW_* flag sets) in {res.wall_s:.1f} s",
        f"  rate: {res.cases_per_s:,.0f} cases/s overall; per core {res.cases_per_core_s:,.0f} cases/s "
        f"per worker-busy second, {res.cases_per_cpu_s:,.0f} per CPU second",
        f"  MMU fault rate {res.fault_rate:.1%}",
    ]
    sec = st.seconds
    total = sum(sec.values()) or 1.0
    work = total - sec.get("findings", 0.0)
    if sec.get("findings") and work > 0:
        lines.append(f"  per core without shrinking/saving findings: {st.cases / work:,.0f} cases/s")
    parts = sorted(sec.items(), key=lambda x: -x[1])
    lines.append("  time: " + ", ".join(f"{k} {v / total:.0%}" for k, v in parts))
    if res.digest:
        lines.append(f"  cases digest: {res.digest[:16]} over {len(res.indices)} hierarchies")
    levels = ["pgd", "p4d", "pud", "pmd", "pte", "-"]
    present = [lv for lv in levels if any(st.by_level.get((lv, c)) for c in VERDICT_CLASSES)]
    w = max(12, *(len(c) for c in VERDICT_CLASSES))
    lines.append("")
    lines.append(f"  {'verdict':<{w}} {'rows':>11} " + " ".join(f"{lv:>10}" for lv in present))
    for c in VERDICT_CLASSES:
        lines.append(f"  {c:<{w}} {st.verdicts.get(c, 0):>11,} "
                     + " ".join(f"{st.by_level.get((lv, c), 0):>10,}" for lv in present))
    lines.append(f"  {'(by the level of the entry the walk decided on; - = none read)':<{w}}")
    lines.append("")
    if res.findings:
        lines.append(f"  findings ({len(res.findings)}):")
        for f in res.findings:
            where = f" {f.addr:#x}" if f.addr is not None else ""
            size = ""
            if f.entries is not None:
                noun = "entry" if f.fuzzed == 1 else "entries"
                size = f", {f.fuzzed} fuzzed {noun} of {f.entries}, {f.set_bits} set bits"
            lines.append(f"   - {f.kind} {f.config} hierarchy {f.index}{where}{size}: {f.verdict}")
            for e in f.shrunk_entries:
                lines.append(f"     {e}")
            if f.path:
                lines.append(f"     saved: {f.path}")
            if f.note:
                lines.append(f"     {f.note}")
    else:
        lines.append("  findings: none")
    return "\n".join(lines)


def replay_in_child(conn: Any, h: Hierarchy) -> None:
    """Child side of ``foliowalk fuzz --replay``: evaluate ``h`` and send its rows as text."""
    from emu.mm.pagewalk import flags_str
    from emu.verify import mmu_summary

    with Target(h.config, h.kernel) as t:
        ev = t.evaluate(h)
        rows = [
            {"addr": a, "flags": flags_str(w.flags), "walk": w.summary(), "mmu": mmu_summary(ev.probes[i]),
             "verdict": ev.verdicts[i][j]}
            for i, a in enumerate(ev.addrs) for j, w in enumerate(ev.walks[i])
        ]
    conn.send(rows)
    conn.close()
