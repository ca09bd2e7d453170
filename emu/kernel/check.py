"""Model against kernel: every op of the harness, on the same raw values, both ways.

``MODEL_OPS`` gives, for each op the harness exports, the same question asked of foliowalk's
Python model (:class:`archs.linux.LinuxPgtable`, built for the harness's own Kconfig).  The
values come from :func:`entry_samples`: every encoding the model's own encoders make (leaves of
every protection at every level, tables, bad entries, swap and migration entries of every type),
each with every single bit flipped, plus uniform and sparse noise.  Any difference is reported
with the op, the value and both answers; an op the kernel has and the model lacks is reported
too (never skipped silently).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import archs
from archs.linux import LinuxPgtable, Prot, SwpEntry
from emu.mm.mm_types import MM
from emu.mm.scenarios import new_address_space

from .build import HarnessBuild
from .runner import KernelHarness

U64 = (1 << 64) - 1
Op = Callable[[LinuxPgtable, int, int], int]


def _entry(o: LinuxPgtable, a: int) -> SwpEntry:
    return o.pte_to_swp_entry(a)


def _index(level: str) -> Op:
    return lambda o, a, b: o.pxd_index(level, a)


def _swp_entry_to_pmd(o: LinuxPgtable, a: int, b: int) -> int:
    # swapops.h without CONFIG_ARCH_ENABLE_THP_MIGRATION: swp_entry_to_pmd() returns __pmd(0)
    return o.swp_entry_to_pmd(SwpEntry(a, b)) if o.has_thp_migration else 0


def _mig_pte(o: LinuxPgtable, a: int, b: int) -> int:
    kind = ("read", "read-exclusive", "write", "write")[b & 3]
    t = o.swap.migration_types[kind]
    return o.swp_entry_to_pte(o.make_pfn_swp_entry(t, a, young=bool(b & 4), dirty=bool(b & 8)))


#: foliowalk's Prot as the bits the harness's pfn_pte/pfn_pmd ops take (foliowalk_harness.c FW_PROT_*)
PROT_BITS = ("write", "exec", "young", "dirty", "special", "devmap", "protnone")


def prot_of(b: int) -> Prot:
    """The :class:`Prot` the harness's protection bits ``b`` stand for (a shared user mapping)."""
    return Prot(**{name: bool(b >> i & 1) for i, name in enumerate(PROT_BITS)})


def _encoder(make: Callable[[LinuxPgtable], Callable[[int, Prot], int]]) -> Op:
    """A model encoder over (pfn, protection bits); where the model says the arch cannot make
    that entry (ValueError: no devmap on s390, no pmd_mkspecial() before v6.12), the answer is
    ~0, the harness's FW_ABSENT for the same request."""
    def op(o: LinuxPgtable, a: int, b: int) -> int:
        try:
            return make(o)(a, prot_of(b))
        except ValueError:
            return U64
    return op


#: the address space of the model asked last, matched by the model object itself (an id() may be
#: reused by another configuration's model once the first is gone)
_ZERO_MM: list[MM] = []


def zero_page_mm(ops: LinuxPgtable) -> MM:
    """An address space of the model's (its zero page(s) allocated as at boot): what
    ``is_zero_pfn`` is asked against; the harness's zero_pfn/zero_page_mask are set to its own."""
    if not _ZERO_MM or _ZERO_MM[0].ops is not ops:
        _ZERO_MM[:] = [new_address_space(ops)[3]]
    return _ZERO_MM[0]


