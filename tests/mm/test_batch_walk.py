"""walk_many() and the scalar fast path give exactly what the reference folio_walk_start() gives.

The reference is ``folio_walk_start_reference()`` (emu/mm/pagewalk.py ``_Walker``: mm/pagewalk.c step by
step).  On random hierarchies of random entries -- good and bad tables, none entries (also with
only the KNL A/D bits set), normal/special/devmap/PROT_NONE leaves at PTE, PMD and PUD level, the
zero page and the huge zero folio, swap, migration, hwpoison and device-private entries, pfns
beyond the memmap, tables outside RAM and raw random values -- for both kernel versions, 4- and
5-level paging, every flag combination and VMA kind, three ways of walking the same address list
must leave identical records (folio, page, level, entry address and value, reason, kind, trace,
cleared entries, warnings) and identical tables afterwards:

* the reference, address by address;
* folio_walk_start() (fast path + reference fallback), address by address;
* walk_many(), sequential and ``isolated``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archs
import emu.mm.pagewalk_batch
import emu.mm.pagewalk_batch_rules
from archs.kconfig import kernel_config
from archs.linux import Prot, SwapTypes, SwpEntry
from emu.mm.mm_types import (
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    VMA,
    Folio,
    Page,
)
from emu.mm.pagewalk import (
    FLAG_COMBINATIONS,
    FolioWalk,
    folio_walk_end,
    folio_walk_start,
    folio_walk_start_reference,
)
from emu.mm.pagewalk_batch import VECTOR_RULES, WalkBatch, X86_64Rules, walk_many
from emu.mm.scenarios import build_default, new_address_space

CONFIGS = ["x86_64:4level", "x86_64:5level"]
KERNELS = ["v6.12", "aa39ca6940f1"]
RAM = 64 << 20
U64 = (1 << 64) - 1
VMA_FLAGS = [
    VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE,  # private anonymous (COW)
    VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_SHARED | VM_MAYSHARE,  # shared
    VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_SHARED | VM_MAYSHARE | VM_PFNMAP,
    VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_SHARED | VM_MAYSHARE | VM_MIXEDMAP,
    VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_PFNMAP,  # private pfnmap (COW)
]
PROTS = [
    Prot(),
    Prot(write=False),
    Prot(young=False, dirty=False),
    Prot(special=True),
    Prot(write=False, special=True),
    Prot(devmap=True),
    Prot(protnone=True),
    Prot(exec=True, user=False),
]
_SW = SwapTypes(kernel_config("x86_64"))  # v6.12 distro: the walks' default ops
# migration, hwpoison, a device-private type number (an ordinary swap file on this config), real swap files
SWAP_TYPES = [_SW.SWP_MIGRATION_READ, _SW.SWP_MIGRATION_READ_EXCLUSIVE, _SW.SWP_MIGRATION_WRITE, _SW.SWP_HWPOISON,
              SwapTypes(kernel_config("x86_64", "device-private")).SWP_DEVICE_READ, 0, 3]
# What an entry may be, per Linux level (repeats weight the choice: mostly tables above the PTEs,
# so that the lower levels are reached often).
KINDS = {
    "pgd": ["table"] * 6 + ["none", "zero", "none-knl", "bad", "raw", "outside-ram"],
    "p4d": ["table"] * 6 + ["none", "zero", "none-knl", "bad", "raw", "outside-ram"],
    "pud": ["table"] * 5 + ["leaf"] * 2 + ["none", "zero", "none-knl", "bad", "raw", "swap", "outside-ram"],
    "pmd": ["table"] * 5 + ["leaf"] * 2 + ["none", "zero", "none-knl", "bad", "raw", "swap", "swap"],
    "pte": ["leaf"] * 4 + ["swap"] * 2 + ["none", "zero", "none-knl", "raw"],
}


class Space:
    """A random hierarchy: tables under slots 1..3 of the top level, up to 3 entries per table."""

    def __init__(self, config: str, kernel: str, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self.ops: Any = archs.get_ops(config, kernel)
        ops = self.ops
        self.draw = draw
        # (sparse: only what is written costs memory)
        self.ram_size = max(RAM << (ops.PAGE_SHIFT - 12), 4 * ops.PMD_SIZE)
        self.ram, self.alloc, self.memmap, self.mm, self.b = new_address_space(ops, ram_size=self.ram_size)
        self.folios = [self.b.alloc_folio(o, tag=False) for o in (0, 0, 2, 4)]
        self.pmd_folio = self.b.alloc_folio((ops.PMD_SIZE // ops.PAGE_SIZE).bit_length() - 1, tag=False)
        self.hz = self.mm.alloc_huge_zero_folio() if draw(st.booleans()) else None
        self.levels = ops.config.levels
        top = self.levels[0]
        self.base = 1 << top.shift
        page = ops.PAGE_SIZE
        end = self.base + 3 * (1 << top.shift) - draw(st.sampled_from([0, 0, page, ops.PMD_SIZE]))
        start = self.base + draw(st.sampled_from([0, 0, page, 3 * page]))
        self.vma = self.mm.add_vma(VMA(start, end, draw(st.sampled_from(VMA_FLAGS)), name="random"))
        self.slots: list[tuple[int, int]] = []  # (va of the slot, its span) for every entry written
        self.fill(self.mm.pgd, 0, 0)

    def pfn_for(self, linux: str) -> int:
        choice = self.draw(st.sampled_from(["folio", "folio", "zero", "hz", "beyond", "random"]))
        size = self.ops.config.leaf_size(linux) or self.ops.PAGE_SIZE
        align = size >> self.ops.PAGE_SHIFT
        if choice == "folio":
            if linux == "pmd":
                return self.pmd_folio.pfn & ~(align - 1)
            f = self.draw(st.sampled_from(self.folios))
            if linux == "pte":
                return int(f.pfn + self.draw(st.integers(0, f.nr_pages - 1)))
            return int(f.pfn & ~(align - 1))
        if choice == "zero":
            return self.mm.zero_pfn & ~(align - 1)
        if choice == "hz" and self.hz is not None:
            return self.hz & ~(align - 1)
        if choice == "beyond":
            first = (self.ram_size >> self.ops.PAGE_SHIFT) + align * self.draw(st.integers(0, 3))
            return (first + align - 1) & ~(align - 1)
        return int(self.draw(st.integers(0, (self.ram_size >> self.ops.PAGE_SHIFT) - 1))) & ~(align - 1)

    def entry(self, depth: int, va: int) -> int:
        ops = self.ops
        lv = self.levels[depth]
        linux = lv.linux
        last = depth == len(self.levels) - 1
        kind = self.draw(st.sampled_from(KINDS[linux]))
        if last and kind in ("table", "bad", "outside-ram"):
            kind = "leaf"
        if kind == "leaf" and ops.config.leaf_size(linux) is None:
            kind = "raw"  # no leaves at this level in this configuration
        if kind == "none":
            return int(ops.clear_value(linux))  # what pXd_clear() stores (0, or s390's typed empty)
        if kind == "zero":
            return 0
        if kind == "none-knl":
            return 0x60  # x86-64: only A/D, which pte_none()/pmd_none()/... ignore (KNL erratum)
        if kind == "raw":
            return int(self.draw(st.integers(0, U64)))
        try:
            if kind == "outside-ram":
                return int(ops.mk_table(linux, self.ram_size + (16384 << self.draw(st.integers(0, 4)))))
            if kind in ("table", "bad"):
                child = self.b.alloc_table(self.levels[depth + 1])
                val = ops.mk_table(linux, child)
                if kind == "bad":
                    val ^= 1 << self.draw(st.sampled_from([0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 52, 57, 58, 62, 63]))
                self.fill(child, depth + 1, va)
                return int(val)
            if kind == "swap":
                t = self.draw(st.sampled_from(SWAP_TYPES))
                if linux not in ("pte", "pmd"):
                    return int(ops.swp_entry_to_pte(SwpEntry(t, 0x1234)))
                entry = ops.make_pfn_swp_entry(t, self.pfn_for("pte"))
                if linux == "pte":
                    return int(ops.swp_entry_to_pte(entry, exclusive=self.draw(st.booleans())))
                return int(ops.swp_entry_to_pmd(entry))
            prot = self.draw(st.sampled_from(PROTS))
            make = {"pte": "pfn_pte", "pmd": "pfn_pmd", "pud": "pfn_pud"}[linux]
            return int(getattr(ops, make)(self.pfn_for(linux), prot))
        except (ValueError, KeyError):  # an arch that cannot build this: a random value instead
            return int(self.draw(st.integers(0, U64)))

    def fill(self, table: int, depth: int, va: int) -> None:
        lv = self.levels[depth]
        first = 1 if depth == 0 else 0
        for j in range(self.draw(st.integers(1, 3))):
            idx = first + j
            if idx >= lv.entries:
                break
            slot_va = va + (idx << lv.shift)
            if depth == 0 and self.ops.va_valid(slot_va) is False:
                continue
            self.slots.append((slot_va, 1 << lv.shift))
            self.ram.write_u64(table + idx * 8, self.entry(depth, slot_va))

    def addresses(self) -> list[int]:
        out = []
        for _ in range(self.draw(st.integers(1, 40))):
            va, span = self.draw(st.sampled_from(self.slots))
            pick = self.draw(st.sampled_from(["start", "page", "any", "next"]))
            if pick == "start":
                out.append(va)
            elif pick == "page":
                out.append(va + (self.draw(st.integers(0, max(0, span // 4096 - 1))) << 12))
            elif pick == "any":
                out.append(va + self.draw(st.integers(0, span - 1)))
            else:
                out.append(va + span + self.draw(st.integers(0, 4095)))
        out += self.draw(st.lists(st.integers(self.base - 8192, self.base + 4 * (1 << self.levels[0].shift)),
                                  max_size=4))
        return [a for a in out if self.ops.va_valid(a)]

    def table_bytes(self) -> list[tuple[int, bytes]]:
        return self.ram.snapshot(self.b.tables)

    def no_lock_held(self) -> bool:
        return not self.mm.page_table_lock.is_locked() and not any(
            lk.is_locked() for lk in self.mm._ptlocks.values()
        )


def one_by_one(sp: Space, addrs: list[int], flags: int, start: Callable[..., object],
               isolated: bool = False) -> list[FolioWalk]:
    out = []
    for a in addrs:
        fw = FolioWalk()
        if isolated:
            with sp.ram.undo():
                if start(fw, sp.vma, a, flags) is not None:
                    folio_walk_end(fw, sp.vma)
        elif start(fw, sp.vma, a, flags) is not None:
            folio_walk_end(fw, sp.vma)
        out.append(fw)
    return out


def check_columns(batch: WalkBatch, records: list[FolioWalk]) -> None:
    """The numpy columns say what the records say."""
    for i, fw in enumerate(records):
        assert batch.found[i] == (fw.folio is not None)
        assert batch.level[i] == (-1 if fw.level is None else fw.level)
        if fw.level is not None:
            assert int(batch.entry_pa[i]) == fw.entryp and int(batch.entry[i]) == fw.entry
        assert batch.folio_pfn[i] == (fw.folio.pfn if fw.folio else -1)
        assert batch.folio_order[i] == (fw.folio.order if fw.folio else -1)
        assert batch.page_pfn[i] == (fw.page.pfn if fw.page else -1)
        assert batch.reason(i) == fw.reason and batch.kind(i) == fw.kind
        assert batch.trace(i) == [(s.level, s.pa, s.value) for s in fw.trace]


ALL_CONFIGS = archs.all_config_keys()
# x86-64 twice: with its own vector rules and with the generic MemoRules every other architecture
# whose fast path is on gets natively; the others as they are.
RULE_CASES = [(c, r) for c in ALL_CONFIGS for r in (("x86-rules", "memo-rules") if c in CONFIGS else ("native",))]


@pytest.mark.parametrize("config,rules", RULE_CASES)
@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_hierarchies_batch_fast_and_reference_agree(
    config: str, rules: str, kernel: str, data: st.DataObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    if rules == "memo-rules":
        monkeypatch.setitem(emu.mm.pagewalk_batch.VECTOR_RULES, "x86_64", emu.mm.pagewalk_batch.MemoRules)
    sp = Space(config, kernel, data.draw)
    addrs = sp.addresses()
    flags = data.draw(st.sampled_from(FLAG_COMBINATIONS))
    with sp.mm.mmap_read():
        with sp.ram.undo():
            ref = one_by_one(sp, addrs, flags, folio_walk_start_reference)
            ref_tables = sp.table_bytes()
        with sp.ram.undo():
            fast = one_by_one(sp, addrs, flags, folio_walk_start)
            assert sp.table_bytes() == ref_tables
        with sp.ram.undo():
            batch = walk_many(sp.vma, addrs, flags)
            assert sp.table_bytes() == ref_tables  # the same bad entries cleared, in the same order
        iso_ref = one_by_one(sp, addrs, flags, folio_walk_start_reference, isolated=True)
        before = sp.table_bytes()
        iso = walk_many(sp.vma, addrs, flags, isolated=True)
        assert sp.table_bytes() == before
        with sp.ram.undo():
            scalar_batch = walk_many(sp.vma, addrs, flags, vectorize=False)
    assert sp.no_lock_held()
    for i, a in enumerate(addrs):
        assert fast[i] == ref[i], (hex(a), fast[i], ref[i])
        assert batch[i] == ref[i], (hex(a), batch[i], ref[i])
        assert iso[i] == iso_ref[i], (hex(a), iso[i], iso_ref[i])
        assert scalar_batch[i] == ref[i], (hex(a), scalar_batch[i], ref[i])
    check_columns(batch, ref)
    check_columns(iso, iso_ref)
    sp.ram.close()


@pytest.mark.parametrize("config", ALL_CONFIGS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_default_scenario_every_flag_combination(config: str, kernel: str) -> None:
    sc = build_default(archs.get_ops(config, kernel), with_oracle=False)
    try:
        with sc.mm.mmap_read():
            for vma in sc.mm.vmas:
                addrs = [c.addr for c in sc.cases if c.vma is vma]
                for flags in FLAG_COMBINATIONS:
                    ref = []
                    for a in addrs:
                        with sc.ram.undo():
                            ref += one_by_one_vma(vma, [a], flags)
                    batch = walk_many(vma, addrs, flags, isolated=True)
                    assert batch.records() == ref
                    check_columns(batch, ref)
    finally:
        sc.close()


def one_by_one_vma(vma: VMA, addrs: list[int], flags: int) -> list[FolioWalk]:
    out = []
    for a in addrs:
        fw = FolioWalk()
        if folio_walk_start_reference(fw, vma, a, flags) is not None:
            folio_walk_end(fw, vma)
        out.append(fw)
    return out


def test_sequential_batch_sees_entries_cleared_by_earlier_addresses() -> None:
    """A bad p4d entry is cleared by the first address that reaches it; the second address under
    it then finds a none entry -- exactly as two folio_walk_start() calls in a row."""
    ops: Any = archs.get_ops("x86_64:4level")
    ram, _alloc, _memmap, mm, b = new_address_space(ops, ram_size=RAM)
    base = 1 << 39
    vma = mm.add_vma(VMA(base, base + (2 << 39), VMA_FLAGS[0]))
    f = b.alloc_folio(0)
    b.map_folio(base, f, Prot())
    b.map_folio(base + (1 << 39), b.alloc_folio(0), Prot())
    pml4e = b.entry_pa(base, "p4d", create=False)
    ram.write_u64(pml4e, ops.mk_bad("p4d", ram.read_u64(pml4e)))
    addrs = [base + (1 << 39), base + 8, base + 16, base + (1 << 39) + 8]
    with mm.mmap_read():
        with ram.undo():
            batch = walk_many(vma, addrs, 0)
        assert [batch.reason(i) for i in range(4)] == ["found", "bad@p4d", "none@p4d", "found"]
        assert batch.scalar.tolist() == [False, True, True, False]
        assert batch[1].cleared and not batch[2].cleared
        iso = walk_many(vma, addrs, 0, isolated=True)
        assert [iso.reason(i) for i in range(4)] == ["found", "bad@p4d", "bad@p4d", "found"]
        assert ram.read_u64(pml4e) != 0  # isolated: every clear undone


@pytest.mark.parametrize("config", ["arm64:4k:48", "arm64:16k:47", "arm64:64k:48"])
def test_arm64_contiguous_ptes_are_gathered_by_all_three_walkers(config: str) -> None:
    """arm64 ptep_get() of a valid PTE with PTE_CONT is contpte_ptep_get() (v6.12
    arch/arm64/include/asm/pgtable.h:1632-1640, arch/arm64/mm/contpte.c:155-180): fw.pte has
    PTE_AF if any entry of the CONT_PTES block is young, PTE_DIRTY if any is dirty.  The fast
    path and the vector pass hand such entries to the reference; all three give the same record,
    and only contiguous entries go to the per-address walker."""
    from archs.arm64 import PTE_AF, PTE_CONT, PTE_DIRTY

    ops: Any = archs.get_ops(config)
    ram, _alloc, _memmap, mm, b = new_address_space(ops, ram_size=max(RAM, 4 * ops.PMD_SIZE))
    page, n = ops.PAGE_SIZE, ops.CONT_PTES
    order = n.bit_length() - 1
    base = 1 << 30 if ops.PMD_SIZE < 1 << 30 else 1 << 40
    vma = mm.add_vma(VMA(base, base + 4 * n * page, VMA_FLAGS[0]))
    folio = b.alloc_folio(order)
    ptes = b.map_folio(base, folio, Prot(write=False, young=False, dirty=False))
    for i, pa in enumerate(ptes):
        ram.write_u64(pa, ram.read_u64(pa) | PTE_CONT | (PTE_AF if i == n - 1 else 0) | (PTE_DIRTY if i == 1 else 0))
    plain = b.alloc_folio(0)
    b.map_folio(base + 2 * n * page, plain, Prot(young=False, dirty=False))
    addrs = [base, base + 5 * page + 12, base + 2 * n * page]
    with mm.mmap_read():
        ref = one_by_one_vma(vma, addrs, 0)
        fast = []
        for a in addrs:
            fw = FolioWalk()
            assert folio_walk_start(fw, vma, a, 0) is not None
            folio_walk_end(fw, vma)
            fast.append(fw)
        batch = walk_many(vma, addrs, 0)
    for i in (0, 1):
        stored = ram.read_u64(ptes[0 if i == 0 else 5])
        assert not stored & (PTE_AF | PTE_DIRTY)
        assert ref[i].entry == stored | PTE_AF | PTE_DIRTY  # read-only: PTE_RDONLY stays
        assert ref[i].trace[-1].value == stored  # the entry read is what the trace holds
    assert ref[2].entry == ram.read_u64(b.entry_pa(base + 2 * n * page, "pte", create=False))  # not contiguous
    assert fast == ref and [batch[i] for i in range(3)] == ref
    assert batch.scalar.tolist() == [True, True, False]


def test_columns_and_records_of_a_mapped_range_without_any_python_object() -> None:
    ops = archs.get_ops("x86_64:4level")
    _ram, _alloc, _memmap, mm, b = new_address_space(ops, ram_size=RAM)
    base = 1 << 39
    vma = mm.add_vma(VMA(base, base + (1 << 30), VMA_FLAGS[0]))
    f = b.alloc_folio(4)
    b.map_folio(base, f, Prot())
    addrs = np.array([base + i * 4096 + 0x18 for i in range(32)], dtype=np.uint64)
    with mm.mmap_read():
        batch = walk_many(vma, addrs, 0)
    assert not batch.scalar.any()
    assert batch.found[:16].all() and not batch.found[16:].any()
    assert (batch.folio_pfn[:16] == f.pfn).all() and (batch.folio_order[:16] == 4).all()
    assert batch.page_pfn[:16].tolist() == [f.pfn + i for i in range(16)]
    assert [batch.reason(i) for i in (0, 16)] == ["found", "none@pte"]
    assert batch[5].folio == Folio(f.pfn, 4) and batch[5].page == Page(f.pfn + 5) and batch[5].ptl is None
    assert len(batch) == 32 and len(batch[3:6]) == 3 and batch[-1].reason == "none@pte"


def test_walk_many_checks_its_arguments() -> None:
    ops = archs.get_ops("x86_64:4level")
    _ram, _alloc, _memmap, mm, _b = new_address_space(ops, ram_size=RAM)
    vma = mm.add_vma(VMA(1 << 39, 1 << 40, VMA_FLAGS[0]))
    with pytest.raises(RuntimeError, match="mmap_assert_locked"):
        walk_many(vma, [1 << 39])
    with mm.mmap_read():
        with pytest.raises(ValueError):
            walk_many(vma, [-1])
        with pytest.raises(ValueError):
            walk_many(vma, np.zeros((2, 2), dtype=np.uint64))
        assert len(walk_many(vma, [])) == 0


# -- the vector rules against the scalar predicates, entry by entry --------------------------------


def _interesting_entries(rng: random.Random) -> list[int]:
    """Fully random values, and plausible ones: an address in 51:12 with a random subset of the
    low flag bits and of the bits Linux uses above 51 (NX, DEVMAP, SAVED_DIRTY, pkey)."""
    vals = [0, 0x60, U64]
    for _ in range(3000):
        if rng.random() < 0.25:
            vals.append(rng.getrandbits(64))
            continue
        addr = rng.getrandbits(40) << 12 if rng.random() < 0.7 else rng.getrandbits(20) << 21
        low = rng.getrandbits(12) & rng.getrandbits(12)  # sparse
        if rng.random() < 0.6:
            low |= 0x63 if rng.random() < 0.5 else 0x67  # a Linux table or a leaf
        high = 0
        for bit in (57, 58, 59, 63):
            high |= (rng.random() < 0.15) << bit
        vals.append(addr | low | high)
    return vals


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("pti", [True, False])
def test_x86_vector_rules_imply_the_scalar_predicates(config: str, kernel: str, pti: bool) -> None:
    """What X86_64Rules claims, the scalar predicates (archs/x86_64.py) say too; ``none`` is
    exact.  Entries a rule does not claim go to the per-address walker."""
    ops: Any = archs.get_ops(config, kernel)
    ops.pti = pti
    assert VECTOR_RULES["x86_64"] is X86_64Rules
    r = X86_64Rules(ops)
    vals = _interesting_entries(random.Random(f"{config}{kernel}{pti}"))
    v = np.array(vals, dtype=np.uint64)
    v612 = kernel == "v6.12"
    real = [lv for lv in ("pgd", "p4d") if not ops.folded(lv)]
    upper = {lv: r.upper(lv, v) for lv in real}
    pud, pmd, pte = r.pud(v), r.pmd(v), r.pte(v)
    for i, x in enumerate(vals):
        for lv in real:
            none, good, nxt = (a[i] for a in upper[lv])
            assert none == getattr(ops, f"{lv}_none")(x), (lv, hex(x))
            if good:
                assert not getattr(ops, f"{lv}_none")(x) and not getattr(ops, f"{lv}_bad")(x), (lv, hex(x))
                assert int(nxt) == ops.table_pa(lv, x)
        none, table, leaf, nxt, pfn = (a[i] for a in pud)
        assert none == ops.pud_none(x), hex(x)
        if table:
            assert not ops.pud_none(x) and not ops.pud_leaf(x) and ops.pud_present(x), hex(x)
            assert int(nxt) == ops.table_pa("pud", x)
        if leaf:
            assert ops.pud_leaf(x) and ops.pud_present(x) and not ops.pud_devmap(x), hex(x)
            assert not (v612 and ops.pud_special(x)) and int(pfn) == ops.pud_page_pfn(x), hex(x)
        none, table, leaf, nxt, pfn = (a[i] for a in pmd)
        assert none == ops.pmd_none(x), hex(x)
        if table:
            assert not ops.pmd_none(x) and not ops.pmd_leaf(x) and ops.pmd_present(x), hex(x)
            assert not ops.is_pmd_migration_entry(x) and not ops.pmd_trans_huge(x), hex(x)
            assert not ops.pmd_devmap(x) and not ops.pmd_bad(x), hex(x)
            assert int(nxt) == ops.table_pa("pmd", x)
        if leaf:
            assert ops.pmd_leaf(x) and ops.pmd_present(x), hex(x)
            assert not ops.pmd_special(x) and not ops.pmd_devmap(x) and int(pfn) == ops.pmd_pfn(x), hex(x)
        none, normal, pfn = (a[i] for a in pte)
        assert none == ops.pte_none(x), hex(x)
        if normal:
            assert ops.pte_present(x) and not ops.pte_special(x) and int(pfn) == ops.pte_pfn(x), hex(x)


#: (config, kernel): arm64's 52-bit configurations have no v6.1 model (archs.arm64.V61_52BIT,
#: test_52bit_configs_refuse_v6_1)
MASK_CASES = [(c, k) for c in archs.all_config_keys() if c.startswith(("arm64", "s390x"))
              for k in ("v6.12", "aa39ca6940f1", "6.1") if not (k == "6.1" and c.endswith(":52"))]


def test_52bit_configs_refuse_v6_1() -> None:
    """The pairs MASK_CASES leaves out are refused by get_ops(), with the reason named."""
    from archs.arm64 import V61_52BIT, is_52bit
    from archs.kconfig import kernel_config

    wide = [c for c in archs.all_config_keys(["arm64"]) if is_52bit(archs.get_config(c))]
    assert wide == ["arm64:4k:52", "arm64:16k:52", "arm64:64k:52"]
    for config in wide:
        with pytest.raises(ValueError, match="modelled on Linux v6.12 only"):
            archs.get_ops(config, "v6.12", kconfig=kernel_config("arm64", version="6.1"))
    assert "v6.9" in V61_52BIT


@pytest.mark.parametrize(("config", "kernel"), MASK_CASES)
def test_pte_masks_classify_as_memo_rules(config: str, kernel: str) -> None:
    """Arm64Rules' and S390xRules' PTE masks give exactly MemoRules' classes (the arch's scalar
    predicates, once per value): none, normal leaf with its pfn, the rest for the per-address
    walker.  "6.1": the v6.12 walk over Linux 6.1's headers (the distro Kconfig of 6.1)."""
    from archs.kconfig import kernel_config
    from emu.mm.pagewalk_batch_rules import _M_LEAF, _M_NONE, Arm64Rules, MemoRules, S390xRules

    if kernel == "6.1":
        ops: Any = archs.get_ops(config, "v6.12", kconfig=kernel_config(config.split(":")[0], version="6.1"))
    else:
        ops = archs.get_ops(config, kernel)
    rules_cls = VECTOR_RULES[ops.arch]
    assert rules_cls is (Arm64Rules if ops.arch == "arm64" else S390xRules)
    ram, _alloc, _memmap, mm, _b = new_address_space(ops)
    try:
        rng = random.Random(f"{config}{kernel}")
        vals = _interesting_entries(rng)
        g = ops.PTEP_GET_GATHER
        vals += [x | g for x in vals[:300]] + [x & ~1 for x in vals[:300]] + [0, 1, 3, (1 << 64) - 1]
        vals += [x | 0x400 for x in vals[:300]] + [0x400, 0x401, 0x600]  # s390x _PAGE_INVALID etc.
        # arm64's own bits: valid, page, AF, nG (present-invalid), DBM, cont, PROT_NONE (v6.1),
        # special, devmap, ...
        bits = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 63)
        vals += [(rng.getrandbits(38) << 12) * (rng.random() < 0.8)
                 | sum((rng.random() < 0.4) << b for b in bits) for _ in range(2000)]
        v = np.array(vals, dtype=np.uint64)
        none, normal, pfn = rules_cls(ops, mm)._pte_masks(v)
        # ... and walk_many()'s classification through the memo gives the same
        m_none, m_normal, m_pfn = rules_cls(ops, mm).pte(v)
        assert (m_none == none).all() and (m_normal == normal).all() and (m_pfn[normal] == pfn[normal]).all()
        memo = MemoRules(ops, mm)
        for i, x in enumerate(vals):
            code, aux = memo._scalar("pte", x)
            assert bool(none[i]) == (code == _M_NONE), hex(x)
            assert bool(normal[i]) == (code == _M_LEAF), hex(x)
            if normal[i]:
                assert int(pfn[i]) == aux == ops.pte_pfn(x), hex(x)
    finally:
        ram.close()


