"""The x86-64 machine: Unicorn's MMU translating through 4-level or 5-level page tables in guest RAM.

Paging is Intel SDM vol. 3 §4.5 ("4-Level Paging and 5-Level Paging"): CR3 holds the root table
(PML4, or PML5 with CR4.LA57), entries have the formats of SDM vol. 3 Tables 4-14 ... 4-20, a page
fault (#PF, vector 14) pushes the error code of SDM vol. 3 §4.7 (Figure 4-12: P, W/R, U/S, RSVD,
I/D, PK, SS, HLAT, SGX) and leaves the faulting linear address in CR2.

How the oracle is made to work on Unicorn 2.1.4 (see ``/work/shared/ORACLE-NOTES.md``, x86-64):

* x86 cannot run code outside its own paging, so the machine owns ONE top-level slot,
  ``MACHINE_SLOT`` = 511 of the root table (VA 0xffffff8000000000.. for 4-level,
  0xffff000000000000.. for 5-level: PML5 index 511 = VA bits 56:48 all ones, sign-extended;
  0xff00000000000000 would be index 256), with its own sub-tables, code, stack, fault-dummy and
  batch tables.  ``set_root`` writes that slot into the root under test.  Addresses in the slot cannot be
  probed (they give ``ProbeError``).
* Guest exceptions are not delivered through an IDT (ORACLE-NOTES "Common"): a ``UC_HOOK_INTR`` hook
  receives the vector only.  The #PF error code exists only inside the CPU state blob
  (``uc_context_save``); its offset is located at start-up with a marker: ``mov ds, ax`` with a
  selector beyond the GDT limit raises #GP with error code = the selector (SDM vol. 3 §6.13, §6.15
  "Interrupt 13"), so two chosen selectors find the one 32-bit field that holds them.  The same
  runs find the "exception in flight" field (-1 before, 13 after the #GP).  Nothing is hard-coded.
* THE TRAP (ORACLE-NOTES x86-64): QEMU never resets "exception in flight" because no exception is
  ever delivered, so the 2nd #PF is turned into #DF (SDM vol. 3 §6.15 "Interrupt 8", Table 6-5) and
  the 3rd is a triple fault that silently ends ``emu_start``.  Fix, twice over: every guest run
  starts from a context saved before any fault (``set_root`` saves it), and a batch run that
  resumes after a fault clears the located field inside the hook (save blob, patch, restore).
* The TLB is not flushed by host writes, register writes or a new ``emu_start`` (ORACLE-NOTES
  "Common"): every probe and every batch starts with ``flush_tlb()``.
* CPL 3: ``reg_write(CS)`` does not change the CPL (ORACLE-NOTES x86-64); user probes enter CPL 3
  with SYSRETQ (SDM vol. 2B "SYSRET", vol. 3 §5.8.8) from a stub on the machine's kernel code
  page (EFER.SCE is set for that, STAR[63:48] gives the user selectors).
* Instruction fetch without executing anything: a ``UC_HOOK_CODE`` hook covering every address
  below the machine slot fires before the first instruction at the target runs (measured: the
  target's bytes never execute) and sends the guest elsewhere.  QEMU translates the target page
  for execution (``get_page_addr_code``: the MMU walk with the I/D semantics) before it decodes, so
  a fault there is the fetch's own #PF; a #PF whose CR2 lies on the *next* page comes from decoding
  an instruction that straddles the page end, i.e. the target page itself was fetched fine.
* The physical address is observed, never computed: a load of the 8-byte word at ``va & ~7``
  returns a tag (``PhysicalMemory.tag``) when the frame was tagged; otherwise
  ``uc_vmem_translate`` (not wrapped by the Python binding: called through ctypes) is asked, after
  the guest access of the same kind succeeded, so the A/D bits it sets are already set, and CR2,
  which it also writes (ORACLE-NOTES "Common"), is saved and restored around it.
* A leaf may map a physical address with no RAM behind it (below MAXPHYADDR, anything goes).
  Hardware then accesses non-existent memory without a page fault; Unicorn, after its walk
  succeeded, stops the run with UC_ERR_READ/WRITE/FETCH_UNMAPPED at the access.  That access is
  a translation: the machine reports ``Translation(pa, "vmem")`` from ``uc_vmem_translate``
  (a batch hands such an address to the per-address probe).  Unicorn's page walk itself reads
  zeros outside RAM (a table pointer there gives a not-present #PF), so the error cannot come
  from the walk.
* Unicorn's own ``emu_start(timeout=...)`` starts and joins a timer thread per call (measured
  ~120 µs per ``emu_start`` on this machine: 8k probes/s at best), so runs are guarded by one
  watchdog thread per machine instead, which calls ``uc_emu_stop`` exactly as Unicorn's timer does.
* Runs end with HLT (CPL 0) or SYSCALL (CPL 3, stopped by a ``UC_HOOK_INSN`` hook), not at an
  ``until`` address: Unicorn re-translates the code around ``until`` after every run, and a
  translation costs a scan of the whole softmmu TLB, which large batches grow (measured: a probe
  went from 7 to 20 µs).  ``until`` is a non-canonical address that is never reached.
* ``probe_many`` overlaps emulation (a driver thread; ``uc_emu_start`` releases the GIL) with
  building the result objects, which costs about as much as the emulation itself;
  ``probe_many_raw`` builds none: the result table becomes numpy columns (status, physical
  address, #PF error code; ``emu.machines.base.RawProbes``), at about twice the rate.

Writes are probed as "load, then store the loaded value back" (needs W, leaves memory unchanged).
QEMU performs the load first, so a page that cannot even be read would report a *read* error
code; in that case the probe then issues the store alone (it must fault too: every condition that
blocks a read blocks a write, SDM vol. 3 §4.6) so the reported error code is the write's
(W/R = 1), as hardware reports for a store.
"""

from __future__ import annotations

import ctypes
import gc
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from unicorn import (
    UC_ARCH_X86,
    UC_CTL_IO_WRITE,
    UC_CTL_TLB_FLUSH,
    UC_ERR_FETCH_UNMAPPED,
    UC_ERR_READ_UNMAPPED,
    UC_ERR_WRITE_UNMAPPED,
    UC_HOOK_CODE,
    UC_HOOK_INSN,
    UC_HOOK_INTR,
    UC_MODE_64,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    UC_PROT_READ,
    UC_PROT_WRITE,
    UC_TLB_CPU,
)
from unicorn import x86_const as X

# The Python-3 binding itself (``unicorn`` re-exports it behind a version test that type checkers
# do not follow); ``uclib`` is the loaded C library, needed for what the binding does not wrap.
from unicorn.unicorn_py3.unicorn import Uc, UcError, uclib

from emu.errors import AddressError, ConfigError, EmulatorError
from emu.machines.base import (
    RAW_ERROR,
    RAW_FAULT,
    RAW_TAG,
    READ,
    Access,
    Fault,
    ProbeError,
    ProbeResult,
    RawProbes,
    Translation,
)
from emu.machines.ram import TAG, TAG_MASK, FrameAllocator, PhysicalMemory

__all__ = ["X86_64Machine", "PF_P", "PF_W", "PF_U", "PF_RSVD", "PF_ID", "PF_PK"]

# -- architecture constants (Intel SDM vol. 3) ---------------------------------------------------
# Paging-structure entry bits, SDM vol. 3 §4.5, Tables 4-14 .. 4-20.
_P = 1 << 0  # present
_RW = 1 << 1  # read/write
_US = 1 << 2  # user/supervisor
_A = 1 << 5  # accessed
_D = 1 << 6  # dirty (leaves)
_XD = 1 << 63  # execute-disable (with EFER.NXE)
_ADDR = 0x000F_FFFF_FFFF_F000  # bits 51:12: physical address of the next table / 4K frame

# Page-fault error code, SDM vol. 3 §4.7, Figure 4-12.
PF_P = 1 << 0  # 0: not-present page; 1: protection violation
PF_W = 1 << 1  # the access was a write
PF_U = 1 << 2  # the access was a user-mode access (CPL 3)
PF_RSVD = 1 << 3  # a reserved bit was set in some paging-structure entry
PF_ID = 1 << 4  # the access was an instruction fetch
PF_PK = 1 << 5  # protection-key violation

_VEC_PF = 14
_VECTOR_NAMES = {
    0: "#DE",
    1: "#DB",
    3: "#BP",
    4: "#OF",
    5: "#BR",
    6: "#UD",
    7: "#NM",
    8: "#DF",
    10: "#TS",
    11: "#NP",
    12: "#SS",
    13: "#GP",
    14: "#PF",
    16: "#MF",
    17: "#AC",
    18: "#MC",
    19: "#XM",
}