#: op name -> the model's answer (ints; booleans as 0/1), named as the kernel names them.
MODEL_OPS: dict[str, Op] = {
    "pgd_none": lambda o, a, b: o.pgd_none(a),
    "pgd_bad": lambda o, a, b: o.pgd_bad(a),
    "pgd_present": lambda o, a, b: o.pgd_present(a),
    "p4d_none": lambda o, a, b: o.p4d_none(a),
    "p4d_present": lambda o, a, b: o.p4d_present(a),
    "p4d_bad": lambda o, a, b: o.p4d_bad(a),
    "pud_none": lambda o, a, b: o.pud_none(a),
    "pud_bad": lambda o, a, b: o.pud_bad(a),
    "pud_present": lambda o, a, b: o.pud_present(a),
    "pud_leaf": lambda o, a, b: o.pud_leaf(a),
    "pud_devmap": lambda o, a, b: o.pud_devmap(a),
    "pud_special": lambda o, a, b: o.pud_special(a),
    "pmd_none": lambda o, a, b: o.pmd_none(a),
    "pmd_bad": lambda o, a, b: o.pmd_bad(a),
    "pmd_present": lambda o, a, b: o.pmd_present(a),
    "pmd_leaf": lambda o, a, b: o.pmd_leaf(a),
    "pmd_trans_huge": lambda o, a, b: o.pmd_trans_huge(a),
    "pmd_devmap": lambda o, a, b: o.pmd_devmap(a),
    "pmd_special": lambda o, a, b: o.pmd_special(a),
    "pmd_protnone": lambda o, a, b: o.pmd_protnone(a),
    "pmd_pfn": lambda o, a, b: o.pmd_pfn(a),
    "pud_pfn": lambda o, a, b: o.pud_pfn(a),
    "pte_none": lambda o, a, b: o.pte_none(a),
    "pte_present": lambda o, a, b: o.pte_present(a),
    "pte_special": lambda o, a, b: o.pte_special(a),
    "pte_devmap": lambda o, a, b: o.pte_devmap(a),
    "pte_protnone": lambda o, a, b: o.pte_protnone(a),
    "pte_pfn": lambda o, a, b: o.pte_pfn(a),
    "is_swap_pte": lambda o, a, b: not o.pte_none(a) and not o.pte_present(a),
    "pte_swp_type": lambda o, a, b: _entry(o, a).type,
    "pte_swp_offset": lambda o, a, b: _entry(o, a).offset,
    "is_migration_entry": lambda o, a, b: o.swap.is_migration_entry(_entry(o, a)),
    "is_writable_migration_entry": lambda o, a, b: o.swap.is_writable_migration_entry(_entry(o, a)),
    "is_readable_exclusive_migration_entry":
        lambda o, a, b: o.swap.is_readable_exclusive_migration_entry(_entry(o, a)),
    "is_device_private_entry": lambda o, a, b: o.swap.is_device_private_entry(_entry(o, a)),
    "is_device_exclusive_entry": lambda o, a, b: o.swap.is_device_exclusive_entry(_entry(o, a)),
    "is_hwpoison_entry": lambda o, a, b: o.swap.is_hwpoison_entry(_entry(o, a)),
    "is_pte_marker_entry": lambda o, a, b: o.swap.is_pte_marker_entry(_entry(o, a)),
    "is_pfn_swap_entry": lambda o, a, b: o.swap.is_pfn_swap_entry(_entry(o, a)),
    "is_pmd_migration_entry": lambda o, a, b: o.is_pmd_migration_entry(a),
    "pmd_swp_type": lambda o, a, b: o.pmd_to_swp_entry(a).type,
    "pmd_swp_offset": lambda o, a, b: o.pmd_to_swp_entry(a).offset,
    "swp_entry_to_pte": lambda o, a, b: o.swp_entry_to_pte(SwpEntry(a, b)),
    "swp_entry_to_pmd": _swp_entry_to_pmd,
    "migration_entry_to_pte": _mig_pte,
    "pfn_pte": _encoder(lambda o: o.pfn_pte),
    "pfn_pmd": _encoder(lambda o: o.pfn_pmd),
    "pte_mkspecial": lambda o, a, b: o.pte_mkspecial(a),
    "pmd_mkhuge": lambda o, a, b: o.pmd_mkhuge(a),
    "pmd_mkinvalid": lambda o, a, b: o.pmd_mkinvalid(a),
    "is_zero_pfn": lambda o, a, b: zero_page_mm(o).is_zero_pfn(a),
    "pgd_index": _index("pgd"),
    "p4d_index": _index("p4d"),
    "pud_index": _index("pud"),
    "pmd_index": _index("pmd"),
    "pte_index": _index("pte"),
}

#: Ops the kernel declares as truth values (int or bool): compared as "non-zero", since e.g.
#: x86 pte_present() returns the flag bits it tested, not 1.
PREDICATES = frozenset(
    op for op in MODEL_OPS
    if op.startswith("is_") or op.rsplit("_", 1)[-1] in ("none", "bad", "present", "leaf", "devmap", "special",
                                                         "protnone")
    or op.endswith("trans_huge")
)

#: Ops whose inputs are not entry values: (a, b) come from :func:`op_inputs`.
ENCODER_OPS = ("swp_entry_to_pte", "swp_entry_to_pmd", "migration_entry_to_pte", "pfn_pte", "pfn_pmd")
ADDRESS_OPS = ("pgd_index", "p4d_index", "pud_index", "pmd_index", "pte_index")
#: Ops the harness leaves out where the kernel does not define the function (the harness then
#: answers ~0 for every value): arm64 pud_pfn() exists only with CONFIG_PGTABLE_LEVELS > 2,
#: the migration encoders only with CONFIG_MIGRATION.
MAY_BE_ABSENT = {
    "pud_pfn": "arm64 CONFIG_PGTABLE_LEVELS <= 2",
    "migration_entry_to_pte": "CONFIG_MIGRATION=n",
    "pmd_special": "before v6.12",
    "pud_special": "before v6.12",
    "p4d_index": "arm64 before v6.9",
    "pfn_pmd": "CONFIG_TRANSPARENT_HUGEPAGE=n",
    "pmd_mkhuge": "CONFIG_TRANSPARENT_HUGEPAGE=n",
    "pmd_mkinvalid": "s390 (no pmd_mkinvalid()) or CONFIG_TRANSPARENT_HUGEPAGE=n",
}
#: Kernel constants the model must state the same (``swap`` attributes and geometry).
HARNESS_ONLY = ("setup", "set_zero_page")


