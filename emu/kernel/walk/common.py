"""The kernel's own ``folio_walk_start()``/``folio_walk_end()`` run as guest code (issue 13):
what every architecture shares.

:func:`build_walk` compiles the tree's ``mm/pagewalk.c``, ``mm/memory.c``,
``mm/pgtable-generic.c`` and ``kernel/locking/spinlock.c`` (and what an architecture's inlines
call out of line, e.g. arm64's ``arch/arm64/mm/contpte.c``) with ``walkharness/fw_walk.c``
(kbuild, in the predicate harness's configured tree) and links them with ``--gc-sections``, so
the image holds only what ``fw_walk_batch`` reaches.  :class:`KernelWalk` loads it into a
Unicorn CPU of the build's architecture (the subclass in ``x86_64.py``, ``arm64.py`` or
``s390x.py``, chosen by ``KernelWalk(build, mm)`` itself) with a kernel-like address space:

* foliowalk's guest RAM (the tables under test) at physical 0, shared with the Python model;
* the linear map (``__va()`` of every table frame) at the architecture's kernel address;
* the vmemmap: a ``struct page`` for every pfn of RAM (whole SPARSEMEM sections), initialised
  and made compound by the kernel's own inlines (``fw_memmap_init``, ``fw_prep_compound``), and
  the SPARSEMEM sections over it (``fw_sparse_init``: ``pfn_valid()`` reads them);
* a guest-private area (:data:`PRIV_SIZE` bytes at the arch's ``kva``, physically at
  ``priv_pa`` above any guest RAM): the image, its stack, the mem_section roots, the
  ``mm_struct``, VMAs, request/result buffers and the guest's own page tables;
* ``current`` and the preempt count where the architecture keeps them.

The guest's own page tables are separate from the tables under test, which the kernel reads
only through ``mm->pgd = __va(root)``.  An architecture module says where things are, how to
turn paging on, how a call is made and how a trap is told apart (WARN, BUG, fault).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from importlib import import_module, resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from unicorn import UC_HOOK_CODE, UC_HOOK_INTR, UC_PROT_ALL, Uc, UcError

import archs
from archs.base import PagingConfig
from emu.errors import FoliowalkError
from emu.mm.mm_types import MM, VMA

from ..build import HarnessBuild, _run, build_harness
from ..image import HarnessImage, load_image
from ..runner import HarnessRunError
from ..toolchain import toolchain
from ..tree import cache_lock

WALK_FILES = ("Kbuild", "fw_prelude.h", "fw_walk.c", "fw_mm_pagewalk.c", "fw_mm_memory.c",
              "fw_mm_pgtable_generic.c", "fw_locking_spinlock.c", "fw_arm64_mm_contpte.c", "walk.lds")
#: the tree's files the walk image is compiled from (the fw_*.c wrappers #include them)
TREE_FILES = ("mm/pagewalk.c", "mm/memory.c", "mm/pgtable-generic.c", "kernel/locking/spinlock.c",
              "arch/arm64/mm/contpte.c")
ENTRIES = ("fw_walk_batch", "fw_memmap_init", "fw_memmap_reserve", "fw_prep_compound", "fw_lock_folios",
           "fw_sparse_init", "fw_cpu_init", "fw_task")  # fw_task: current (arm64 reads SP_EL0 only)
ARCH_MODULES = {"x86_64": "emu.kernel.walk.x86_64", "arm64": "emu.kernel.walk.arm64",
                "s390x": "emu.kernel.walk.s390x"}

# The guest-private area, at offsets from the arch's base (``kva``, physically ``priv_pa``)
PRIV_SIZE = 0x0400_0000  # 64 MiB
IMAGE_OFF = 0x0100_0000  # the image's link base
SPARSE_OFF = 0x0180_0000  # mem_section roots and sections (fw_sparse_init), 8 MiB
DATA_OFF = 0x0200_0000  # mm, vmas, in/out buffers
PT_OFF = 0x0300_0000  # the guest's own page tables (16 MiB less the stack and return page)
STACK_OFF = PRIV_SIZE - 0x2000  # the stack grows down from here
RET_OFF = PRIV_SIZE - 0x1000  # fw_* return here; a code hook stops
_RWSEM_READER_BIAS = 1 << 8  # kernel/locking/rwsem.c: count of one reader (rwsem_is_locked())
_BUGFLAG_WARNING = 1 << 0  # include/asm-generic/bug.h
_NONE = (1 << 64) - 1


class WalkBuildError(FoliowalkError):
    """The walk harness did not build or link, or the guest cannot hold what it was given."""


class _Oops(Exception):
    """A fault, or a BUG(), in the kernel code: the kernel would oops."""

    def __init__(self, pc: int, what: str) -> None:
        super().__init__(what)
        self.pc = pc
        self.what = what


def arch_module(arch: str) -> Any:
    if arch not in ARCH_MODULES:
        raise WalkBuildError(f"no kernel walk guest for architecture {arch!r}")
    return import_module(ARCH_MODULES[arch])


@dataclass(frozen=True)
class WalkBuild:
    path: Path
    harness: HarnessBuild
    config: PagingConfig  # the paging configuration the image was linked for
    undefined_before_stubs: tuple[str, ...]  # what the tree's code needs from outside (no fw_walk.c data)
    bugs: dict[int, dict[str, Any]]  # trap address -> the kernel's __bug_table entry (file, line, flags)

    @property
    def image(self) -> Path:
        return self.path / "walk.elf"


def _source(name: str) -> bytes:
    return (resources.files("emu.kernel") / "walkharness" / name).read_bytes()


def build_walk(config_key: str = "x86_64:4level", profile: str = "distro", version: str = "6.12",
               tree: str | None = None, *, log=None) -> WalkBuild:  # type: ignore[no-untyped-def]
    """Build (or find in the cache) the walk image next to the predicate harness build."""
    config = archs.get_config(config_key)
    mod = arch_module(config.arch)
    hb = build_harness(config_key, profile, version, tree, log=log)
    pagewalk = hb.tree.path / "mm" / "pagewalk.c"
    if "folio_walk_start(" not in pagewalk.read_text(errors="replace"):
        # mm/pagewalk.c gained folio_walk_start() in v6.12 (the seed patch); 6.1 has none
        raise WalkBuildError(f"linux {hb.tree.release} has no folio_walk_start() in mm/pagewalk.c (it came with v6.12)")
    base = mod.image_base(config)
    h = hashlib.sha256(f"{base:#x} {ENTRIES}".encode())
    for name in WALK_FILES:
        h.update(name.encode() + b"\0" + _source(name))
    for sub in TREE_FILES:  # a user's tree (--tree) may be edited between runs
        p = hb.tree.path / sub
        h.update(sub.encode() + b"\0" + (p.read_bytes() if p.exists() else b""))
    dest = hb.path / f"walk-{h.hexdigest()[:12]}"
    with cache_lock(f"walk-{hb.path.name}"):
        if not (dest / "walk.elf").exists():
            if log:
                log(f"building the kernel walk image for {config.key}")
            _build_walk(hb, dest, base)
    und = tuple((dest / "undefined.txt").read_text().split())
    bugs = {int(b["addr"]): b for b in json.loads((dest / "bugs.json").read_text())}
    return WalkBuild(dest, hb, config, und, bugs)


def _build_walk(hb: HarnessBuild, dest: Path, base: int) -> None:
    tc = toolchain(hb.arch)
    work = dest.with_name(dest.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    (work / "src").mkdir(parents=True)
    for name in WALK_FILES:
        (work / "src" / name).write_bytes(_source(name))
    logf = work / "build.log"
    make = ["make", "-s", "-C", str(hb.tree.path), f"O={hb.path / 'kbuild'}", f"ARCH={tc.kbuild_arch}",
            f"CROSS_COMPILE={tc.cross_compile}", f"-j{os.cpu_count() or 1}"]
    t0 = time.monotonic()
    _run([*make, f"M={work / 'src'}", "fw_walk_all.o"], logf)
    t1 = time.monotonic()
    obj = str(work / "src" / "fw_walk_all.o")
    ld = [tc.ld, "-static", "-nostdlib", "--no-dynamic-linker", "--no-warn-rwx-segments", "--gc-sections",
          *(f"--undefined={e}" for e in ENTRIES), "-defsym", f"FW_BASE={base:#x}",
          "-T", str(work / "src" / "walk.lds")]
    # what the tree's code needs from outside: link the kernel files alone, listing the unresolved
    # (linked low, where calls to the unresolved, at 0, are in reach of every branch encoding)
    und = work / "undefined.txt"
    tree_only = [str(p) for p in sorted((work / "src").glob("fw_*.o"))
                 if p.name not in ("fw_walk.o", "fw_walk_all.o")]
    lds = (work / "src" / "walk.lds").read_text()
    (work / "tree-only.lds").write_text("".join(line for line in lds.splitlines(keepends=True)
                                                if "PROVIDE(" not in line))
    _run([tc.ld, "-static", "-nostdlib", "--no-dynamic-linker", "--no-warn-rwx-segments", "--gc-sections",
          "-e", "folio_walk_start", "--undefined=vm_normal_page", "--undefined=vm_normal_page_pmd",
          "--unresolved-symbols=ignore-all", "-defsym", "FW_BASE=0x400000", "-T", str(work / "tree-only.lds"),
          "-o", str(work / "tree-only.elf"), *tree_only], logf)
    nm = subprocess.run([tc.cross_compile + "nm" if tc.cross_compile else "nm", "-u", str(work / "tree-only.elf")],
                        capture_output=True, text=True)
    und.write_text("\n".join(line.split()[-1] for line in nm.stdout.splitlines() if line.strip()) + "\n")
    _run([*ld, "-o", str(work / "walk.elf"), f"-Map={work / 'walk.map'}", obj], logf)
    bugs = _bug_table(work / "src" / "fw_walk_all.o", work / "walk.map")
    (work / "bugs.json").write_text(json.dumps(bugs, indent=0) + "\n")
    seconds = {"compile": round(t1 - t0, 1), "link": round(time.monotonic() - t1, 1)}
    (work / "build.json").write_text(json.dumps({"arch": hb.arch, "base": f"{base:#x}", "seconds": seconds}) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    work.rename(dest)


def _bug_table(obj: Path, mapfile: Path) -> list[dict[str, object]]:
    """The kernel's ``__bug_table`` for the kept code: ``{addr, file, line, flags}`` per trap.

    BUG()/WARN() are a trap instruction with an entry in ``__bug_table`` (x86 ``ud2``:
    arch/x86/include/asm/bug.h; arm64 ``brk #0x800``: arch/arm64/include/asm/asm-bug.h; s390
    ``mc 0,0``: arch/s390/include/asm/bug.h), all GENERIC_BUG_RELATIVE_POINTERS with
    DEBUG_BUGVERBOSE: ``int bug_addr_disp, file_disp; u16 line, flags`` (include/asm-generic/bug.h),
    in the target's byte order.  The kernel's trap handler (report_bug()) looks the address up.
    The image discards the table (it would keep every function alive under --gc-sections), so
    it is read here from the object's relocations and placed with the link map."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.relocation import RelocationSection

    placed: dict[str, int] = {}
    for m in re.finditer(r"^ (\.\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+\S", mapfile.read_text(), re.M):
        if int(m.group(2), 16):
            placed.setdefault(m.group(1), int(m.group(2), 16))
    out: list[dict[str, object]] = []
    with open(obj, "rb") as f:
        elf = ELFFile(f)
        end = "<" if elf.little_endian else ">"
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
            line, flags = struct.unpack_from(f"{end}HH", data, off + 8)
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


