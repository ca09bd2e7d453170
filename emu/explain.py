"""Every view of one entry (or of one path of entries): ``foliowalk explain``.

For each given entry -- a raw value at a Linux level of a configuration -- :func:`explain`
collects what foliowalk knows of it, each from the code that owns it (nothing is re-derived here):

* the hardware fields, by the manual's names, through the arch module's construct formats
  (``ops.decode``);
* the architecture's verdict: whether the MMU walks through / translates with the entry, or the
  fault it raises and why (``ops.hw_rejects``, ``ops.hw_fault_level``, arm64's ``hw_fault``), and
  whether it translates an entry Linux reads as not present (``ops.hw_uses``) or refuses a leaf
  Linux reads as present (``ops.hw_absent_reason``);
* every Linux function the kernel harness exports for that level (``pte_present``,
  ``pmd_leaf``, ``pte_swp_type``, ...: :data:`emu.kernel.audit.LEVEL_OPS`, answered by the model's
  :data:`emu.kernel.check.MODEL_OPS`) and the swap / migration decode;
* the compiled kernel's answers to the same functions, where a kernel harness is built
  (``foliowalk kernel build``) -- else a note says it is not;

then it places the entries on one path of a minimal hierarchy (the fuzzer's layout,
:mod:`emu.fuzz.layout`: canonical table pointers above, the given entries at their levels, one VMA
over the address), walks the address with ``folio_walk_start()`` under every FW_* flag set,
probes it with the MMU, and has :func:`emu.judge.judge` give each row its verdict
(:class:`emu.fuzz.evaluate.Target`, the fuzzer's own evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import archs
from archs.base import LINUX_LEVELS, U64
from archs.linux import DEFAULT_KERNEL, LinuxPgtable
from emu.errors import AddressError, ConfigError


def vma_kinds() -> dict[str, int]:
    """``{name: vm_flags}`` of the VMA kinds an explanation can place the address in (the
    fuzzer's VMA flag sets, :mod:`emu.fuzz.hierarchy_gen`)."""
    from emu.fuzz.hierarchy_gen import _VMA_FLAGS

    return {name: flags for _w, flags, name in _VMA_FLAGS}


@dataclass
class EntryView:
    """Every view of one entry value at one Linux level."""

    level: str  # Linux level (pgd .. pte)
    hw_level: str  # the manual's level name (PML4, L2, region-third, ...)
    value: int
    fields: dict[str, Any]
    #: the architecture: "walks through" / "translates" / "faults", with why and the fault level
    arch: dict[str, Any]
    #: Linux functions of the entry (model): name -> int (truth values 0/1)
    linux: dict[str, int | str]
    swap: dict[str, Any] | None
    #: the compiled kernel's answers (same names), or None where no harness is built
    kernel: dict[str, int | None] | None = None
    #: where the model and the kernel answer differently: "op: kernel K, model M"
    kernel_differs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level, "hw_level": self.hw_level, "value": self.value, "fields": self.fields,
            "architecture": self.arch, "linux": self.linux, "swap": self.swap, "kernel": self.kernel,
            "kernel_differs": self.kernel_differs,
        }


@dataclass
class Placement:
    """One entry of the minimal hierarchy: where it was written and what it is."""

    level: str
    hw_level: str
    pa: int
    value: int
    what: str  # "given", "given (table address moved to ...)", "table pointer"

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "hw_level": self.hw_level, "pa": self.pa, "value": self.value, "what": self.what}


@dataclass
class Explanation:
    """What :func:`explain` returns: the entry views, the hierarchy built, the verify rows."""

    config: str
    kernel: str
    addr: int
    vma: dict[str, Any]
    views: list[EntryView]
    placed: list[Placement]
    rows: list[Any]  # emu.verify.Row, one per FW_* flag set
    notes: list[str]
    #: the minimal hierarchy as a spec (:class:`emu.fuzz.spec.Hierarchy`; docs/hierarchy.md), or None
    hierarchy: Any = None
    #: seconds the walk, probe and judge took
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """False if any row is ``disagree``."""
        return not any(r.verdict_class == "disagree" for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "foliowalk-explain/1", "config": self.config, "kernel": self.kernel, "addr": self.addr,
            "vma": self.vma, "entries": [v.to_json() for v in self.views],
            "hierarchy": [p.to_json() for p in self.placed], "rows": [r.to_json() for r in self.rows],
            "notes": self.notes,
        }


