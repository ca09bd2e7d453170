"""MMU oracles side by side (issue 17): start-up, batch throughput and memory of Unicorn 2.1.4,
QEMU 7.2 system emulation and Bochs 2.7 (x86-64 4-level only) on the same hand-built x86-64
tables, and of Unicorn and QEMU on arm64 (4KB, 48-bit VA) and on s390x (a segment-table ASCE, 4K
pages).

    python -m bench.oracle_rate [--levels 4|5] [--n 65536] [--arch x86_64|arm64|s390x] [--json]

Per emulator: the machine's start-up on fresh 3 GiB guest RAM (the default scenario's size);
``probe_many_raw`` rate over ``n`` distinct 4K pages that translate (every load returns a tag
word) and over ``n`` that fault (#PF at the PTE); the resident memory of the emulator (QEMU, Bochs:
its process's VmRSS; Unicorn: the growth of this process's).  Bochs's first batch also carries the
tables and tag runs to its copy of RAM (``first_batch_s``).  Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Any

import numpy as np

P, RW, A = 1, 2, 0x20


def _rss_kib(pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run(emulator: str, levels: int = 4, n: int = 65536) -> dict[str, Any]:
    from emu.machines.ram import FrameAllocator, PhysicalMemory

    ram = PhysicalMemory(3 << 30)
    alloc = FrameAllocator(ram, reserved=[(0, 0x10000)])
    before = _rss_kib()
    t0 = time.perf_counter()
    if emulator == "qemu":
        from emu.machines.qemu.x86_64 import QemuX86_64Machine

        machine: Any = QemuX86_64Machine(ram, alloc, levels=levels)
    elif emulator == "bochs":
        from emu.machines.bochs.x86_64 import BochsX86_64Machine

        machine = BochsX86_64Machine(ram, alloc, levels=levels)
    else:
        from emu.machines.x86_64 import X86_64Machine

        machine = X86_64Machine(ram, alloc, levels=levels)
    startup = time.perf_counter() - t0
    try:
        root = alloc.alloc(4096)
        ram.write(root, bytes(4096))
        upper = root
        for _ in range(levels - 2):  # one chain down to a page directory at VA 0
            nxt = alloc.alloc(4096)
            ram.write(nxt, bytes(4096))
            ram.write_u64(upper, nxt | P | RW | A)
            upper = nxt
        frames = alloc.alloc(n * 4096, 4096)
        ram.tag(frames, n * 4096)
        tables = alloc.alloc(n * 8, 4096)
        ram.write(tables, bytes(n * 8))
        for k in range(n // 512):  # PD entries -> page tables; PTE k maps frame k
            ram.write_u64(upper + 8 * k, (tables + k * 4096) | P | RW | A)
        ptes = (np.uint64(frames) + np.arange(n, dtype=np.uint64) * np.uint64(4096)) | np.uint64(P | RW | A)
        ram.buf[tables : tables + n * 8] = ptes.astype("<u8").tobytes()
        machine.set_root(root)
        vas = np.arange(n, dtype=np.uint64) * np.uint64(4096) + np.uint64(8)
        out: dict[str, Any] = {"emulator": emulator, "levels": levels, "n": n, "startup_s": round(startup, 3)}
        for label, addrs in (("translate", vas), ("fault", vas + np.uint64(1 << 30))):
            t = time.perf_counter()
            machine.probe_many_raw(addrs[:1024])  # warm (Bochs: the RAM's transfer)
            if label == "translate":
                out["first_batch_s"] = round(time.perf_counter() - t, 3)
            t = time.perf_counter()
            raw, errors = machine.probe_many_raw(addrs)
            out[f"{label}_per_s"] = round(n / (time.perf_counter() - t))
            assert not errors
        proc = {"qemu": "_qemu", "bochs": "_bochs"}.get(emulator)
        rss = _rss_kib(str(getattr(machine, proc).proc.pid)) if proc else _rss_kib() - before
        out["rss_mib"] = round(rss / 1024, 1)
        out["max_rss_self_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        return out
    finally:
        machine.close()
        ram.close()


def run_arm64(emulator: str, n: int = 65536) -> dict[str, Any]:
    """The arm64 figures: ``n`` 4KB pages behind one level-2 chain (AT S1E1R per address)."""
    from emu.machines.ram import FrameAllocator, PhysicalMemory

    ram = PhysicalMemory(3 << 30)
    alloc = FrameAllocator(ram)
    before = _rss_kib()
    t0 = time.perf_counter()
    if emulator == "qemu":
        from emu.machines.qemu.arm64 import QemuArm64Machine

        machine: Any = QemuArm64Machine(ram, alloc)
    else:
        from emu.machines.arm64 import Arm64Machine

        machine = Arm64Machine(ram, alloc)
    startup = time.perf_counter() - t0
    try:
        l0, l1, l2 = (alloc.alloc(4096) for _ in range(3))
        for t in (l0, l1, l2):
            ram.write(t, bytes(4096))
        ram.write_u64(l0, l1 | 3)
        ram.write_u64(l1, l2 | 3)
        frames = alloc.alloc(n * 4096, 4096)
        tables = alloc.alloc(n * 8, 4096)
        for k in range(n // 512):
            ram.write_u64(l2 + 8 * k, (tables + k * 4096) | 3)
        ptes = (np.uint64(frames) + np.arange(n, dtype=np.uint64) * np.uint64(4096)) | np.uint64(3 | 1 << 10)
        ram.buf[tables : tables + n * 8] = ptes.astype("<u8").tobytes()
        machine.set_roots(l0, None)
        vas = np.arange(n, dtype=np.uint64) * np.uint64(4096) + np.uint64(8)
        out: dict[str, Any] = {"emulator": emulator, "arch": "arm64", "n": n, "startup_s": round(startup, 3)}
        for label, addrs in (("translate", vas), ("fault", vas + np.uint64(1 << 30))):
            machine.probe_many_raw(addrs[:1024])
            t = time.perf_counter()
            machine.probe_many_raw(addrs)
            out[f"{label}_per_s"] = round(n / (time.perf_counter() - t))
        rss = _rss_kib(str(machine._qemu.proc.pid)) if emulator == "qemu" else _rss_kib() - before
        out["rss_mib"] = round(rss / 1024, 1)
        return out
    finally:
        machine.close()
        ram.close()


def run_s390x(emulator: str, n: int = 65536) -> dict[str, Any]:
    """The s390x figures: ``n`` 4K pages under a segment-table ASCE (PoP SA22-7832 ch. 3: ASCE
    DT = 00, TL = 3; segment entries designate 2 KB page tables of 256 entries); LRAG then LG per
    address; the faults are segment-translation exceptions (invalid segment entries)."""
    from emu.machines.ram import FrameAllocator, PhysicalMemory

    ram = PhysicalMemory(3 << 30, big_endian=True)
    alloc = FrameAllocator(ram, reserved=[(0, 0x2000)])
    before = _rss_kib()
    t0 = time.perf_counter()
    if emulator == "qemu":
        from emu.machines.qemu.s390x import QemuS390xMachine

        machine: Any = QemuS390xMachine(ram, alloc)
    else:
        from emu.machines.s390x import S390xMachine

        machine = S390xMachine(ram, alloc)
    startup = time.perf_counter() - t0
    try:
        st = alloc.alloc(0x4000, 0x4000)
        ram.write(st, np.full(2048, 0x20, dtype=">u8").tobytes())  # I bit (58) in every entry
        frames = alloc.alloc(n * 4096, 4096)
        ram.tag(frames, n * 4096)
        tables = alloc.alloc(n * 8, 4096)
        for k in range(n // 256):
            ram.write_u64(st + 8 * k, tables + k * 2048)
        ptes = np.uint64(frames) + np.arange(n, dtype=np.uint64) * np.uint64(4096)
        ram.buf[tables : tables + n * 8] = ptes.astype(">u8").tobytes()
        machine.set_asce(st | 3)
        vas = np.arange(n, dtype=np.uint64) * np.uint64(4096) + np.uint64(8)
        out: dict[str, Any] = {"emulator": emulator, "arch": "s390x", "n": n, "startup_s": round(startup, 3)}
        for label, addrs in (("translate", vas), ("fault", vas + np.uint64(1 << 30))):
            machine.probe_many_raw(addrs[:1024])
            t = time.perf_counter()
            machine.probe_many_raw(addrs)
            out[f"{label}_per_s"] = round(n / (time.perf_counter() - t))
        rss = _rss_kib(str(machine._qemu.proc.pid)) if emulator == "qemu" else _rss_kib() - before
        out["rss_mib"] = round(rss / 1024, 1)
        return out
    finally:
        if emulator == "qemu":
            machine.close()
        ram.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.oracle_rate")
    ap.add_argument("--levels", type=int, default=4, choices=(4, 5))
    ap.add_argument("--n", type=int, default=65536)
    ap.add_argument("--arch", default="x86_64", choices=("x86_64", "arm64", "s390x"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.arch == "arm64":
        rows = [run_arm64(e, args.n) for e in ("unicorn", "qemu")]
    elif args.arch == "s390x":
        rows = [run_s390x(e, args.n) for e in ("unicorn", "qemu")]
    else:  # Bochs 2.7 has no 5-level paging
        rows = [run(e, args.levels, args.n) for e in ("unicorn", "qemu", "bochs")[: 3 if args.levels == 4 else 2]]
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    print(f"{'emulator':<9} {'start-up':>9} {'translate/s':>12} {'fault/s':>10} {'emulator RSS':>13}")
    for r in rows:
        print(f"{r['emulator']:<9} {r['startup_s']:>8.3f}s {r['translate_per_s']:>12,} {r['fault_per_s']:>10,} "
              f"{r['rss_mib']:>10.1f} MiB")
    u = rows[0]
    for r in rows[1:]:
        print(f"{r['emulator']}/unicorn: translate {r['translate_per_s'] / u['translate_per_s']:.2f}x, "
              f"fault {r['fault_per_s'] / u['fault_per_s']:.2f}x"
              + (f"; first batch (RAM transfer) {r['first_batch_s']:.2f} s" if r["emulator"] == "bochs" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