# Control registers / MSRs (SDM vol. 3 §2.5, §2.2.1, §5.8.8).
_CR0 = 0x8001_0011  # PG | WP | NE | ET | PE
_CR4_PAE = 1 << 5
_CR4_LA57 = 1 << 12
_MSR_EFER = 0xC000_0080
_MSR_STAR = 0xC000_0081
_EFER_SCE = 1 << 0  # SYSCALL/SYSRET enable (needed for the SYSRETQ that enters CPL 3)
_EFER_LME = 1 << 8
_EFER_LMA = 1 << 10
_EFER_NXE = 1 << 11
_EFER = _EFER_SCE | _EFER_LME | _EFER_LMA | _EFER_NXE
# STAR[63:48] = 0x10: SYSRETQ loads CS = 0x10+16 | 3 = 0x23 and SS = 0x10+8 | 3 = 0x1b.
_STAR = (0x10 << 48) | (0x08 << 32)
_USER_RFLAGS = 0x2  # R11 for SYSRETQ: reserved bit 1 only (IF clear: nothing can interrupt)
# #GP markers: selectors beyond the (zero) GDT limit, error code = selector (SDM vol. 3 §6.13).
_MARKERS = (0x5A5C, 0x3A34)

_PAGE = 4096
_U64 = (1 << 64) - 1

# -- the machine's slot: its pages (4 KiB each, in the first 2 MiB of the slot) ------------------
_PG_KCODE = 0  # supervisor code (read-only, executable)
_PG_UCODE = 1  # user code (read-only, executable, U/S = 1)
_PG_DUMMY = 2  # a harmless readable/writable word that faulting accesses are redirected to
_PG_RUN = 3  # code of run_code() (user, writable, executable)
_PG_STACK = 4  # stack of run_code()
_PG_HOLE = 5  # never present: the start-up self-check faults on it
_PG_RO = 6  # read-only, tagged: the start-up self-check writes to it
_PG_TABLES = 16  # batch address table, then result table
CHUNK = 16384  # addresses per batch run
_TABLE_PAGES = CHUNK * 8 // _PAGE
_PER_ADDRESS_BUDGET_US = 200  # batch chunk time limit: timeout_us + n * this


# -- guest code (hand-assembled; tests disassemble it with capstone) -----------------------------
@dataclass
class _Code:
    """Machine code with labels: the same bytes go on the kernel and the user code page."""

    user: bool  # the copy for the user code page
    buf: bytearray = field(default_factory=bytearray)
    labels: dict[str, int] = field(default_factory=dict)

    def at(self, offset: int) -> None:
        if offset < len(self.buf):
            raise ValueError("code overlaps")
        self.buf += b"\xf4" * (offset - len(self.buf))  # HLT fill: a stray jump stops the CPU

    def label(self, name: str) -> None:
        self.labels[name] = len(self.buf)

    def emit(self, hexbytes: str) -> None:
        self.buf += bytes.fromhex(hexbytes)

    def jb(self, target: str) -> None:
        rel = self.labels[target] - (len(self.buf) + 2)
        if not -128 <= rel < 0:
            raise ValueError("jb out of range")
        self.buf += bytes([0x72, rel & 0xFF])

    def leave(self, name: str) -> None:
        """End snippet ``name`` at label ``name.end``: HLT at CPL 0, SYSCALL at CPL 3.

        Runs do not end at an ``until`` address: after every run Unicorn invalidates the TBs
        around ``until - 1`` (including every zero-size "exit" TB whose ``pc - 1`` lies there),
        and regenerating a TB scans the whole, dynamically grown softmmu TLB
        (``tlb_reset_dirty_by_vaddr`` in ``tb_gen_code``): measured 4 µs -> 17 µs per probe
        after large batches.  HLT at CPL 0 ends ``uc_emu_start`` by itself (EXCP_HLT); at
        CPL 3 HLT would be #GP, and Unicorn's SYSCALL is a no-op that calls ``UC_HOOK_INSN``
        hooks, so the machine's syscall hook stops the run.  ``until`` is non-canonical
        (``_NEVER``): never reached, and its invalidation finds no page (#GP, ignored).
        """
        self.label(name + ".end")
        self.emit("0f05" if self.user else "f490")  # syscall / hlt; nop


_I = {
    "sysretq": "480f07",
    "mov rax,[rbx]": "488b03",
    "mov rax,[r8]": "498b00",
    "mov [rbx],rax": "488903",
    "mov rcx,r10": "4c89d1",
    "mov rbx,[rsi+rcx*8]": "488b1cce",
    "mov [rdi+rcx*8],rax": "488904cf",
    "mov r8,rbx": "4989d8",
    "and r8,-8": "4983e0f8",
    "inc rcx": "48ffc1",
    "cmp rcx,rdx": "4839d1",
    "jmp rbx": "ffe3",
    "mov ds,ax": "8ed8",
    "nop": "90",
}


def _build_code(user: bool) -> _Code:
    c = _Code(user)
    # 0x000: kernel stub: enter CPL 3 at RCX (user code page) with RFLAGS = R11.
    c.label("stub")
    c.emit(_I["sysretq"])
    # Single-address probes (rbx = va & ~7, r8 = va & ~7; fetch: rbx = va).
    c.at(0x020)
    c.label("p_read")
    c.label("p_read.access")
    c.emit(_I["mov rax,[rbx]"])
    c.leave("p_read")
    c.at(0x040)
    c.label("p_write")
    c.label("p_write.load")
    c.emit(_I["mov rax,[r8]"])
    c.label("p_write.store")
    c.emit(_I["mov [rbx],rax"])
    c.leave("p_write")
    c.at(0x060)
    c.label("p_store")
    c.label("p_store.store")
    c.emit(_I["mov [rbx],rax"])
    c.leave("p_store")
    c.at(0x080)
    c.label("p_fetch")
    c.emit(_I["jmp rbx"])
    c.leave("p_fetch")
    c.at(0x0A0)
    c.label("p_user")  # reach CPL 3 and stop (for uc_vmem_translate at user privilege)
    c.emit(_I["nop"])
    c.leave("p_user")
    c.at(0x0C0)
    c.label("calib")
    c.emit(_I["mov ds,ax"])
    c.leave("calib")
    # Batch loops: rsi = address table, rdi = result table, r10 = first index, rdx = end index.
    c.at(0x100)
    c.label("b_read")
    c.emit(_I["mov rcx,r10"])
    c.label("b_read.loop")
    c.emit(_I["mov rbx,[rsi+rcx*8]"])
    c.label("b_read.access")
    c.emit(_I["mov rax,[rbx]"])
    c.emit(_I["mov [rdi+rcx*8],rax"])
    c.emit(_I["inc rcx"])
    c.emit(_I["cmp rcx,rdx"])
    c.jb("b_read.loop")
    c.leave("b_read")
    c.at(0x140)
    c.label("b_write")
    c.emit(_I["mov rcx,r10"])
    c.label("b_write.loop")
    c.emit(_I["mov rbx,[rsi+rcx*8]"])
    c.emit(_I["mov r8,rbx"])
    c.label("b_write.load")
    c.emit(_I["mov rax,[r8]"])
    c.label("b_write.store")
    c.emit(_I["mov [rbx],rax"])
    c.emit(_I["mov [rdi+rcx*8],rax"])
    c.emit(_I["inc rcx"])
    c.emit(_I["cmp rcx,rdx"])
    c.jb("b_write.loop")
    c.leave("b_write")
    c.at(0x180)
    c.label("b_fetch")
    c.emit(_I["mov rcx,r10"])
    c.label("b_fetch.loop")
    c.emit(_I["mov rbx,[rsi+rcx*8]"])
    c.emit(_I["mov r8,rbx"])
    c.emit(_I["and r8,-8"])
    c.label("b_fetch.jump")
    c.emit(_I["jmp rbx"])
    c.label("b_fetch.after")  # the code hook resumes here: observe the word at va & ~7
    c.emit(_I["mov rax,[r8]"])
    c.emit(_I["mov [rdi+rcx*8],rax"])
    c.label("b_fetch.next")  # a fetch fault resumes here
    c.emit(_I["inc rcx"])
    c.emit(_I["cmp rcx,rdx"])
    c.jb("b_fetch.loop")
    c.leave("b_fetch")
    c.at(_PAGE)  # HLT padding
    return c


_KCODE = _build_code(user=False)
_UCODE = _build_code(user=True)
GUEST_CODE = bytes(_KCODE.buf)  # the kernel copy, exported for the tests' disassembly check
GUEST_USER_CODE = bytes(_UCODE.buf)
GUEST_LABELS = dict(_KCODE.labels)  # the same on both pages
assert GUEST_LABELS == _UCODE.labels
_NEVER = 0x8000_0000_0000_0000  # the ``until`` of snippet runs: non-canonical, never reached

