"""The kernel's own ``folio_walk_start()``/``folio_walk_end()`` run as guest code (issue 13).

:func:`build_walk` compiles the tree's ``mm/pagewalk.c``, ``mm/memory.c``,
``mm/pgtable-generic.c`` and ``kernel/locking/spinlock.c`` with ``walkharness/fw_walk.c``
(kbuild, in the predicate harness's configured tree) and links them with ``--gc-sections``, so
the image holds only what ``fw_walk_batch`` reaches.  :class:`KernelWalk` loads it into a
Unicorn x86-64 CPU with paging on and a kernel-like address space:

* foliowalk's guest RAM (the tables under test) at physical 0, shared with the Python model;
* the linear map: ``page_offset_base`` -> physical 0 (``__va()`` of every table frame);
* ``vmemmap_base`` -> a ``struct page`` array for every pfn of RAM, initialised and made
  compound by the kernel's own inlines (``fw_memmap_init``, ``fw_prep_compound``), and the
  SPARSEMEM sections over it (``fw_sparse_init``: ``pfn_valid()`` reads them);
* the image (linked at :data:`IMAGE`, in the kernel text map as ``-mcmodel=kernel`` wants),
  its stack and buffers, the ``mm_struct`` and VMAs in one area at :data:`KVA`, physically at
  :data:`PRIV_PA`, above any guest RAM;
* GS base 0, so ``%gs:pcpu_hot`` is the image's own ``pcpu_hot`` (current, preempt count).

The guest's own page tables are separate from the tables under test, which the kernel reads
through ``mm->pgd = __va(root)``.  x86-64 only so far.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_HOOK_INTR, UC_MODE_64, UC_PROT_ALL, Uc, UcError
from unicorn import x86_const as X

from emu.errors import FoliowalkError
from emu.mm.mm_types import MM, VMA

from .build import HarnessBuild, _run, build_harness
from .image import HarnessImage
from .runner import HarnessRunError
from .toolchain import toolchain
from .tree import cache_lock

WALK_FILES = ("Kbuild", "fw_prelude.h", "fw_walk.c", "fw_mm_pagewalk.c", "fw_mm_memory.c",
              "fw_mm_pgtable_generic.c", "fw_locking_spinlock.c", "walk.lds")
#: the tree's files the walk image is compiled from (the fw_*.c wrappers #include them)
TREE_FILES = ("mm/pagewalk.c", "mm/memory.c", "mm/pgtable-generic.c", "kernel/locking/spinlock.c")
ENTRIES = ("fw_walk_batch", "fw_memmap_init", "fw_memmap_reserve", "fw_prep_compound", "fw_lock_folios",
           "fw_sparse_init")

KVA = 0xFFFF_FFFF_8000_0000  # __START_KERNEL_map: the guest-private area's virtual base
PRIV_PA = 0x10_0000_0000  # ... and its physical base (64 GiB, above any foliowalk RAM)
PRIV_SIZE = 0x0400_0000  # 64 MiB
IMAGE = KVA + 0x0100_0000  # the image's link base (__START_KERNEL)
MEMMAP_PA = 0x18_0000_0000  # physical home of the struct page array
PAGE_OFFSET_BASE = 0xFFFF_8880_0000_0000  # __PAGE_OFFSET_BASE_L4 (no KASLR)
VMEMMAP_BASE = 0xFFFF_EA00_0000_0000  # __VMEMMAP_BASE_L4
_RET = KVA + PRIV_SIZE - 0x1000  # fw_* return here (HLT); a code hook stops
_STACK = _RET - 0x1000
_SPARSE = KVA + 0x0180_0000  # mem_section roots and sections (fw_sparse_init), 8 MiB
_DATA = KVA + 0x0200_0000  # mm, vmas, in/out buffers
_PT = KVA + 0x0300_0000  # the guest's own page tables
_CR0 = 0x8001_0011  # PG | WP | NE | ET | PE
_CR4_PAE = 1 << 5
_MSR_EFER = 0xC000_0080
_EFER = (1 << 8) | (1 << 10) | (1 << 11)  # LME | LMA | NXE
_X86_FEATURE_LA57 = 16 * 32 + 16  # arch/x86/include/asm/cpufeatures.h (word 16, bit 16)
_RWSEM_READER_BIAS = 1 << 8  # kernel/locking/rwsem.c: count of one reader (rwsem_is_locked())
_PMD = 1 << 21


class WalkBuildError(FoliowalkError):
    """The walk harness did not build or link."""


class _Oops(Exception):
    """A page fault or general-protection fault (a non-canonical __va()) in the kernel code:
    the kernel would oops."""

    def __init__(self, pc: int, what: str) -> None:
        super().__init__(what)
        self.pc = pc
        self.what = what


@dataclass(frozen=True)
class WalkBuild:
    path: Path
    harness: HarnessBuild
    undefined_before_stubs: tuple[str, ...]  # what the tree's code needs from outside (no fw_walk.c data)
    bugs: dict[int, dict[str, Any]]  # ud2 address -> the kernel's __bug_table entry (file, line, flags)

    @property
    def image(self) -> Path:
        return self.path / "walk.elf"


def _source(name: str) -> bytes:
    return (resources.files("emu.kernel") / "walkharness" / name).read_bytes()


def build_walk(config_key: str = "x86_64:4level", profile: str = "distro", version: str = "6.12",
               tree: str | None = None, *, log=None) -> WalkBuild:  # type: ignore[no-untyped-def]
    """Build (or find in the cache) the walk image next to the predicate harness build."""
    hb = build_harness(config_key, profile, version, tree, log=log)
    if hb.arch != "x86_64":
        raise WalkBuildError(f"the kernel walk harness runs on x86_64 only so far, not {hb.arch}")
    h = hashlib.sha256()
    for name in WALK_FILES:
        h.update(name.encode() + b"\0" + _source(name))
    for sub in TREE_FILES:  # a user's tree (--tree) may be edited between runs
        p = hb.tree.path / sub
        h.update(sub.encode() + b"\0" + (p.read_bytes() if p.exists() else b""))
    dest = hb.path / f"walk-{h.hexdigest()[:12]}"
    with cache_lock(f"walk-{hb.path.name}"):
        if not (dest / "walk.elf").exists():
            _build_walk(hb, dest)
    und = tuple((dest / "undefined.txt").read_text().split())
    bugs = {int(b["addr"]): b for b in json.loads((dest / "bugs.json").read_text())}
    return WalkBuild(dest, hb, und, bugs)


def _build_walk(hb: HarnessBuild, dest: Path) -> None:
    tc = toolchain(hb.arch)
    work = dest.with_name(dest.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    (work / "src").mkdir(parents=True)
    for name in WALK_FILES:
        (work / "src" / name).write_bytes(_source(name))
    logf = work / "build.log"
    make = ["make", "-s", "-C", str(hb.tree.path), f"O={hb.path / 'kbuild'}", f"ARCH={tc.kbuild_arch}",
            f"CROSS_COMPILE={tc.cross_compile}", f"-j{os.cpu_count() or 1}"]
    _run([*make, f"M={work / 'src'}", "fw_walk_all.o"], logf)
    obj = str(work / "src" / "fw_walk_all.o")
    ld = [tc.ld, "-static", "-nostdlib", "--no-dynamic-linker", "--no-warn-rwx-segments", "--gc-sections",
          *(f"--undefined={e}" for e in ENTRIES), "-defsym", f"FW_BASE={IMAGE:#x}",
          "-T", str(work / "src" / "walk.lds")]
    # what the tree's code needs from outside: link the kernel files alone, listing the unresolved
    und = work / "undefined.txt"
    tree_only = [str(work / "src" / f"fw_mm_{n}.o") for n in ("pagewalk", "memory", "pgtable_generic")]
    tree_only.append(str(work / "src" / "fw_locking_spinlock.o"))
    lds = (work / "src" / "walk.lds").read_text()
    (work / "tree-only.lds").write_text("".join(line for line in lds.splitlines(keepends=True)
                                                if "PROVIDE(" not in line))
    _run([tc.ld, "-static", "-nostdlib", "--no-dynamic-linker", "--no-warn-rwx-segments", "--gc-sections",
          "-e", "folio_walk_start", "--undefined=vm_normal_page", "--undefined=vm_normal_page_pmd",
          "--unresolved-symbols=ignore-all", "-defsym", f"FW_BASE={IMAGE:#x}", "-T", str(work / "tree-only.lds"),
          "-o", str(work / "tree-only.elf"), *tree_only], logf)
    nm = subprocess.run([tc.cross_compile + "nm" if tc.cross_compile else "nm", "-u", str(work / "tree-only.elf")],
                        capture_output=True, text=True)
    und.write_text("\n".join(line.split()[-1] for line in nm.stdout.splitlines() if line.strip()) + "\n")
    _run([*ld, "-o", str(work / "walk.elf"), f"-Map={work / 'walk.map'}", obj], logf)
    bugs = _bug_table(work / "src" / "fw_walk_all.o", work / "walk.map")
    (work / "bugs.json").write_text(json.dumps(bugs, indent=0) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    work.rename(dest)


_BUGFLAG_WARNING = 1 << 0  # include/asm-generic/bug.h


def _bug_table(obj: Path, mapfile: Path) -> list[dict[str, object]]:
    """The kernel's ``__bug_table`` for the kept code: ``{addr, file, line, flags}`` per ud2.

    x86 BUG()/WARN() are ``ud2`` with an entry in ``__bug_table`` (arch/x86/include/asm/bug.h,
    GENERIC_BUG_RELATIVE_POINTERS: ``int bug_addr_disp, file_disp; u16 line, flags``); the kernel's
    trap handler (report_bug()) looks the address up.  The image discards the table (it would keep
    every function alive under --gc-sections), so it is read here from the object's relocations
    and placed with the link map."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.relocation import RelocationSection

    placed: dict[str, int] = {}
    for m in re.finditer(r"^ (\.\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+\S", mapfile.read_text(), re.M):
        if int(m.group(2), 16):
            placed.setdefault(m.group(1), int(m.group(2), 16))
    out: list[dict[str, object]] = []
    with open(obj, "rb") as f:
        elf = ELFFile(f)
        table = elf.get_section_by_name("__bug_table")
        rela = elf.get_section_by_name(".rela__bug_table")
        if table is None or not isinstance(rela, RelocationSection):
            return out
        data = table.data()
        symtab = elf.get_section(rela["sh_link"])
        where: dict[int, tuple[str, int]] = {}
        for r in rela.iter_relocations():
            sym = symtab.get_symbol(r["r_info_sym"])  # type: ignore[attr-defined]
            sec = elf.get_section(sym["st_shndx"]) if isinstance(sym["st_shndx"], int) else None
            if sec is not None:
                where[r["r_offset"]] = (sec.name, sym["st_value"] + r["r_addend"])
        for off in range(0, len(data) - 11, 12):
            line, flags = struct.unpack_from("<HH", data, off + 8)
            code = where.get(off)
            if code is None or code[0] not in placed:
                continue  # code dropped by --gc-sections
            fname = "?"
            fsec = where.get(off + 4)
            if fsec is not None:
                strsec = elf.get_section_by_name(fsec[0])
                if strsec is not None:
                    sdata = strsec.data()
                    fname = sdata[fsec[1]:sdata.index(b"\0", fsec[1])].decode(errors="replace")
            out.append({"addr": placed[code[0]] + code[1], "file": fname, "line": line, "flags": flags})
    return out