# -- s390x: folding decided per entry (table-type bits) ---------------------------------------------
#
# archs/s390x.py's pgd_offset() takes the index shift from the table type of the top table's
# FIRST entry, and p4d/pud/pmd_offset() descend only where the entry in hand says it designates a
# lower table.  walk_many() vectorises the walks whose entries have the types of the configuration's
# static folding (emu.mm.pagewalk_batch.DynamicFoldingRules) and gives every other one to the per-address
# walker.  The random hierarchies above never retype an entry except by a flipped bit, and never
# write the first top-level entry; these do.

S390X_CONFIGS = [c for c in ALL_CONFIGS if c.startswith("s390x:")]
_TT_SHIFT = 2  # PoP bits 60-61 of a region/segment-table entry: archs.s390x REGION "tt"


def _retype(ram: Any, pa: int, tt: int) -> None:
    from archs import s390x

    assert s390x.REGION.masks["tt"] == (_TT_SHIFT, 3 << _TT_SHIFT)
    ram.write_u64(pa, (ram.read_u64(pa) & ~(3 << _TT_SHIFT)) | (tt << _TT_SHIFT))


def compare_with_reference(sp: Space, addrs: list[int], flags: int) -> WalkBatch:
    """The checks of test_random_hierarchies_batch_fast_and_reference_agree, for one draw."""
    with sp.mm.mmap_read():
        with sp.ram.undo():
            ref = one_by_one(sp, addrs, flags, folio_walk_start_reference)
            ref_tables = sp.table_bytes()
        with sp.ram.undo():
            fast = one_by_one(sp, addrs, flags, folio_walk_start)
            assert sp.table_bytes() == ref_tables
        with sp.ram.undo():
            batch = walk_many(sp.vma, addrs, flags)
            assert sp.table_bytes() == ref_tables
        iso_ref = one_by_one(sp, addrs, flags, folio_walk_start_reference, isolated=True)
        before = sp.table_bytes()
        iso = walk_many(sp.vma, addrs, flags, isolated=True)
        assert sp.table_bytes() == before
    assert sp.no_lock_held()
    for i, a in enumerate(addrs):
        assert fast[i] == ref[i], (hex(a), fast[i], ref[i])
        assert batch[i] == ref[i], (hex(a), batch[i], ref[i])
        assert iso[i] == iso_ref[i], (hex(a), iso[i], iso_ref[i])
    check_columns(batch, ref)
    check_columns(iso, iso_ref)
    return batch


