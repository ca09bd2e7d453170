"""Every entry a run touches, asked of the model and of the compiled kernel.

``verify``, ``fixtures build`` and ``fuzz`` read entries at known Linux levels (a walk's trace:
``(level, pa, value)``).  :class:`EntryAudit` collects them, evaluates each level's kernel
functions on all of them in one batch per function (:data:`LEVEL_OPS`), and answers, for any
``(level, value)``, which functions the model answers differently -- the row's
``disagree: model-vs-kernel <function>``.  It also counts what it checked, so a report can say
how much of the Linux half the kernel confirmed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from archs.linux import LinuxPgtable

from .check import MODEL_OPS, U64, kernel_answers
from .runner import KernelHarness

#: The kernel functions of an entry at each Linux level (the harness's op names).
LEVEL_OPS: dict[str, tuple[str, ...]] = {
    "pgd": ("pgd_none", "pgd_bad"),
    "p4d": ("p4d_none", "p4d_bad"),
    "pud": ("pud_none", "pud_bad", "pud_present", "pud_leaf", "pud_devmap", "pud_special", "pud_pfn"),
    "pmd": ("pmd_none", "pmd_bad", "pmd_present", "pmd_leaf", "pmd_trans_huge", "pmd_devmap", "pmd_special",
            "pmd_protnone", "pmd_pfn", "is_pmd_migration_entry", "pmd_swp_type", "pmd_swp_offset"),
    "pte": ("pte_none", "pte_present", "pte_special", "pte_devmap", "pte_protnone", "pte_pfn", "is_swap_pte",
            "pte_swp_type", "pte_swp_offset", "is_migration_entry", "is_writable_migration_entry",
            "is_readable_exclusive_migration_entry", "is_device_private_entry", "is_hwpoison_entry",
            "is_pte_marker_entry", "is_pfn_swap_entry"),
}


@dataclass
class EntryAudit:
    """Model vs kernel on every (level, value) added; :meth:`run` evaluates what is pending."""

    harness: KernelHarness
    ops: LinuxPgtable
    pending: dict[str, set[int]] = field(default_factory=lambda: {lv: set() for lv in LEVEL_OPS})
    differ: dict[tuple[str, int], list[str]] = field(default_factory=dict)  # -> "op: kernel K, model M"
    checked: int = 0  # (level, value) pairs evaluated
    evaluations: int = 0  # function calls made on each side
    absent: set[str] = field(default_factory=set)

    def add(self, entries: Iterable[tuple[str, int]]) -> None:
        for level, value in entries:
            if level in self.pending:
                self.pending[level].add(int(value) & U64)

    def add_trace(self, trace: Iterable[tuple[str, int, int]]) -> None:
        self.add((lv, val) for lv, _pa, val in trace)

    def run(self) -> None:
        for level, values in self.pending.items():
            if not values:
                continue
            vals = np.fromiter(sorted(values), dtype=np.uint64, count=len(values))
            values.clear()
            self.checked += len(vals)
            for op in LEVEL_OPS[level]:
                got = kernel_answers(self.harness, op, vals)
                if got is None:
                    self.absent.add(op)  # not defined by this kernel (check.MAY_BE_ABSENT)
                    continue
                fn = MODEL_OPS[op]
                self.evaluations += len(vals)
                for v, k in zip(vals.tolist(), got.tolist(), strict=False):
                    try:
                        m = int(fn(self.ops, v, 0)) & U64
                        model = hex(m)
                    except Exception as e:  # noqa: BLE001 -- a model that raises differs, by name
                        m, model = -1, f"raised {type(e).__name__}"
                    if m != k:
                        self.differ.setdefault((level, v), []).append(f"{op}: kernel {k:#x}, model {model}")

    def verdict(self, trace: Iterable[tuple[str, int, int]]) -> str | None:
        """``model-vs-kernel <function> ...`` for the first entry of ``trace`` on which the model
        and the kernel differ, or None (call :meth:`run` first)."""
        for level, pa, value in trace:
            diffs = self.differ.get((level, int(value) & U64))
            if diffs:
                return f"model-vs-kernel {diffs[0].split(':')[0]} on {level}@{pa:#x}={value:#x} ({diffs[0]})"
        return None

    def summary(self) -> dict[str, object]:
        return {"entries": self.checked, "evaluations": self.evaluations, "differences": len(self.differ),
                "kernel": self.harness.build.tree.release, "kconfig": self.harness.build.kconfig.describe()}
