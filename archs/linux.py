"""Linux's architecture-independent page-table conventions (v6.12), shared by every arch module.

* :class:`LinuxPgtable` is the interface the generic walker calls: the kernel's own names
  (``pgd_offset``, ``p4d_none``, ``pmd_leaf``, ``pte_pfn``, ...) over raw entry values.  Each arch
  module subclasses it and fills in the predicates from its ``arch/*/include/asm/pgtable*.h``.
  Folding (include/asm-generic/pgtable-nop4d.h, -nopud.h, -nopmd.h) is implemented here once,
  from the :class:`~archs.base.PagingConfig`.
* The generic swap entry ``swp_entry_t`` (include/linux/swapops.h) and the swap types that mean
  migration, hwpoison, device and PTE markers (include/linux/swap.h).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import LINUX_LEVELS, HwLevel, PagingConfig
from .kconfig import KernelConfig, kernel_config

KERNELS = ("v6.12", "aa39ca6940f1")
"""Kernel versions whose folio_walk_start() we model.  ``v6.12`` (default) is the release; the
commit ``aa39ca6940f1`` is the seed patch ("mm/pagewalk: introduce folio_walk_start() +
folio_walk_end()", mm-unstable Aug 2024) before 6.12's fixes to it."""
DEFAULT_KERNEL = "v6.12"

MAX_SWAPFILES_SHIFT = 5  # include/linux/swap.h (v6.1, v6.12)

# include/linux/swapops.h: the generic swp_entry_t keeps the type in the top bits of an
# XArray value (BITS_PER_XA_VALUE = BITS_PER_LONG - 1).
BITS_PER_XA_VALUE = 63
SWP_TYPE_SHIFT = BITS_PER_XA_VALUE - MAX_SWAPFILES_SHIFT
SWP_OFFSET_MASK = (1 << SWP_TYPE_SHIFT) - 1


@dataclass(frozen=True)
class SwpEntry:
    """``swp_entry_t`` in its generic (arch-independent) form: ``swp_type``/``swp_offset``."""

    type: int
    offset: int

    @property
    def val(self) -> int:  # swp_entry(): (type << SWP_TYPE_SHIFT) | (offset & SWP_OFFSET_MASK)
        return (self.type << SWP_TYPE_SHIFT) | (self.offset & SWP_OFFSET_MASK)


class SwapTypes:
    """The swap types include/linux/swap.h carves from the top of the 32 for a
    :class:`~archs.kconfig.KernelConfig`, and the swapops.h predicates over them.

    v6.1 and v6.12 swap.h: ``SWP_HWPOISON_NUM`` 1 with CONFIG_MEMORY_FAILURE, ``SWP_MIGRATION_NUM`` 3
    with CONFIG_MIGRATION, ``SWP_DEVICE_NUM`` 4 with CONFIG_DEVICE_PRIVATE (device-private write/read,
    device-exclusive write/read; kernels after "mm: use single SWP_DEVICE_EXCLUSIVE entry type"
    (2025) have 3), ``SWP_PTE_MARKER_NUM`` 1 (v6.12 always; v6.1 with CONFIG_PTE_MARKER); else 0.
    ``MAX_SWAPFILES`` = 32 minus all of them; HWPOISON, MIGRATION x3, DEVICE x4, PTE_MARKER follow it
    in that order.  v6.1 swap.h also reserves ``SWP_SWAPIN_ERROR_NUM`` 1, whatever the Kconfig, as
    the last type (``SWP_SWAPIN_ERROR`` = MAX_SWAPFILES + HWPOISON + MIGRATION + DEVICE + PTE_MARKER
    nums; linux v6.1 include/linux/swap.h:58-61, 125-128); v6.12 has no such type (a swap-in error
    is the PTE marker PTE_MARKER_POISONED there, swapops.h:434).  A type the config lacks is None
    (its predicate is constant false)."""

    def __init__(self, kconfig: KernelConfig) -> None:
        self.kconfig = kconfig
        self.SWP_HWPOISON_NUM = 1 if kconfig.enabled("MEMORY_FAILURE") else 0
        self.SWP_MIGRATION_NUM = 3 if kconfig.enabled("MIGRATION") else 0
        self.SWP_DEVICE_NUM = 4 if kconfig.enabled("DEVICE_PRIVATE") else 0
        self.SWP_PTE_MARKER_NUM = 1 if kconfig.pte_marker else 0
        # linux v6.1 include/linux/swap.h:58 "#define SWP_SWAPIN_ERROR_NUM 1" (unconditional);
        # v6.12 swap.h defines no SWP_SWAPIN_ERROR
        self.SWP_SWAPIN_ERROR_NUM = 1 if kconfig.version == "6.1" else 0
        self.MAX_SWAPFILES = (1 << MAX_SWAPFILES_SHIFT) - self.SWP_DEVICE_NUM - self.SWP_MIGRATION_NUM \
            - self.SWP_HWPOISON_NUM - self.SWP_PTE_MARKER_NUM - self.SWP_SWAPIN_ERROR_NUM
        m = self.MAX_SWAPFILES
        self.SWP_HWPOISON = m if self.SWP_HWPOISON_NUM else None
        mig = m + self.SWP_HWPOISON_NUM
        self.SWP_MIGRATION_READ = mig if self.SWP_MIGRATION_NUM else None
        self.SWP_MIGRATION_READ_EXCLUSIVE = mig + 1 if self.SWP_MIGRATION_NUM else None
        self.SWP_MIGRATION_WRITE = mig + 2 if self.SWP_MIGRATION_NUM else None
        dev = mig + self.SWP_MIGRATION_NUM
        self.SWP_DEVICE_WRITE = dev if self.SWP_DEVICE_NUM else None
        self.SWP_DEVICE_READ = dev + 1 if self.SWP_DEVICE_NUM else None
        self.SWP_DEVICE_EXCLUSIVE_WRITE = dev + 2 if self.SWP_DEVICE_NUM else None
        self.SWP_DEVICE_EXCLUSIVE_READ = dev + 3 if self.SWP_DEVICE_NUM else None
        self.SWP_PTE_MARKER = dev + self.SWP_DEVICE_NUM if self.SWP_PTE_MARKER_NUM else None
        self.SWP_SWAPIN_ERROR = dev + self.SWP_DEVICE_NUM + self.SWP_PTE_MARKER_NUM \
            if self.SWP_SWAPIN_ERROR_NUM else None
        self.migration_types: dict[str, int] = {} if not self.SWP_MIGRATION_NUM else {
            "read": mig, "read-exclusive": mig + 1, "write": mig + 2}
        names = {
            self.SWP_HWPOISON: "hwpoison",
            self.SWP_MIGRATION_READ: "migration-read",
            self.SWP_MIGRATION_READ_EXCLUSIVE: "migration-read-exclusive",
            self.SWP_MIGRATION_WRITE: "migration-write",
            self.SWP_DEVICE_WRITE: "device-private-write",
            self.SWP_DEVICE_READ: "device-private-read",
            self.SWP_DEVICE_EXCLUSIVE_WRITE: "device-exclusive-write",
            self.SWP_DEVICE_EXCLUSIVE_READ: "device-exclusive-read",
            self.SWP_PTE_MARKER: "pte-marker",
            self.SWP_SWAPIN_ERROR: "swapin-error",
        }
        self._names = {t: n for t, n in names.items() if t is not None}

    def constants(self) -> dict[str, int]:
        """The swap.h constants this config defines, by their kernel names."""
        out = {name: getattr(self, name) for name in (
            "MAX_SWAPFILES", "SWP_HWPOISON_NUM", "SWP_MIGRATION_NUM", "SWP_DEVICE_NUM", "SWP_PTE_MARKER_NUM",
            "SWP_HWPOISON", "SWP_MIGRATION_READ", "SWP_MIGRATION_READ_EXCLUSIVE", "SWP_MIGRATION_WRITE",
            "SWP_DEVICE_WRITE", "SWP_DEVICE_READ", "SWP_DEVICE_EXCLUSIVE_WRITE", "SWP_DEVICE_EXCLUSIVE_READ",
            "SWP_PTE_MARKER", "SWP_SWAPIN_ERROR_NUM", "SWP_SWAPIN_ERROR")}
        if not self.SWP_SWAPIN_ERROR_NUM:  # v6.12 swap.h has no SWP_SWAPIN_ERROR_NUM to state
            del out["SWP_SWAPIN_ERROR_NUM"]
        out["MAX_SWAPFILES_SHIFT"] = MAX_SWAPFILES_SHIFT
        return {k: v for k, v in out.items() if v is not None}

    def name(self, t: int) -> str:
        """A swap type's meaning: ``migration-read``, ..., or ``swapfile-N`` for a real swap file."""
        return self._names.get(t, f"swapfile-{t}")

    # swapops.h predicates (each constant 0 where its Kconfig option is off)
    def is_migration_entry(self, entry: SwpEntry) -> bool:
        return self.SWP_MIGRATION_NUM > 0 and entry.type in self.migration_types.values()

    def is_writable_migration_entry(self, entry: SwpEntry) -> bool:
        return self.SWP_MIGRATION_NUM > 0 and entry.type == self.SWP_MIGRATION_WRITE

    def is_readable_exclusive_migration_entry(self, entry: SwpEntry) -> bool:
        return self.SWP_MIGRATION_NUM > 0 and entry.type == self.SWP_MIGRATION_READ_EXCLUSIVE

    def is_device_private_entry(self, entry: SwpEntry) -> bool:
        return self.SWP_DEVICE_NUM > 0 and entry.type in (self.SWP_DEVICE_READ, self.SWP_DEVICE_WRITE)

    def is_device_exclusive_entry(self, entry: SwpEntry) -> bool:
        return self.SWP_DEVICE_NUM > 0 and entry.type in (self.SWP_DEVICE_EXCLUSIVE_READ,
                                                          self.SWP_DEVICE_EXCLUSIVE_WRITE)

    def is_hwpoison_entry(self, entry: SwpEntry) -> bool:
        return self.SWP_HWPOISON_NUM > 0 and entry.type == self.SWP_HWPOISON

    def is_pte_marker_entry(self, entry: SwpEntry) -> bool:
        return self.SWP_PTE_MARKER_NUM > 0 and entry.type == self.SWP_PTE_MARKER

    def is_swapin_error_entry(self, entry: SwpEntry) -> bool:
        """v6.1 ``is_swapin_error_entry()`` (include/linux/swapops.h:172-175): type SWP_SWAPIN_ERROR.
        Not a pfn swap entry there (is_pfn_swap_entry(), swapops.h:569-576, does not name it)."""
        return self.SWP_SWAPIN_ERROR_NUM > 0 and entry.type == self.SWP_SWAPIN_ERROR

    def is_pfn_swap_entry(self, entry: SwpEntry) -> bool:
        """``is_pfn_swap_entry()``: migration, device-private/-exclusive or hwpoison."""
        return (self.is_migration_entry(entry) or self.is_device_private_entry(entry)
                or self.is_device_exclusive_entry(entry) or self.is_hwpoison_entry(entry))


@dataclass(frozen=True)
class Prot:
    """What a mapping allows, in the terms of ``vm_get_page_prot()``'s inputs plus Linux's
    software states.  Each arch turns it into its own entry bits (``pfn_pte`` and friends)."""

    write: bool = True
    exec: bool = False
    user: bool = True
    young: bool = True
    dirty: bool = True
    special: bool = False  # pte_mkspecial(): zero page, VM_PFNMAP/VM_MIXEDMAP pfns
    devmap: bool = False  # pte_mkdevmap(): legacy ZONE_DEVICE (fsdax)
    protnone: bool = False  # PROT_NONE / NUMA hinting: present to Linux, absent to hardware


Reader = Callable[[int], int]


class LinuxPgtable:
    """The kernel's page-table API for one architecture configuration (subclass per arch).

    Subclasses implement the predicates of the levels that exist on their hardware; the base
    class answers for folded levels exactly as the asm-generic ``pgtable-nop*.h`` headers do.
    """

    arch = "?"
    big_endian = False
    #: CONFIG_ARCH_HAS_PTE_SPECIAL (all three architectures have it).
    has_pte_special = True
    #: CONFIG_ARCH_HAS_PTE_DEVMAP (x86-64, arm64; not s390): else pte/pmd/pud_devmap() are 0.
    has_pte_devmap = True
    #: CONFIG_ARCH_ENABLE_THP_MIGRATION (x86-64, arm64; not s390 in v6.12): else there are no
    #: PMD swap/migration entries (swapops.h: is_pmd_migration_entry() is 0).
    has_thp_migration = True

    def __init__(self, config: PagingConfig, kernel: str = DEFAULT_KERNEL, kconfig: KernelConfig | None = None) -> None:
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel version {kernel!r}; known: {', '.join(KERNELS)}")
        self.config = config
        self.kernel = kernel
        #: The kernel version and Kconfig whose headers this model follows (default: v6.12, the
        #: "distro" profile); ``swap`` holds the swap types that config numbers.
        self.kconfig = kconfig or kernel_config(config.arch)
        if self.kconfig.arch != config.arch:
            raise ValueError(f"a {self.kconfig.arch} kernel configuration cannot describe {config.key}")
        self.swap = SwapTypes(self.kconfig)
        self.PAGE_SHIFT = config.page_shift
        self.PAGE_SIZE = 1 << config.page_shift
        # The hardware level each Linux level's pointer points into: that of the first real
        # Linux level at or below it (a folded level shares its lower neighbour's entry).
        self._hw: dict[str, HwLevel] = {}
        for i, name in enumerate(LINUX_LEVELS):
            for lower in LINUX_LEVELS[i:]:
                lv = config.level_of(lower)
                if lv is not None:
                    self._hw[name] = lv
                    break
        self.PMD_SIZE = self._hw["pmd"].leaf_size or (1 << self._hw["pmd"].shift)
        self.PUD_SIZE = self._hw["pud"].leaf_size or (1 << self._hw["pud"].shift)

    def section_size_bits(self) -> int:
        """``SECTION_SIZE_BITS`` (CONFIG_SPARSEMEM, asm/sparsemem.h): the span of one memory
        section, the unit ``pfn_valid()`` answers for (include/linux/mmzone.h)."""
        raise NotImplementedError

    def va_valid(self, va: int) -> bool:
        """A translatable virtual address: canonical (sign-extended from bit va_bits-1)."""
        if not 0 <= va < 1 << 64:
            return False
        top = va >> (self.config.va_bits - 1)
        return top == 0 or top == (1 << (65 - self.config.va_bits)) - 1

    # -- folding ----------------------------------------------------------------------------
    def hw_level(self, linux: str) -> HwLevel:
        return self._hw[linux]

    def folded(self, linux: str) -> bool:
        """True where ``linux`` has no entry of its own (its none/bad are constant 0)."""
        return self._hw[linux].linux != linux

    def _lower_offset(self, upper: str, lower: str, upperp: int, upper_val: int, addr: int) -> int:
        hw = self._hw[lower]
        if hw is self._hw[upper]:
            return upperp  # e.g. pgtable-nop4d.h: p4d_offset() returns (p4d_t *)pgd
        return self.pgtable_pa(upper, upper_val) + hw.index(addr) * hw.entry_size

    def pgd_offset(self, pgd_base: int, addr: int, read: Reader) -> int:
        """``pgd_offset(mm, addr)``: the top-level entry for ``addr`` (``mm->pgd`` = pgd_base)."""
        hw = self._hw["pgd"]
        return pgd_base + hw.index(addr) * hw.entry_size

    def p4d_offset(self, pgdp: int, pgd: int, addr: int) -> int:
        return self._lower_offset("pgd", "p4d", pgdp, pgd, addr)

    def pud_offset(self, p4dp: int, p4d: int, addr: int) -> int:
        return self._lower_offset("p4d", "pud", p4dp, p4d, addr)

    def pmd_offset(self, pudp: int, pud: int, addr: int) -> int:
        return self._lower_offset("pud", "pmd", pudp, pud, addr)

    def pte_offset(self, pmd: int, addr: int) -> int:
        """``pte_offset_kernel()`` / ``__pte_map()``: the PTE for ``addr`` under table entry ``pmd``."""
        hw = self._hw["pte"]
        return self.pgtable_pa("pmd", pmd) + hw.index(addr) * hw.entry_size

    def pxd_index(self, linux: str, addr: int) -> int:
        """``pgd_index()`` .. ``pte_index()``: ``(addr >> <level>_SHIFT) & (PTRS_PER_<level> - 1)``.

        pgd_index() indexes the top table whatever is folded below it; a folded level has one
        entry (PTRS_PER_* 1: asm-generic/pgtable-nop*.h, x86 p4d when !pgtable_l5_enabled()),
        so its index is 0."""
        if linux == "pgd":
            return self.hw_level("pgd").index(addr)
        if self.folded(linux) or self.hw_level(linux) is self.hw_level("pgd"):
            return 0
        return self.hw_level(linux).index(addr)

    # -- to be provided by the arch ---------------------------------------------------------
    def table_pa(self, linux: str, val: int) -> int:
        """Physical address of the next-level table an entry points to (``pXd_page_vaddr``)."""
        raise NotImplementedError

    def pgtable_pa(self, linux: str, val: int) -> int:
        """Where the kernel reads the table an entry points to: pXd_offset() and
        pte_offset_kernel() index ``__va(<table_pa()>)`` (``p4d_pgtable()``, ``pud_pgtable()``,
        ``pmd_page_vaddr()`` ...), a linear-map address, so this is ``__pa(__va(table_pa()))``.
        That is :meth:`table_pa` itself where ``__va()`` adds (x86-64 ``x + PAGE_OFFSET``, s390
        ``x + __identity_base``); arm64's ORs (its override)."""
        return self.table_pa(linux, val)

    def entry_none(self, linux: str, val: int) -> bool:
        """``pXd_none`` of a real level."""
        raise NotImplementedError

    def entry_bad(self, linux: str, val: int) -> bool:
        """``pXd_bad`` of a real level."""
        raise NotImplementedError

    def clear_value(self, linux: str) -> int:
        """What ``pXd_clear()`` stores (0 on x86/arm64; an invalid typed entry on s390)."""
        return 0

    def clear_bad_is_noop(self, linux: str) -> bool:
        """Whether ``pXd_clear_bad()`` is ``do { } while (0)``: include/linux/pgtable.h:1232-1242
        (v6.12; the same in v6.1) defines p4d_clear_bad()/pud_clear_bad() so where the level is
        folded at compile time (``__PAGETABLE_P4D_FOLDED`` / ``__PAGETABLE_PUD_FOLDED``), even
        where the arch's own p4d_bad()/pud_bad() still test the entry: no p?d_ERROR(), no clear."""
        return False

    def pxd_clear(self, linux: str, val: int) -> int | None:
        """What ``pXd_clear()`` stores over the entry ``val`` (``pXd_clear_bad()``, v6.12
        mm/pgtable-generic.c:25-56), or None where it stores nothing.  By default it always
        stores :meth:`clear_value`; s390 looks at the entry first."""
        return self.clear_value(linux)

    # -- Linux names for the upper levels (folding applied) ---------------------------------
    def pgd_none(self, pgd: int) -> bool:
        return False if self.folded("pgd") else self.entry_none("pgd", pgd)

    def pgd_bad(self, pgd: int) -> bool:
        return False if self.folded("pgd") else self.entry_bad("pgd", pgd)

    def pgd_present(self, pgd: int) -> bool:
        return True if self.folded("pgd") else self.upper_present("pgd", pgd)

    def p4d_none(self, p4d: int) -> bool:
        return False if self.folded("p4d") else self.entry_none("p4d", p4d)

    def p4d_present(self, p4d: int) -> bool:
        return True if self.folded("p4d") else self.upper_present("p4d", p4d)

    def upper_present(self, linux: str, val: int) -> bool:
        """``pgd_present``/``p4d_present`` of a real level: arm64 pgtable.h:901/1025 (v6.12)
        ``!p?d_none()``; x86 and s390 override."""
        return not self.entry_none(linux, val)

    def p4d_bad(self, p4d: int) -> bool:
        return False if self.folded("p4d") else self.entry_bad("p4d", p4d)

    def pud_none(self, pud: int) -> bool:
        return False if self.folded("pud") else self.entry_none("pud", pud)

    def pud_bad(self, pud: int) -> bool:
        return False if self.folded("pud") else self.entry_bad("pud", pud)

    def pud_present(self, pud: int) -> bool:
        return True if self.folded("pud") else self._pud_present(pud)

    def pud_leaf(self, pud: int) -> bool:
        return False if self.folded("pud") else self._pud_leaf(pud)

    def pmd_none(self, pmd: int) -> bool:
        return False if self.folded("pmd") else self.entry_none("pmd", pmd)

    def pmd_bad(self, pmd: int) -> bool:
        return False if self.folded("pmd") else self.entry_bad("pmd", pmd)

    def pmd_present(self, pmd: int) -> bool:
        return True if self.folded("pmd") else self._pmd_present(pmd)

    def pmd_leaf(self, pmd: int) -> bool:
        return False if self.folded("pmd") else self._pmd_leaf(pmd)

    def _pud_present(self, pud: int) -> bool:
        raise NotImplementedError

    def _pud_leaf(self, pud: int) -> bool:
        raise NotImplementedError

    def _pmd_present(self, pmd: int) -> bool:
        raise NotImplementedError

    def _pmd_leaf(self, pmd: int) -> bool:
        raise NotImplementedError

    # -- kernel names every arch defines (declared here so the walker's API is typed) ----------
    def _arch(self, name: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} does not define {name}()")

    def pud_pfn(self, pud: int) -> int:
        raise self._arch("pud_pfn")

    def pud_page_pfn(self, pud: int) -> int:
        """The pfn of ``pud_page(pud)`` (folio_walk_start()'s PUD leaf, v6.12 mm/pagewalk.c:829).
        x86-64 and s390 define it as ``pfn_to_page(pud_pfn(pud))`` (v6.12
        arch/x86/include/asm/pgtable.h:1130, arch/s390/include/asm/pgtable.h:1543); an arch
        whose pud_page() is not that overrides this."""
        return self.pud_pfn(pud)

    def pud_devmap(self, pud: int) -> bool:
        raise self._arch("pud_devmap")

    def pud_special(self, pud: int) -> bool:
        raise self._arch("pud_special")

    def pmd_pfn(self, pmd: int) -> int:
        raise self._arch("pmd_pfn")

    def pmd_devmap(self, pmd: int) -> bool:
        raise self._arch("pmd_devmap")

    def pmd_special(self, pmd: int) -> bool:
        raise self._arch("pmd_special")

    def pmd_trans_huge(self, pmd: int) -> bool:
        raise self._arch("pmd_trans_huge")

    def pmd_protnone(self, pmd: int) -> bool:
        raise self._arch("pmd_protnone")

    #: PTE bits with which ``ptep_get()`` returns more than the entry it reads (arm64's contiguous
    #: PTEs): an entry that has all of them set goes from the fast walkers to the reference walker,
    #: which asks :meth:`ptep_get`.  0: ``ptep_get()`` is ``READ_ONCE(*ptep)`` for every entry.
    PTEP_GET_GATHER = 0

    def ptep_get(self, ptep: int, pte: int, read: Reader) -> int:
        """``ptep_get(ptep)`` under the PTE lock, given ``pte = READ_ONCE(*ptep)`` and ``read``
        for other entries: the generic one (v6.12 include/linux/pgtable.h:316-320) is the entry."""
        return pte

    def ptep_get_gathers(self, pte: int) -> bool:
        """Whether ``ptep_get()`` of this entry reads other entries (:data:`PTEP_GET_GATHER`)."""
        g = self.PTEP_GET_GATHER
        return bool(g) and pte & g == g

    def pte_none(self, pte: int) -> bool:
        raise self._arch("pte_none")

    def pte_present(self, pte: int) -> bool:
        raise self._arch("pte_present")

    def pte_pfn(self, pte: int) -> int:
        raise self._arch("pte_pfn")

    def pte_special(self, pte: int) -> bool:
        raise self._arch("pte_special")

    def pte_devmap(self, pte: int) -> bool:
        raise self._arch("pte_devmap")

    def pte_protnone(self, pte: int) -> bool:
        raise self._arch("pte_protnone")

    def pte_to_swp_entry(self, pte: int) -> SwpEntry:
        raise self._arch("pte_to_swp_entry")

    def swp_entry_to_pte(self, entry: SwpEntry, *, exclusive: bool = False) -> int:
        raise self._arch("swp_entry_to_pte")

    def swp_entry_to_pmd(self, entry: SwpEntry) -> int:
        raise self._arch("swp_entry_to_pmd")

    def pfn_pte(self, pfn: int, prot: Prot) -> int:
        """``pfn_pte()`` plus the pte_mk*() calls ``prot`` asks for."""
        raise self._arch("pfn_pte")

    def pfn_pmd(self, pfn: int, prot: Prot) -> int:
        """``pmd_mkhuge(pfn_pmd())``: a PMD leaf."""
        raise self._arch("pfn_pmd")

    def check_pmd_prot(self, prot: Prot) -> None:
        """Raise ValueError where this kernel cannot make a PMD leaf of ``prot``: pmd_mkspecial()
        exists from v6.12 ("mm: introduce ARCH_SUPPORTS_HUGE_PFNMAP and special bits to pmd/pud",
        include/linux/mm.h); before it, no special PMD is ever made."""
        if prot.special and self.kconfig.version == "6.1":
            raise ValueError("no pmd_mkspecial() before v6.12: a special PMD leaf cannot be made")

    def pfn_pud(self, pfn: int, prot: Prot) -> int:
        """A PUD leaf."""
        raise self._arch("pfn_pud")

    def pte_mkspecial(self, pte: int) -> int:
        """``pte_mkspecial()`` on a raw PTE value."""
        raise self._arch("pte_mkspecial")

    def pmd_mkhuge(self, pmd: int) -> int:
        """``pmd_mkhuge()`` on a raw PMD value."""
        raise self._arch("pmd_mkhuge")

    def pmd_mkinvalid(self, pmd: int) -> int:
        """``pmd_mkinvalid()`` (``pmdp_invalidate()`` of a THP split) on a raw PMD value."""
        raise self._arch("pmd_mkinvalid")

    def mk_table(self, linux: str, table_pa: int) -> int:
        """``pXd_populate()``: an entry at Linux level ``linux`` pointing to a table."""
        raise self._arch("mk_table")

    def mk_bad(self, linux: str, val: int) -> int:
        """A table entry ``pXd_bad()`` rejects but the MMU still walks (the default scenario's case)."""
        raise self._arch("mk_bad")

    def decode(self, linux: str, val: int) -> dict[str, Any]:
        """An entry's fields, by its own format, for people (fixtures' entries.jsonl)."""
        raise self._arch("decode")

    def hw_absent_reason(self, linux: str, val: int) -> str | None:
        """Why a leaf Linux treats as present is not translated by the MMU, by design, or None.

        Everywhere: PROT_NONE (``pte_protnone``/``pmd_protnone``, CONFIG_NUMA_BALANCING).  An arch
        adds its own (s390: an old page is hardware-invalid, ``pte_mkold`` sets _PAGE_INVALID)."""
        fn = getattr(self, "pmd_protnone" if linux in ("pmd", "pud") else "pte_protnone", None)
        return "prot-none" if fn is not None and fn(val) else None

    # -- the architecture's own view of an entry (the third party between walker and MMU) -------
    def hw_rejects(self, linux: str, val: int, *, leaf: bool, addr: int | None = None) -> str | None:
        """Why the MMU, by the architecture manual, stops (faults) at this entry when a walk
        reaches it, or None if the hardware takes it (as a table pointer, or as a leaf when
        ``leaf``).  Linux never writes such entries, and its walk does not check for them (e.g.
        reserved bits, a clear present/valid bit in an upper entry, a reserved descriptor type).
        ``addr``, when given, is the virtual address being translated: for reasons that depend on
        it (s390x: the next index against a table's offset and length, the frame address within
        a large leaf); without it, only reasons that hold for every address.
        The default knows nothing; each arch says what its manual says."""
        return None

    def hw_fault_level(self, linux: str, val: int, *, leaf: bool, addr: int | None = None) -> str | None:
        """The hardware level (``HwLevel.name``) whose fault the MMU reports where
        :meth:`hw_rejects` rejects this entry: by default the entry's own level; an arch says
        otherwise where its manual does (s390x: an index outside the table a region entry
        designates is the next table's translation exception; a translation-specification
        exception names no table: None)."""
        return self.hw_level(linux).name

    def walk_diverges(self, trace: list[tuple[str, int, int]], addr: int) -> str | None:
        """Why Linux's walk for ``addr``, by a convention of its own, reads other entries than
        the MMU's walk (so the two cannot be compared entry by entry), or None.  ``trace`` is the
        walk's ``(level, pa, value)`` reads.  The default: never (the offsets are the hardware's
        own; s390x: pgd_offset() takes the top table's index from its first entry's type)."""
        return None

    def kernel_reads_elsewhere(self, pa: int) -> str | None:
        """Why a running kernel reading the table entry at physical ``pa`` (through ``__va()``)
        does not read that word of RAM, or None (the default: it does).  s390x: real 0..0x1fff
        is the CPU's own lowcore by prefixing."""
        return None

    def hw_uses(self, linux: str, val: int) -> str | None:
        """For an entry Linux reads as none / not present / swap: why the MMU translates through
        it all the same (e.g. a hardware-valid s390x PTE without the software _PAGE_PRESENT), or
        None if the hardware does not use it either."""
        return None

    def is_pmd_migration_entry(self, pmd: int) -> bool:
        """``is_pmd_migration_entry()`` (swapops.h, CONFIG_ARCH_ENABLE_THP_MIGRATION; 0 without)."""
        if not self.has_thp_migration:
            return False
        return not self.pmd_present(pmd) and self.swap.is_migration_entry(self.pmd_to_swp_entry(pmd))

    def pmd_to_swp_entry(self, pmd: int) -> SwpEntry:
        """``pmd_to_swp_entry()`` (include/linux/swapops.h, v6.12 and v6.1): ``swp_entry(0, 0)``
        without CONFIG_ARCH_ENABLE_THP_MIGRATION, else the architecture's
        :meth:`_pmd_to_swp_entry`."""
        if not self.has_thp_migration:
            return SwpEntry(0, 0)
        return self._pmd_to_swp_entry(pmd)

    def _pmd_to_swp_entry(self, pmd: int) -> SwpEntry:
        """The CONFIG_ARCH_ENABLE_THP_MIGRATION half of ``pmd_to_swp_entry()``: the architecture's
        ``pmd_swp_clear_soft_dirty()``/``pmd_swp_clear_uffd_wp()``, then ``__pmd_to_swp_entry()``
        and ``__swp_type()``/``__swp_offset()``."""
        raise NotImplementedError(f"{type(self).__name__} has THP migration but no __pmd_to_swp_entry()")

    def swp_offset_pfn(self, entry: SwpEntry) -> int:
        """``swp_offset_pfn()``: the pfn bits of a pfn swap entry's offset (SWP_PFN_BITS)."""
        return entry.offset & ((1 << self.swp_pfn_bits()) - 1)

    def swp_pfn_bits(self) -> int:
        """``SWP_PFN_BITS`` = min(MAX_PHYSMEM_BITS - PAGE_SHIFT, SWP_TYPE_SHIFT) (v6.12 swapops.h);
        v6.1 swapops.h:36-37 has no min(): MAX_PHYSMEM_BITS - PAGE_SHIFT (the same number on every
        configuration here, where it is below SWP_TYPE_SHIFT)."""
        if self.kconfig.version == "6.1":
            return self.max_physmem_bits() - self.PAGE_SHIFT
        return min(self.max_physmem_bits() - self.PAGE_SHIFT, SWP_TYPE_SHIFT)

    def max_physmem_bits(self) -> int:
        raise NotImplementedError

    def make_pfn_swp_entry(self, swp_type: int, pfn: int, *, young: bool = False, dirty: bool = False) -> SwpEntry:
        """``make_*_migration_entry()`` + ``make_migration_entry_young/dirty()`` (swapops.h):
        the offset holds the pfn, then SWP_MIG_YOUNG_BIT and SWP_MIG_DIRTY_BIT above it."""
        bits = self.swp_pfn_bits()
        off = pfn | (int(young) << bits) | (int(dirty) << (bits + 1))
        return SwpEntry(swp_type, off)
