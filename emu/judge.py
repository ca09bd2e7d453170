"""The judge: one verdict for one row, from the views of the same (address, flags) on the same
bytes of guest RAM, by a short ordered table of named rules (:data:`RULES`).

The views (:class:`Views`):

* **model** -- foliowalk's ``folio_walk_start()`` (:class:`~emu.verify.WalkResult`: the folio,
  the page, the level and entry it decided on, the trace of entries it read);
* **architecture** -- what the manual says about those entries: the ``archs/`` facts
  ``hw_rejects``, ``hw_fault_level``, ``hw_uses``, ``walk_diverges``, ``hw_level`` and the
  ``hw_absent`` reason of the model's leaf.  Arch modules supply facts and never decide;
* **emulator** -- what the MMU did (a :class:`~emu.machines.base.Translation`, a
  :class:`~emu.machines.base.Fault` or a :class:`~emu.machines.base.ProbeError`), with its
  oracle glue (``cannot_check``, ``fault_hw_level``) and the deviation registry
  (:mod:`emu.machines.deviations`);
* **kernel** -- the compiled kernel's answers (:mod:`emu.kernel`) on every entry the model's walk
  read: ``model-vs-kernel <function> ...`` where one of the kernel's own functions of an entry
  on the path (``pte_present``, ``pmd_leaf``, ``pte_to_swp_entry`` ...) answers otherwise than
  the model, else None; and the kernel's own ``folio_walk_start()`` on the row's (address,
  flags) (:class:`emu.kernel.walkview.KernelAnswer`), compared with the model's walk by
  :func:`emu.kernel.walkview.walk_differs`.

The first rule whose test gives a reason decides: the verdict is ``<class>: <reason>`` (just
``agree`` for the last rule).  Before all of them: the model and the compiled kernel disagree on
an entry of the path (``disagree: model-vs-kernel <function> ...``), or the kernel's own
``folio_walk_start()`` answers the row otherwise (``disagree: model-vs-kernel folio_walk_start:
kernel ..., model ...``) -- a wrong model explains nothing.
Each rule also names the facts of a row it needs (``needs``: bits
of :attr:`Views.facts`, worked out once per row), so that most rows are decided after three
tests, not fifteen; a test never relies on its filter.  Every verdict class of docs/verify.md's
verdict table is given by the rules named for it in :data:`RULES_BY_VERDICT`.  The rules read, in order:

1. the oracle cannot check the deciding entry, or could not answer: ``oracle-cannot-check``,
   ``oracle-error`` -- counted, never agreement;
2. the row hits a registered emulator deviation: the MMU's answer proves nothing either way;
3. the model and the MMU mismatch (:func:`mismatch`): Linux's walk reads other entries by its
   own convention, or the architecture explains it (an entry it rejects, an entry the MMU uses
   although Linux does not), or the kernel oopses (``kernel-oops@...``: it reads a struct page
   that does not exist, for a pfn the MMU has no memory for either), else ``disagree``;
4. Linux returns a leaf the MMU must not translate but the MMU faults *above* it: an entry the
   architecture rejects there explains it, else ``disagree``;
5. Linux and the MMU differ by design (``linux-only``): a migration entry, a PROT_NONE/old
   leaf, a page ``vm_normal_page()`` refuses, a walk that stopped above a subtree the MMU walks;
6. both say nothing, but not at the same level: ``disagree`` unless the architecture rejects an
   entry above;
7. otherwise ``agree``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archs.linux import LinuxPgtable
from emu.machines import deviations
from emu.machines.base import Fault, ProbeError, ProbeResult, Translation

if TYPE_CHECKING:
    from emu.verify import WalkResult

#: The verdict classes, in the order reports count them (docs/verify.md: the verdict table).
VERDICT_CLASSES = ("agree", "linux-only", "emulator-deviation", "oracle-cannot-check", "oracle-error", "disagree")

#: Not-found reasons where the entry is present to the hardware but Linux refuses the page (or,
#: ``oops@pud``, oopses reading its struct page: a present PUD leaf whose pfn has none).
REFUSED_PRESENT = ("not-normal@", "devmap@pud", "special@pud", "oops@pud")
#: Not-found reasons where Linux stops above a subtree the hardware may still walk.
STOPPED_ABOVE = ("bad@", "outside-vma", "leaf@pmd")


# Facts of a row, as bits of Views.facts: a rule's ``needs`` are the facts its test requires.
ORACLE, PROBE_ERROR, TRANSLATED, FAULTED, MISMATCH, TRACE = 1, 2, 4, 8, 16, 32
FOUND, HW_ABSENT, MIGRATION, REFUSED, STOPPED, NONE_AT = 64, 128, 256, 512, 1024, 2048
KERNEL_DIFFERS, KERNEL_WALK, OOPS = 4096, 8192, 16384


class Views:
    """The views of one row the rules read (see the module docstring).  What several rules ask
    (translated? faulted? refused? the mismatch) is worked out once, here; what only some rows
    need (``diverges``, ``fault_level``) when first asked.  (A plain class with slots: the
    fuzzer judges every row it makes.)"""

    __slots__ = ("ops", "model", "emulator", "oracle", "addr", "kernel", "kernel_walk", "translated", "faulted",
                 "refused", "mismatch", "facts", "_diverges", "_fault_level")

    def __init__(self, ops: LinuxPgtable, model: WalkResult, emulator: ProbeResult, oracle: Any = None,
                 addr: int | None = None, kernel: str | None = None, kernel_walk: Any = None) -> None:
        self.ops = ops  # the architecture's facts (archs/)
        self.model = model  # foliowalk's folio_walk_start()
        self.emulator = emulator  # what the MMU did
        self.oracle = oracle  # the machine's oracle glue (emu.machines.oracle.Oracle), if any
        self.addr = addr  # the row's address, for facts that depend on it
        self.kernel = kernel  # the compiled kernel's disagreement with the model on the path, or None
        self.kernel_walk = kernel_walk  # the compiled folio_walk_start()'s answer (KernelAnswer), or None
        self.translated = isinstance(emulator, Translation)
        self.faulted = isinstance(emulator, Fault)
        #: Linux refuses a page whose entry is present to the hardware (vm_normal_page() etc.)
        self.refused = model.reason.startswith(REFUSED_PRESENT)
        #: how the model and the MMU differ where neither design nor deviation explains it
        self.mismatch = mismatch(self)
        reason = model.reason
        #: the facts (bits) the rules' ``needs`` are checked against
        self.facts = (
            (ORACLE if oracle is not None else 0) | (PROBE_ERROR if isinstance(emulator, ProbeError) else 0)
            | (TRANSLATED if self.translated else 0) | (FAULTED if self.faulted else 0)
            | (MISMATCH if self.mismatch is not None else 0) | (TRACE if model.trace else 0)
            | (FOUND if reason == "found" else 0) | (HW_ABSENT if model.hw_absent else 0)
            | (MIGRATION if model.kind == "migration-entry" else 0) | (REFUSED if self.refused else 0)
            | (STOPPED if reason.startswith(STOPPED_ABOVE) else 0) | (NONE_AT if reason.startswith("none@") else 0)
            | (KERNEL_DIFFERS if kernel else 0) | (KERNEL_WALK if kernel_walk is not None else 0)
            | (OOPS if reason.startswith("oops@") else 0)
        )
        self._diverges: Any = _UNSET
        self._fault_level: Any = _UNSET

    @property
    def diverges(self) -> str | None:
        """The architecture's fact: Linux's walk for the address reads other entries than the
        MMU's by a convention of its own (``walk_diverges``), or None."""
        if self._diverges is _UNSET:
            trace = self.model.trace
            self._diverges = (self.ops.walk_diverges(trace, self.addr) or None
                              if self.addr is not None and trace else None)
        return self._diverges  # type: ignore[no-any-return]

    @property
    def fault_level(self) -> str | None:
        """The hardware level the MMU's fault names (oracle glue), or None."""
        if self._fault_level is _UNSET:
            self._fault_level = (self.oracle.fault_hw_level(self.emulator)
                                 if self.oracle is not None and self.faulted else None)
        return self._fault_level  # type: ignore[no-any-return]


