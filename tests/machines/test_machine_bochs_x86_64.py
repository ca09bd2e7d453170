"""BochsX86_64Machine: Bochs 2.7's MMU (its own paging code, independent of QEMU's) against page
tables built here by hand, with the raw entry bits of Intel SDM vol. 3 §4.5 and the #PF error
codes of §4.7 (the Tables helper of test_machine_x86_64.py) -- never the machine module's own
helpers.  One Bochs process serves most tests (module fixture; each test builds its own root).

Bochs is an apt package (emu.machines.bochs.INSTALL_HINT): where it is missing these tests say
what to install and do not run, except in CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from archs.x86_64 import CPU
from emu.errors import ConfigError, EmulatorError
from emu.machines.base import FETCH, RAW_TAG, READ, WRITE, Access, Fault, ProbeError, Translation
from emu.machines.bochs import missing
from emu.machines.bochs.x86_64 import BochsX86_64Machine
from emu.machines.ram import FrameAllocator, PhysicalMemory
from tests.ci import unavailable
from tests.machines.test_machine_x86_64 import ADDR, EC_P, EC_RSVD, EC_W, PS, RW, US, P, Tables, data_frame


def need_bochs() -> None:
    problem = missing("x86_64")
    if problem:
        unavailable("run the Bochs oracle tests", problem)


def pf(code: int) -> Fault:
    return Fault("page-fault", None, code, 14)


@pytest.fixture(scope="module")
def bochs() -> Iterator[tuple[BochsX86_64Machine, PhysicalMemory, FrameAllocator]]:
    need_bochs()
    ram = PhysicalMemory(64 << 20)
    alloc = FrameAllocator(ram, reserved=[(0, 0x10000)])
    machine = BochsX86_64Machine(ram, alloc)
    yield machine, ram, alloc
    machine.close()


@pytest.fixture
def m(bochs: tuple[BochsX86_64Machine, PhysicalMemory, FrameAllocator]) -> tuple[BochsX86_64Machine, Tables]:
    machine, ram, alloc = bochs
    t = Tables(ram, alloc, 4)
    machine.set_root(t.root)
    return machine, t


def test_the_cpu_is_the_one_the_configurations_describe(m: tuple[BochsX86_64Machine, Tables]) -> None:
    """CPUID as the firmware read it in the guest: MAXPHYADDR and 1-GByte pages as
    archs.x86_64.CPU says, NX (CPUID.80000001H:EDX[20]), no LA57 (Bochs 2.7)."""
    machine, _t = m
    cpu = CPU
    assert machine.maxphyaddr == cpu["maxphyaddr"]
    assert bool(machine.cpuid_80000001_edx >> 26 & 1) == cpu["gbpages"]
    assert machine.cpuid_80000001_edx >> 20 & 1
    assert not machine.la57
    regs = machine.registers()
    assert regs["CR0"] & 0x8001_0001 == 0x8001_0001  # PG, WP, PE
    assert regs["CR4"] & 0x20 and regs["EFER"] & 0x500 == 0x500  # PAE; LME, LMA


def test_leaves_translate(m: tuple[BochsX86_64Machine, Tables]) -> None:
    machine, t = m
    small, big = data_frame(t), t.alloc.alloc(2 << 20, 2 << 20)
    t.ram.tag(big + 0x5000, 4096)
    t.map(0x1234_5000, small, P | RW)
    t.map(0x4060_0000, big, P | RW, size=2 << 20)
    vas = [0x1234_5000, 0x1234_5ff8, 0x1234_5007, 0x4060_5010]
    want = [Translation(small, "tag"), Translation(small + 0xFF8, "tag"), Translation(small + 7, "tag"),
            Translation(big + 0x5010, "tag")]
    assert machine.probe_many(vas) == want
    assert machine.probe_many(vas, WRITE) == want
    assert machine.probe(vas[3]) == want[3]


def test_not_present_at_each_level_and_rights(m: tuple[BochsX86_64Machine, Tables]) -> None:
    machine, t = m
    pa = data_frame(t)
    va = 0x3_2100_0000
    t.map(va, pa, P | RW | US)
    for level in range(1, 5):
        saved = t.get(va, level)
        t.set(va, level, saved & ~P)
        assert machine.probe_many([va, va + 8]) == [pf(0)] * 2, level
        assert machine.probe(va, WRITE) == pf(EC_W), level
        t.set(va, level, saved)
    assert machine.probe(va) == Translation(pa, "tag")
    t.map(0x40_0000, pa, P | US)  # R/W = 0: with CR0.WP a supervisor write faults
    assert machine.probe(0x40_0000) == Translation(pa, "tag")
    assert machine.probe(0x40_0000, WRITE) == pf(EC_P | EC_W)


def test_reserved_bits_fault_with_p_and_rsvd(m: tuple[BochsX86_64Machine, Tables]) -> None:
    """Bit 45 of a PTE is above MAXPHYADDR (40): reserved (SDM §4.5, Table 4-20); PS in a PML4E
    too (Table 4-15).  Bochs gives the SDM's error code P | RSVD (§4.7) -- QEMU 7.2 does not."""
    machine, t = m
    pa = data_frame(t)
    t.map(0x1000, pa, P | RW | (1 << 45))
    assert machine.probe(0x1000) == pf(EC_P | EC_RSVD)
    assert machine.probe(0x1000, WRITE) == pf(EC_P | EC_W | EC_RSVD)
    t.map(0x8000_0000, pa, P | RW)
    t.set(0x8000_0000, 4, t.get(0x8000_0000, 4) | PS)
    assert machine.probe(0x8000_0000) == pf(EC_P | EC_RSVD)
    t.set(0x8000_0000, 4, t.get(0x8000_0000, 4) & ~PS)
    assert machine.probe(0x8000_0000) == Translation(pa, "tag")


