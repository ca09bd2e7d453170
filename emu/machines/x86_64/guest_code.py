"""x86-64 architecture constants the machine uses (Intel SDM vol. 3: entry bits, #PF error code,
CR0/CR4/EFER), the layout of the machine's own slot, and the hand-assembled probe code (the
tests disassemble it with capstone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# -- architecture constants (Intel SDM vol. 3) ---------------------------------------------------
# Paging-structure entry bits, SDM vol. 3 §4.5, Tables 4-14 .. 4-20.
ENT_P = 1 << 0  # present
ENT_RW = 1 << 1  # read/write
ENT_US = 1 << 2  # user/supervisor
ENT_A = 1 << 5  # accessed
ENT_D = 1 << 6  # dirty (leaves)
ENT_XD = 1 << 63  # execute-disable (with EFER.NXE)
ENT_ADDR = 0x000F_FFFF_FFFF_F000  # bits 51:12: physical address of the next table / 4K frame

# Page-fault error code, SDM vol. 3 §4.7, Figure 4-12.
PF_P = 1 << 0  # 0: not-present page; 1: protection violation
PF_W = 1 << 1  # the access was a write
PF_U = 1 << 2  # the access was a user-mode access (CPL 3)
PF_RSVD = 1 << 3  # a reserved bit was set in some paging-structure entry
PF_ID = 1 << 4  # the access was an instruction fetch
PF_PK = 1 << 5  # protection-key violation

VEC_PF = 14
VECTOR_NAMES = {
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
CR0 = 0x8001_0011  # PG | WP | NE | ET | PE
CR0_WP = 1 << 16  # supervisor writes honour R/W (SDM vol. 3A §2.5, §4.6.1)
CR4_PAE = 1 << 5
CR4_SMEP = 1 << 20  # supervisor-mode execution prevention (SDM vol. 3A §2.5, §4.6.1)
CR4_SMAP = 1 << 21  # supervisor-mode access prevention (SDM vol. 3A §2.5, §4.6.1)
CR4_PKE = 1 << 22  # protection keys for user-mode pages (SDM vol. 3A §2.5, §4.6.2)
EFLAGS_AC = 1 << 18  # alignment check / access control: lifts SMAP (SDM vol. 3A §4.6.1)
CR4_LA57 = 1 << 12
MSR_EFER = 0xC000_0080
MSR_STAR = 0xC000_0081
_EFER_SCE = 1 << 0  # SYSCALL/SYSRET enable (needed for the SYSRETQ that enters CPL 3)
_EFER_LME = 1 << 8
_EFER_LMA = 1 << 10
EFER_NXE = 1 << 11
EFER = _EFER_SCE | _EFER_LME | _EFER_LMA | EFER_NXE
# STAR[63:48] = 0x10: SYSRETQ loads CS = 0x10+16 | 3 = 0x23 and SS = 0x10+8 | 3 = 0x1b.
STAR = (0x10 << 48) | (0x08 << 32)
USER_RFLAGS = 0x2  # R11 for SYSRETQ: reserved bit 1 only (IF clear: nothing can interrupt)
# #GP markers: selectors beyond the (zero) GDT limit, error code = selector (SDM vol. 3 §6.13).
MARKERS = (0x5A5C, 0x3A34)

PAGE_4K = 4096
U64_MASK = (1 << 64) - 1

# -- the machine's slot: its pages (4 KiB each, in the first 2 MiB of the slot) ------------------
PG_KCODE = 0  # supervisor code (read-only, executable)
PG_UCODE = 1  # user code (read-only, executable, U/S = 1)
PG_DUMMY = 2  # a harmless readable/writable word that faulting accesses are redirected to
PG_RUN = 3  # code of run_code() (user, writable, executable)
PG_STACK = 4  # stack of run_code()
PG_HOLE = 5  # never present: the start-up self-check faults on it
PG_RO = 6  # read-only, tagged: the start-up self-check writes to it
PG_TABLES = 16  # batch address table, then result table
CHUNK = 16384  # addresses per batch run
TABLE_PAGES = CHUNK * 8 // PAGE_4K
PER_ADDRESS_BUDGET_US = 200  # batch chunk time limit: timeout_us + n * this


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

    def batch_loop(self, name: str, at: int, body: Callable[[], None], *, resume_label: bool = False) -> None:
        """The batch loop ``name`` at offset ``at`` over indices [r10, rdx): rbx = the address
        (rsi: address table), ``body`` leaves the observed word in rax, which goes to the result
        table (rdi); with ``resume_label``, ``<name>.next`` marks where a fault resumes."""
        self.at(at)
        self.label(name)
        self.emit(_I["mov rcx,r10"])
        self.label(f"{name}.loop")
        self.emit(_I["mov rbx,[rsi+rcx*8]"])
        body()
        self.emit(_I["mov [rdi+rcx*8],rax"])
        if resume_label:
            self.label(f"{name}.next")
        self.emit(_I["inc rcx"])
        self.emit(_I["cmp rcx,rdx"])
        self.jb(f"{name}.loop")
        self.leave(name)

    def leave(self, name: str) -> None:
        """End snippet ``name`` at label ``name.end``: HLT at CPL 0, SYSCALL at CPL 3.

        Runs do not end at an ``until`` address: after every run Unicorn invalidates the TBs
        around ``until - 1`` (including every zero-size "exit" TB whose ``pc - 1`` lies there),
        and regenerating a TB scans the whole, dynamically grown softmmu TLB
        (``tlb_reset_dirty_by_vaddr`` in ``tb_gen_code``): measured 4 µs -> 17 µs per probe
        after large batches.  HLT at CPL 0 ends ``uc_emu_start`` by itself (EXCP_HLT); at
        CPL 3 HLT would be #GP, and Unicorn's SYSCALL is a no-op that calls ``UC_HOOK_INSN``
        hooks, so the machine's syscall hook stops the run.  ``until`` is non-canonical
        (``NEVER``): never reached, and its invalidation finds no page (#GP, ignored).
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

    def read() -> None:
        c.label("b_read.access")
        c.emit(_I["mov rax,[rbx]"])

    def write() -> None:
        c.emit(_I["mov r8,rbx"])
        c.label("b_write.load")
        c.emit(_I["mov rax,[r8]"])
        c.label("b_write.store")
        c.emit(_I["mov [rbx],rax"])

    def fetch() -> None:
        c.emit(_I["mov r8,rbx"])
        c.emit(_I["and r8,-8"])
        c.label("b_fetch.jump")
        c.emit(_I["jmp rbx"])
        c.label("b_fetch.after")  # the code hook resumes here: observe the word at va & ~7
        c.emit(_I["mov rax,[r8]"])

    c.batch_loop("b_read", 0x100, read)
    c.batch_loop("b_write", 0x140, write)
    c.batch_loop("b_fetch", 0x180, fetch, resume_label=True)  # a fetch fault resumes at .next
    c.at(PAGE_4K)  # HLT padding
    return c


KCODE = _build_code(user=False)
UCODE = _build_code(user=True)
GUEST_CODE = bytes(KCODE.buf)  # the kernel copy, exported for the tests' disassembly check
GUEST_USER_CODE = bytes(UCODE.buf)
GUEST_LABELS = dict(KCODE.labels)  # the same on both pages
assert GUEST_LABELS == UCODE.labels