_UNSET: Any = object()


def first_rejected(
    ops: LinuxPgtable, walk: WalkResult, stop_at: str | None = None, addr: int | None = None
) -> str | None:
    """The first entry of the model's ``walk`` (top down) the architecture rejects, as '<level>
    entry ...: why'; with ``stop_at``, only an entry whose rejection the MMU reports as a fault at
    that hardware level counts (``ops.hw_fault_level``).  A read that a later read at the same
    Linux level supersedes is not an entry of the path (s390x: pgd_offset() reads the top
    table's first entry for its table type)."""
    trace = walk.trace
    last = len(trace) - 1
    for i, (lv, pa, val) in enumerate(trace):
        if any(t[0] == lv for t in trace[i + 1 :]):
            continue
        name = ops.hw_level(lv).name
        why = ops.hw_rejects(lv, val, leaf=i == last, addr=addr)
        if why and stop_at is not None and ops.hw_fault_level(lv, val, leaf=i == last, addr=addr) != stop_at:
            continue
        if why:
            return f"{name} entry {val:#x} at {pa:#x} is rejected by the architecture: {why}"
    return None


def mismatch(v: Views) -> str | None:
    """The model's answer against the MMU's, where they cannot both be right: a migration entry
    the MMU translates, a present leaf mapping another address than the MMU reached, a present
    leaf the MMU faults on (not PROT_NONE/old, not beyond the memmap), or nothing found where
    the MMU translates (not a walk that stopped above the subtree)."""
    walk, mmu = v.model, v.emulator
    pa = mmu.pa if isinstance(mmu, Translation) else None
    if walk.found and walk.kind == "migration-entry":
        return f"migration entry, MMU reached {pa:#x}" if pa is not None else None
    if walk.found or v.refused:
        if pa is not None:
            if pa != walk.expected_pa:
                exp = f"{walk.expected_pa:#x}" if walk.expected_pa is not None else "?"
                return f"entry maps {exp}, MMU reached {pa:#x}"
            return None
        if walk.hw_absent or walk.reason.endswith(":pfn-beyond-memmap"):
            return None  # by design / vm_normal_page() refuses a pfn the MMU has no memory for
        if isinstance(mmu, Fault) and mmu.access_refused:
            return None  # translated; the access's rights are refused (rule access-refused)
        return "Linux sees a present entry, the MMU faults"
    if pa is not None and not walk.reason.startswith(STOPPED_ABOVE):
        return f"Linux finds nothing ({walk.reason}), MMU reached {pa:#x}"
    return None