def test_host_edits_reach_the_guests_copy(m: tuple[BochsX86_64Machine, Tables]) -> None:
    """Bochs keeps its own copy of RAM: every edit between batches (a new entry, a re-pointed
    entry, a table zeroed, a frame re-tagged or overwritten) is what the next batch walks."""
    machine, t = m
    a, b = data_frame(t), data_frame(t, tag=False)
    t.map(0x5000, a, P | RW)
    assert machine.probe(0x5008) == Translation(a + 8, "tag")
    t.map(0x5000, b, P | RW)  # untagged: Bochs's own walk (debugger "page") names the frame
    assert machine.probe(0x5008) == Translation(b + 8, "bochs-page")
    t.ram.tag(b, 4096)
    assert machine.probe(0x5008) == Translation(b + 8, "tag")
    # one page of tag words, a literal word (another address's tag: the load shows it arrived)
    # and a zero word
    t.ram.write_u64(b + 0x18, 0xF011_0000_0077_7018)
    t.ram.write_u64(b + 0x20, 0)
    assert machine.probe_many([0x5010, 0x5018, 0x5020, 0x5028]) == [
        Translation(b + 0x10, "tag"), Translation(0x77_7018, "tag"), Translation(b + 0x20, "bochs-page"),
        Translation(b + 0x28, "tag")]
    t.ram.write(b, bytes(4096))
    assert machine.probe(0x5010) == Translation(b + 0x10, "bochs-page")
    pt = t.entry_addr(0x5000, 1) & ~0xFFF
    t.ram.write(pt, bytes(4096))  # the whole page table zeroed
    assert machine.probe(0x5008) == pf(0)
    t.map(0x7000, 0x4000_0000, P | RW)  # beyond the 64 MiB of RAM: no #PF, the walk translated
    assert machine.probe(0x7010) == Translation(0x4000_0010, "bochs-page")


def test_errors_and_refusals(m: tuple[BochsX86_64Machine, Tables]) -> None:
    machine, t = m
    t.map(0x5000, data_frame(t), P | RW)
    non_canonical = machine.probe(0x8000_0000_0000)
    assert isinstance(non_canonical, ProbeError) and "#GP" in non_canonical.reason
    slot = machine.probe(machine.reserved_va_range()[0] + 0x10)
    assert isinstance(slot, ProbeError) and "slot 511" in slot.reason
    for access in (FETCH, Access("read", user=True)):
        with pytest.raises(ConfigError):
            machine.probe(0x5000, access)
    assert t.ram.read_u64(t.root + 8 * 511) & ADDR == machine._slot_next
    ram = PhysicalMemory(16 << 20)
    with pytest.raises(ConfigError, match="LA57"):
        BochsX86_64Machine(ram, FrameAllocator(ram), levels=5)


