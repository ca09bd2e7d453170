"""The vector rules of ``walk_many()``: Linux's predicates over arrays of entries.  Each rule set
decides only good tables, present normal leaves and none entries, and leaves every other entry
to the per-address walker (see ``emu/mm/WALKERS.md``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emu.mm.mm_types import MM
from emu.mm.pagewalk_fast import C_LEAF, C_NONE, C_OTHER, C_SAME

_U64 = np.uint64

# -- vector rules: Linux's predicates over arrays of entries ------------------------------------
#
# A rules object classifies arrays of entry values, one Linux level at a time, for the shapes the
# vectorised walk decides; everything it does not claim goes to the per-address walker:
#
#   upper(level, v) -> (none, good, next)         pgd/p4d: pXd_none(); neither none nor bad; the
#                                                 next table's address (where good)
#   pud(v)  -> (none, table, leaf, next, pfn)     leaf: a PUD leaf folio_walk_start() returns
#   pmd(v)  -> (none, table, leaf, next, pfn)     table: one __pte_offset_map() accepts; leaf: a
#                                                 present leaf, neither special nor devmap
#   pte(v)  -> (none, normal, pfn)                normal: present and not special
#
# "none" must be exact; every other mask must imply what the scalar predicates say, and must
# leave out every entry pgd/p4d/pmd_bad() would make the walk clear (then a clear done by the
# per-address walker cannot change a record the vector pass decided, and a sequence of walks
# stays exact).  tests/mm/test_batch_walk.py checks both kinds of rules against the reference.


class X86_64Rules:
    """x86-64 (arch/x86/include/asm/pgtable.h, v6.12) over uint64 arrays.  Every mask is the one
    archs/x86_64.py derives from its construct declarations (never a second hand-typed copy)."""

    def __init__(self, ops: Any, mm: MM | None = None) -> None:
        from archs import x86_64 as x

        self.ops = ops
        self.P = _U64(x._PAGE_PRESENT)
        self.PSE = _U64(x._PAGE_PSE)
        self.SPECIAL = _U64(x._PAGE_SPECIAL)
        self.DEVMAP = _U64(x._PAGE_DEVMAP)
        self.PFN = _U64(x.PTE_PFN_MASK)
        self.PMD_PFN = _U64(x.PHYSICAL_PMD_PAGE_MASK)
        self.PUD_PFN = _U64(x.PHYSICAL_PUD_PAGE_MASK)
        self.NOT_KNL = _U64(~x._PAGE_KNL_ERRATUM_MASK & x.U64)
        nx = x._PAGE_NX if getattr(ops, "pti", True) else 0
        self.KERNPG = _U64(x._KERNPG_TABLE)
        # pgd_bad(): (flags & ~(USER | NX?)) != _KERNPG_TABLE
        self.PGD_BAD_KEEP = _U64(x.PTE_FLAGS_MASK & ~(x._PAGE_USER | nx) & x.U64)
        # p4d_bad(): flags & ~(_KERNPG_TABLE | USER | NX?) != 0
        self.P4D_BAD = _U64(x.PTE_FLAGS_MASK & ~(x._KERNPG_TABLE | x._PAGE_USER | nx) & x.U64)
        # pmd_bad(): (flags & ~(USER | ACCESSED)) != (_KERNPG_TABLE & ~ACCESSED)
        self.PMD_BAD_KEEP = _U64(x.PTE_FLAGS_MASK & ~(x._PAGE_USER | x._PAGE_ACCESSED) & x.U64)
        self.PMD_TABLE = _U64(x._KERNPG_TABLE & ~x._PAGE_ACCESSED)
        self.PAGE_SHIFT = _U64(x.PAGE_SHIFT)
        self.v612 = ops.kernel == "v6.12"

    def none(self, level: str, v: np.ndarray) -> np.ndarray:
        """``pXd_none()``: pgd (5-level) is ``!val``, the others ignore the KNL erratum's A/D."""
        if level == "pgd":
            return v == 0
        return (v & self.NOT_KNL) == 0

    def upper(self, level: str, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if level == "pgd":  # pgd_bad(): exactly _KERNPG_TABLE besides USER (and NX with PTI)
            good = (v != 0) & ((v & self.PGD_BAD_KEEP) == self.KERNPG)
        else:  # p4d_bad(): nothing beyond _KERNPG_TABLE | USER (| NX with PTI)
            good = ((v & self.NOT_KNL) != 0) & ((v & self.P4D_BAD) == 0)
        return self.none(level, v), good, v & self.PFN  # pgd_page_vaddr() / p4d_pgtable()

    def pud(self, v: np.ndarray) -> tuple[np.ndarray, ...]:
        pse_p = v & (self.PSE | self.P)
        table = pse_p == self.P  # !pud_leaf() && pud_present(); pud_pgtable() = v & PTE_PFN_MASK
        # pud_leaf() && pud_present() && !pud_devmap() (v6.12: && !pud_special())
        leaf = (pse_p == (self.PSE | self.P)) & ((v & self.DEVMAP) == 0)
        if self.v612:
            leaf &= (v & self.SPECIAL) == 0
        pfn = (v & self.PUD_PFN) >> self.PAGE_SHIFT  # present: no PFN inversion (pgtable-invert.h)
        return self.none("pud", v), table, leaf, v & self.PFN, pfn

    def pmd(self, v: np.ndarray) -> tuple[np.ndarray, ...]:
        pse_p = v & (self.PSE | self.P)
        # present, !pmd_leaf(), !pmd_trans_huge(), !pmd_devmap(), !pmd_bad()
        table = (pse_p == self.P) & ((v & self.DEVMAP) == 0) & ((v & self.PMD_BAD_KEEP) == self.PMD_TABLE)
        leaf = (pse_p == (self.PSE | self.P)) & ((v & (self.SPECIAL | self.DEVMAP)) == 0)
        pfn = (v & self.PMD_PFN) >> self.PAGE_SHIFT
        return self.none("pmd", v), table, leaf, v & self.PFN, pfn

    def pte(self, v: np.ndarray) -> tuple[np.ndarray, ...]:
        # pte_present() through _PAGE_PRESENT (PROT_NONE PTEs go to the scalar walker), !pte_special()
        normal = (v & (self.P | self.SPECIAL)) == self.P
        return self.none("pte", v), normal, (v & self.PFN) >> self.PAGE_SHIFT


_M_NONE, _M_TABLE, _M_SAME, _M_LEAF, _M_OTHER = 0, 1, 2, 3, 4
_FROM_FAST = {C_NONE: _M_NONE, C_SAME: _M_SAME, C_OTHER: _M_OTHER}  # the fast path's codes -> ours
_HASH_MUL = _U64(0x9E3779B97F4A7C15)  # Fibonacci hashing: 2**64 / golden ratio, odd


class _ValueMemo:
    """``value -> (code, aux)`` for one level, looked up for a whole array at once: an
    open-addressing hash table (multiplicative hashing into the top bits, linear probing, at most
    half full) in three numpy arrays.  A sorted-array search costs a mispredicted branch per
    step and element (7-20 ms for 236k entries here); this costs a handful of gathers (~2 ms).
    Code -1 marks an empty slot: :meth:`lookup` gives -1 for a value it does not hold."""

    LIMIT = 1 << 20  # values held before the memo is dropped and rebuilt

    def __init__(self, bits: int = 6) -> None:
        self.count = 0
        self._alloc(bits)

    def _alloc(self, bits: int) -> None:
        self.mask = (1 << bits) - 1
        self.shift = _U64(64 - bits)
        self.keys = np.zeros(1 << bits, dtype=np.uint64)
        self.codes = np.full(1 << bits, -1, dtype=np.int8)
        self.aux = np.zeros(1 << bits, dtype=np.uint64)

    def _hash(self, v: np.ndarray) -> np.ndarray:
        return ((v * _HASH_MUL) >> self.shift).astype(np.intp)  # type: ignore[no-any-return]

    def lookup(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = self._hash(v)
        keys, codes = self.keys, self.codes
        c = codes[h]
        idx = np.flatnonzero((c >= 0) & (keys[h] != v))  # a slot held by another value: probe on
        while len(idx):
            hi = (h[idx] + 1) & self.mask
            h[idx] = hi
            ci = codes[hi]
            c[idx] = ci
            idx = idx[(ci >= 0) & (keys[hi] != v[idx])]
        return c, self.aux[h]

    def insert(self, k: np.ndarray, c: np.ndarray, a: np.ndarray) -> None:
        """Add distinct values ``k`` that the memo does not hold (codes ``c`` >= 0, aux ``a``)."""
        if self.count + len(k) > self.LIMIT:
            self.count = 0
            self._alloc(6)
        if 2 * (self.count + len(k)) > self.mask + 1:  # grow, and put the old values back too
            held = self.codes >= 0
            k = np.concatenate([self.keys[held], k])
            c = np.concatenate([self.codes[held], c])
            a = np.concatenate([self.aux[held], a])
            self.count = 0
            self._alloc(max(6, (2 * len(k) - 1).bit_length()))
        self.count += len(k)
        h = self._hash(k)
        todo = np.arange(len(k))
        while len(todo):
            hh = h[todo]
            free = np.flatnonzero(self.codes[hh] < 0)
            if len(free):
                # one value per free slot (the first of those hashed there); the rest probe on
                slots, first = np.unique(hh[free], return_index=True)
                win = todo[free[first]]
                self.keys[slots], self.codes[slots], self.aux[slots] = k[win], c[win], a[win]
                keep = np.ones(len(todo), dtype=bool)
                keep[free[first]] = False
                todo = todo[keep]
            h[todo] = (h[todo] + 1) & self.mask



class MemoRules:
    """Any architecture the scalar fast path supports (emu/mm/pagewalk_fast.py ``FastWalk``): each DISTINCT
    entry value is classified once by the arch's own scalar predicates -- the fast path's
    memoised verdicts -- and arrays are classified by looking their values up in a
    ``value -> (code, address-or-pfn)`` hash table (:class:`_ValueMemo`).  No second copy of any
    predicate."""

    def __init__(self, ops: Any, mm: MM) -> None:
        from emu.mm.pagewalk_fast import fast_walker

        self.ops = ops
        self.fast = fast_walker(mm)
        self.PAGE_SHIFT = _U64(ops.PAGE_SHIFT)
        self.memo = {n: _ValueMemo() for n in ("pgd", "p4d", "pud", "pmd", "pte")}

    def _scalar(self, level: str, x: int) -> tuple[int, int]:
        """(code, next table address or leaf pfn) of one value, by the arch's predicates."""
        fast = self.fast
        if level in ("pgd", "p4d", "pud"):
            c = fast.memo[level].get(x)
            if c is None:
                c = fast._upper(level, "p4d" if level == "pgd" else "pud", x) if level != "pud" else fast._pud(x)
            if c >= 0:
                return _M_TABLE, c
            if c == C_LEAF:
                return _M_LEAF, fast.pud_leaf_pfn[x]
            return _FROM_FAST[c], 0
        if level == "pmd":
            t = fast.memo["pmd"].get(x)
            if t is None:
                t = fast._pmd(x)
            if t[0] >= 0:
                return _M_TABLE, t[1]
            if t[0] == C_LEAF:
                return (_M_OTHER, 0) if t[2] else (_M_LEAF, t[1])  # special/devmap: refused
            return (_M_NONE, 0) if t[0] == C_NONE else (_M_OTHER, 0)
        ops = self.ops  # pte: the vm_normal_page() part that does not depend on the VMA
        if ops.pte_present(x):
            if ops.pte_special(x) or ops.ptep_get_gathers(x):  # (arm64 contiguous: ptep_get() reads more)
                return _M_OTHER, 0
            return _M_LEAF, int(ops.pte_pfn(x))
        return (_M_NONE, 0) if ops.pte_none(x) else (_M_OTHER, 0)

    #: (none, normal, pfn) of many PTE values by masks, where an arch has them (Arm64Rules,
    #: S390xRules): the memo's misses are classified with it instead of value by value
    _pte_masks: Any = None

    def classify(self, level: str, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        memo = self.memo[level]
        codes, aux = memo.lookup(v)
        absent = codes < 0
        if absent.any():
            miss = v[absent]
            new = np.unique(miss)
            masks = self._pte_masks if level == "pte" else None
            if masks is not None:  # the same classes as _scalar(), for all the new values at once
                none, normal, pfn = masks(new)
                new_codes = np.where(none, _M_NONE, np.where(normal, _M_LEAF, _M_OTHER)).astype(np.int8)
                memo.insert(new, new_codes, np.where(normal, pfn, _U64(0)).astype(np.uint64))
            else:
                got = [self._scalar(level, x) for x in new.tolist()]
                memo.insert(new, np.array([c for c, _ in got], dtype=np.int8),
                            np.array([a for _, a in got], dtype=np.uint64))
            codes[absent], aux[absent] = memo.lookup(miss)
        return codes, aux

    def upper(self, level: str, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c, a = self.classify(level, v)
        return c == _M_NONE, (c == _M_TABLE) | (c == _M_SAME), a

    def pud(self, v: np.ndarray) -> tuple[np.ndarray, ...]:
        c, a = self.classify("pud", v)
        return c == _M_NONE, (c == _M_TABLE) | (c == _M_SAME), c == _M_LEAF, a, a

    def pmd(self, v: np.ndarray) -> tuple[np.ndarray, ...]:
        c, a = self.classify("pmd", v)
        return c == _M_NONE, (c == _M_TABLE) | (c == _M_SAME), c == _M_LEAF, a, a

    def pte(self, v: np.ndarray) -> tuple[np.ndarray, ...]:
        c, a = self.classify("pte", v)
        return c == _M_NONE, c == _M_LEAF, a


class Arm64Rules(MemoRules):
    """arm64: MemoRules, except that PTE values the memo does not hold yet -- one distinct value
    per mapped page, so a fresh address space would ask the scalar predicates once per page --
    are classified all at once with masks:
    the ones archs/arm64.py derives from its construct declarations (``PTE_VALID``,
    ``pte_present_invalid()``'s bit, ``PTE_SPECIAL``, the contiguous bit ``ptep_get()`` gathers
    on, ``PTE_ADDR_LOW``).  The classes are MemoRules' exactly (tests/mm/test_batch_walk.py):
    none (``pte_none()``: ``!pte``), a normal leaf (``pte_present()``, not ``pte_special()``,
    not a contiguous entry), everything else to the per-address walker."""

    def __init__(self, ops: Any, mm: MM) -> None:
        from archs import arm64 as a

        super().__init__(ops, mm)
        self.VALID = _U64(a.PTE_VALID)
        self.PRESENT_INVALID = _U64(ops._present_invalid)
        self.SPECIAL = _U64(a.PTE_SPECIAL)
        self.GATHER = _U64(ops.PTEP_GET_GATHER or 0)
        self.ADDR = _U64(ops.PTE_ADDR_LOW)
        # CONFIG_ARM64_PA_BITS_52 (the 52-bit configurations): __pte_to_phys() also takes
        # PTE_ADDR_HIGH << PTE_ADDR_HIGH_SHIFT, after clearing PTE_MAYBE_SHARED
        self.HIGH = _U64(ops.PTE_ADDR_HIGH)
        self.HIGH_SHIFT = _U64(ops.PTE_ADDR_HIGH_SHIFT)
        self.ADDR_LOW = _U64(ops.PTE_ADDR_LOW & ~ops.PTE_MAYBE_SHARED)

    def _pte_masks(self, v: np.ndarray) -> tuple[np.ndarray, ...]:
        present = ((v & self.VALID) != 0) | ((v & (self.VALID | self.PRESENT_INVALID)) == self.PRESENT_INVALID)
        normal = present & ((v & self.SPECIAL) == 0)
        if self.GATHER:
            normal &= (v & self.GATHER) != self.GATHER
        if self.HIGH:
            phys = (v & self.ADDR_LOW) | ((v & self.HIGH) << self.HIGH_SHIFT)
            return v == 0, normal, phys >> self.PAGE_SHIFT
        return v == 0, normal, (v & self.ADDR) >> self.PAGE_SHIFT


# Addresses on which an arch's own pXd_offset() is compared with the static one: 0, all ones, and
# six patterns in which bit i of the address is bit k of i (k = 0..5).  An offset of the form
# ``table + ((addr >> s) & m) * 8`` that agrees on all eight has the static s and m (the all-ones
# address gives m, the patterns spell out s bit by bit).
_U64_MAX = (1 << 64) - 1
_OFFSET_PROBES = (0, _U64_MAX, *(sum(1 << i for i in range(64) if i >> k & 1) for k in range(6)))
_SENTINELS = (0x7FF8, 0x1234_5678_0008)  # two upper-entry pointers: "the same entry" returns each


class DynamicFoldingRules(MemoRules):
    """An architecture whose pgd/p4d/pud/pmd_offset() decide folding per ENTRY (s390x: by the
    table-type bits of the entry in hand; arch/s390/include/asm/pgtable.h).  The vector pass
    inlines the configuration's static folding (include/asm-generic/pgtable-nop*.h: a folded
    level shares its upper neighbour's entry), which is what the arch's functions do on the
    tables Linux itself builds.  So, once per distinct entry value and level, this asks the
    arch's OWN offset function whether it agrees with the static one on that value (two upper
    pointers, the eight probe addresses above): a good table entry whose next pointer agrees is
    claimed (_M_SAME or _M_TABLE with the next table's address); one whose entry type says
    otherwise (a region-first entry where a region-third one belongs, ...) is _M_OTHER and its
    addresses go to the per-address walker.  Every level is classified, folded ones included
    (their none/bad depend on the entry's type too).  The predicates are MemoRules', i.e. the
    arch's own; nothing of the layout is copied."""

    def __init__(self, ops: Any, mm: MM) -> None:
        super().__init__(ops, mm)
        hw = ops.hw_level
        self.lower = {"pgd": ("p4d", ops.p4d_offset), "p4d": ("pud", ops.pud_offset),
                      "pud": ("pmd", ops.pmd_offset)}
        self.same = {u: hw(lower) is hw(u) for u, (lower, _) in self.lower.items()}
        self.ram_size = mm.ram.size

    def _scalar(self, level: str, x: int) -> tuple[int, int]:
        code, aux = super()._scalar(level, x)
        if code == _M_SAME and level in self.lower:  # a good table entry (the fast path asks per walk)
            return self._static_next(level, x)
        return code, aux

    def _static_next(self, level: str, x: int) -> tuple[int, int]:
        lower, offset = self.lower[level]
        hw = self.ops.hw_level(lower)
        try:
            if self.same[level]:
                ok = all(int(offset(p, x, a)) == p for a in _OFFSET_PROBES for p in _SENTINELS)
                return (_M_SAME, 0) if ok else (_M_OTHER, 0)
            base = int(self.ops.pgtable_pa(level, x))
            if base & 7 or base < 0 or base + hw.table_size > self.ram_size:
                return _M_OTHER, 0
            ok = all(int(offset(p, x, a)) == base + hw.index(a) * hw.entry_size
                     for a in _OFFSET_PROBES for p in _SENTINELS)
        except Exception:  # the arch refuses the value: the per-address walker decides
            return _M_OTHER, 0
        return (_M_TABLE, base) if ok else (_M_OTHER, 0)

    @staticmethod
    def pgd_offset_reads(ops: Any, pgd_base: int, read: Any) -> tuple[int, ...] | None:
        """The reads (flat pa, value, ...) the arch's pgd_offset() makes from ``mm->pgd``, if for
        every probe address it returns the static ``pgd_base + index(addr) * 8`` after the same
        reads; else None (the arch folds this top table otherwise: nothing is vectorised)."""
        hw = ops.hw_level("pgd")
        reads: list[int] = []

        def rec(pa: int) -> int:
            val = int(read(pa))
            reads.extend((pa, val))
            return val

        first: list[int] | None = None
        for a in _OFFSET_PROBES:
            reads.clear()
            try:
                got = int(ops.pgd_offset(pgd_base, a, rec))
            except Exception:
                return None
            if got != pgd_base + hw.index(a) * hw.entry_size or (first is not None and reads != first):
                return None
            first = list(reads)
        return tuple(first or ())


class S390xRules(DynamicFoldingRules):
    """s390x: DynamicFoldingRules, except that PTE values the memo does not hold yet (one
    distinct value per mapped page) are classified all at once with the masks archs/s390x.py
    derives from its construct declaration:
    ``pte_none()`` is ``pte == _PAGE_INVALID``, a normal leaf is ``_PAGE_PRESENT`` without
    ``_PAGE_SPECIAL``, the pfn ``pte >> PAGE_SHIFT``.  The classes are MemoRules' exactly
    (tests/mm/test_batch_walk.py)."""

    def __init__(self, ops: Any, mm: MM) -> None:
        from archs import s390x as z

        super().__init__(ops, mm)
        self.INVALID = _U64(z._PAGE_INVALID)
        self.PRESENT = _U64(z._PAGE_PRESENT)
        self.SPECIAL = _U64(z._PAGE_SPECIAL)
        self.GATHER = _U64(ops.PTEP_GET_GATHER or 0)

    def _pte_masks(self, v: np.ndarray) -> tuple[np.ndarray, ...]:
        normal = (v & (self.PRESENT | self.SPECIAL)) == self.PRESENT
        if self.GATHER:
            normal &= (v & self.GATHER) != self.GATHER
        return v == self.INVALID, normal, v >> self.PAGE_SHIFT


#: arch -> vector rules class.  An architecture without an entry is walked with MemoRules when
#: the scalar fast path supports it (DynamicFoldingRules where it has pXd_offset() functions of
#: its own), else address by address.
VECTOR_RULES: dict[str, Any] = {"x86_64": X86_64Rules, "arm64": Arm64Rules, "s390x": S390xRules}