# -- the rules' tests: each gives the reason text when its rule decides the row, else None ------
def _cannot_check(v: Views) -> str | None:
    """The oracle's own reason for the deciding entry, or the probe's: a ProbeError whose reason
    starts ``oracle-cannot-check: `` (a machine that knows it cannot answer that address, e.g.
    QEMU 7.2 for a level -1 fault, emu/machines/qemu/arm64.py)."""
    if isinstance(v.emulator, ProbeError) and v.emulator.reason.startswith("oracle-cannot-check: "):
        return v.emulator.reason.removeprefix("oracle-cannot-check: ")
    if v.oracle is None:
        return None
    level = v.model.level.lower() if v.model.level else None
    return v.oracle.cannot_check(level, v.model.entry, v.addr) or None


def _oracle_error(v: Views) -> str | None:
    return v.emulator.reason if isinstance(v.emulator, ProbeError) else None


def _deviation(v: Views) -> str | None:
    emulator = getattr(v.oracle, "emulator", "unicorn")
    if emulator != "unicorn":
        from emu.machines.placement import explain  # only the deviations placed on that emulator

        found = explain(v.ops, v.model, v.emulator, emulator)
        return f"{found.name} [{emulator}]" if found is not None else None
    dev = deviations.explain(v.ops, v.model, v.emulator)
    return dev.name if dev is not None else None