def entry_samples(ops: LinuxPgtable, n: int, seed: int = 0) -> np.ndarray:
    """``n`` raw entry values: the model's own encodings (every level, protection and swap
    type), each with every single bit flipped, then uniform and sparse noise to fill ``n``."""
    rng = np.random.default_rng(seed)
    base: list[int] = [0, U64]
    pfn = 0x1234 & ~((1 << 9) - 1)
    for flags in itertools.product((False, True), repeat=5):
        write, young, dirty, special, protnone = flags
        prot = Prot(write=write, young=young, dirty=dirty, special=special, protnone=protnone)
        for make in (ops.pfn_pte, ops.pfn_pmd, ops.pfn_pud):
            try:
                base.append(make(pfn, prot))
            except (ValueError, NotImplementedError):
                pass
        try:
            base.append(ops.pfn_pte(pfn, Prot(devmap=True)))
        except (ValueError, NotImplementedError):
            pass
    for level in ("pgd", "p4d", "pud", "pmd"):
        if not ops.folded(level):
            for make_entry in (lambda lv: ops.mk_table(lv, 0x5000),
                               lambda lv: ops.mk_bad(lv, ops.mk_table(lv, 0x5000)),
                               ops.clear_value):
                try:
                    base.append(make_entry(level))
                except (ValueError, NotImplementedError):
                    pass
    for t in range(32):
        for off in (0, 1, 0x1234, (1 << 20) - 1):
            for excl in (False, True):
                try:
                    base.append(ops.swp_entry_to_pte(SwpEntry(t, off), exclusive=excl))
                except (ValueError, NotImplementedError):
                    pass
    base_arr = np.array(sorted(set(v & U64 for v in base)), dtype=np.uint64)
    bits = (np.uint64(1) << np.arange(64, dtype=np.uint64))
    flipped = (base_arr[:, None] ^ bits[None, :]).ravel()
    out = np.concatenate([base_arr, flipped])
    rest = max(0, n - len(out))
    uniform = rng.integers(0, 1 << 63, rest - rest // 2, dtype=np.uint64) * np.uint64(2) \
        + rng.integers(0, 2, rest - rest // 2, dtype=np.uint64)
    sparse = np.zeros(rest // 2, dtype=np.uint64)
    for _ in range(4):
        sparse |= np.uint64(1) << rng.integers(0, 64, rest // 2, dtype=np.uint64)
    sparse ^= base_arr[rng.integers(0, len(base_arr), rest // 2)] * (rng.integers(0, 2, rest // 2) == 1)
    return np.concatenate([out, uniform, sparse])[:max(n, len(out))]


def op_inputs(op: str, ops: LinuxPgtable, harness: KernelHarness, values: np.ndarray,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) records for ``op``: entry values, or addresses, or encoder arguments in the
    domain the kernel defines them for (types 0..31, offsets below the arch's maximum swap file
    size as the kernel computes it, pfns below 2**SWP_PFN_BITS)."""
    rng = np.random.default_rng(seed)
    n = len(values)
    zeros = np.zeros(n, dtype=np.uint64)
    if op in ADDRESS_OPS:
        return values, zeros
    if op in ("swp_entry_to_pte", "swp_entry_to_pmd"):
        # generic_max_swapfile_size() (mm/swapfile.c): the largest offset the arch round-trips
        top = int(harness.eval("pte_swp_offset", harness.eval("swp_entry_to_pte", [0], [U64 >> 6]))[0])
        types = rng.integers(0, 32, n, dtype=np.uint64)
        return types, values % np.uint64(top + 1)
    if op in ("pfn_pte", "pfn_pmd"):
        # pfns the arch can map (below MAX_PHYSMEM_BITS), PMD-aligned for a PMD leaf; every
        # combination of protection bits
        c = harness.constants()
        shift = c["PMD_SHIFT"] if op == "pfn_pmd" else c["PAGE_SHIFT"]
        top = np.uint64((1 << (c["MAX_PHYSMEM_BITS"] - c["PAGE_SHIFT"])) - 1)
        align = np.uint64(~((1 << (shift - c["PAGE_SHIFT"])) - 1) & U64)
        return (values >> np.uint64(12)) & top & align, rng.integers(0, 1 << len(PROT_BITS), n, dtype=np.uint64)
    if op == "is_zero_pfn":
        # around the zero page(s), and anywhere
        mm = zero_page_mm(ops)
        near = np.uint64(mm.zero_pfn) + values % np.uint64(4 * mm.zero_page_nr + 4) - np.uint64(mm.zero_page_nr + 2)
        return np.where(np.arange(n) % 4 == 0, values >> np.uint64(12), near), zeros
    if op == "migration_entry_to_pte":
        pfn_bits = harness.constants()["SWP_PFN_BITS"]
        return values & np.uint64((1 << pfn_bits) - 1), rng.integers(0, 16, n, dtype=np.uint64)
    return values, zeros


def kernel_answers(harness: KernelHarness, op: str, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray | None:
    """The kernel's answers to ``op`` on the records, comparable with :data:`MODEL_OPS` (truth
    values as 0/1), or None where this kernel does not define the function (:data:`MAY_BE_ABSENT`:
    the harness answers ~0 for every value)."""
    got = harness.eval(op, a, b)
    if op in MAY_BE_ABSENT and len(got) and bool((got == np.uint64(U64)).all()):
        return None
    return (got != 0).astype(np.uint64) if op in PREDICATES else got


@dataclass
class OpResult:
    op: str
    checked: int = 0
    count: int = 0  # values on which model and kernel differ
    examples: list[tuple[int, int, int, str]] = field(default_factory=list)  # a, b, kernel, model
    note: str = ""  # why the op was not compared (never silent)

    def add(self, a: int, b: int, kernel: int, model: str, limit: int) -> None:
        self.count += 1
        if len(self.examples) < limit:
            self.examples.append((a, b, kernel, model))


@dataclass
class CheckReport:
    config: str
    kconfig: str
    release: str
    entries: int
    ops: list[OpResult]
    constants: list[tuple[str, int, int | None]]  # name, kernel, model (None: the model has none)
    unmodelled: list[str]
    seconds: dict[str, float]

    @property
    def differences(self) -> int:
        return sum(r.count for r in self.ops) + sum(
            1 for _, k, m in self.constants if m is not None and k != m)


def model_constants(ops: LinuxPgtable) -> dict[str, int]:
    """The constants the model states, by their kernel names."""
    out = dict(ops.swap.constants())
    out["PAGE_SHIFT"] = ops.PAGE_SHIFT
    out["SWP_PFN_BITS"] = ops.swp_pfn_bits()
    out["MAX_PHYSMEM_BITS"] = ops.max_physmem_bits()
    return out


def check(build: HarnessBuild, config_key: str, n: int = 100_000, seed: int = 0, *, limit: int = 20,
          model: LinuxPgtable | None = None) -> CheckReport:
    """Run every op of ``build``'s harness and of the model on the same ``n`` values."""
    config = archs.get_config(config_key)
    ops = model or archs.get_ops(config_key, kconfig=build.kconfig)
    t0 = time.perf_counter()
    harness = KernelHarness(build, config)
    values = entry_samples(ops, n, seed)
    kernel_s = model_s = 0.0
    results = []
    unmodelled = [op for op in harness.ops if op not in MODEL_OPS and op not in HARNESS_ONLY]
    if "is_zero_pfn" in harness.ops:
        zmm = zero_page_mm(ops)
        harness.eval("set_zero_page", [zmm.zero_pfn], [zmm.zero_page_mask])
    for op in harness.ops:
        if op not in MODEL_OPS:
            continue
        a, b = op_inputs(op, ops, harness, values, seed)
        t = time.perf_counter()
        got = kernel_answers(harness, op, a, b)
        if got is None:
            results.append(OpResult(op, 0, note=f"not defined by this kernel ({MAY_BE_ABSENT[op]})"))
            continue
        kernel_s += time.perf_counter() - t
        fn = MODEL_OPS[op]
        res = OpResult(op, len(a))
        t = time.perf_counter()
        for ai, bi, ki in zip(a.tolist(), b.tolist(), got.tolist(), strict=False):
            try:
                mi = int(fn(ops, ai, bi)) & U64
            except Exception as e:  # noqa: BLE001 -- a model that raises is a difference, named
                res.add(ai, bi, ki, f"raised {type(e).__name__}: {e}", limit)
                continue
            if mi != ki:
                res.add(ai, bi, ki, hex(mi), limit)
        model_s += time.perf_counter() - t
        results.append(res)
    kc = harness.constants()
    mc = model_constants(ops)
    constants = [(name, kc[name], mc.get(name)) for name in kc]
    return CheckReport(config_key, build.kconfig.describe(), build.tree.release, len(values), results, constants,
                       unmodelled, {"total": time.perf_counter() - t0, "kernel": kernel_s, "model": model_s})
