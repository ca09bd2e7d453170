"""Random entry encodings, every kind of :data:`KINDS`, drawn only from what ``archs/`` declares
(the Linux builders and the construct entry formats of the configuration).
"""

from __future__ import annotations

import bisect
import contextlib
import importlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import archs
from archs.base import EntryFormat, HwLevel
from archs.linux import (
    SWP_OFFSET_MASK,
    LinuxPgtable,
    Prot,
    SwpEntry,
)
from emu.errors import ConfigError, FoliowalkError
from emu.fuzz.layout import Layout, align_up

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


def interesting_swap_types(ops: Any) -> tuple[int, ...]:
    """Swap types worth generating for ``ops``'s kernel config: the first and last real swap
    files, every special type swap.h carves for it (hwpoison, migration, device, PTE marker,
    v6.1's swapin error), and the highest type number."""
    special = tuple(sorted(ops.swap.constants()[k] for k in ops.swap.constants()
                           if k.startswith("SWP_") and not k.endswith("_NUM")))
    return (0, 1, 2, ops.swap.MAX_SWAPFILES - 1, *special, 31)


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
class GenContext:
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
        # layout.in_forbidden() by bisection over the merged ranges (the same set of addresses)
        merged: list[list[int]] = []
        for lo, hi in sorted((lo, hi) for lo, hi in layout.forbidden if lo < hi):
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._forbidden_lo = [lo for lo, _ in merged]
        self._forbidden_hi = [hi for _, hi in merged]
        self.swap_types = interesting_swap_types(ops)
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

    def _in_forbidden(self, pa: int) -> bool:
        i = bisect.bisect_right(self._forbidden_lo, pa) - 1
        return i >= 0 and pa < self._forbidden_hi[i]

    def forbidden(self, value: int, depth: int | None = None) -> bool:
        """Could the MMU walk the probe machine's frames through ``value`` -- read at any level
        where Linux takes it for a table pointer (also with the address bits above 32..52
        dropped) -- or does it map them as a leaf at its own ``depth``?"""
        ops = self.ops
        hit = self._in_forbidden
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
            return align_up(lay.ram_size, size) // ops.PAGE_SIZE + rng.randrange(4) * npages
        top = (1 << (ops.max_physmem_bits() - ops.PAGE_SHIFT)) - npages
        return top - top % npages

    def leaf(self, rng: random.Random, linux: str, prot: Prot | None = None) -> int:
        builder = getattr(self.ops, f"pfn_{linux}")
        pfn = self.leaf_pfn(rng, linux)
        return int(builder(pfn, prot or self.prot(rng)))

    def valid(self, rng: random.Random, depth: int, ctx: GenContext | None) -> int:
        """A valid entry for ``depth``: a leaf where leaves are allowed, else a table pointer."""
        lv = self.levels[depth]
        can_leaf = lv.linux in self.leaf_levels
        if depth == self.last or (can_leaf and rng.random() < self.p_valid_leaf):
            if can_leaf:
                return self.leaf(rng, lv.linux)
        if depth < self.last:
            return self._mk_table(depth, self.table_target(rng, depth, ctx))
        return self.leaf(rng, self.leaf_levels[-1])

    def table_target(self, rng: random.Random, depth: int, ctx: GenContext | None) -> int:
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
        t = rng.choice(self.swap_types)
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

    def hostile_target(self, rng: random.Random, depth: int, ctx: GenContext | None) -> int:
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
        self, rng: random.Random, depth: int, ctx: GenContext | None = None, kind: str | None = None
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

    def _make(self, rng: random.Random, depth: int, ctx: GenContext | None, kind: str) -> int:
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
            entry = ops.make_pfn_swp_entry(rng.choice(tuple(ops.swap.migration_types.values()) or (0,)), pfn,
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