def _walk_diverges(v: Views) -> str | None:
    return v.diverges if v.mismatch else None


def _rejected_on_path(v: Views) -> str | None:
    return first_rejected(v.ops, v.model, addr=v.addr) if v.mismatch and v.model.trace and v.faulted else None


def _used_by_mmu(v: Views) -> str | None:
    walk = v.model
    if not (v.mismatch and walk.trace and v.translated and not walk.found and not v.refused):
        return None
    lv, pa, val = walk.trace[-1]
    why = v.ops.hw_uses(lv, val)
    return f"{v.ops.hw_level(lv).name} entry {val:#x} at {pa:#x} is used by the MMU: {why}" if why else None


def _mismatch(v: Views) -> str | None:
    return v.mismatch


def _faults_above_leaf(v: Views) -> str | None:
    """The level the MMU faulted at, where Linux returns a leaf the MMU must not translate
    (PROT_NONE, old page) and the fault names a level above that leaf; else None."""
    walk = v.model
    if not (walk.found and walk.hw_absent and walk.level is not None and v.fault_level is not None):
        return None
    return v.fault_level if v.fault_level != v.ops.hw_level(walk.level.lower()).name else None


def _rejected_above_leaf(v: Views) -> str | None:
    where = _faults_above_leaf(v)
    return first_rejected(v.ops, v.model, stop_at=where, addr=v.addr) if where is not None else None


def _unexplained_fault_above_leaf(v: Views) -> str | None:
    where = _faults_above_leaf(v)
    if where is None:
        return None
    return f"Linux returns a {v.model.hw_absent} leaf, the MMU faults above it at {where}"


def _migration_entry(v: Views) -> str | None:
    walk = v.model
    return "migration-entry" if walk.found and walk.kind == "migration-entry" and not v.translated else None


def _absent_to_hardware(v: Views) -> str | None:
    return v.model.hw_absent if v.model.found and not v.translated and v.model.hw_absent else None


def _access_refused(v: Views) -> str | None:
    """The MMU translates the leaf Linux found but refuses this access (a write to the read-only
    zero page, a user access to a kernel page): folio_walk_start() checks no access rights."""
    mmu = v.emulator
    if v.model.found and isinstance(mmu, Fault) and mmu.access_refused:
        return f"access-refused ({mmu.kind} code {mmu.code:#x})"
    return None


def _refused_page(v: Views) -> str | None:
    return v.model.reason if v.refused and v.translated else None  # (a mismatch decided earlier)


def _stopped_above(v: Views) -> str | None:
    walk = v.model
    return walk.reason if v.translated and walk.reason.startswith(STOPPED_ABOVE) else None


def _none_at_other_level(v: Views) -> str | None:
    """Where the MMU names the level it faulted at, it must be the level Linux stopped at on a
    none entry, unless the architecture rejects an entry above it that Linux walked through or
    the two walks do not share the entries."""
    walk = v.model
    if walk.found or not walk.trace or not walk.reason.startswith("none@"):
        return None
    where = v.fault_level
    if where is None:
        return None
    stop = v.ops.hw_level(walk.trace[-1][0]).name
    if where == stop or v.diverges or first_rejected(v.ops, v.model, stop_at=where, addr=v.addr) is not None:
        return None
    return f"Linux stops at a none {stop} entry, the MMU faults at {where}"


def _agree(v: Views) -> str | None:
    return ""


@dataclass(frozen=True)
class Rule:
    """One row of the judge's table: its name, the verdict class it gives, the facts of a row it
    needs (a quick filter: a row without them is not this rule's; the test checks them too),
    what it means, and its test (the reason text when the rule decides the row, else None)."""

    name: str
    verdict: str
    needs: int
    means: str
    test: Callable[[Views], str | None]


#: The judge's table, in order: the first rule whose test gives a reason decides the row.
def _model_vs_kernel(v: Views) -> str | None:
    return v.kernel