@pytest.mark.parametrize("config", S390X_CONFIGS)
@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_s390x_entries_of_other_table_types_batch_and_reference_agree(
    config: str, kernel: str, data: st.DataObject
) -> None:
    """Random hierarchies with entries retyped to another table type (also empty ones, and the
    first top-level entry, which moves pgd_offset()'s shift), and a first top-level entry drawn
    like any other: walk_many() == the reference, sequential and isolated."""
    sp = Space(config, kernel, data.draw)
    top = sp.levels[0]
    first = data.draw(st.sampled_from(["empty", "empty", "entry", "retyped"]))
    if first == "entry":
        sp.ram.write_u64(sp.mm.pgd, sp.entry(0, 0))
    elif first == "retyped":
        _retype(sp.ram, sp.mm.pgd, data.draw(st.integers(0, 3)))
    crst = [pa for pa, size in sp.b.tables if size == top.table_size]  # region and segment tables
    for t, idx, tt in data.draw(st.lists(st.tuples(st.integers(0, len(crst) - 1), st.integers(0, 3),
                                                   st.integers(0, 3)), max_size=4)):
        _retype(sp.ram, crst[t] + 8 * idx, tt)
    addrs = sp.addresses()
    compare_with_reference(sp, addrs, data.draw(st.sampled_from(FLAG_COMBINATIONS)))
    sp.ram.close()


