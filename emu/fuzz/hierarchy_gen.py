"""Whole random hierarchies for one configuration: tables, entries, VMAs and addresses.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from typing import Any

import archs
from archs.base import U64
from archs.linux import (
    DEFAULT_KERNEL,
)
from emu.errors import ConfigError
from emu.fuzz.entry_gen import EntryGenerator, GenContext, GenParams
from emu.fuzz.layout import align_up, plan_layout
from emu.fuzz.spec import Entry, Hierarchy, VmaSpec, hierarchy_seed
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
)

# VMA flag sets a hierarchy's VMAs are drawn from (include/linux/mm.h).
ANON_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE
_VMA_FLAGS = (
    (60, ANON_FLAGS, "anon"),
    (8, VM_READ | VM_MAYREAD | VM_MAYWRITE, "anon-ro"),
    (10, ANON_FLAGS | VM_SHARED | VM_MAYSHARE | VM_PFNMAP | VM_IO, "pfnmap"),
    (4, ANON_FLAGS | VM_PFNMAP | VM_IO, "pfnmap-cow"),
    (10, ANON_FLAGS | VM_SHARED | VM_MAYSHARE | VM_MIXEDMAP, "mixedmap"),
    (5, ANON_FLAGS | VM_SHARED | VM_MAYSHARE, "shared"),
    (3, ANON_FLAGS | VM_HUGETLB, "hugetlb"),
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

        def fill(depth: int, table: int, parent: int | None, slots: Sequence[tuple[int, int]]) -> None:
            lv = levels[depth]
            span = 1 << lv.shift
            n_child = 0 if depth == last else rng.choice((1, 1, 2, 2, 3))
            n_fuzz = rng.randint(*p.entries_per_table)
            if lv.linux not in self.entries.leaf_levels:
                n_fuzz = round(n_fuzz * p.upper_fuzz)
            picks = rng.sample(slots, min(len(slots), n_child + n_fuzz + 1))
            child_slots, rest = picks[:n_child], picks[n_child:]
            none_slot, fuzz_slots = (rest[0], rest[1:]) if rest else (None, [])
            ctx = GenContext(depth, table, parent, tables, spare)
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
                sub_slots = _Slots(va, sub.shift, sub.entries)
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
        hi = align_up(max(addrs) + 1, page)
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


class _Slots(Sequence[tuple[int, int]]):
    """A table's slots ``(index, first address)``, made when ``rng.sample()`` picks them (it
    reads only the length and the picked items: the same picks as from the full list)."""

    __slots__ = ("va", "shift", "n")

    def __init__(self, va: int, shift: int, n: int) -> None:
        self.va, self.shift, self.n = va, shift, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(i)
        return (i, self.va + (i << self.shift))
