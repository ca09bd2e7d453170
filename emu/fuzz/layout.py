"""The fuzzer's physical memory layout: the pool of table frames, tagged data folios and
leaf-sized folios at a fixed address, the same in every process (see the package docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import archs
from archs.linux import (
    LinuxPgtable,
)
from emu.errors import ConfigError
from emu.mm.scenarios import new_address_space, ram_size_for

# -- layout -------------------------------------------------------------------------------------
MiB = 1 << 20
GUARD = 16 * MiB  # room below the pool for the probe machine's frames
TABLES_PER_LEVEL = 40  # table frames in the pool for every level below the root
SMALL_FOLIOS = ((0, 16), (1, 2), (2, 4), (4, 2))  # (order, how many): tagged data folios
BIG_FOLIOS = {"pmd": 3, "pud": 1}  # leaf-sized folios (PMD_SIZE, PUD_SIZE) for valid leaves
MAX_BIG_FOLIO = 2 << 30  # larger leaves (arm64 16K/64K upper levels) point beyond RAM instead
MAX_TAGGED = 4 * MiB  # larger folios stay zero (a probe then asks uc_vmem_translate)
FREE_ABOVE = 16 * MiB  # empty RAM above the pool: pointers there read none entries


def align_up(x: int, a: int) -> int:
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


def low_allocations(ops: LinuxPgtable, ram_size: int) -> tuple[Any, ...]:
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
    ram, alloc, memmap, mm, builder, hz, reserved_low = low_allocations(ops, ram_size_for(ops))
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
        cur = align_up(cur, max(size, 8))
        tables.append(tuple(cur + i * size for i in range(TABLES_PER_LEVEL)))
        cur += TABLES_PER_LEVEL * size
    folios: list[tuple[int, int]] = []
    tagged: list[tuple[int, int]] = []
    small: list[int] = []
    for order, count in SMALL_FOLIOS:
        size = ops.PAGE_SIZE << order
        for _ in range(count):
            cur = align_up(cur, size)
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
            cur = align_up(cur, size)
            folios.append((cur >> ops.PAGE_SHIFT, order))
            pfns.append(cur >> ops.PAGE_SHIFT)
            if size <= MAX_TAGGED:
                tagged.append((cur, size))
            cur += size
        leaf_folios.append((linux, tuple(pfns)))
    pool_end = align_up(cur, ops.PAGE_SIZE)
    ram_size = align_up(pool_end + FREE_ABOVE, max(ops.PMD_SIZE, ops.PAGE_SIZE))
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