# -- the views of one entry -----------------------------------------------------------------------
def linux_levels(ops: LinuxPgtable) -> list[str]:
    """The Linux levels that have entries of their own in this configuration, top down."""
    return [lv.linux for lv in ops.config.levels]


def _check_level(ops: LinuxPgtable, level: str) -> None:
    if level not in LINUX_LEVELS:
        raise ConfigError(f"unknown level {level!r}; levels: {', '.join(LINUX_LEVELS)}")
    real = linux_levels(ops)
    if level not in real:
        names = ", ".join(f"{lv.linux} ({lv.name})" for lv in ops.config.levels)
        raise ConfigError(f"{level} is folded in {ops.config.key}: its levels are {names}")


def arch_view(ops: LinuxPgtable, level: str, value: int, addr: int | None) -> dict[str, Any]:
    """The architecture manual's reading of ``value`` at ``level`` (see the module docstring)."""
    hw = ops.hw_level(level)
    last = level == ops.config.levels[-1].linux
    out: dict[str, Any] = {}
    fault = getattr(ops, "hw_fault", None)
    if fault is not None:  # arm64: the descriptor's own type bits decide
        f = fault(level, value)
        out["fault"] = None if f is None else {"kind": f[0], "level": f[1], "why": f[2]}
    # as a leaf where it is the last level, else as the manual reads it (table pointer or block)
    why = ops.hw_rejects(level, value, leaf=last, addr=addr)
    if why is None and not last and hw.leaf_size is not None:
        why_leaf = ops.hw_rejects(level, value, leaf=True, addr=addr)
        if why_leaf is not None and why_leaf != why:
            out["as_leaf"] = why_leaf
    if why is not None:
        out["verdict"] = "faults"
        out["why"] = why
        out["fault_level"] = ops.hw_fault_level(level, value, leaf=last, addr=addr)
    else:
        out["verdict"] = "valid"
        out["why"] = "the MMU takes it" + (f" (at {addr:#x})" if addr is not None else "")
    uses = ops.hw_uses(level, value)
    if uses:
        out["hw_uses"] = uses
    absent = ops.hw_absent_reason(level, value) if level in ("pte", "pmd", "pud") else None
    if absent:
        out["hw_absent"] = absent
    return out


def _swap_view(ops: LinuxPgtable, level: str, value: int) -> dict[str, Any] | None:
    """The swap entry a non-present, non-none PTE (or PMD, with THP migration) encodes."""
    if level == "pte":
        if ops.pte_none(value) or ops.pte_present(value):
            return None
        e = ops.pte_to_swp_entry(value)
    elif level == "pmd" and ops.has_thp_migration:
        if ops.pmd_none(value) or ops.pmd_present(value):
            return None
        e = ops.pmd_to_swp_entry(value)
    else:
        return None
    sw = ops.swap
    out: dict[str, Any] = {"swp_type": e.type, "swp_offset": e.offset, "meaning": sw.name(e.type)}
    if sw.is_pfn_swap_entry(e):
        out["pfn"] = ops.swp_offset_pfn(e)
    if sw.is_migration_entry(e):
        out["migration"] = {v: k for k, v in sw.migration_types.items()}[e.type]
    return out