def _mapped_s390x(config: str) -> tuple[Any, Any, Any, Any, VMA, list[int]]:
    """16 pages mapped from 1 MB up, and one page under another segment-table entry."""
    ops: Any = archs.get_ops(config)
    ram, _alloc, _memmap, mm, b = new_address_space(ops, ram_size=RAM, reserved_low=ops.RESERVED_LOW)
    base = 1 << 20
    vma = mm.add_vma(VMA(base, base + (64 << 20), VMA_FLAGS[0]))
    f = b.alloc_folio(4)
    for i in range(16):
        b.map_pfn(base + i * 4096, "pte", f.pfn + i, Prot())
    b.map_pfn(base + (8 << 20), "pte", f.pfn, Prot())
    addrs = [base + i * 4096 + 8 for i in range(20)] + [base + (8 << 20) + 16]
    return ops, ram, mm, b, vma, addrs


def _sequential_pair(ram: Any, vma: VMA, addrs: list[int]) -> tuple[WalkBatch, list[FolioWalk]]:
    """walk_many() and the reference, each on the same tables (walks may clear bad entries)."""
    with ram.undo():
        ref = one_by_one_vma(vma, addrs, 0)
    with ram.undo():
        batch = walk_many(vma, addrs, 0)
    return batch, ref


@pytest.mark.parametrize("config", S390X_CONFIGS)
def test_s390x_linux_shaped_tables_are_vectorised(config: str) -> None:
    """Tables as Linux builds them: every walk is decided by the vector pass, with pgd_offset()'s
    read of the first top-level entry at the head of each trace, as in the reference's."""
    _ops, ram, mm, _b, vma, addrs = _mapped_s390x(config)
    with mm.mmap_read():
        batch, ref = _sequential_pair(ram, vma, addrs)
    assert not batch.scalar.any()
    assert batch.records() == ref
    check_columns(batch, ref)
    assert batch.trace(0)[0] == ("pgd", mm.pgd, ram.read_u64(mm.pgd))
    ram.close()