def _model_vs_kernel_walk(v: Views) -> str | None:
    if v.kernel_walk is None:
        return None
    from emu.kernel.walkview import walk_differs

    return walk_differs(v.model, v.kernel_walk, v.ops.pxd_clear if v.ops is not None else None)


def _kernel_reads_elsewhere(v: Views) -> str | None:
    """The compiled kernel answers otherwise, and the walk read an entry that a running kernel
    does not find in this RAM (s390x: a hostile pointer wrapping into real 0..0x1fff, which the
    kernel reads as its own lowcore): the kernel cannot check the row."""
    if v.kernel_walk is None or v.ops is None:
        return None
    why = next((w for _lv, pa, _val in v.model.trace if (w := v.ops.kernel_reads_elsewhere(pa))), None)
    if why is None:
        return None
    differs = _model_vs_kernel_walk(v)
    return f"kernel: {why}; {differs}" if differs else None


def _kernel_oops(v: Views) -> str | None:
    """The model predicts that the kernel oopses on this walk (it reads a struct page that does
    not exist: a PUD leaf or a migration entry naming a pfn of no present memory section); the
    MMU has no memory there either."""
    w = v.model
    if v.translated or not w.reason.startswith("oops@"):
        return None
    return f"kernel-{w.reason} ({w.warnings[-1]})" if w.warnings else f"kernel-{w.reason}"


RULES: tuple[Rule, ...] = (
    Rule("model-vs-kernel", "disagree", KERNEL_DIFFERS,
         "the compiled kernel answers a function of an entry on the walk's path otherwise than the model",
         _model_vs_kernel),
    Rule("kernel-reads-elsewhere", "oracle-cannot-check", KERNEL_WALK,
         "the compiled kernel answers otherwise, but the walk reads an entry a running kernel finds "
         "elsewhere (s390x: real 0..0x1fff is its own lowcore, by prefixing)", _kernel_reads_elsewhere),
    Rule("model-vs-kernel-walk", "disagree", KERNEL_WALK,
         "the compiled kernel's own folio_walk_start() answers the row otherwise than the model "
         "(folio, page, level, entry address and value, PTL held/released, entries cleared, oops)",
         _model_vs_kernel_walk),
    Rule("oracle-cannot-check", "oracle-cannot-check", ORACLE,
         "the oracle cannot check the entry the walk decided on (e.g. s390x EDAT off)", _cannot_check),
    Rule("oracle-error", "oracle-error", PROBE_ERROR, "the MMU probe could not answer", _oracle_error),
    Rule("emulator-deviation", "emulator-deviation", 0,
         "the row hits a registered Unicorn/QEMU departure from the architecture", _deviation),
    Rule("walk-diverges", "linux-only", MISMATCH | TRACE,
         "Linux's walk reads other entries than the MMU's by its own convention (walk_diverges)", _walk_diverges),
    Rule("rejected-on-path", "linux-only", MISMATCH | TRACE | FAULTED,
         "the MMU faults at an entry on the path the architecture rejects (hw_rejects)", _rejected_on_path),
    Rule("used-by-mmu", "linux-only", MISMATCH | TRACE | TRANSLATED,
         "the MMU translates through an entry Linux reads as not present (hw_uses)", _used_by_mmu),
    Rule("kernel-oops", "linux-only", OOPS,
         "the kernel oopses on this walk (a struct page that does not exist); the MMU does not translate",
         _kernel_oops),
    Rule("mismatch", "disagree", MISMATCH, "the walk and the MMU differ and nothing explains it", _mismatch),
    Rule("rejected-above-leaf", "linux-only", FOUND | HW_ABSENT | FAULTED | ORACLE,
         "the MMU faults above a PROT_NONE/old leaf at an entry the architecture rejects", _rejected_above_leaf),
    Rule("fault-above-leaf", "disagree", FOUND | HW_ABSENT | FAULTED | ORACLE,
         "the MMU faults above a PROT_NONE/old leaf and nothing rejects an entry there",
         _unexplained_fault_above_leaf),
    Rule("migration-entry", "linux-only", FOUND | MIGRATION,
         "FW_MIGRATION returns a migration entry's folio; the MMU faults", _migration_entry),
    Rule("absent-to-hardware", "linux-only", FOUND | HW_ABSENT,
         "a leaf present to Linux the MMU must not translate (hw_absent: PROT_NONE, old page)", _absent_to_hardware),
    Rule("access-refused", "linux-only", FOUND | FAULTED,
         "the MMU translates the leaf Linux found but refuses the access's rights (write to a "
         "read-only page, user access to a kernel page); folio_walk_start() checks no rights",
         _access_refused),
    Rule("refused-page", "linux-only", REFUSED | TRANSLATED,
         "vm_normal_page() (or a devmap/special PUD) refuses a page the MMU translates", _refused_page),
    Rule("stopped-above", "linux-only", STOPPED | TRANSLATED,
         "Linux stops above a subtree the MMU walks (a bad entry it clears, outside the VMA, ...)", _stopped_above),
    Rule("none-at-other-level", "disagree", NONE_AT | TRACE | FAULTED | ORACLE,
         "both say nothing, but the MMU faults at another level than the none entry Linux stopped at",
         _none_at_other_level),
    Rule("agree", "agree", 0, "the same physical address, or both nothing", _agree),
)

