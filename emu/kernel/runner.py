"""Run the kernel harness image as guest code on the architecture's own emulated CPU.

One :class:`KernelHarness` per (build, paging configuration): a Unicorn CPU with the image
loaded at its link base, an input buffer, an output buffer and a stack.  ``eval(op, a, b)``
writes the records, calls ``fw_batch(op, in, out, n)`` with the architecture's calling
convention, and reads the results: one ``emu_start`` per chunk of up to :data:`CHUNK` records.

* x86-64 runs flat (no paging is needed by code that reads only its arguments and its own
  globals); the image is linked in the low 2 GiB, which ``-mcmodel=kernel`` code can address.
* arm64 runs at EL1 with the configuration's TCR_EL1 (v6.12 ``pte_pfn()`` and friends may read
  TCR_EL1.DS at run time: ``lpa2_is_enabled()``), SCR_EL3.RW set as the probe machine does.
* s390x runs in 64-bit addressing mode with DAT off, big-endian records.

A guest exception (a kernel ``BUG()``/``WARN()`` trap, a wild access) stops the batch and is
reported as :class:`HarnessRunError` naming the op and the record, never as a result.
"""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
from unicorn import (
    UC_ARCH_ARM64,
    UC_ARCH_S390X,
    UC_ARCH_X86,
    UC_HOOK_CODE,
    UC_HOOK_INTR,
    UC_MODE_64,
    UC_MODE_ARM,
    UC_MODE_BIG_ENDIAN,
    Uc,
    UcError,
)
from unicorn import arm64_const as A
from unicorn import s390x_const as S
from unicorn import x86_const as X

import archs
from archs.base import PagingConfig
from emu.errors import EmulatorError
from emu.kernel import uc_renewal

from .build import HarnessBuild
from .image import HarnessImage, load_image

CHUNK = 1 << 16  # records per emu_start
_IN = 0x10000000  # CHUNK * 16 bytes of (a, b) records
_OUT = 0x11000000  # CHUNK * 8 bytes of results
_STACK = 0x12000000  # 1 MiB below this is the stack
_RET = 0x13000000  # fw_batch returns here; emu_start stops at it
_PAGE = 0x1000
#: Ops that set the run-time state other ops read: replayed on a fresh CPU (KernelHarness._fresh_uc).
STATE_OPS = ("setup", "set_zero_page")
_S390_LOWCORE_SIZE = 0x2000  # struct lowcore (arch/s390/include/asm/lowcore.h)
_S390_MACHINE_FLAGS = 0x3C8  # lowcore.machine_flags
_S390_MACHINE_FLAG_NX = 1 << 15  # arch/s390/include/asm/setup.h MACHINE_FLAG_NX
# The first four integer arguments of each ABI (SysV x86-64, AAPCS64, s390x ELF ABI)
_ARGS = {
    "x86_64": (X.UC_X86_REG_RDI, X.UC_X86_REG_RSI, X.UC_X86_REG_RDX, X.UC_X86_REG_RCX),
    "arm64": (A.UC_ARM64_REG_X0, A.UC_ARM64_REG_X1, A.UC_ARM64_REG_X2, A.UC_ARM64_REG_X3),
    "s390x": (S.UC_S390X_REG_R2, S.UC_S390X_REG_R3, S.UC_S390X_REG_R4, S.UC_S390X_REG_R5),
}


class HarnessRunError(EmulatorError):
    """The harness code raised a guest exception or Unicorn failed while running it."""


def _round(n: int) -> int:
    return (n + _PAGE - 1) & ~(_PAGE - 1)