class KernelWalk:
    """The compiled walk on one CPU of the build's architecture over ``mm``'s RAM (shared, never
    copied).  ``KernelWalk(build, mm)`` makes the architecture's subclass."""

    # -- what an architecture module defines ---------------------------------------------------
    ARCH: ClassVar[str] = ""
    BIG_ENDIAN: ClassVar[bool] = False
    RET_INSN: ClassVar[bytes] = b""  # at the return address: what stops the run (a hook stops first)
    kva: int  # virtual base of the guest-private area
    priv_pa: int  # ... and its physical base, above any foliowalk RAM
    page_offset: int  # __va(0): the linear map's base
    vmemmap_va: int  # the struct page of pfn 0
    memmap_pa: int  # physical home of the struct page array

    def __new__(cls, build: WalkBuild, mm: MM, **_kw: Any) -> KernelWalk:
        if cls is KernelWalk:
            cls = arch_module(build.harness.arch).WALK_CLASS
        return super().__new__(cls)

    def __init__(self, build: WalkBuild, mm: MM, *, locked: list[int] | None = None) -> None:
        """``locked``: head pfns of the folios to lock (PG_locked); default every folio of RAM.
        The kernel keeps a folio locked while migration entries point at it
        (pfn_swap_entry_to_page() BUG()s otherwise), and any folio may be locked at any time, so
        "all locked" is a state the kernel can be in that satisfies that rule without knowing
        which folios are migration targets (a fuzzed entry may name any pfn)."""
        self.build = build
        self.mm = mm
        self.config: PagingConfig = mm.ops.config
        if self.config.arch != build.harness.arch:
            raise WalkBuildError(f"a {build.harness.arch} walk image cannot walk {self.config.key} tables")
        ram = mm.ram
        self._end = ">" if self.BIG_ENDIAN else "<"
        self._u64 = np.dtype(f"{self._end}u8")
        self.image: HarnessImage = load_image(build.image, predicates=False)
        sym = self.image.symbols
        self.layout = dict(zip(_strings_at(self.image, sym["fw_layout_names"]),
                               self._u64s(sym["fw_layout"]), strict=False))
        self.stub_names = _strings_at(self.image, sym["fw_stub_names"])
        self._place(self.config)
        self._check_layout()
        if ram.size > self.priv_pa:
            raise WalkBuildError(f"guest RAM of {ram.size:#x} bytes overlaps the walk guest's own area at "
                                 f"{self.priv_pa:#x}")
        uc = self.uc = self._new_uc()
        uc.mem_map_ptr(0, ram.size, UC_PROT_ALL, ram.host_address)
        uc.mem_map(self.priv_pa, PRIV_SIZE)
        self.page_size = 1 << self.config.page_shift
        npages = ram.size >> self.config.page_shift
        # SPARSEMEM: the memmap exists for whole sections (mm/sparse.c), so up to here
        self._sec_pages = _align(npages, self.layout["PAGES_PER_SECTION"])
        self._memmap_size = _align(self._sec_pages * self.layout["sizeof_page"], self.memmap_align())
        uc.mem_map(self.memmap_pa, self._memmap_size)
        for seg in self.image.segments:
            self._wv(seg.vaddr, seg.data)
        self._ret = self.kva + RET_OFF
        self._wv(self._ret, self.RET_INSN)
        self._exc: list[tuple[int, int]] = []
        self._warned: list[tuple[int, str]] = []  # (batch index, file:line)
        self.starts = 0  # emu_start() calls (Unicorn keeps ~300 bytes each until the Uc is closed)
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_CODE, lambda u, *_: u.emu_stop(), begin=self._ret, end=self._ret)
        self._paging(ram.size)
        self._kernel_data()
        self._memmap(npages)
        used = self._call("fw_sparse_init", npages, self.kva + SPARSE_OFF)
        if used > DATA_OFF - SPARSE_OFF:  # pragma: no cover - 52-bit roots take 1 MiB
            raise WalkBuildError(f"mem_section needs {used:#x} bytes")
        if locked is None:
            self._call("fw_lock_folios", 0, self._sec_pages)
        for pfn in locked or ():
            self._call("fw_lock_folios", pfn, 1)
        self._mm = self._write_mm()
        self._vmas: dict[int, int] = {}
        # what an oops may leave behind (preempt count, RCU nesting) is put back from here; the
        # CPU context too (QEMU never delivers a fault: x86 would turn a 2nd one into #DF)
        self._task_saved = [(va, self._rv(va, n)) for va, n in self._task_state()]
        self._ctx = self.uc.context_save()
        self._locks: list[int] = []  # locks the re-run of an oopsed call took (_release_locks)
        self._base = 0  # first record of the running sub-batch

    # -- per-architecture hooks (see x86_64.py, arm64.py, s390x.py) ------------------------------
    def _place(self, config: PagingConfig) -> None:
        """Set kva, priv_pa, page_offset, vmemmap_va, memmap_pa for ``config``."""
        raise NotImplementedError

    def _new_uc(self) -> Uc:
        raise NotImplementedError

    def map_align(self) -> int:
        """The alignment of the guest's own mappings (its largest block size)."""
        raise NotImplementedError

    def memmap_align(self) -> int:
        """What the kernel's vmemmap_populate() maps the struct pages of the present sections in:
        struct pages beyond them are mapped (readable, no oops) only up to this.  Default: the
        guest's block size (x86-64 2 MiB and s390x 1 MiB, the kernel's own PMD-size vmemmap
        blocks, each holding the struct pages of whole sections)."""
        return self.map_align()

    def _paging(self, ram_size: int) -> None:
        """The guest's own tables: private area, linear map, vmemmap; paging on."""
        raise NotImplementedError

    def _kernel_data_arch(self) -> None:
        """What the architecture's boot code would have set."""

    def _check_layout(self) -> None:
        """Compare the placement with what the kernel's own macros say (fw_layout)."""

    def _set_call(self, args: tuple[int, ...], sp: int, ret: int) -> None:
        raise NotImplementedError

    def _result(self) -> int:
        raise NotImplementedError

    def _pc(self) -> int:
        raise NotImplementedError

    def _lock_arg(self, uc: Uc) -> int:
        """The first argument register (the lock of _raw_spin_lock())."""
        raise NotImplementedError

    def _trap(self, fn: str, intno: int, pc: int) -> int:
        """A guest exception during ``fn``: return where to go on (a WARN, reported), or raise
        :class:`_Oops` (a fault or BUG(): the kernel oopses) or :class:`HarnessRunError`."""
        raise NotImplementedError

    def _run_error(self, fn: str, err: UcError, pc: int) -> int:
        """Unicorn stopped with an error (not through the interrupt hook): as :meth:`_trap`."""
        raise HarnessRunError(f"{fn}: {err} at {self._where(pc)}")

    def _task_state(self) -> list[tuple[int, int]]:
        """(address, size) of the per-CPU/per-task state an oops may leave changed."""
        raise NotImplementedError

    # -- guest memory ---------------------------------------------------------------------------
    def _u64s(self, addr: int) -> list[int]:
        for seg in self.image.segments:
            if seg.vaddr <= addr < seg.vaddr + len(seg.data):
                off = addr - seg.vaddr
                n = (len(seg.data) - off) // 8
                return list(struct.unpack_from(f"{self._end}{n}Q", seg.data, off))
        raise WalkBuildError(f"no data at {addr:#x}")

    def _pa(self, va: int) -> int:
        """Physical address of a guest-private virtual address."""
        if not self.kva <= va < self.kva + PRIV_SIZE:
            raise WalkBuildError(f"{va:#x} is not in the walk guest's own area")
        return va - self.kva + self.priv_pa

    def _wv(self, va: int, data: bytes) -> None:
        self.uc.mem_write(self._pa(va), data)

    def _rv(self, va: int, n: int) -> bytes:
        return bytes(self.uc.mem_read(self._pa(va), n))

    def _w64(self, va: int, value: int, size: int = 8) -> None:
        v = value & ((1 << (8 * size)) - 1)
        self._wv(va, v.to_bytes(size, "big") if self.BIG_ENDIAN else v.to_bytes(size, "little"))

    def _r64(self, va: int, size: int = 8) -> int:
        return int.from_bytes(self._rv(va, size), "big" if self.BIG_ENDIAN else "little")

    def _sym(self, name: str) -> int:
        return self.image.symbols[name]

    def _kernel_data(self) -> None:
        """What boot code would have set (mm/memory.c init_zero_pfn(), memmap_init(),
        mm/huge_memory.c get_huge_zero_page(); the architecture's part in _kernel_data_arch)."""
        mm = self.mm
        self._w64(self._sym("zero_pfn"), mm.zero_pfn)
        self._w64(self._sym("highest_memmap_pfn"), mm.memmap.highest_memmap_pfn)
        if mm.huge_zero_pfn is not None:
            self._w64(self._sym("huge_zero_pfn"), mm.huge_zero_pfn)
        self._kernel_data_arch()

    def _memmap(self, npages: int) -> None:
        self._call("fw_memmap_init", 0, npages)
        if self._sec_pages > npages:
            self._call("fw_memmap_reserve", npages, self._sec_pages - npages)
        for folio in self.mm.memmap.folios():
            if folio.order:
                self._call("fw_prep_compound", folio.pfn, folio.order)

    def _write_mm(self) -> int:
        lay = self.layout
        mm_addr = self.kva + DATA_OFF
        self._wv(mm_addr, bytes(lay["sizeof_mm"]))
        self._w64(mm_addr + lay["mm_pgd"], self.page_offset + self.mm.pgd)  # mm->pgd = __va(root)
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
        self._exc.append((intno, self._pc()))
        uc.emu_stop()

    def _where(self, pc: int) -> str:
        best = max(((a, n) for n, a in self.image.symbols.items() if a <= pc), default=(0, "?"))
        return f"{best[1]}+{pc - best[0]:#x}"

    def _bug_at(self, pc: int, length: int) -> int | None:
        """A BUG()/WARN() trap at ``pc`` (a __bug_table entry): for a WARN the address after
        the ``length``-byte trap (reported as the kernel's report_bug() does, then skipped); a
        BUG() raises :class:`_Oops`; None if ``pc`` is no BUG/WARN site."""
        bug = self.build.bugs.get(pc)
        if bug is None:
            return None
        where = f"{bug['file']}:{bug['line']}"
        if not int(bug["flags"]) & _BUGFLAG_WARNING:  # BUG(): the kernel oopses
            raise _Oops(pc, f"BUG() at {where}")
        cur = self._r64(self._sym("fw_current_call"))
        self._warned.append((self._base + cur, where))
        return pc + length

    def _call(self, fn: str, *args: int) -> int:
        self._set_call(args, self.kva + STACK_OFF - 256, self._ret)
        start = self._sym(fn)
        while True:
            self._exc.clear()
            self.starts += 1
            try:
                self.uc.emu_start(start, self._ret + 0x100)
            except UcError as e:
                start = self._run_error(fn, e, self._pc())
                continue
            if self._exc:
                intno, pc = self._exc[0]
                start = self._trap(fn, intno, pc)
                continue
            return self._result()

    def walk(self, vma: VMA, calls: list[tuple[int, int]]) -> list[KernelWalkResult]:
        """folio_walk_start(&fw, vma, addr, flags) ... folio_walk_end() for each (addr, flags)."""
        addrs = np.array([a for a, _ in calls], dtype=np.uint64)
        flags = np.array([f for _, f in calls], dtype=np.uint64)
        raw, warned, oopses = self.walk_raw(vma, addrs, flags)
        return self._results(calls, raw, warned, oopses)

    def max_batch(self) -> int:
        """The most calls one walk_raw() takes (the guest's buffer area)."""
        per = self.layout["sizeof_req"] + self.layout["sizeof_res"]
        return (self.kva + PT_OFF - _align(self._next, 64) - 128) // per

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
        if res + n * lay["sizeof_res"] > self.kva + PT_OFF:
            raise WalkBuildError(f"batch of {n} does not fit the guest's buffers (max {self.max_batch()})")
        rq = np.empty((n, lay["sizeof_req"] // 8), dtype=self._u64)
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
                cur = done + self._r64(self._sym("fw_current_call"))
                oopses[cur] = f"{o.what} in {self._where(o.pc)}"
                self._recover()
                self._release_locks(req + cur * sreq, res + cur * sres)
                none = np.array([_NONE, _NONE], dtype=self._u64).tobytes()
                self._wv(res + cur * sres, none + bytes(sres - 16))
                done = cur + 1
                continue
            if got != n - done:
                raise HarnessRunError(f"fw_walk_batch returned {got}, not {n - done}")
            break
        warned: dict[int, list[str]] = {}
        for i, where in self._warned:
            warned.setdefault(i, []).append(where)
        raw = np.frombuffer(self._rv(res, n * lay["sizeof_res"]), dtype=self._u64).reshape(n, -1)
        if self.BIG_ENDIAN:
            raw = raw.astype(np.uint64)
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
                r["entryp"] - self.page_offset if found else None,
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
        if self.kva <= va < self.kva + PRIV_SIZE:
            return self._pa(va)
        if self.vmemmap_va <= va < self.vmemmap_va + self._memmap_size:
            return va - self.vmemmap_va + self.memmap_pa
        if self.page_offset <= va < self.page_offset + self.mm.ram.size:
            return va - self.page_offset
        return None

    def _release_locks(self, req: int, res: int) -> None:
        """Unlock what the oopsed call left held (the task died holding it).  The call is run
        again with a hook on _raw_spin_lock(): being deterministic it takes the same locks (a
        held one through the slowpath stub) and oopses at the same place; every lock it named is
        then unlocked.  The hook exists only for this re-run: on every call it would halve the
        batch rate."""
        warned = len(self._warned)
        hooks = []
        for begin, end, on_code in self._lock_hooks():
            hooks.append((self.uc.hook_add(UC_HOOK_CODE, on_code, begin=begin, end=end), begin, end))
            # a hook reaches only code translated after it was added: drop the cached translation
            self.uc.ctl_remove_cache(begin, end + 1)
        try:
            self._call("fw_walk_batch", req, res, 1)
        except _Oops:
            pass
        finally:
            for hook, begin, end in hooks:
                self.uc.hook_del(hook)
                self.uc.ctl_remove_cache(begin, end + 1)
        del self._warned[warned:]  # its WARNs were reported by the first run
        for lock in set(self._locks):
            pa = self._kernel_pa(lock)
            if pa is not None and self._held(bytes(self.uc.mem_read(pa, 4))):
                self.uc.mem_write(pa, bytes(4))
        self._locks.clear()
        self._recover()

    def _lock_hooks(self) -> list[tuple[int, int, Any]]:
        """(first, last address, code hook)s that record in ``self._locks`` every spinlock the
        re-run takes: here _raw_spin_lock()'s argument (kernel/locking/spinlock.c, out of line
        in the x86-64 and arm64 configurations)."""
        lock_fn = self._sym("_raw_spin_lock")
        return [(lock_fn, lock_fn, lambda u, *_: self._locks.append(self._lock_arg(u)))]

    def _held(self, word: bytes) -> bool:
        """Whether a lock word the re-run named is still held (queued spinlocks: not 0)."""
        return word != bytes(4)

    def _recover(self) -> None:
        """After an oops: the CPU context, preempt count and RCU nesting as before any call."""
        self.uc.context_restore(self._ctx)
        for va, data in self._task_saved:
            self._wv(va, data)

    def close(self) -> None:
        del self.uc
        # A Uc and its hook callbacks hold each other: only the cycle collector frees the CPU and
        # its mappings (tens of MiB), and it does not run for native memory -- so run it here.
        # (Measured: 20 fuzzing targets opened and closed grew RSS by 93 MiB, 1 MiB with this.)
        gc.collect()


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