@dataclass(frozen=True)
class KernelWalkResult:
    """One folio_walk_start() call as the compiled kernel answered it."""

    addr: int
    flags: int
    folio_pfn: int | None
    page_pfn: int | None
    level: int | None  # FW_LEVEL_PTE/PMD/PUD
    entryp: int | None  # physical address of the entry (__pa() of fw.ptep/pmdp/pudp)
    entry: int | None
    ptl_held: bool  # spin_is_locked(fw.ptl) between start and end
    ptl_released: bool  # !spin_is_locked(fw.ptl) after folio_walk_end()
    ptl_is_mm_lock: bool  # fw.ptl == &mm->page_table_lock (else a split ptlock in a struct page)
    stubs: tuple[str, ...]  # stubs reached during the call
    warnings: tuple[str, ...]  # the kernel's WARN()s hit during the call, as "file:line"
    oops: str | None  # the kernel faulted (e.g. __va() of a table beyond RAM): where and on what
    preempt: int
    rcu_nesting: int


_RES_FIELDS = ("folio_pfn", "page_pfn", "level", "entryp", "entry", "ptl", "ptl_held", "ptl_after", "stubs",
               "preempt", "rcu_nesting")
_NONE = (1 << 64) - 1


class KernelWalk:
    """The compiled walk on one x86-64 CPU over ``mm``'s RAM (shared, never copied)."""

    def __init__(self, build: WalkBuild, mm: MM, *, locked: list[int] | None = None) -> None:
        """``locked``: head pfns of the folios to lock (PG_locked); default every folio of RAM.
        The kernel keeps a folio locked while migration entries point at it
        (pfn_swap_entry_to_page() BUG()s otherwise), and any folio may be locked at any time, so
        "all locked" is a state the kernel can be in that satisfies that rule without knowing
        which folios are migration targets (a fuzzed entry may name any pfn)."""
        self.build = build
        self.mm = mm
        ram = mm.ram
        if ram.size > PRIV_PA:
            raise WalkBuildError(f"guest RAM of {ram.size:#x} bytes overlaps the walk guest's own area at {PRIV_PA:#x}")
        self.image: HarnessImage = _load(build.image)
        sym = self.image.symbols
        self.layout = dict(zip(_strings_at(self.image, sym["fw_layout_names"]),
                               self._u64s(sym["fw_layout"]), strict=False))
        self.stub_names = _strings_at(self.image, sym["fw_stub_names"])
        uc = self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        uc.mem_map_ptr(0, ram.size, UC_PROT_ALL, ram.host_address)
        uc.mem_map(PRIV_PA, PRIV_SIZE)
        npages = ram.size >> 12
        # SPARSEMEM: the memmap exists for whole sections (mm/sparse.c), so up to here
        self._sec_pages = _align(npages, self.layout["PAGES_PER_SECTION"])
        self._memmap_size = _align(self._sec_pages * self.layout["sizeof_page"], _PMD)
        uc.mem_map(MEMMAP_PA, self._memmap_size)
        for seg in self.image.segments:
            self._wv(seg.vaddr, seg.data)
        self._wv(_RET, b"\xf4")
        self._exc: list[tuple[int, int]] = []
        self._warned: list[tuple[int, str]] = []  # (batch index, file:line)
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_CODE, lambda u, *_: u.emu_stop(), begin=_RET, end=_RET)
        self._paging(ram.size)
        self._kernel_data(len(mm.ops.config.levels) == 5)
        self._memmap(npages)
        if "fw_sparse_init" in self.image.symbols:
            used = self._call("fw_sparse_init", npages, _SPARSE)
            if used > _DATA - _SPARSE:  # pragma: no cover - 52-bit roots take 1 MiB
                raise WalkBuildError(f"mem_section needs {used:#x} bytes")
        if locked is None:
            self._call("fw_lock_folios", 0, self._sec_pages)
        for pfn in locked or ():
            self._call("fw_lock_folios", pfn, 1)
        self._mm = self._write_mm()
        self._vmas: dict[int, int] = {}
        # what an oops may leave behind (preempt count, RCU nesting) is put back from here; the
        # CPU context too (QEMU never delivers a fault, so a 2nd one would become #DF)
        self._pcpu = (self._sym("pcpu_hot"), self._rv(self._sym("pcpu_hot"), self.layout["sizeof_pcpu_hot"]))
        self._ctx = self.uc.context_save()
        self._locks: list[int] = []  # locks the re-run of an oopsed call took (_release_locks)
        self._base = 0  # first record of the running sub-batch

    # -- guest setup --------------------------------------------------------------------------
    def _u64s(self, addr: int) -> list[int]:
        for seg in self.image.segments:
            if seg.vaddr <= addr < seg.vaddr + len(seg.data):
                off = addr - seg.vaddr
                n = (len(seg.data) - off) // 8
                return list(struct.unpack_from(f"<{n}Q", seg.data, off))
        raise WalkBuildError(f"no data at {addr:#x}")

    def _paging(self, ram_size: int) -> None:
        """The guest's own 4-level tables, 2 MiB pages: the private area, linear map, vmemmap."""
        uc = self.uc
        pml4 = _pa(_PT)
        nxt = [pml4 + 0x1000]

        def table(parent: int, idx: int) -> int:  # physical addresses throughout
            raw = int.from_bytes(uc.mem_read(parent + 8 * idx, 8), "little")
            if raw & 1:
                return raw & 0x000F_FFFF_FFFF_F000
            t = nxt[0]
            nxt[0] += 0x1000
            uc.mem_write(parent + 8 * idx, (t | 0x3).to_bytes(8, "little"))
            return t

        def map2m(va: int, pa: int, size: int) -> None:
            for off in range(0, size, _PMD):
                v = va + off
                pdpt = table(pml4, (v >> 39) & 511)
                pd = table(pdpt, (v >> 30) & 511)
                uc.mem_write(pd + 8 * ((v >> 21) & 511), ((pa + off) | 0x83).to_bytes(8, "little"))  # P|RW|PS

        map2m(KVA, PRIV_PA, PRIV_SIZE)
        map2m(PAGE_OFFSET_BASE, 0, _align(ram_size, _PMD))
        map2m(VMEMMAP_BASE, MEMMAP_PA, self._memmap_size)
        uc.reg_write(X.UC_X86_REG_CR4, _CR4_PAE)
        uc.reg_write(X.UC_X86_REG_MSR, (_MSR_EFER, _EFER))
        uc.reg_write(X.UC_X86_REG_CR0, _CR0)
        uc.reg_write(X.UC_X86_REG_CR3, pml4)
        uc.reg_write(X.UC_X86_REG_GS_BASE, 0)

    def _wv(self, va: int, data: bytes) -> None:
        self.uc.mem_write(_pa(va), data)

    def _rv(self, va: int, n: int) -> bytes:
        return bytes(self.uc.mem_read(_pa(va), n))

    def _w64(self, va: int, value: int, size: int = 8) -> None:
        self._wv(va, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def _sym(self, name: str) -> int:
        return self.image.symbols[name]

    def _kernel_data(self, l5: bool) -> None:
        """What boot code would have set (head64.c, kaslr.c, memory.c init_zero_pfn, ...)."""
        mm = self.mm
        self._w64(self._sym("page_offset_base"), PAGE_OFFSET_BASE)
        self._w64(self._sym("vmemmap_base"), VMEMMAP_BASE)
        self._w64(self._sym("zero_pfn"), mm.zero_pfn)
        self._w64(self._sym("highest_memmap_pfn"), mm.memmap.highest_memmap_pfn)
        if mm.huge_zero_pfn is not None:
            self._w64(self._sym("huge_zero_pfn"), mm.huge_zero_pfn)
        if l5:  # head64.c check_la57_support() and identify_cpu(): LA57 in boot_cpu_data
            self._w64(self._sym("pgdir_shift"), 48, 4)
            self._w64(self._sym("ptrs_per_p4d"), 512, 4)
            cap = self._sym("boot_cpu_data") + self.layout["cpuinfo_x86_capability"]
            word = cap + 4 * (_X86_FEATURE_LA57 // 32)
            old = int.from_bytes(self._rv(word, 4), "little")
            self._w64(word, old | 1 << (_X86_FEATURE_LA57 % 32), 4)

    def _memmap(self, npages: int) -> None:
        self._call("fw_memmap_init", 0, npages)
        if self._sec_pages > npages:
            self._call("fw_memmap_reserve", npages, self._sec_pages - npages)
        for folio in self.mm.memmap.folios():
            if folio.order:
                self._call("fw_prep_compound", folio.pfn, folio.order)

    def _write_mm(self) -> int:
        lay = self.layout
        mm_addr = _DATA
        self._wv(mm_addr, bytes(lay["sizeof_mm"]))
        self._w64(mm_addr + lay["mm_pgd"], PAGE_OFFSET_BASE + self.mm.pgd)  # mm->pgd = __va(root)
        self._w64(mm_addr + lay["mm_mmap_lock"], _RWSEM_READER_BIAS)  # mmap_read_lock() held
        self._next = _align(mm_addr + lay["sizeof_mm"], 64)
        return mm_addr

    def forget_vmas(self) -> None:
        """Drop every VMA written so far (a new hierarchy brings new ones)."""
        self._vmas.clear()
        self._next = _align(self._mm + self.layout["sizeof_mm"], 64)

    def _vma(self, vma: VMA) -> int:
        key = id(vma)
        if key not in self._vmas:
            lay = self.layout
            a = self._next
            self._next = _align(a + lay["sizeof_vma"], 64)
            self._wv(a, bytes(lay["sizeof_vma"]))
            self._w64(a + lay["vma_vm_start"], vma.vm_start)
            self._w64(a + lay["vma_vm_end"], vma.vm_end)
            self._w64(a + lay["vma_vm_mm"], self._mm)
            self._w64(a + lay["vma_vm_flags"], vma.vm_flags)
            self._w64(a + lay["vma_vm_pgoff"], vma.vm_pgoff)
            self._vmas[key] = a
        return self._vmas[key]

    # -- calls --------------------------------------------------------------------------------
    def _on_intr(self, uc: Uc, intno: int, _user: Any) -> None:
        self._exc.append((intno, uc.reg_read(X.UC_X86_REG_RIP)))
        uc.emu_stop()

    def _where(self, pc: int) -> str:
        best = max(((a, n) for n, a in self.image.symbols.items() if a <= pc), default=(0, "?"))
        return f"{best[1]}+{pc - best[0]:#x}"

    def _call(self, fn: str, *args: int) -> int:
        uc = self.uc
        for reg, v in zip((X.UC_X86_REG_RDI, X.UC_X86_REG_RSI, X.UC_X86_REG_RDX, X.UC_X86_REG_RCX), args,
                          strict=False):
            uc.reg_write(reg, v)
        sp = _STACK - 16
        self._wv(sp, _RET.to_bytes(8, "little"))
        uc.reg_write(X.UC_X86_REG_RSP, sp)
        self._exc.clear()
        start = self._sym(fn)
        while True:
            try:
                uc.emu_start(start, _RET + 0x100)
                break
            except UcError as e:
                pc = uc.reg_read(X.UC_X86_REG_RIP)
                bug = self.build.bugs.get(pc)
                if bug is None:
                    raise HarnessRunError(f"{fn}: {e} at {self._where(pc)}") from None
                # ud2 of the kernel's BUG()/WARN() (Unicorn stops with INSN_INVALID): a WARN is
                # reported and skipped, as the kernel's #UD handler (handle_bug()) does
                where = f"{bug['file']}:{bug['line']}"
                if not int(bug["flags"]) & _BUGFLAG_WARNING:  # BUG(): the kernel oopses
                    raise _Oops(pc, f"BUG() at {where}") from None
                cur = int.from_bytes(self._rv(self._sym("fw_current_call"), 8), "little")
                self._warned.append((self._base + cur, where))
                start = pc + 2
        if self._exc:
            intno, pc = self._exc[0]
            if intno == 14:
                raise _Oops(pc, f"page fault at {int(uc.reg_read(X.UC_X86_REG_CR2)):#x}")
            if intno == 13:
                raise _Oops(pc, "general protection fault")
            what = "#UD (ud2: BUG/WARN)" if intno == 6 else f"exception {intno}"
            raise HarnessRunError(f"{fn}: guest {what} at {self._where(pc)}")
        return int(uc.reg_read(X.UC_X86_REG_RAX))

    def walk(self, vma: VMA, calls: list[tuple[int, int]]) -> list[KernelWalkResult]:
        """folio_walk_start(&fw, vma, addr, flags) ... folio_walk_end() for each (addr, flags)."""
        addrs = np.array([a for a, _ in calls], dtype=np.uint64)
        flags = np.array([f for _, f in calls], dtype=np.uint64)
        raw, warned, oopses = self.walk_raw(vma, addrs, flags)
        return self._results(calls, raw, warned, oopses)

    def max_batch(self) -> int:
        """The most calls one walk_raw() takes (the guest's buffer area)."""
        per = self.layout["sizeof_req"] + self.layout["sizeof_res"]
        return (_PT - _align(self._next, 64) - 128) // per

    def walk_raw(self, vma: VMA, addrs: np.ndarray, flags: np.ndarray
                 ) -> tuple[np.ndarray, dict[int, list[str]], dict[int, str]]:
        """The batch in one emu_start (more only after an oops): the raw result records
        (``n x len(_RES_FIELDS)`` uint64, fields as ``struct fw_walk_res``), the WARNs and the
        oopses by call index."""
        lay = self.layout
        vaddr = self._vma(vma)
        n = len(addrs)
        req = _align(self._next, 64)
        res = _align(req + n * lay["sizeof_req"], 64)
        if res + n * lay["sizeof_res"] > _PT:
            raise WalkBuildError(f"batch of {n} does not fit the guest's buffers (max {self.max_batch()})")
        rq = np.empty((n, lay["sizeof_req"] // 8), dtype="<u8")
        rq[:, 0] = vaddr
        rq[:, 1] = addrs
        rq[:, 2] = flags
        self._wv(req, rq.tobytes())
        self._warned.clear()
        oopses: dict[int, str] = {}
        sreq, sres = lay["sizeof_req"], lay["sizeof_res"]
        done = 0
        while done < n:
            self._base = done
            try:
                got = self._call("fw_walk_batch", req + done * sreq, res + done * sres, n - done)
            except _Oops as o:
                cur = done + int.from_bytes(self._rv(self._sym("fw_current_call"), 8), "little")
                oopses[cur] = f"{o.what} in {self._where(o.pc)}"
                self._recover()
                self._release_locks(req + cur * sreq, res + cur * sres)
                self._wv(res + cur * sres, struct.pack("<2Q", _NONE, _NONE) + bytes(sres - 16))
                done = cur + 1
                continue
            if got != n - done:
                raise HarnessRunError(f"fw_walk_batch returned {got}, not {n - done}")
            break
        warned: dict[int, list[str]] = {}
        for i, where in self._warned:
            warned.setdefault(i, []).append(where)
        raw = np.frombuffer(self._rv(res, n * lay["sizeof_res"]), dtype="<u8").reshape(n, -1)
        return raw, warned, oopses

    def _results(self, calls: list[tuple[int, int]], raw: np.ndarray, warned: dict[int, list[str]],
                 oopses: dict[int, str]) -> list[KernelWalkResult]:
        out = []
        mm_ptl = self._mm + self.layout["mm_page_table_lock"]
        for i, (addr, flags) in enumerate(calls):
            r = {name: int(v) for name, v in zip(_RES_FIELDS, raw[i], strict=False)}
            found = r["folio_pfn"] != _NONE
            out.append(KernelWalkResult(
                addr, flags,
                r["folio_pfn"] if found else None,
                r["page_pfn"] if r["page_pfn"] != _NONE else None,
                r["level"] if found else None,
                r["entryp"] - PAGE_OFFSET_BASE if found else None,
                r["entry"] if found else None,
                bool(r["ptl_held"]), found and not r["ptl_after"], found and r["ptl"] == mm_ptl,
                tuple(name for b, name in enumerate(self.stub_names) if r["stubs"] >> b & 1),
                tuple(warned.get(i, ())),
                oopses.get(i),
                r["preempt"], _s32(r["rcu_nesting"]),
            ))
        return out

    def _kernel_pa(self, va: int) -> int | None:
        """The physical address behind a kernel VA of the guest's own mappings, None if unmapped."""
        if KVA <= va < KVA + PRIV_SIZE:
            return _pa(va)
        if VMEMMAP_BASE <= va < VMEMMAP_BASE + self._memmap_size:
            return va - VMEMMAP_BASE + MEMMAP_PA
        if PAGE_OFFSET_BASE <= va < PAGE_OFFSET_BASE + self.mm.ram.size:
            return va - PAGE_OFFSET_BASE
        return None

    def _release_locks(self, req: int, res: int) -> None:
        """Unlock what the oopsed call left held (the task died holding it).  The call is run
        again with a hook on _raw_spin_lock(): being deterministic it takes the same locks (a
        held one through the slowpath stub) and oopses at the same place; every lock it named is
        then unlocked.  The hook exists only for this re-run: on every call it would halve the
        batch rate."""
        warned = len(self._warned)
        lock_fn = self._sym("_raw_spin_lock")
        hook = self.uc.hook_add(UC_HOOK_CODE, lambda u, *_: self._locks.append(int(u.reg_read(X.UC_X86_REG_RDI))),
                                begin=lock_fn, end=lock_fn)
        # a hook reaches only code translated after it was added: drop the cached translation
        self.uc.ctl_remove_cache(lock_fn, lock_fn + 1)
        try:
            self._call("fw_walk_batch", req, res, 1)
        except _Oops:
            pass
        finally:
            self.uc.hook_del(hook)
            self.uc.ctl_remove_cache(lock_fn, lock_fn + 1)
        del self._warned[warned:]  # its WARNs were reported by the first run
        for lock in set(self._locks):
            pa = self._kernel_pa(lock)
            if pa is not None and bytes(self.uc.mem_read(pa, 4)) != bytes(4):
                self.uc.mem_write(pa, bytes(4))
        self._locks.clear()
        self._recover()

    def _recover(self) -> None:
        """After an oops: the CPU context, preempt count and RCU nesting as before any call."""
        self.uc.context_restore(self._ctx)
        self._wv(*self._pcpu)
        self._w64(self._sym("fw_task") + self.layout["task_rcu_read_lock_nesting"], 0, 4)

    def close(self) -> None:
        del self.uc


def _pa(va: int) -> int:
    """Physical address of a guest-private virtual address."""
    if not KVA <= va < KVA + PRIV_SIZE:
        raise WalkBuildError(f"{va:#x} is not in the walk guest's own area")
    return va - KVA + PRIV_PA


def _s32(v: int) -> int:
    v &= 0xFFFF_FFFF
    return v - (1 << 32) if v >> 31 else v


def _align(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


def _strings_at(image: HarnessImage, addr: int) -> tuple[str, ...]:
    for seg in image.segments:
        if seg.vaddr <= addr < seg.vaddr + len(seg.data):
            blob = seg.data[addr - seg.vaddr:]
            return tuple(n.decode() for n in blob.split(b"\0\0", 1)[0].split(b"\0"))
    raise WalkBuildError(f"no strings at {addr:#x}")


def _load(path: Path) -> HarnessImage:
    """The walk image (it has no predicate op tables, so not through load_image's checks)."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    from .image import Segment

    with open(path, "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        if not isinstance(symtab, SymbolTableSection):
            raise WalkBuildError(f"{path} has no symbol table")
        symbols = {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name}
        segments = tuple(Segment(seg["p_vaddr"], seg.data() + bytes(seg["p_memsz"] - seg["p_filesz"]),
                                 seg["p_memsz"])
                         for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD")
    return HarnessImage(path, False, segments, symbols, (), ())


__all__ = ["KernelWalk", "KernelWalkResult", "WalkBuild", "build_walk"]