def entry_view(ops: LinuxPgtable, level: str, value: int, *, addr: int | None = None,
               harness: Any = None) -> EntryView:
    """Every view of ``value`` at Linux ``level`` of ``ops``'s configuration; ``harness``: a
    :class:`emu.kernel.runner.KernelHarness` whose answers are added (None: model only)."""
    from emu.kernel.audit import LEVEL_OPS
    from emu.kernel.check import MODEL_OPS

    _check_level(ops, level)
    if not 0 <= value <= U64:
        raise ConfigError(f"{value:#x} is not a 64-bit entry value")
    try:
        fields = dict(ops.decode(level, value))
    except (ValueError, KeyError) as err:
        fields = {"error": str(err)}
    linux: dict[str, int | str] = {}
    for op in LEVEL_OPS[level]:
        try:
            linux[op] = int(MODEL_OPS[op](ops, value, 0)) & U64
        except Exception as err:  # noqa: BLE001 -- a model function that raises says so, by name
            linux[op] = f"raised {type(err).__name__}: {err}"
    view = EntryView(level, ops.hw_level(level).name, value, fields, arch_view(ops, level, value, addr),
                     linux, _swap_view(ops, level, value))
    if harness is not None:
        import numpy as np

        from emu.kernel.check import kernel_answers

        view.kernel = {}
        arr = np.array([value], dtype=np.uint64)
        for op in LEVEL_OPS[level]:
            got = kernel_answers(harness, op, arr)
            k = None if got is None else int(got[0])
            view.kernel[op] = k
            m = linux[op]
            if k is not None and m != k:
                view.kernel_differs.append(f"{op}: kernel {k:#x}, model {m if isinstance(m, str) else hex(m)}")
    return view


# -- the minimal hierarchy --------------------------------------------------------------------------
def default_addr(ops: LinuxPgtable) -> int:
    """The address an explanation walks when none is given: the second usable top-level slot
    (the first if there is one only), index 1 in every table below it, offset 0."""
    from emu.fuzz.hierarchy_gen import HierarchyGenerator

    slots = HierarchyGenerator(ops.config.key, ops.kernel).root_slots
    base = slots[1][1] if len(slots) > 1 else slots[0][1]
    return base + sum(1 << lv.shift for lv in ops.config.levels[1:])


def _is_table(ops: LinuxPgtable, level: str, value: int) -> bool:
    """Whether Linux takes ``value`` at ``level`` for a pointer to a next-level table: not none,
    not bad, and (pud, pmd) present and not a leaf."""
    if ops.entry_none(level, value) or ops.entry_bad(level, value):
        return False
    if level == "pud":
        return ops.pud_present(value) and not ops.pud_leaf(value)
    if level == "pmd":
        return ops.pmd_present(value) and not ops.pmd_leaf(value)
    return level != "pte"


def _relocate(ops: LinuxPgtable, level: str, value: int, target: int) -> int | None:
    """``value`` with its table address replaced by ``target`` (every other bit kept), or None
    where it is no table pointer to Linux (a leaf, a none, bad or swap entry is kept as given) or
    that cannot be done through ``mk_table`` (not a table pointer's address field)."""
    if not _is_table(ops, level, value):
        return None
    try:
        orig = ops.table_pa(level, value)
        moved = value ^ ops.mk_table(level, orig) ^ ops.mk_table(level, target)
        return moved if ops.table_pa(level, moved) == target else None
    except (ValueError, KeyError, NotImplementedError):
        return None


