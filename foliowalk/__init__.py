"""foliowalk: Linux's ``folio_walk_start()`` over real x86-64, arm64 and s390x page tables,
checked against an emulated MMU (Unicorn) and, where built, the compiled kernel.

This package is the public Python API: a small facade over the functions the ``foliowalk``
command runs (nothing here re-implements them).  Build a page table, walk it, probe it::

    import foliowalk as fw

    with fw.AddressSpace("x86_64:4level") as space:          # guest RAM, an mm, the MMU
        space.add_vma(0x7F0000000000, 0x7F0000200000)        # an anonymous VMA
        folio = space.alloc_folio(order=2)                   # a 4-page folio
        space.map(0x7F0000010000, folio)                     # one PTE per page
        walk = space.walk(0x7F0000011234, fw.FW_MIGRATION)   # folio_walk_start()
        print(walk.summary(), f"entry {walk.entry:#x}")
        print(space.probe(0x7F0000011234))                   # the MMU's answer
        print([row.verdict for row in space.verify([0x7F0000011234])])

(``examples/walk_and_probe.py``; it prints the walk, the MMU's ``Translation`` and four ``agree``.)

Names, by what they do:

* :class:`AddressSpace` -- guest RAM with an mm, its page tables, VMAs and the MMU; from a
  configuration name (:func:`configs`) or a hierarchy spec file (:meth:`AddressSpace.from_spec`,
  docs/hierarchy.md).
* :func:`walk` / :func:`walk_many`, :func:`probe` / :func:`probe_many`, :func:`verify`,
  :func:`explain` -- the same operations as functions.
* The kernel's own names: :func:`folio_walk_start`, :func:`folio_walk_end`, :func:`folio_walk`,
  :class:`FolioWalk`, ``FW_MIGRATION``, ``FW_ZEROPAGE``, ``FW_LEVEL_PTE/PMD/PUD`` (members of
  :class:`FwLevel`, which print their names); :func:`ops` gives a configuration's Linux
  page-table functions (``pte_present``, ``pmd_leaf``, ``pte_to_swp_entry``, ...).
* Anyone's page tables (docs/translate.md): :class:`Tables` -- entries ``{pa: value}`` or a raw
  image at any physical address, with the roots the architecture names (x86-64 ``cr3``, arm64
  ``ttbr0``/``ttbr1``/``t1sz``, s390x ``asce``) and CPU facts; ``.translate()`` is the manual's
  answer, ``.mmu()`` the MMU's, ``.check()`` both with a verdict -- and :func:`translate`, the
  manual's answer for one address.
* :mod:`foliowalk.fixtures` (``load``, ``check``, ``build``) and :mod:`foliowalk.strategies`
  (Hypothesis strategies for entries and whole hierarchies).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import archs as _archs
import emu as _emu
from archs.linux import DEFAULT_KERNEL, LinuxPgtable, Prot, SwpEntry
from emu.errors import FoliowalkError
from emu.explain import Explanation
from emu.fuzz.spec import Hierarchy
from emu.machines.base import Fault, ProbeError, Translation
from emu.mm.mm_types import VMA, Folio
from emu.mm.pagewalk import (
    FLAG_COMBINATIONS,
    FW_LEVEL_PMD,
    FW_LEVEL_PTE,
    FW_LEVEL_PUD,
    FW_MIGRATION,
    FW_ZEROPAGE,
    FolioWalk,
    folio_walk,
    folio_walk_end,
    folio_walk_start,
)
from emu.mm.pagewalk_h import FwLevel
from emu.translate import AddressSpace as Tables
from emu.verify import Report, Row, WalkResult

from . import fixtures

__all__ = [
    "AddressSpace", "Explanation", "Tables", "translate",
    "FLAG_COMBINATIONS", "FW_LEVEL_PMD", "FW_LEVEL_PTE", "FW_LEVEL_PUD",
    "FW_MIGRATION", "FW_ZEROPAGE", "Fault", "Hierarchy", "Folio", "FolioWalk", "FoliowalkError", "FwLevel", "Prot",
    "ProbeError", "Report", "Row", "SwpEntry", "Translation", "VMA", "WalkResult", "__version__", "configs",
    "explain", "folio_walk", "folio_walk_end", "folio_walk_start", "ops", "probe", "probe_many", "spec_layout",
    "verify", "walk", "walk_many", "fixtures",
]


__version__: str = _emu.__version__
"""The foliowalk version (``foliowalk --version`` prints the same)."""

ProbeResult = Translation | Fault | ProbeError


def configs(arch: str | None = None) -> list[str]:
    """The paging configuration names foliowalk knows (``"x86_64:4level"``, ``"arm64:64k:48"``,
    ``"s390x:region3"``, ...), of one architecture or of all (``arch=None``)."""
    return _archs.all_config_keys([_archs.ALIASES.get(arch, arch)] if arch else None)


def ops(config: str, kernel: str = DEFAULT_KERNEL) -> LinuxPgtable:
    """The Linux page-table API of ``config`` following the ``kernel`` version's headers: the
    kernel's own function names over raw entry values (``ops.pte_present(v)``, ``ops.pmd_leaf(v)``,
    ``ops.pte_pfn(v)``, ``ops.pte_to_swp_entry(v)``, ``ops.pfn_pte(pfn, Prot())``, ...) and
    ``ops.decode(level, v)``, an entry's hardware fields by the manual's names."""
    return _archs.get_ops(config, kernel)


def spec_layout(config: str) -> Any:
    """Where a hierarchy spec of ``config`` may put things (docs/hierarchy.md), the same in every
    process: ``root`` (the top table, ``mm->pgd``), ``tables[d]`` (the table frames of depth ``d``
    in the pool), ``folios`` (``(pfn, order)`` with a ``struct page``), ``leaf_folios``
    (PMD/PUD-sized ones), ``pool_start``/``pool_end``, ``ram_size``, ``reserved_va`` (virtual
    ranges the probe machine keeps).  Returns an :class:`emu.fuzz.layout.Layout`."""
    from emu.fuzz.layout import plan_layout

    return plan_layout(_archs.get_config(config).key)


class AddressSpace:
    """One address space in emulated guest RAM: an ``mm_struct`` with its page tables and VMAs,
    the memory map of ``struct page``/folios, and the MMU that probes it.

    ``AddressSpace(config, kernel="v6.12", mmu=True)`` starts empty (a root table only);
    :meth:`from_spec` loads a hierarchy spec.  Use it as a context manager, or call
    :meth:`close`: it holds an emulator and guest RAM.  ``space.ops`` is the configuration's
    Linux API (:func:`ops`), ``space.mm`` the mm (``space.mm.pgd`` the root table's physical
    address), ``space.ram`` guest RAM (``read_u64``/``write_u64``)."""

    def __init__(self, config: str, *, kernel: str = DEFAULT_KERNEL, mmu: bool = True,
                 ram_size: int | None = None) -> None:
        from emu.mm.scenarios import Scenario, new_address_space

        o = _archs.get_ops(config, kernel)
        ram, alloc, memmap, mm, builder = new_address_space(
            o, ram_size=ram_size, reserved_low=int(getattr(o, "RESERVED_LOW", 0)))
        self._sc = Scenario(o, ram, alloc, memmap, mm, builder)
        self._target: Any = None
        if mmu:
            from emu.machines.oracle import make_oracle

            self._sc.oracle = make_oracle(o, ram, alloc)
            builder.reserved = self._sc.oracle.reserved_va()

    @classmethod
    def from_spec(cls, spec: str | Path | Hierarchy, *, mmu: bool = True) -> AddressSpace:
        """An address space holding a hierarchy spec (docs/hierarchy.md): a file path, or an
        :class:`emu.fuzz.spec.Hierarchy`.  Its addresses are the spec's ``addrs`` (see
        :attr:`addrs`).  Raises :class:`FoliowalkError` naming the field if the spec is invalid."""
        from emu.fuzz.evaluate import Target
        from emu.fuzz.spec import Hierarchy, check_hierarchy
        from emu.specs import load_spec

        if isinstance(spec, Hierarchy):
            check_hierarchy(spec)
            h = spec
        else:
            h = load_spec(spec)
        self = cls.__new__(cls)
        self._target = Target(h.config, h.kernel, oracle=mmu)
        self._target.load(h)
        self._sc = self._target.sc
        return self

    # -- what it holds -----------------------------------------------------------------------
    @property
    def config(self) -> str:
        """The configuration name (``"x86_64:4level"``)."""
        return str(self._sc.ops.config.key)

    @property
    def ops(self) -> LinuxPgtable:
        """The configuration's Linux page-table API (see :func:`ops`)."""
        return self._sc.ops

    @property
    def mm(self) -> Any:
        """The ``mm_struct`` (:class:`emu.mm.mm_types.MM`): ``pgd``, ``vmas``, ``find_vma()``."""
        return self._sc.mm

    @property
    def ram(self) -> Any:
        """Guest RAM (:class:`emu.machines.ram.PhysicalMemory`), the bytes walker and MMU read."""
        return self._sc.ram

    @property
    def addrs(self) -> list[int]:
        """The addresses :meth:`verify` checks by default: a spec's ``addrs``, else those added
        with :meth:`add_case` (none at first)."""
        return [c.addr for c in self._sc.cases]

    # -- building ----------------------------------------------------------------------------
    def add_vma(self, start: int, end: int, flags: int | str = "anon", *, pgoff: int = 0, name: str = "") -> VMA:
        """Add a VMA ``[start, end)``; ``flags`` is ``vm_flags`` or a kind: ``anon``,
        ``anon-ro``, ``pfnmap``, ``pfnmap-cow``, ``mixedmap``, ``shared``, ``hugetlb``.  Returns it."""
        from emu.explain import vma_kinds

        if isinstance(flags, str):
            kinds = vma_kinds()
            if flags not in kinds:
                raise FoliowalkError(f"unknown VMA kind {flags!r}; known: {', '.join(kinds)}")
            name, flags = name or flags, kinds[flags]
        return self._sc.mm.add_vma(VMA(start, end, flags, pgoff, name=name or "vma"))  # type: ignore[no-any-return]

    def alloc_folio(self, order: int = 0) -> Folio:
        """A new folio of ``2**order`` pages in guest RAM (registered in the memory map, data
        tagged so the MMU's answer is proven by what it reads).  Returns it (``.pfn``, ``.order``)."""
        return self._sc.builder.alloc_folio(order)  # type: ignore[no-any-return]

    def map(self, va: int, target: Folio | int, *, level: str = "pte", prot: Prot | None = None) -> list[int]:
        """Map a folio (all its pages) or a pfn at ``va``: PTEs, or one ``pmd``/``pud`` leaf,
        built by the architecture's ``pfn_pte``/``pfn_pmd``/``pfn_pud``.  ``prot`` (:class:`Prot`)
        defaults to a young, dirty, writable user mapping.  Returns the entries' physical addresses."""
        prot = prot or Prot()
        b = self._sc.builder
        if isinstance(target, int):
            return [b.map_pfn(va, level, target, prot)]
        return b.map_folio(va, target, prot, linux=level)  # type: ignore[no-any-return]

    def set_entry(self, va: int, level: str, value: int, *, replace: bool = False) -> int:
        """Install a raw entry ``value`` at Linux ``level`` (pgd .. pte) for ``va``, allocating
        the tables above it.  Returns the entry's physical address."""
        return self._sc.builder.set_entry(va, level, value, replace=replace)  # type: ignore[no-any-return]

    def set_swap(self, va: int, level: str, swp_type: int, offset: int) -> int:
        """A swap entry (``swp_entry_to_pte``/``_pmd``) of ``swp_type``/``offset`` at ``va``."""
        return self._sc.builder.set_swap(va, level, SwpEntry(swp_type, offset))  # type: ignore[no-any-return]

    def set_migration(self, va: int, folio: Folio, kind: str = "read", *, level: str = "pte", page: int = 0) -> int:
        """A migration entry (``read``, ``read-exclusive``, ``write``) for page ``page`` of ``folio``."""
        return self._sc.builder.set_migration(va, level, folio, kind, page=page)  # type: ignore[no-any-return]

    def add_case(self, addr: int, name: str = "") -> None:
        """Add ``addr`` to the addresses :meth:`verify` checks by default."""
        from emu.mm.scenarios import Case

        self._sc.cases.append(Case(name or f"address {addr:#x}", addr, self._vma(addr)))

    # -- walking and probing -----------------------------------------------------------------
    def _vma(self, addr: int) -> VMA:
        vma = self._sc.mm.find_vma(addr)
        if vma is None:
            if self._target is not None:
                return self._target.vma_for(addr)  # type: ignore[no-any-return]
            raise FoliowalkError(f"{addr:#x} is in no VMA of this address space (add_vma first)")
        return vma  # type: ignore[no-any-return]

    def walk(self, addr: int, flags: int = 0) -> WalkResult:
        """``folio_walk_start()`` + ``folio_walk_end()`` of ``addr`` in its VMA with ``flags``
        (``FW_MIGRATION``, ``FW_ZEROPAGE``); the tables are left as they were.  Returns a
        :class:`WalkResult`: ``found``, ``folio_pfn``/``folio_order``, ``page_pfn``, ``level``
        (``"PTE"``/``"PMD"``/``"PUD"``), ``entry``/``entry_pa``, ``reason`` (why NULL), ``trace``."""
        return self.walk_many([addr], flags)[0]

    def walk_many(self, addrs: Sequence[int], flags: int = 0) -> list[WalkResult]:
        """:meth:`walk` of every address (vectorised where it can be; each walk sees the tables
        as they were at the call).  Returns one :class:`WalkResult` per address, in order."""
        from emu.mm.scenarios import Case
        from emu.verify import walk_cases

        cases = [Case("", a, self._vma(a)) for a in addrs]
        got = walk_cases(self._sc, cases, (flags,))
        return [got[(i, flags)] for i in range(len(cases))]

    def probe(self, addr: int) -> ProbeResult:
        """The MMU's answer for a read of ``addr``: :class:`Translation` (``pa``), :class:`Fault`
        (``kind``, ``level``, ``code``) or :class:`ProbeError`.  The tables are restored after
        (the MMU sets accessed/dirty bits)."""
        return self.probe_many([addr])[0]

    def _halves(self, addrs: Sequence[int]) -> dict[str, list[int]]:
        """Indices of ``addrs`` by the half of the address space the MMU translates them in
        (arm64: ``high`` through TTBR1_EL1; everything else ``low``)."""
        from emu.mm.scenarios import half_base, halves

        high = half_base(self.ops, "high") if "high" in halves(self.ops) else None
        out: dict[str, list[int]] = {}
        for i, a in enumerate(addrs):
            out.setdefault("high" if high is not None and a >= high else "low", []).append(i)
        return out

    def probe_many(self, addrs: Sequence[int]) -> list[ProbeResult]:
        """:meth:`probe` of every address, in one batch per half of the address space (arm64:
        TTBR0_EL1 / TTBR1_EL1).  Returns one result per address, in order."""
        from emu.verify import probe_cases

        addrs = list(addrs)
        out: list[Any] = [None] * len(addrs)
        oracle = self._sc.oracle
        for half, idx in self._halves(addrs).items():
            if oracle is not None:
                oracle.half = half
                oracle.attach(self._sc.mm)
            for i, r in zip(idx, probe_cases(self._sc, [addrs[i] for i in idx]), strict=True):
                out[i] = r
        return out

    def verify(self, addrs: Iterable[int] | None = None, *, flags: Sequence[int] = FLAG_COMBINATIONS) -> list[Row]:
        """Walk (with every flag set in ``flags``), probe and judge ``addrs`` (default:
        :attr:`addrs`), as ``foliowalk verify`` does.  Returns one :class:`Row` per (address,
        flags): ``walk``, ``mmu``, ``verdict`` (``agree``, ``linux-only: ...``, ``disagree: ...``);
        on arm64 the low-half addresses' rows first, then the high half's (TTBR1_EL1)."""
        from emu.mm.scenarios import Case
        from emu.verify import verify_scenario

        saved = self._sc.cases
        cases = saved if addrs is None else [Case(f"address {a:#x}", a, self._vma(a)) for a in addrs]
        rows: list[Row] = []
        try:
            for half, idx in self._halves([c.addr for c in cases]).items():  # arm64: TTBR0, TTBR1
                if self._sc.oracle is not None:
                    self._sc.oracle.half = half
                self._sc.cases = [cases[i] for i in idx]
                rows += verify_scenario(self._sc, flag_sets=tuple(flags))
            return rows
        finally:
            self._sc.cases = saved

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Release the emulator and guest RAM (the address space is unusable after)."""
        if self._target is not None:
            self._target.close()
            self._target = None
        elif self._sc is not None:
            self._sc.close()
        self._sc = None  # type: ignore[assignment]

    def __enter__(self) -> AddressSpace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._sc is None:
            return "AddressSpace(closed)"
        return f"AddressSpace({self.config!r}, pgd={self.mm.pgd:#x}, vmas={len(self.mm.vmas)})"


# -- the same operations as functions --------------------------------------------------------------
def walk(space: AddressSpace, addr: int, flags: int = 0) -> WalkResult:
    """``space.walk(addr, flags)``: see :meth:`AddressSpace.walk`."""
    return space.walk(addr, flags)


def walk_many(space: AddressSpace, addrs: Sequence[int], flags: int = 0) -> list[WalkResult]:
    """``space.walk_many(addrs, flags)``: see :meth:`AddressSpace.walk_many`."""
    return space.walk_many(addrs, flags)


def probe(space: AddressSpace, addr: int) -> ProbeResult:
    """``space.probe(addr)``: see :meth:`AddressSpace.probe`."""
    return space.probe(addr)


def probe_many(space: AddressSpace, addrs: Sequence[int]) -> list[ProbeResult]:
    """``space.probe_many(addrs)``: see :meth:`AddressSpace.probe_many`."""
    return space.probe_many(addrs)


def verify(configs: Iterable[str] | None = None, *, kernel: str | None = None, kconfig: str | None = None,
           harness: str = "auto") -> Report:
    """``foliowalk verify`` on the built-in default scenarios of ``configs`` (default: every
    configuration).  ``kernel``: the folio_walk_start() version (``v6.12``, ``aa39ca6940f1``);
    ``kconfig``: the Kconfig profile; ``harness``: the compiled kernel (auto/on/off).  Returns a
    :class:`Report`: ``rows`` (:class:`Row`), ``counts()`` by verdict class, ``ok`` (no disagree)."""
    from emu.verify import verify_configs

    keys = [_archs.get_config(c).key for c in configs] if configs is not None else _archs.all_config_keys()
    return verify_configs(keys, kernel, kconfig=kconfig, harness=harness)  # type: ignore[no-any-return]


def translate(config: str, va: int, access: str = "read", *, entries: dict[int, int] | None = None,
              image: bytes | None = None, image_base: int = 0, cpu: dict[str, Any] | None = None,
              **roots: int | None) -> Any:
    """What the architecture manual says one access to ``va`` does over your page tables
    (``archs.<arch>.translate``; no emulator involved): an ``archs.translate.Translation`` (``pa``,
    ``size``, ``permissions``, ``trace``) or an ``archs.translate.Fault`` (``kind``, ``level``,
    ``code``, ``reason`` -- the manual's rule --, ``trace``).  ``entries`` (``{pa: value}``) or
    ``image`` (raw bytes, byte 0 at physical ``image_base``) hold the tables; ``roots`` as the
    architecture names them: ``cr3=`` (x86-64), ``ttbr0=``/``ttbr1=``/``t1sz=`` (arm64; a half
    not given is disabled), ``asce=`` (s390x).  ``access``: ``read``, ``write`` or ``fetch``,
    ``user-`` prefixed for unprivileged code.  See :class:`Tables` for the MMU's answer too."""
    return Tables(config, entries=entries, image=image, image_base=image_base, cpu=cpu, **roots).translate(va, access)


def explain(config: str, entries: dict[str, int] | None = None, *, addr: int | None = None,
            kernel: str = DEFAULT_KERNEL, vma: str = "anon", harness: str = "auto", walk: bool = True,
            **levels: int) -> Explanation:
    """``foliowalk explain``: every view of raw entries of ``config`` -- ``explain("arm64:64k:48",
    pte=0x00e8000000200f43)`` or ``explain(config, {"pmd": v, "pte": w})``: hardware fields,
    the architecture's verdict, each Linux function of the level, the compiled kernel's answers
    where built, then (``walk``) the entries walked, probed and judged on a minimal hierarchy.
    Returns an :class:`Explanation` (``views``, ``placed``, ``rows``, ``to_json()``)."""
    from emu.explain import explain as _explain

    return _explain(config, {**(entries or {}), **levels}, addr=addr, kernel=kernel, vma=vma, harness=harness,
                    walk=walk)