#: verdict class -> the names of the rules that give it (docs/verify.md: the verdict table).
RULES_BY_VERDICT: dict[str, tuple[str, ...]] = {
    cls: tuple(r.name for r in RULES if r.verdict == cls)
    for cls in VERDICT_CLASSES
}


#: The rules that read only the model's and the emulator's views, in the table's order: what the
#: row would be with no architecture facts, no oracle glue and no deviation registry.
COMPARISON = ("mismatch", "migration-entry", "absent-to-hardware", "refused-page", "stopped-above", "agree")


def decide(v: Views, rules: tuple[Rule, ...] = RULES) -> tuple[Rule, str]:
    """The rule that decides the row, and the verdict it gives."""
    facts = v.facts
    for rule in rules:
        if rule.needs & facts != rule.needs:
            continue
        reason = rule.test(v)
        if reason is not None:
            return rule, rule.verdict if rule.verdict == "agree" else f"{rule.verdict}: {reason}"
    raise AssertionError("the last rule always decides")  # pragma: no cover


_TESTS = tuple((r.needs, r.test, "agree" if r.verdict == "agree" else r.verdict + ": ") for r in RULES)


def judge(
    ops: LinuxPgtable, walk: WalkResult, mmu: ProbeResult, oracle: Any = None, *, addr: int | None = None,
    kernel: str | None = None, kernel_walk: Any = None,
) -> str:
    """The verdict for one row: the model's ``walk``, the emulator's ``mmu`` answer (with its
    ``oracle`` glue) and the architecture's facts in ``ops``; ``addr`` (the row's address) lets
    facts depend on it; ``kernel`` is the compiled kernel's disagreement with the model on the
    walk's entries (:meth:`emu.kernel.audit.EntryAudit.verdict`), if any; ``kernel_walk`` the
    compiled ``folio_walk_start()``'s answer for the row (:class:`emu.kernel.walkview.KernelAnswer`)."""
    v = Views(ops, walk, mmu, oracle, addr, kernel, kernel_walk)
    facts = v.facts
    for needs, test, verdict in _TESTS:  # decide(v), without building the (rule, verdict) pair
        if needs & facts != needs:
            continue
        reason = test(v)
        if reason is not None:
            return verdict if verdict == "agree" else verdict + reason
    raise AssertionError("the last rule always decides")  # pragma: no cover


def compare(walk: WalkResult, mmu: ProbeResult) -> str:
    """The verdict of the :data:`COMPARISON` rules alone: the model against the emulator, before
    the architecture, the oracle or a deviation can explain anything."""
    rules = tuple(r for r in RULES if r.name in COMPARISON)
    return decide(Views(None, walk, mmu), rules)[1]  # type: ignore[arg-type]  # no rule here reads ops