# Private foreign-function objects (the binding's shared ``uclib`` prototypes are left untouched).
# PYFUNCTYPE: these short calls keep the GIL.  Only ``uc_emu_start`` releases it, so the batch
# driver thread hands the GIL over once per chunk instead of at every call (with another thread
# busy in Python, each re-acquisition can wait a whole switch interval, 5 ms).
_u64p = ctypes.POINTER(ctypes.c_uint64)
_vmem_translate = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, _u64p)(
    ("uc_vmem_translate", uclib)
)
_context_save = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(("uc_context_save", uclib))
_context_restore = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(
    ("uc_context_restore", uclib)
)
_emu_stop = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(("uc_emu_stop", uclib))
_uc_ctl = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int)(("uc_ctl", uclib))
_CTL_TLB_FLUSH = (UC_CTL_IO_WRITE << 30) | UC_CTL_TLB_FLUSH  # uc_ctl encoding, no arguments
# Plain 64-bit register access without the binding's per-call register-class lookup (the hooks
# run once per fault; the binding's reg_read costs more than the rest of the hook).
_reg_read = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)(
    ("uc_reg_read", uclib)
)
_reg_write = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)(
    ("uc_reg_write", uclib)
)


def _address_array(vas: Sequence[int] | np.ndarray) -> np.ndarray:
    """``vas`` as a flat uint64 array; anything that is not a 64-bit unsigned integer is refused
    (numpy alone would turn floats into truncated integers and mixed lists into float64)."""
    if isinstance(vas, np.ndarray):
        if vas.ndim != 1 or vas.dtype.kind not in "iu":
            raise AddressError(f"virtual addresses must be a flat integer array, not {vas.dtype}{vas.shape}")
        if vas.dtype.kind == "i" and len(vas) and int(vas.min()) < 0:
            raise AddressError("virtual addresses must not be negative")
        return vas.astype(np.uint64, copy=False)
    bad = {t for t in set(map(type, vas)) if t is bool or not issubclass(t, (int, np.integer))}
    if bad:
        raise AddressError(f"virtual addresses must be integers, not {sorted(t.__name__ for t in bad)}")
    try:
        return np.array(vas, dtype=np.uint64).reshape(-1)
    except (OverflowError, ValueError) as exc:
        raise AddressError(f"virtual addresses must be 64-bit unsigned integers: {exc}") from None


def _page_fault(code: int) -> Fault:
    """The result of a #PF with error ``code`` at the probed address (the raw form's fault)."""
    return Fault("page-fault", None, code, _VEC_PF)


def _vector_name(vector: int) -> str:
    return f"{_VECTOR_NAMES.get(vector, 'exception')} (vector {vector})"


class _Watchdog:
    """One thread per machine that stops a guest run which outlives its deadline.

    Replaces ``emu_start(timeout=...)``, whose per-call timer thread costs ~120 µs (measured).
    ``uc_emu_stop`` from another thread is exactly what Unicorn's own timer thread does; a stop that
    lands just after the run ended is harmless (the next ``emu_start`` clears the request).
    """

    def __init__(self, handle: Any, poll_s: float) -> None:
        self._handle = handle
        self._poll = poll_s
        self._lock = threading.Lock()
        self._active: tuple[int, float] | None = None
        self._gen = 0
        self._fired = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="foliowalk-x86-watchdog", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._poll):
            with self._lock:
                act = self._active
                if act is not None and time.monotonic() > act[1]:
                    self._fired = act[0]
                    self._active = None
                    _emu_stop(self._handle)

    def arm(self, budget_us: float) -> int:
        with self._lock:
            self._gen += 1
            self._active = (self._gen, time.monotonic() + budget_us / 1e6)
            return self._gen

    def disarm(self, gen: int) -> bool:
        """End the run ``gen``; True if the watchdog had to stop it."""
        with self._lock:
            self._active = None
            return self._fired == gen

    def close(self) -> None:
        self._stop.set()


# Unicorn errors for an access whose translation succeeded but whose physical address has no
# guest RAM behind it (the page walk itself reads zeros there: a not-present entry).
_UNMAPPED = {UC_ERR_READ_UNMAPPED: "read", UC_ERR_WRITE_UNMAPPED: "write", UC_ERR_FETCH_UNMAPPED: "fetch"}


# Hook modes.
_M_IDLE, _M_PROBE, _M_PROBE_FETCH, _M_BATCH, _M_CALIB, _M_RUN = range(6)
# Batch actions keyed by the faulting RIP.
_ACT_FINAL_RBX, _ACT_PROV_R8, _ACT_FINAL_RBX_STORE, _ACT_OBS_R8 = range(4)


@dataclass
class _Run:
    """What the hooks recorded during one guest run."""

    faults: list[tuple[int, int, int, int]] = field(default_factory=list)  # (vector, code, cr2, rip)
    fetched: bool = False


@dataclass
class _Batch:
    """What the hooks recorded during the runs of one batch chunk (indices are chunk positions)."""

    final: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # idx -> (vector, code, cr2)
    provisional: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # write: the load faulted
    observe_failed: set[int] = field(default_factory=set)  # fetch ok, the observing load faulted
    abnormal: dict[int, str] = field(default_factory=dict)  # idx -> reason (run stopped)


@dataclass
class _Raw:
    """One emulated chunk as the driver thread hands it over."""

    words: bytes  # the result table: one loaded word per address
    rec: _Batch
    reprobe: list[int]  # chunk positions the per-address probe decides (timed out; reached no RAM)