class KernelHarness:
    """The kernel's functions of one harness build, callable on numpy arrays of raw values."""

    def __init__(self, build: HarnessBuild, config: PagingConfig | str) -> None:
        self.build = build
        self.config = archs.get_config(config) if isinstance(config, str) else config
        if self.config.arch != build.arch:
            raise HarnessRunError(f"a {build.arch} harness cannot run configuration {self.config.key}")
        self.image: HarnessImage = load_image(build.image)
        self._endian = ">" if self.image.big_endian else "<"
        self._u64 = np.dtype(f"{self._endian}u8")
        self._exc: list[tuple[int, int]] = []
        self.ops = self.image.ops
        self._state: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # STATE_OPS as last evaluated
        self._starts = 0
        self._fresh_uc()
        # run-time state the kernel sets at boot (fw_setup): x86 5-level paging
        l5 = 1 if self.config.arch == "x86_64" and len(self.config.levels) == 5 else 0
        self.eval("setup", np.array([l5], dtype=np.uint64))

    # -- the CPU ----------------------------------------------------------------------------
    def _fresh_uc(self) -> None:
        """A new CPU with the image loaded and the run-time state (:data:`STATE_OPS`) set again.
        Unicorn 2.1.4 keeps ~300 bytes per emu_start() until the Uc is closed (measured: 60,000
        calls of a 3-instruction guest add 17 MiB; closing frees them), so a long campaign
        gets a fresh CPU every :data:`~emu.kernel.uc_renewal.RENEW_STARTS` calls instead of growing."""
        uc = self._new_uc()
        for seg in self.image.segments:
            uc.mem_write(seg.vaddr, seg.data)
        self.uc = uc
        for op, (a, b) in list(self._state.items()):
            self.eval(op, a, b)

    def _new_uc(self) -> Uc:
        arch = self.config.arch
        if arch == "x86_64":
            uc = Uc(UC_ARCH_X86, UC_MODE_64)
        elif arch == "arm64":
            uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        else:
            uc = Uc(UC_ARCH_S390X, UC_MODE_BIG_ENDIAN)
            # the kernel is compiled for CONFIG_MARCH_Z13 (s390 defconfig): a z13 runs it, the
            # default model lacks e.g. COMPARE IMMEDIATE AND BRANCH (z10)
            uc.ctl_set_cpu_model(S.UC_CPU_S390X_Z13)
        lo, hi = self.image.span
        base = lo & ~(_PAGE - 1)
        uc.mem_map(base, _round(hi - base))
        uc.mem_map(_IN, _round(CHUNK * 16))
        uc.mem_map(_OUT, _round(CHUNK * 8))
        uc.mem_map(_STACK - 0x100000, 0x100000)
        uc.mem_map(_RET, _PAGE)
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        # Unicorn 2.1.4's s390x raises a program exception when a *branch* lands on emu_start's
        # `until` (measured: `br %r14` to it -> exception 3; reached by falling through, it stops):
        # so a code hook on _RET stops every arch there and `until` lies beyond it.
        uc.hook_add(UC_HOOK_CODE, lambda uc, *_: uc.emu_stop(), begin=_RET, end=_RET)
        uc.mem_write(_RET, {"x86_64": b"\xf4", "arm64": b"\x1f\x20\x03\xd5", "s390x": b"\x07\x00"}[arch])
        if arch == "arm64":
            from emu.machines.arm64 import SCR_EL3_RW, SYSREGS, tcr_el1_value

            def wr(name: str, value: int) -> None:
                uc.cpr_write(*SYSREGS[name], value)  # type: ignore[attr-defined]

            scr = uc.cpr_read(*SYSREGS["SCR_EL3"])  # type: ignore[attr-defined]
            wr("SCR_EL3", scr | SCR_EL3_RW | 1)
            wr("TCR_EL1", tcr_el1_value(1 << self.config.page_shift, self.config.va_bits))
        elif arch == "s390x":
            # PSW: EA|BA (64-bit addressing), DAT off
            uc.reg_write(S.UC_S390X_REG_PSWM, 0x0000000180000000)
            # The lowcore at 0 (get_lowcore(), unrelocated): MACHINE_HAS_NX reads machine_flags
            # (pfn_pte()'s mk_pte_phys(), set_pmd_at()); boot sets MACHINE_FLAG_NX on machines
            # with facility 130 (arch/s390/kernel/early.c detect_machine_facilities(), v6.12),
            # z14 and later, the machine foliowalk's s390x model assumes (machine_has_nx=True).
            uc.mem_map(0, _S390_LOWCORE_SIZE)
            uc.mem_write(_S390_MACHINE_FLAGS, _S390_MACHINE_FLAG_NX.to_bytes(8, "big"))
        return uc

    def _on_intr(self, uc: Uc, intno: int, _user: Any) -> None:
        pc = {"x86_64": X.UC_X86_REG_RIP, "arm64": A.UC_ARM64_REG_PC, "s390x": S.UC_S390X_REG_PC}[self.config.arch]
        self._exc.append((intno, uc.reg_read(pc)))
        uc.emu_stop()

    def _call(self, fn: int, args: tuple[int, ...]) -> int:
        uc, arch = self.uc, self.config.arch
        if arch == "x86_64":
            for reg, v in zip(_ARGS[arch], args, strict=False):
                uc.reg_write(reg, v)
            sp = _STACK - 16
            uc.mem_write(sp, _RET.to_bytes(8, "little"))
            uc.reg_write(X.UC_X86_REG_RSP, sp)
            ret = X.UC_X86_REG_RAX
        elif arch == "arm64":
            for reg, v in zip(_ARGS[arch], args, strict=False):
                uc.reg_write(reg, v)
            uc.reg_write(A.UC_ARM64_REG_X30, _RET)
            uc.reg_write(A.UC_ARM64_REG_SP, _STACK - 16)
            ret = A.UC_ARM64_REG_X0
        else:
            for reg, v in zip(_ARGS[arch], args, strict=False):
                uc.reg_write(reg, v)
            uc.reg_write(S.UC_S390X_REG_R14, _RET)
            uc.reg_write(S.UC_S390X_REG_R15, _STACK - 4096)  # the callee's 160-byte save area above
            ret = S.UC_S390X_REG_R2
        self._exc.clear()
        self._starts += 1
        try:
            uc.emu_start(fn, _RET + 0x100)
        except UcError as e:
            raise HarnessRunError(f"the {arch} harness failed: {e}") from None
        if self._exc:
            intno, pc = self._exc[0]
            raise HarnessRunError(f"the {arch} harness raised guest exception {intno} at pc {pc:#x}")
        return int(uc.reg_read(ret))

    # -- what callers use ---------------------------------------------------------------------
    def eval(self, op: str, a: np.ndarray | list[int], b: np.ndarray | list[int] | None = None) -> np.ndarray:
        """``out[i] = <kernel expression of op>(a[i], b[i])`` for every i, as uint64."""
        num = self.image.op(op)
        a = np.asarray(a, dtype=np.uint64)
        b = np.zeros_like(a) if b is None else np.asarray(b, dtype=np.uint64)
        if op in STATE_OPS:
            self._state[op] = (a.copy(), b.copy())
        elif self._starts >= uc_renewal.RENEW_STARTS:
            old, self._starts = self.uc, 0
            self._fresh_uc()
            del old
            gc.collect()  # the Uc and its hook callbacks hold each other: freed by the cycle collector
        out = np.empty(len(a), dtype=np.uint64)
        rec = np.empty((min(CHUNK, len(a)), 2), dtype=self._u64)
        for start in range(0, len(a), CHUNK):
            n = min(CHUNK, len(a) - start)
            rec[:n, 0] = a[start:start + n]
            rec[:n, 1] = b[start:start + n]
            self.uc.mem_write(_IN, rec[:n].tobytes())
            got = self._call(self.image.symbols["fw_batch"], (num, _IN, _OUT, n))
            if got != n:
                raise HarnessRunError(f"fw_batch({op}) returned {got:#x}, not {n}")
            out[start:start + n] = np.frombuffer(self.uc.mem_read(_OUT, 8 * n), dtype=self._u64)
        return out

    def constants(self) -> dict[str, int]:
        """Every constant the harness exports, as the kernel computes it for this build."""
        names = self.image.const_names
        n = self._call(self.image.symbols["fw_consts"], (_OUT, len(names)))
        vals = np.frombuffer(self.uc.mem_read(_OUT, 8 * n), dtype=self._u64)
        return {name: int(v) for name, v in zip(names, vals, strict=False)}

    def close(self) -> None:
        del self.uc
        gc.collect()  # the Uc and its hook callbacks hold each other (see _fresh_uc)

    def __enter__(self) -> KernelHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