def explain(config: str, entries: dict[str, int], *, addr: int | None = None, kernel: str = DEFAULT_KERNEL,
            vma: str = "anon", pgoff: int = 0, harness: str = "auto", walk: bool = True) -> Explanation:
    """Explain ``entries`` (``{linux level: value}``, e.g. ``{"pte": 0x...}``) of configuration
    ``config`` (``arm64:64k:48``): the :class:`EntryView` of each, then (with ``walk``) the
    entries placed on the path of ``addr`` (default :func:`default_addr`) in a minimal hierarchy,
    walked and probed, each row judged.  ``harness``: ``auto`` (the compiled kernel where built),
    ``on`` (build it if needed), ``off``.  Raises :class:`emu.errors.FoliowalkError` (or
    :class:`archs.UnknownConfig`) on bad input."""
    from emu.fuzz.evaluate import Target
    from emu.fuzz.spec import Entry, Hierarchy, VmaSpec, check_hierarchy

    if not entries:
        raise ConfigError("no entry to explain: give --level LEVEL VALUE or --pgd/--p4d/--pud/--pmd/--pte VALUE")
    if harness not in ("auto", "on", "off"):
        raise ConfigError(f"harness must be auto, on or off, not {harness!r}")
    kinds = vma_kinds()
    if vma not in kinds:
        raise ConfigError(f"unknown VMA kind {vma!r}; known: {', '.join(kinds)}")
    ops0 = archs.get_ops(config, kernel)
    key = ops0.config.key
    for level, value in entries.items():
        _check_level(ops0, level)
        if not 0 <= value <= U64:
            raise ConfigError(f"--{level} {value:#x} is not a 64-bit entry value")
    if addr is None:
        addr = default_addr(ops0)
    elif not ops0.va_valid(addr):
        raise AddressError(f"{addr:#x} is not a canonical virtual address for {key}")
    notes: list[str] = []
    target = Target(key, kernel, oracle=walk, harness=harness)
    try:
        ops = target.ops
        lay = target.layout
        if walk and any(lo <= addr < hi for lo, hi in lay.reserved_va):
            raise AddressError(f"{addr:#x} is in the probe machine's own address range "
                               f"({', '.join(f'{lo:#x}..{hi:#x}' for lo, hi in lay.reserved_va)})")
        if walk and target.oracle is not None:
            from emu.mm.scenarios import half_base, halves

            # arm64: an address in the high half is probed through TTBR1_EL1 (the low half disabled)
            if "high" in halves(ops) and addr >= half_base(ops, "high"):
                target.oracle.half = "high"
                notes.append("the address is in the high half: the MMU walks from TTBR1_EL1 (TTBR0 disabled)")
        h_audit = target.audit.harness if target.audit is not None else None
        notes.append(target.kernel_note if h_audit is not None else
                     f"{target.kernel_note}; the compiled kernel's answers are not shown")
        views = [entry_view(ops, lv, entries[lv], addr=addr, harness=h_audit)
                 for lv in linux_levels(ops) if lv in entries]
        if not walk:
            return Explanation(key, kernel, addr, {}, views, [], [], notes)
        levels = ops.config.levels
        deepest = max(i for i, lv in enumerate(levels) if lv.linux in entries)
        placed: list[Placement] = []
        hents: list[Entry] = []
        tables: list[tuple[int, int]] = []
        for d in range(deepest + 1):
            lv = levels[d]
            table = lay.root if d == 0 else lay.tables[d][0]
            if d:
                tables.append((table, d))
            pa = table + lv.index(addr) * lv.entry_size
            nxt = lay.tables[d + 1][0] if d < deepest else None
            if lv.linux in entries:
                value, what = entries[lv.linux], "given"
                if nxt is not None and ops.table_pa(lv.linux, value) != nxt:
                    moved = _relocate(ops, lv.linux, value, nxt)
                    if moved is not None:
                        what = (f"given, table address {ops.table_pa(lv.linux, value):#x} moved to "
                                f"{nxt:#x} (the next given entry's table)")
                        value = moved
                    else:
                        what = ("given, kept as it is (not a table pointer to Linux, or one whose address "
                                "cannot be moved): the walk may not reach the entries below")
                base = None
            else:
                assert nxt is not None
                value, what = int(ops.mk_table(lv.linux, nxt)), "table pointer (mk_table)"
                base = value
            placed.append(Placement(lv.linux, lv.name, pa, value, what))
            hents.append(Entry(pa, d, value, base, "explain" if base is None else "table"))
        span = 1 << levels[deepest].shift
        start = addr & ~(span - 1) & U64
        end = min(start + span, U64 + 1 - ops.PAGE_SIZE)
        vspec = VmaSpec(start, end, kinds[vma], pgoff, vma)
        h = Hierarchy(key, kernel, tuple(hents), tuple(tables), (vspec,), (addr,))
        check_hierarchy(h)
        import time

        t0 = time.perf_counter()
        ev = target.evaluate(h)
        seconds = time.perf_counter() - t0
        rows = ev.rows(key, f"explain ({vma} VMA {start:#x}..{end:#x})")
        notes.append(target.kwalk_note)
        from emu.mm.mm_types import vm_flags_str

        vjson = {"start": start, "end": end, "flags": kinds[vma], "flags_str": vm_flags_str(kinds[vma]),
                 "pgoff": pgoff, "name": vma}
        return Explanation(key, kernel, addr, vjson, views, placed, rows, notes, h, seconds)
    finally:
        target.close()