class X86_64Machine:
    """An x86-64 CPU (Unicorn, UC_TLB_CPU) in long mode whose MMU walks tables in ``ram``.

    ``levels`` is 4 (PML4, 48-bit VA) or 5 (PML5 with CR4.LA57, 57-bit VA), SDM vol. 3 §4.5.
    ``timeout_us`` bounds one guest run (one probe; a batch chunk of n addresses gets
    ``timeout_us + n * 200`` µs); a run that overruns is stopped and reported as ``ProbeError``.
    ``nxe`` is IA32_EFER.NXE (default set, as Linux runs; without it XD is a reserved bit, SDM
    vol. 3 §4.5.4, and the machine's own pages do without it).  Frames for the machine's own
    code and tables come from ``alloc`` (about 80 pages).  Call
    ``set_root`` before probing.  Not thread-safe: one caller at a time (``probe_many`` runs the
    engine from a helper thread of its own while it turns results into objects).

    Every access sets Accessed bits (and a write the Dirty bit of the leaf) in the entries the MMU
    uses, as hardware does (SDM vol. 3 §4.8); data is never changed.
    """

    MACHINE_SLOT = 511
    CHUNK = CHUNK

    def __init__(
        self,
        ram: PhysicalMemory,
        alloc: FrameAllocator,
        *,
        levels: int = 4,
        timeout_us: int = 1_000_000,
        nxe: bool = True,
    ) -> None:
        if levels not in (4, 5):
            raise ConfigError(
                f"x86-64 paging has 4 levels (PML4) or 5 levels (PML5, CR4.LA57), not {levels!r}"
            )
        if ram.big_endian:
            raise ConfigError("x86-64 guest RAM must be little-endian")
        if not isinstance(timeout_us, int) or timeout_us <= 0:
            raise ConfigError(f"timeout_us must be a positive integer, not {timeout_us!r}")
        self.ram = ram
        self.alloc = alloc
        self.levels = levels
        self.timeout_us = timeout_us
        self._xd = _XD if nxe else 0  # XD in the machine's own entries: reserved without NXE
        # The slot's VA: index 511 at the top level, sign-extended (SDM vol. 3 §4.5: canonical).
        top_shift = 39 if levels == 4 else 48
        self._slot_base = (_U64 << (top_shift + 9) | (self.MACHINE_SLOT << top_shift)) & _U64
        self._va_bits_1 = top_shift + 8  # 47 / 56: bits 63..this are equal in a canonical VA
        self._root: int | None = None

        uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self._uc = uc
        self._h = uc._uch
        uc.ctl_set_tlb_mode(UC_TLB_CPU)
        uc.mem_map_ptr(0, ram.size, UC_PROT_ALL, ram.host_address)

        self._build_slot()
        self._install_code()

        uc.reg_write(X.UC_X86_REG_CR4, _CR4_PAE | (_CR4_LA57 if levels == 5 else 0))
        uc.reg_write(X.UC_X86_REG_MSR, (_MSR_EFER, _EFER if nxe else _EFER & ~_EFER_NXE))
        uc.reg_write(X.UC_X86_REG_MSR, (_MSR_STAR, _STAR))
        uc.reg_write(X.UC_X86_REG_CR0, _CR0)
        uc.reg_write(X.UC_X86_REG_GDTR, (0, 0, 0, 0))  # limit 0: the #GP markers
        uc.reg_write(X.UC_X86_REG_CR3, self._scratch_root)

        self._mode = _M_IDLE
        self._run = _Run()
        self._batch = _Batch()
        self._batch_actions: dict[int, int] = {}
        self._batch_after = 0
        self._batch_next = 0
        self._batch_stop: str | None = None
        self._hook_error: str | None = None
        self._uc_errno = 0  # the UC_ERR_* of the last run that ended in a Unicorn error
        self._ended = False
        self._expect_va = 0
        self._calib_blob = b""
        self._rbuf = ctypes.c_uint64()
        self._rbuf_ref = ctypes.byref(self._rbuf)
        self._wbuf = ctypes.c_uint64()
        self._wbuf_ref = ctypes.byref(self._wbuf)
        self._ctx = uc.context_save()  # scratch blob: hooks read and patch it
        self._ctx_ptr = ctypes.c_void_p(self._ctx.context.value)
        self._base = uc.context_save()  # the pre-fault state every run starts from
        self._err_cell: ctypes.c_int32 | None = None
        self._old_cell: ctypes.c_int32 | None = None
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_INSN, self._on_syscall, None, 1, 0, X.UC_X86_INS_SYSCALL)
        # Covers every address below the slot: any fetch target (the slot itself is never probed).
        uc.hook_add(UC_HOOK_CODE, self._on_code, begin=0, end=self._slot_base - 1)

        poll = min(max(timeout_us / 4e6, 0.001), 0.05)
        self._watchdog = _Watchdog(self._h, poll)
        weakref.finalize(self, self._watchdog.close)

        self._calibrate()
        self._self_check()

    # -- the machine's own tables --------------------------------------------------------------
    def _zeroed_frame(self) -> int:
        pa = self.alloc.alloc(_PAGE)
        self.ram.buf[pa : pa + _PAGE] = bytes(_PAGE)
        return pa

    def _build_slot(self) -> None:
        """Allocate and build the slot's sub-tables and pages (raw entries, SDM vol. 3 §4.5)."""
        ram = self.ram
        inter = _P | _RW | _US | _A  # non-leaf: permissive; each leaf decides
        # Chain below the slot entry: (PML4 for 5-level,) PDPT, PD, PT; entry 0 at each level.
        chain = [self._zeroed_frame() for _ in range(self.levels - 1)]
        for upper, lower in zip(chain[:-1], chain[1:], strict=True):
            ram.write_u64(upper, lower | inter)
        self._slot_next = chain[0]  # what root[511] points to
        pt = chain[-1]
        self._slot_tables = chain
        self._frames: dict[int, int] = {}

        def page(index: int, flags: int) -> int:
            pa = self._zeroed_frame()
            ram.write_u64(pt + 8 * index, pa | flags | _A | _D)
            self._frames[index] = pa
            return pa

        page(_PG_KCODE, _P)  # supervisor, read-only, executable
        page(_PG_UCODE, _P | _US)  # user, read-only, executable
        xd = self._xd
        page(_PG_DUMMY, _P | _RW | _US | xd)
        page(_PG_RUN, _P | _RW | _US)
        page(_PG_STACK, _P | _RW | _US | xd)
        ro = page(_PG_RO, _P | _US | xd)
        ram.tag(ro, _PAGE)
        # _PG_HOLE stays 0: not present.
        tables = self.alloc.alloc(2 * _TABLE_PAGES * _PAGE, _PAGE)
        ram.buf[tables : tables + 2 * _TABLE_PAGES * _PAGE] = bytes(2 * _TABLE_PAGES * _PAGE)
        for i in range(2 * _TABLE_PAGES):
            ram.write_u64(pt + 8 * (_PG_TABLES + i), (tables + i * _PAGE) | _P | _RW | _US | xd | _A | _D)
        self._atab_pa = tables
        self._rtab_pa = tables + _TABLE_PAGES * _PAGE
        self._zero_table = bytes(CHUNK * 8)
        # A root of the machine's own, used until set_root (calibration runs on it).
        self._scratch_root = self._zeroed_frame()
        ram.write_u64(self._scratch_root + 8 * self.MACHINE_SLOT, self._slot_next | inter)

    def _va(self, page_index: int, offset: int = 0) -> int:
        return self._slot_base + page_index * _PAGE + offset

    def _install_code(self) -> None:
        for index, code in ((_PG_KCODE, _KCODE), (_PG_UCODE, _UCODE)):
            pa = self._frames[index]
            self.ram.buf[pa : pa + _PAGE] = code.buf
        # The user page has no business with SYSRETQ: a HLT stands where the stub is.
        ucode = self._frames[_PG_UCODE]
        self.ram.buf[ucode : ucode + 3] = b"\xf4\xf4\xf4"
        labels = GUEST_LABELS  # the same offsets on both code pages
        self._kcode = self._va(_PG_KCODE)
        self._ucode = self._va(_PG_UCODE)
        self._user_ends = {self._ucode + off for name, off in labels.items() if name.endswith(".end")}
        self._dummy = self._va(_PG_DUMMY)
        acts: dict[int, int] = {}
        for base in (self._kcode, self._ucode):
            acts[base + labels["b_read.access"]] = _ACT_FINAL_RBX
            acts[base + labels["b_write.load"]] = _ACT_PROV_R8
            acts[base + labels["b_write.store"]] = _ACT_FINAL_RBX_STORE
            acts[base + labels["b_fetch.after"]] = _ACT_OBS_R8
        self._actions_all = acts

    # -- public API ----------------------------------------------------------------------------
    def reserved_va_range(self) -> tuple[int, int]:
        """The machine's slot as a half-open range ``[start, end)``; ``end`` is 2**64.

        4-level: ``[0xffffff8000000000, 2**64)``; 5-level: ``[0xffff000000000000, 2**64)``.
        """
        return (self._slot_base, 1 << 64)

    def set_root(self, root_pa: int) -> None:
        """Use the root table (PML4 / PML5) at ``root_pa``: write its entry 511, load CR3, flush.

        Entry 511 of the root is overwritten with the machine's slot (present, writable, user,
        accessed; SDM vol. 3 Table 4-14/4-15).  Call again after replacing the root or its
        entry 511.  The state saved here is what every later guest run starts from.
        """
        if not isinstance(root_pa, int) or root_pa & (_PAGE - 1):
            raise AddressError(f"root table address {root_pa!r} is not a 4 KiB-aligned integer")
        self.ram.check_range(root_pa, _PAGE, "root table")
        if root_pa & ~_ADDR:
            raise AddressError(f"root table address {root_pa:#x} does not fit CR3")
        self.ram.write_u64(root_pa + 8 * self.MACHINE_SLOT, self._slot_next | _P | _RW | _US | _A)
        self._root = root_pa
        self._uc.context_restore(self._base)
        self._uc.reg_write(X.UC_X86_REG_CR3, root_pa)
        self._uc.context_update(self._base)
        self.flush_tlb()

    def flush_tlb(self) -> None:
        """Drop every cached translation (QEMU's TLB survives host edits: ORACLE-NOTES "Common")."""
        status = _uc_ctl(self._h, _CTL_TLB_FLUSH)
        if status:
            raise EmulatorError(f"uc_ctl(UC_CTL_TLB_FLUSH) failed with Unicorn error {status}")

    def registers(self) -> dict[str, int]:
        """CR0, CR3, CR4 and EFER as the guest runs with them (for fixture manifests)."""
        uc = self._uc
        return {
            "CR0": uc.reg_read(X.UC_X86_REG_CR0),
            "CR3": uc.reg_read(X.UC_X86_REG_CR3),
            "CR4": uc.reg_read(X.UC_X86_REG_CR4),
            "EFER": int(uc.reg_read(X.UC_X86_REG_MSR, _MSR_EFER)),
        }

    def close(self) -> None:
        """Stop the watchdog thread (the Unicorn engine is freed with the object)."""
        self._watchdog.close()

    def __enter__(self) -> X86_64Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running the guest ---------------------------------------------------------------------
    def _rr(self, reg: int) -> int:
        """Read a 64-bit register (general-purpose, RIP, CR2)."""
        _reg_read(self._h, reg, self._rbuf_ref)
        return self._rbuf.value

    def _rw(self, reg: int, value: int) -> None:
        """Write a 64-bit register (general-purpose, RIP, CR2)."""
        self._wbuf.value = value
        _reg_write(self._h, reg, self._wbuf_ref)

    def _start(self, label: str, user: bool, regs: dict[int, int]) -> tuple[int, int | None]:
        """Restore the pre-fault state, flush the TLB, load registers.

        Returns ``begin`` and the RIP a CPL-0 run ends at (after its HLT); None for a CPL-3 run,
        which the syscall hook ends (``self._ended``).
        """
        _context_restore(self._h, self._base.context)
        self.flush_tlb()
        for reg, value in regs.items():
            self._rw(reg, value)
        off = GUEST_LABELS[label]
        if user:
            self._rw(X.UC_X86_REG_RCX, self._ucode + off)
            self._rw(X.UC_X86_REG_R11, _USER_RFLAGS)
            return self._kcode + GUEST_LABELS["stub"], None
        return self._kcode + off, self._kcode + GUEST_LABELS[label + ".end"] + 1

    def _emu(self, begin: int, done_rip: int | None, budget_us: float, until: int = _NEVER) -> str | None:
        """One ``emu_start``; None if the run ended where it should, else why it did not.

        A run has ended properly if RIP is ``done_rip`` (CPL 0: after the final HLT; run_code:
        its ``until``) or, for ``done_rip`` None, if the syscall hook saw the final SYSCALL.
        """
        self._hook_error = None
        self._ended = False
        self._uc_errno = 0
        gen = self._watchdog.arm(budget_us)
        try:
            self._uc.emu_start(begin, until)
            error = None
        except UcError as exc:
            error = f"Unicorn error: {exc}"
            self._uc_errno = exc.errno
        except Exception as exc:  # an exception raised inside one of our hooks
            error = f"internal error in a hook: {exc!r}"
        finally:
            fired = self._watchdog.disarm(gen)
        rip = self._rr(X.UC_X86_REG_RIP)
        ended = self._ended if done_rip is None else rip == done_rip
        if fired and not (error is None and self._hook_error is None and ended):
            return f"timeout: the guest run did not finish within {budget_us:.0f} µs"
        if error is not None:
            return error
        if self._hook_error is not None:
            return self._hook_error
        if not ended:
            return f"the guest stopped at RIP {rip:#x} before the end of its code"
        return None

    def _decode_fault(self, intno: int, cr2: int, va: int) -> bool:
        """True if an exception at fetch target ``va`` came from decoding past va's page.

        QEMU translates va's page for execution (the fetch under test) before it decodes, so an
        exception raised there after that means the fetch itself succeeded: a #PF on the *next*
        page (the instruction straddles the page end), or a #GP at a canonical ``va`` (in 64-bit
        mode a fetch #GP only comes from a non-canonical address: here the straddled bytes lie
        beyond the top of the lower half, SDM vol. 3 §6.15 "Interrupt 13").
        """
        if intno == _VEC_PF:
            return cr2 >> 12 != va >> 12
        if intno == 13:
            top = va >> self._va_bits_1
            return top == 0 or top == (1 << (64 - self._va_bits_1)) - 1
        return False

    def _on_syscall(self, uc: Uc, _data: Any) -> None:
        """The final SYSCALL of a CPL-3 snippet (Unicorn's SYSCALL only calls this hook)."""
        if self._rr(X.UC_X86_REG_RIP) in self._user_ends:
            self._ended = True
            uc.emu_stop()

    def _fault_state(self, patch: bool) -> tuple[int, int]:
        """(error code, CR2) of the exception being handled; clear "exception in flight" if patch.

        The error code exists only in the CPU state blob (ORACLE-NOTES x86-64); its offset and the
        offset of QEMU's ``old_exception`` were located by ``_calibrate``.  Patching restores the
        blob with ``old_exception = -1``, which is what delivering the exception would have done.
        """
        assert self._err_cell is not None and self._old_cell is not None
        _context_save(self._h, self._ctx_ptr)
        code = self._err_cell.value & 0xFFFF_FFFF
        if patch:
            self._old_cell.value = -1
            _context_restore(self._h, self._ctx_ptr)
        return code, self._rr(X.UC_X86_REG_CR2)

    # -- hooks ---------------------------------------------------------------------------------
    def _on_intr(self, uc: Uc, intno: int, _data: Any) -> None:
        mode = self._mode
        if mode == _M_BATCH:
            self._on_batch_intr(uc, intno)
            return
        if mode == _M_CALIB:
            _context_save(self._h, self._ctx_ptr)
            self._calib_blob = ctypes.string_at(self._ctx_ptr, self._ctx.size)
            self._run.faults.append((intno, 0, 0, self._rr(X.UC_X86_REG_RIP)))
            uc.emu_stop()
            return
        rip = self._rr(X.UC_X86_REG_RIP)
        if self._err_cell is None:
            self._run.faults.append((intno, 0, self._rr(X.UC_X86_REG_CR2), rip))
        else:
            code, cr2 = self._fault_state(patch=False)
            if mode == _M_PROBE_FETCH and rip == self._expect_va and self._decode_fault(intno, cr2, rip):
                self._run.fetched = True
            else:
                self._run.faults.append((intno, code, cr2, rip))
        uc.emu_stop()

    def _on_batch_intr(self, uc: Uc, intno: int) -> None:
        code, cr2 = self._fault_state(patch=True)
        rip = self._rr(X.UC_X86_REG_RIP)
        idx = self._rr(X.UC_X86_REG_RCX)
        act = self._batch_actions.get(rip)
        rec = self._batch
        if act == _ACT_FINAL_RBX or act == _ACT_FINAL_RBX_STORE:
            rec.final[idx] = (intno, code, cr2)
            self._rw(X.UC_X86_REG_RBX, self._dummy)
        elif act == _ACT_PROV_R8:
            rec.provisional[idx] = (intno, code, cr2)
            self._rw(X.UC_X86_REG_R8, self._dummy)
        elif act == _ACT_OBS_R8:
            rec.observe_failed.add(idx)
            self._rw(X.UC_X86_REG_R8, self._dummy)
        elif self._batch_after and rip < self._slot_base and rip == self._rr(X.UC_X86_REG_RBX):
            # A fetch at va faulted -- or decoding at va crossed into a page that faulted.
            if self._decode_fault(intno, cr2, rip):
                self._rw(X.UC_X86_REG_RIP, self._batch_after)
            else:
                rec.final[idx] = (intno, code, cr2)
                self._rw(X.UC_X86_REG_RIP, self._batch_next)
        else:
            self._batch_stop = (
                f"{_vector_name(intno)} (error code {code:#x}, CR2 {cr2:#x}) in the machine's own code"
            )
            uc.emu_stop()

    def _on_code(self, uc: Uc, address: int, size: int, _data: Any) -> None:
        """An instruction below the slot is about to run: only fetch targets get here."""
        mode = self._mode
        if mode == _M_BATCH and self._batch_after:
            if address != self._rr(X.UC_X86_REG_RBX):
                self._hook_error = f"code hook at {address:#x}, not at the fetch target"
                uc.emu_stop()
                return
            self._rw(X.UC_X86_REG_RIP, self._batch_after)
        elif mode == _M_PROBE_FETCH and address == self._expect_va:
            self._run.fetched = True
            uc.emu_stop()
        elif mode != _M_RUN:
            self._hook_error = f"guest code reached {address:#x} outside the machine's slot"
            uc.emu_stop()

    # -- start-up: locate the blob fields, then prove the #PF path -----------------------------
    def _calibrate(self) -> None:
        """Find the error-code and exception-in-flight fields of the CPU state blob at run time.

        ``mov ds, ax`` with a selector beyond the GDT limit (0) raises #GP with that selector as
        error code (SDM vol. 3 §6.13 / "Interrupt 13"); with two different selectors, exactly one
        32-bit field must hold the selector after and not before.  QEMU's ``old_exception`` is the
        field that goes from -1 to 13 in both runs (ORACLE-NOTES: locate at run time).
        """
        err_sets, old_sets = [], []
        self._mode = _M_CALIB
        try:
            for marker in _MARKERS:
                begin, done = self._start("calib", False, {X.UC_X86_REG_RAX: marker})
                before = bytes(self._uc.context_save())
                self._run = _Run()
                self._calib_blob = b""
                reason = self._emu(begin, done, self.timeout_us)
                if not self._run.faults or self._run.faults[0][0] != 13:
                    raise EmulatorError(
                        f"x86-64 start-up: the #GP marker did not raise #GP (faults {self._run.faults}, "
                        f"{reason})"
                    )
                n = min(len(before), len(self._calib_blob)) // 4
                b = np.frombuffer(before, dtype="<i4", count=n)
                a = np.frombuffer(self._calib_blob, dtype="<i4", count=n)
                err_sets.append(set(np.nonzero((a == marker) & (b != marker))[0].tolist()))
                old_sets.append(set(np.nonzero((b == -1) & (a == 13))[0].tolist()))
        finally:
            self._mode = _M_IDLE
        err = set.intersection(*err_sets)
        old = set.intersection(*old_sets)
        if len(err) != 1 or len(old) != 1:
            raise EmulatorError(
                "x86-64 start-up: cannot locate the exception error code / exception-in-flight "
                f"fields in the CPU state blob (candidates {sorted(err)} / {sorted(old)})"
            )
        base = self._ctx_ptr.value
        assert base is not None
        self._err_cell = ctypes.c_int32.from_address(base + 4 * err.pop())
        self._old_cell = ctypes.c_int32.from_address(base + 4 * old.pop())

    def _self_check(self) -> None:
        """Prove on the machine's own pages that #PF, its error code and the trap fix work."""
        hole, ro = self._va(_PG_HOLE), self._va(_PG_RO)
        vas = np.array([hole, hole + 8, hole + 16, ro], dtype=np.uint64)
        raw = RawProbes(np.zeros(4, dtype=np.uint8), np.zeros(4, dtype=np.uint64), np.zeros(4, dtype=np.uint32),
                        "vmem", _page_fault)
        errors: dict[int, ProbeError] = {}
        self._probe_many_guest(vas, "read", False, raw, errors, None)
        got = raw.results(errors)
        want: list[ProbeResult] = [Fault("page-fault", None, 0, _VEC_PF)] * 3
        want.append(Translation(self._frames[_PG_RO], "tag"))
        checks = [(got, want)]
        checks.append(([self._probe_guest(ro, "write", False)], [Fault("page-fault", None, PF_P | PF_W, 14)]))
        checks.append(
            ([self._probe_guest(hole, "write", True)], [Fault("page-fault", None, PF_W | PF_U, 14)])
        )
        for got_, want_ in checks:
            if got_ != want_:
                raise EmulatorError(f"x86-64 start-up self-check failed: got {got_}, expected {want_}")

    # -- observation of the physical address ---------------------------------------------------
    def _vmem(self, vas: Sequence[int], kind: str, user: bool) -> list[int | None]:
        """``uc_vmem_translate`` at the probe's privilege; CR2 saved and restored around it.

        Only called after the guest access of the same kind succeeded, so the A/D bits it sets
        are already set (ORACLE-NOTES "Common": it sets A/D bits and CR2).
        """
        prot = {"read": UC_PROT_READ, "write": UC_PROT_WRITE, "fetch": UC_PROT_EXEC}[kind]
        if user:  # uc_vmem_translate uses the current CPL's MMU index: get to CPL 3 first
            begin, done = self._start("p_user", True, {})
            if self._emu(begin, done, self.timeout_us) is not None:
                return [None] * len(vas)
        else:
            _context_restore(self._h, self._base.context)
        cr2 = self._rr(X.UC_X86_REG_CR2)
        out: list[int | None] = []
        pa = ctypes.c_uint64()
        for va in vas:
            status = _vmem_translate(self._h, va, prot, ctypes.byref(pa))
            out.append(pa.value if status == 0 else None)
        self._rw(X.UC_X86_REG_CR2, cr2)
        return out

    @staticmethod
    def _no_vmem(kind: str, va: int) -> ProbeError:
        return ProbeError(f"the {kind} at {va:#x} succeeded but uc_vmem_translate found no translation")

    def _observed(self, va: int, word: int, kind: str, user: bool) -> ProbeResult:
        pa = self.ram.tagged_pa(word, va)
        if pa is not None:
            return Translation(pa, "tag")
        vpa = self._vmem([va], kind, user)[0]
        if vpa is None:
            return self._no_vmem(kind, va)
        return Translation(vpa, "vmem")

    # -- single-address probe ------------------------------------------------------------------
    def _check_probe_args(self, access: Access) -> None:
        if self._root is None:
            raise ConfigError("X86_64Machine: call set_root(root_pa) before probing")
        if not isinstance(access, Access) or access.kind not in ("read", "write", "fetch"):
            raise ConfigError(f"unknown access {access!r}")

    def _reserved_error(self, va: int) -> ProbeError:
        return ProbeError(
            f"{va:#x} lies in the machine's own top-level slot {self.MACHINE_SLOT} "
            f"({self._slot_base:#x}..): it cannot be probed"
        )

    def _pf_result(self, vector: int, code: int, cr2: int, expect_cr2: int) -> ProbeResult:
        if vector != _VEC_PF:
            return ProbeError(
                f"{_vector_name(vector)} instead of a page fault (error code {code:#x}); "
                "e.g. #GP for a non-canonical address"
            )
        if cr2 >= self._slot_base > expect_cr2:
            return ProbeError(
                f"page fault on the machine's own slot (CR2 {cr2:#x}, error code {code:#x}): "
                "root entry 511 was changed after set_root()"
            )
        if cr2 != expect_cr2:
            return ProbeError(
                f"page fault with CR2 {cr2:#x}, expected {expect_cr2:#x} (error code {code:#x})"
            )
        return Fault("page-fault", None, code, _VEC_PF)

    def probe(self, va: int, access: Access = READ) -> ProbeResult:
        """Translate ``va`` by one guest access, one ``emu_start`` (the per-address baseline).

        read: 8-byte load at ``va & ~7``; write: that load, then a store of the loaded value
        (needs W, leaves memory unchanged); fetch: a jump to ``va`` stopped by a code hook before
        anything there runs.  ``Access(user=True)``: the same at CPL 3.  Returns ``Translation``
        (``observed_by`` "tag" or "vmem"), ``Fault("page-fault", None, error code, 14)``
        (SDM vol. 3 §4.7) or ``ProbeError`` (another exception, a Unicorn error, a timeout).
        """
        self._check_probe_args(access)
        if isinstance(va, bool) or not isinstance(va, (int, np.integer)) or not 0 <= va <= _U64:
            raise AddressError(f"virtual address {va!r} is not a 64-bit unsigned integer")
        va = int(va)
        if va >= self._slot_base:
            return self._reserved_error(va)
        return self._probe_guest(va, access.kind, access.user)

    def _probe_guest(self, va: int, kind: str, user: bool) -> ProbeResult:
        try:
            return self._probe_guest_inner(va, kind, user)
        finally:
            self._mode = _M_IDLE

    def _single(self, label: str, user: bool, regs: dict[int, int], mode: int) -> tuple[str | None, _Run]:
        begin, done = self._start(label, user, regs)
        self._run = run = _Run()
        self._mode = mode
        reason = self._emu(begin, done, self.timeout_us)
        self._mode = _M_IDLE
        if run.faults or run.fetched:
            reason = None  # stopped on purpose by a hook
        return reason, run

    def _probe_guest_inner(self, va: int, kind: str, user: bool) -> ProbeResult:
        va_al = va & ~7
        R = X
        code = self._ucode if user else self._kcode
        if kind == "read":
            reason, run = self._single("p_read", user, {R.UC_X86_REG_RBX: va_al}, _M_PROBE)
            if self._unmapped_at(reason, "read", code + GUEST_LABELS["p_read.access"]):
                return self._beyond_ram(va, "read", user, reason)
        elif kind == "write":
            regs = {R.UC_X86_REG_RBX: va_al, R.UC_X86_REG_R8: va_al}
            reason, run = self._single("p_write", user, regs, _M_PROBE)
            load_at = code + GUEST_LABELS["p_write.load"]
            load_unmapped = self._unmapped_at(reason, "read", load_at)
            if load_unmapped or (reason is None and run.faults and run.faults[0][3] == load_at):
                # The load faulted or reached no RAM: issue the store alone for the write's own
                # error code / translation.
                first = reason if load_unmapped else run.faults[0]
                reason, run2 = self._single("p_store", user, {R.UC_X86_REG_RBX: va_al}, _M_PROBE)
                if load_unmapped and self._unmapped_at(reason, "write", code + GUEST_LABELS["p_store.store"]):
                    return self._beyond_ram(va, "write", user, reason)
                if reason is None and not run2.faults:
                    return ProbeError(
                        f"the store to {va:#x} succeeded although the load faulted "
                        f"({first}); memory at {va_al:#x} may have been overwritten"
                    )
                run = run2
        else:
            self._expect_va = va
            reason, run = self._single("p_fetch", user, {R.UC_X86_REG_RBX: va}, _M_PROBE_FETCH)
            if self._unmapped_at(reason, "fetch", va):
                vpa = self._vmem([va], "fetch", user)[0]
                if vpa is None:
                    return ProbeError(f"{reason}; uc_vmem_translate found no translation")
                if not self.ram.contains(vpa & ~7, 8):
                    return Translation(vpa, "vmem")  # see _beyond_ram
                # va's own page is in RAM: decoding ran on into a next page with no RAM behind
                # it (an instruction straddling the page end), so the fetch at va succeeded.
                reason, run = None, _Run(fetched=True)
            if reason is None and not run.faults and not run.fetched:
                reason = "the fetch neither faulted nor reached the target"
        if reason is not None:
            return ProbeError(reason)
        if run.faults:
            vector, code_, cr2, _rip = run.faults[0]
            return self._pf_result(vector, code_, cr2, va if kind == "fetch" else va_al)
        if kind == "fetch":
            # Observe the physical address: load the word at va & ~7 (same privilege).
            reason, run = self._single("p_read", user, {R.UC_X86_REG_RBX: va_al}, _M_PROBE)
            if reason is not None:
                return ProbeError(reason)
            if run.faults:
                return self._observed(va, 0, "fetch", user)  # not a tag: ask uc_vmem_translate
        word = self._rr(X.UC_X86_REG_RAX)
        return self._observed(va, word, kind, user)

    def _unmapped_at(self, reason: str | None, kind: str, rip: int) -> bool:
        """The last run stopped with Unicorn's ``UC_ERR_<kind>_UNMAPPED`` at ``rip``: the access
        there was translated, and the physical address it reached has no RAM behind it."""
        return reason is not None and _UNMAPPED.get(self._uc_errno) == kind and self._rr(X.UC_X86_REG_RIP) == rip

    def _beyond_ram(self, va: int, kind: str, user: bool, reason: str | None) -> ProbeResult:
        """The answer for a load or store that translated to a physical address outside RAM.

        The MMU's walk succeeded and the leaf maps a physical address where this machine has no
        memory (Unicorn then stops with UC_ERR_*_UNMAPPED instead of accessing it; its page walk
        itself reads zeros outside RAM, i.e. a not-present entry, so the error can only come from
        the access).  Hardware accesses non-existent memory without a page fault: the
        translation is the MMU's answer, observed by ``uc_vmem_translate`` (``observed_by="vmem"``).
        ``ProbeError(reason)`` if there is no translation or it lies in RAM after all.
        """
        vpa = self._vmem([va], kind, user)[0]
        if vpa is None or self.ram.contains(vpa & ~7, 8):
            return ProbeError(f"{reason}; uc_vmem_translate gives {'no translation' if vpa is None else hex(vpa)}")
        return Translation(vpa, "vmem")

    # -- batch probe ---------------------------------------------------------------------------
    def probe_many(self, vas: Sequence[int] | np.ndarray, access: Access = READ) -> list[ProbeResult]:
        """``[self.probe(va, access) for va in vas]``, computed by guest loops of up to CHUNK
        addresses per ``emu_start``: the loop loads each address from a table in guest RAM and
        stores the loaded word into a result table; a fault is recorded by the hook (error code
        from the state blob, CR2) and the loop resumes at the next address after the hook clears
        QEMU's exception-in-flight field (the #DF trap, ORACLE-NOTES x86-64).

        Built on :meth:`probe_many_raw`: each chunk's columns are turned into result objects
        while the next chunk is emulated (``raw.results()``).
        """
        objects: list[ProbeResult] = []
        self._probe_many(vas, access, objects)
        return objects

    def probe_many_raw(self, vas: Sequence[int] | np.ndarray, access: Access = READ
                       ) -> tuple[RawProbes, dict[int, ProbeError]]:
        """The batch probe's results as numpy columns (:class:`~emu.machines.base.RawProbes`:
        status, physical address -- from the tag word the load returned, or ``uc_vmem_translate``
        -- and the #PF error code) and ``{index: ProbeError}``, without a Python object per
        address.  ``raw.results(errors)`` is exactly :meth:`probe_many`'s list."""
        return self._probe_many(vas, access, None)

    def _probe_many(self, vas: Sequence[int] | np.ndarray, access: Access, objects: list[ProbeResult] | None
                    ) -> tuple[RawProbes, dict[int, ProbeError]]:
        self._check_probe_args(access)
        arr = _address_array(vas)
        n = len(arr)
        raw = RawProbes(np.zeros(n, dtype=np.uint8), np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.uint32),
                        "vmem", _page_fault)
        errors: dict[int, ProbeError] = {}
        if n == 0:
            return raw, errors
        reserved = arr >= np.uint64(self._slot_base)
        if not reserved.any():
            self._probe_many_guest(arr, access.kind, access.user, raw, errors, objects)
            return raw, errors
        keep = np.flatnonzero(~reserved)
        sub = RawProbes(raw.status[keep], raw.pa[keep], raw.code[keep], raw.observed_by, raw.fault_of)
        sub_errors: dict[int, ProbeError] = {}
        sub_objects: list[ProbeResult] | None = None if objects is None else []
        if len(keep):
            self._probe_many_guest(arr[keep], access.kind, access.user, sub, sub_errors, sub_objects)
        raw.status[keep], raw.pa[keep], raw.code[keep] = sub.status, sub.pa, sub.code
        for i in np.flatnonzero(reserved).tolist():
            raw.status[i] = RAW_ERROR
            errors[i] = self._reserved_error(int(arr[i]))
        keep_list = keep.tolist()
        errors.update((keep_list[i], e) for i, e in sub_errors.items())
        if objects is not None and sub_objects is not None:
            full: list[ProbeResult | None] = [None] * n
            for i, r in zip(keep_list, sub_objects, strict=True):
                full[i] = r
            for i in np.flatnonzero(reserved).tolist():
                full[i] = errors[i]
            objects[:] = cast("list[ProbeResult]", full)
        return raw, errors

    def _probe_many_guest(self, arr: np.ndarray, kind: str, user: bool, raw: RawProbes,
                          errors: dict[int, ProbeError], objects: list[ProbeResult] | None) -> None:
        """Emulate chunk after chunk into the columns of ``raw``; with ``objects``, turn one
        chunk into result objects while the next one runs.

        Building ~16k result objects costs about as much as emulating them and ``uc_emu_start``
        releases the GIL, so on two cores a driver thread runs the emulator (while it runs, only
        it touches the engine, and it releases the GIL only inside ``uc_emu_start``) and this
        thread decodes finished chunks.  What needs the engine after the run (re-probes after a
        timeout, ``uc_vmem_translate`` for words that are no tags) is done here at the end.
        """
        store = arr if kind == "fetch" else arr & np.uint64(~7 & _U64)
        payloads = [store[s : s + CHUNK].astype("<u8").tobytes() for s in range(0, len(arr), CHUNK)]
        gc_was_enabled = gc.isenabled()
        gc.disable()  # millions of small objects: the cyclic GC would triple the cost
        try:
            deferred: list[tuple[int, bool]] = []  # (index, True: re-probe / False: vmem)

            def chunk_done(k: int, item: _Raw) -> None:
                first = k * CHUNK
                self._decode(item, arr, kind, first, raw, errors, deferred)
                if objects is not None:
                    objects.extend(raw.results(errors, first, first + len(item.words) // 8))

            if len(payloads) == 1:
                chunk_done(0, self._drive_chunk(payloads[0], kind, user))
            else:
                self._pipeline(payloads, kind, user, chunk_done)
            resolved = self._resolve(deferred, arr, kind, user, raw, errors)
            if objects is not None:
                for g, res in resolved.items():
                    objects[g] = res  # (what raw.put() stored: raw.results() gives an equal object)
        finally:
            self._mode = _M_IDLE
            if gc_was_enabled:
                gc.enable()

    def _pipeline(self, payloads: list[bytes], kind: str, user: bool, chunk_done: Callable[[int, _Raw], None]
                  ) -> None:
        results: queue.Queue[_Raw | BaseException] = queue.Queue(maxsize=4)
        cancel = threading.Event()

        def drive() -> None:
            try:
                for payload in payloads:
                    if cancel.is_set():
                        return
                    results.put(self._drive_chunk(payload, kind, user))
            except BaseException as exc:  # handed over to the caller's thread
                results.put(exc)

        worker = threading.Thread(target=drive, name="foliowalk-x86-batch", daemon=True)
        worker.start()
        try:
            for k in range(len(payloads)):
                item = results.get()
                if isinstance(item, BaseException):
                    raise item
                chunk_done(k, item)
        finally:
            cancel.set()
            while worker.is_alive():  # it finishes its current chunk; keep its put() from blocking
                try:
                    results.get(timeout=0.01)
                except queue.Empty:
                    pass
            worker.join()

    def _drive_chunk(self, payload: bytes, kind: str, user: bool) -> _Raw:
        """Run the guest loop over one chunk of addresses (restarting after an abnormal stop).

        Runs in the driver thread: no numpy, no GIL release outside ``uc_emu_start``.
        """
        n = len(payload) // 8
        buf = self.ram.buf
        buf[self._atab_pa : self._atab_pa + 8 * n] = payload
        buf[self._rtab_pa : self._rtab_pa + 8 * n] = self._zero_table[: 8 * n]
        label = {"read": "b_read", "write": "b_write", "fetch": "b_fetch"}[kind]
        code_base = self._ucode if user else self._kcode
        self._batch = rec = _Batch()
        self._batch_actions = self._actions_all
        if kind == "fetch":
            self._batch_after = code_base + GUEST_LABELS["b_fetch.after"]
            self._batch_next = code_base + GUEST_LABELS["b_fetch.next"]
        else:
            self._batch_after = self._batch_next = 0
        reprobe: list[int] = []
        start = 0
        while start < n:
            regs = {
                X.UC_X86_REG_RSI: self._va(_PG_TABLES),
                X.UC_X86_REG_RDI: self._va(_PG_TABLES + _TABLE_PAGES),
                X.UC_X86_REG_R10: start,
                X.UC_X86_REG_RDX: n,
            }
            begin, done = self._start(label, user, regs)
            self._mode = _M_BATCH
            self._batch_stop = None
            try:
                reason = self._emu(begin, done, self.timeout_us + (n - start) * _PER_ADDRESS_BUDGET_US)
            finally:
                self._mode = _M_IDLE
            if reason is None:
                break
            unmapped = self._batch_stop is None and self._uc_errno in _UNMAPPED
            reason = self._batch_stop or reason
            idx = self._rr(X.UC_X86_REG_RCX)
            rip = self._rr(X.UC_X86_REG_RIP)
            if reason.startswith("timeout"):
                if idx == n:
                    break  # it finished just as the watchdog fired
                # Slow is not hung: the per-address probe (its own time limit) decides this one.
                idx = idx if start <= idx < n else start
                reprobe.append(idx)
                start = idx + 1
                continue
            per_address = rip in self._actions_all or rip < self._slot_base  # an access / a fetch target
            if not (start <= idx < n and per_address):
                # The machine's own code failed (e.g. its slot was unmapped): no use going on.
                for i in range(start, n):
                    rec.abnormal.setdefault(i, f"batch run failed at RIP {rip:#x}: {reason}")
                break
            if unmapped:
                # The access (or fetch) translated to a physical address with no RAM behind it:
                # the per-address probe turns that into its translation (``_beyond_ram``).
                reprobe.append(idx)
            else:
                rec.abnormal.setdefault(idx, reason)
            start = idx + 1
        return _Raw(bytes(buf[self._rtab_pa : self._rtab_pa + 8 * n]), rec, reprobe)

    def _decode(self, item: _Raw, arr: np.ndarray, kind: str, offset: int, raw: RawProbes,
                errors: dict[int, ProbeError], deferred: list[tuple[int, bool]]) -> None:
        """One chunk into the columns: tagged words are translations; faults, errors and the
        indices that need the engine again (``deferred``, global indices) are sorted out."""
        words = np.frombuffer(item.words, dtype="<u8")
        n = len(words)
        vas = arr[offset : offset + n]
        tagged = (words & np.uint64(TAG_MASK)) == np.uint64(TAG)
        raw.pa[offset : offset + n] = (words & np.uint64(~TAG_MASK & _U64)) | (vas & np.uint64(7))
        raw.status[offset : offset + n] = RAW_TAG
        rec = item.rec
        if not (rec.final or rec.provisional or rec.observe_failed or rec.abnormal or item.reprobe) and bool(
            tagged.all()
        ):
            return
        done: set[int] = set()
        for i, reason in rec.abnormal.items():
            raw.put(offset + i, ProbeError(reason), errors)
            done.add(i)
        for i in item.reprobe:
            deferred.append((offset + i, True))
            done.add(i)
        if rec.final:
            # The common fault, a #PF at the probed address, straight into the columns.
            vl = vas.tolist()
            fetch = kind == "fetch"
            pf_rows: list[int] = []
            pf_codes: list[int] = []
            for i, (vector, code, cr2) in rec.final.items():
                if i not in done:
                    expect = vl[i] if fetch else vl[i] & ~7
                    if vector == _VEC_PF and cr2 == expect:  # (_pf_result()'s Fault)
                        pf_rows.append(offset + i)
                        pf_codes.append(code)
                    else:
                        raw.put(offset + i, self._pf_result(vector, code, cr2, expect), errors)
                    done.add(i)
            if pf_rows:
                raw.status[pf_rows] = RAW_FAULT
                raw.code[pf_rows] = pf_codes
        for i, load_fault in rec.provisional.items():
            if i not in done:
                va = int(vas[i])
                raw.put(offset + i, ProbeError(
                    f"the store to {va:#x} succeeded although the load faulted ({load_fault}); "
                    f"memory at {va & ~7:#x} may have been overwritten"
                ), errors)
                done.add(i)
        need_vmem = set(np.flatnonzero(~tagged).tolist()) | rec.observe_failed
        deferred.extend((offset + i, False) for i in sorted(need_vmem - done))

    def _resolve(self, deferred: list[tuple[int, bool]], arr: np.ndarray, kind: str, user: bool, raw: RawProbes,
                 errors: dict[int, ProbeError]) -> dict[int, ProbeResult]:
        """Finish the indices that need the engine: re-probes after a timeout, then vmem.
        Returns the results it stored, by index."""
        done: dict[int, ProbeResult] = {}
        vmem_idx = [g for g, reprobe in deferred if not reprobe]
        for g, reprobe in deferred:
            if reprobe:
                done[g] = self._probe_guest(int(arr[g]), kind, user)
                raw.put(g, done[g], errors)
        if vmem_idx:
            vas = [int(arr[g]) for g in vmem_idx]
            for g, va, vpa in zip(vmem_idx, vas, self._vmem(vas, kind, user), strict=True):
                done[g] = Translation(vpa, "vmem") if vpa is not None else self._no_vmem(kind, va)
                raw.put(g, done[g], errors)
        return done

    # -- arbitrary guest code ------------------------------------------------------------------
    def run_code(
        self, code: bytes, *, user: bool = False, regs: dict[str, int] | None = None
    ) -> dict[str, int] | Fault | ProbeError:
        """Run ``code`` (raw x86-64 bytes, at most 4 KiB - 1) on the machine's run page.

        It starts from the saved pre-fault state (at CPL 3 via SYSRETQ if ``user``), with
        ``regs`` ("rax", "rbx", ... "r15") loaded and RSP at the top of the machine's stack page,
        and ends when RIP reaches the end of ``code``.  Returns the general-purpose registers and
        CR2, or the first exception (``Fault`` for #PF, else ``ProbeError``), or ``ProbeError``
        for a timeout / Unicorn error.  For tests and for showing emulator deviations.
        """
        if self._root is None:
            raise ConfigError("X86_64Machine: call set_root(root_pa) before running code")
        if not 0 < len(code) < _PAGE:
            raise ConfigError(f"run_code takes 1..{_PAGE - 1} bytes of code, not {len(code)}")
        names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"] + [f"r{i}" for i in range(8, 16)]
        ids = {name: getattr(X, f"UC_X86_REG_{name.upper()}") for name in names}
        unknown = set(regs or {}) - set(ids)
        if unknown:
            raise ConfigError(f"unknown registers {sorted(unknown)}")
        run_pa = self._frames[_PG_RUN]
        self.ram.buf[run_pa : run_pa + _PAGE] = bytes(code) + b"\xf4" * (_PAGE - len(code))
        start = self._va(_PG_RUN)
        _context_restore(self._h, self._base.context)
        self.flush_tlb()
        self._uc.ctl_remove_cache(start, start + _PAGE)  # the page's code changed under QEMU
        self._rw(X.UC_X86_REG_RSP, self._va(_PG_STACK, _PAGE - 16))
        for name, value in (regs or {}).items():
            self._rw(ids[name], value & _U64)
        if user:
            self._rw(X.UC_X86_REG_RCX, start)
            self._rw(X.UC_X86_REG_R11, _USER_RFLAGS)
            begin = self._kcode + GUEST_LABELS["stub"]
        else:
            begin = start
        self._run = run = _Run()
        self._mode = _M_RUN
        try:
            end = start + len(code)
            reason = self._emu(begin, end, self.timeout_us, until=end)
        finally:
            self._mode = _M_IDLE
        if run.faults:
            vector, ecode, cr2, _rip = run.faults[0]
            if vector == _VEC_PF:
                return Fault("page-fault", None, ecode, _VEC_PF)
            return ProbeError(f"{_vector_name(vector)} (error code {ecode:#x}) at RIP {_rip:#x}")
        if reason is not None:
            return ProbeError(reason)
        result = {name: self._rr(rid) for name, rid in ids.items()}
        result["cr2"] = self._rr(X.UC_X86_REG_CR2)
        return result