@pytest.mark.parametrize("config", S390X_CONFIGS)
@pytest.mark.parametrize("tt", range(4))
def test_s390x_retyped_entries_go_to_the_per_address_walker(config: str, tt: int) -> None:
    """The first top-level entry retyped: pgd_offset() takes another shift, so no walk is
    vectorised unless the type is the configuration's own.  The segment-table entry above the
    last address retyped: only that walk leaves the vector pass.  The records are the
    reference's either way."""
    from archs import s390x

    ops, ram, mm, b, vma, addrs = _mapped_s390x(config)
    own = s390x.DESIGNATION_TYPE[ops.config.name]
    with mm.mmap_read():
        with ram.undo():
            _retype(ram, mm.pgd, tt)
            batch, ref = _sequential_pair(ram, vma, addrs)
        assert batch.records() == ref
        check_columns(batch, ref)
        assert batch.scalar.tolist() == [tt != own] * len(addrs)
        with ram.undo():
            _retype(ram, b.entry_pa(addrs[-1], "pmd", create=False), tt)
            batch, ref = _sequential_pair(ram, vma, addrs)
        assert batch.records() == ref
        check_columns(batch, ref)
        assert batch.scalar.tolist() == [False] * (len(addrs) - 1) + [tt != s390x.TT_SEGMENT]
    ram.close()