def test_batches_across_chunks(m: tuple[BochsX86_64Machine, Tables]) -> None:
    machine, t = m
    pa = data_frame(t, size=16 * 4096)
    for i in range(16):
        t.map(0x100_0000 + i * 0x2000, pa + i * 4096, P | RW)
    vas = np.array([0x100_0000 + (k % 32) * 0x1000 + 8 * (k % 7) for k in range(5_000)], dtype=np.uint64)
    raw, errors = machine.probe_many_raw(vas, READ)
    assert not errors
    mapped = (vas - np.uint64(0x100_0000)) // np.uint64(0x1000) % np.uint64(2) == 0
    assert (raw.status[mapped] == RAW_TAG).all()
    want_pa = np.uint64(pa) + (vas[mapped] - np.uint64(0x100_0000)) // np.uint64(0x2000) * np.uint64(4096) \
        + (vas[mapped] & np.uint64(0xFFF))
    assert (raw.pa[mapped] == want_pa).all()
    assert raw.results(errors)[1] == pf(0)


def test_close_leaves_no_process_and_no_files() -> None:
    need_bochs()
    ram = PhysicalMemory(16 << 20)
    machine = BochsX86_64Machine(ram, FrameAllocator(ram, reserved=[(0, 0x10000)]))
    proc, tmp = machine._bochs.proc, machine._tmp
    assert proc.poll() is None and os.path.exists(tmp)
    machine.close()
    assert proc.poll() is not None and not os.path.exists(tmp)
    machine.close()  # twice is fine


def test_a_hung_bochs_is_an_error_not_a_hang() -> None:
    need_bochs()
    ram = PhysicalMemory(16 << 20)
    alloc = FrameAllocator(ram, reserved=[(0, 0x10000)])
    t = Tables(ram, alloc, 4)
    machine = BochsX86_64Machine(ram, alloc, timeout_s=1.0)
    machine.set_root(t.root)
    t.map(0x5000, data_frame(t), P | RW)
    os.kill(machine._bochs.proc.pid, signal.SIGSTOP)
    with pytest.raises(EmulatorError, match="did not answer"):
        machine.probe(0x5000)
    assert machine._bochs.proc.poll() is not None and not os.path.exists(machine._tmp)  # killed and reaped


def test_oracle_bochs_refusals() -> None:
    """5-level and other architectures are refused by name (no Bochs runs); with --arch x86_64
    the 5-level configuration is left out (with a note on stderr)."""
    need_bochs()
    from emu.cli import UsageError
    from emu.cli.verify import oracle_configs

    with pytest.raises(UsageError, match="cannot run x86_64:5level: Bochs 2.7 does not implement 5-level"):
        oracle_configs("bochs", ["x86_64:4level", "x86_64:5level"], True, ["x86_64:5level"])
    with pytest.raises(UsageError, match="no machine for arm64"):
        oracle_configs("bochs", ["arm64:4k:48"], True)
    assert oracle_configs("bochs", ["x86_64:4level", "x86_64:5level"], True) == ["x86_64:4level"]


def test_missing_bochs_is_one_line_and_exit_2(tmp_path: object) -> None:
    """Without bochs on PATH: one line naming the apt-get command, exit 2, no traceback.  Needs
    no Bochs."""
    env = dict(os.environ, PATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "emu", "verify", "--oracle", "bochs", "--arch", "x86_64"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "apt-get install" in out.stderr
    assert "Traceback" not in out.stderr


def test_default_scenario_on_bochs_gives_unicorns_verdicts() -> None:
    """Every row of the 4-level default scenario has the same verdict on Bochs 2.7 as on Unicorn,
    and a translation reaches exactly where the entry Linux found maps."""
    need_bochs()
    from emu.verify import verify_configs

    b = verify_configs(["x86_64:4level"], harness="off", emulator="bochs").rows
    u = verify_configs(["x86_64:4level"], harness="off").rows
    assert [(r.case, r.walk.flags) for r in b] == [(r.case, r.walk.flags) for r in u]
    assert not [r for r in b if r.verdict_class in ("disagree", "oracle-error", "oracle-cannot-check")]
    assert [r.verdict for r in b] == [r.verdict for r in u]
    assert sum(r.verdict == "agree" for r in b) >= 50
    for r in b:
        if isinstance(r.mmu, Translation) and r.walk.expected_pa is not None:
            assert r.mmu.pa == r.walk.expected_pa, (r.case, r.mmu)