# -- MemoRules' hash table ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(st.lists(st.one_of(st.integers(0, 64), st.integers(0, U64),
                                           st.integers(0, 255).map(lambda x: x << 56)), max_size=300),
                        min_size=1, max_size=6),
       limit=st.sampled_from([1 << 20, 40]))
def test_value_memo_is_a_dict(batches: list[list[int]], limit: int) -> None:
    """emu.mm.pagewalk_batch_rules._ValueMemo (open addressing, linear probing, growth, drop-and-rebuild at its
    limit) answers every lookup as a dict would: the code and aux of a value it holds, -1 for one
    it does not.  Values that collide (only the top byte set) and repeats included."""
    memo = emu.mm.pagewalk_batch_rules._ValueMemo()
    memo.LIMIT = limit
    model: dict[int, tuple[int, int]] = {}
    for batch in batches:
        v = np.array(batch, dtype=np.uint64)
        codes, aux = memo.lookup(v)
        for x, c, a in zip(batch, codes.tolist(), aux.tolist(), strict=True):
            assert (c, a) == model.get(x, (-1, a if c < 0 else -2)), hex(x)
        new = sorted(set(batch) - set(model))
        if model and len(model) + len(new) > limit:
            model.clear()
        got = {x: (x % 5, (x * 7) & U64) for x in new}
        memo.insert(np.array(new, dtype=np.uint64), np.array([g[0] for g in got.values()], dtype=np.int8),
                    np.array([g[1] for g in got.values()], dtype=np.uint64))
        model.update(got)
        codes, aux = memo.lookup(v)
        for x, c, a in zip(batch, codes.tolist(), aux.tolist(), strict=True):
            assert (c, a) == model[x] if x in model else c == -1, hex(x)  # (dropped at the limit)
