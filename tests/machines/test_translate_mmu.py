"""The hand-built vectors of tests/archs/translate_vectors.py on the Unicorn probe machines
(emu.translate.AddressSpace): the MMU agrees with the manual, or the difference is the registered
deviation the vector names, or the machine says why it cannot check (a CPU fact it does not have,
s390x entries in the lowcore)."""

from __future__ import annotations

import pytest

from emu.machines.deviations import explain_answers
from emu.translate import AddressSpace
from tests.archs.translate_vectors import ALL_VECTORS, Vector


@pytest.mark.parametrize("v", ALL_VECTORS, ids=lambda v: v.name)
def test_vector_on_the_mmu(v: Vector) -> None:
    space = AddressSpace(v.config, entries=v.entries, cpu=v.cpu or None, **v.roots)
    try:
        (row,) = space.check([v.va], v.access)
    finally:
        space.close()
    if v.deviation:
        assert row.verdict.startswith("emulator-deviation: ") and v.deviation in row.verdict, (v.ref, row)
    elif v.cpu:
        assert row.verdict.startswith("oracle-cannot-check: the probe machine"), row.verdict
    elif v.name == "s390-table-at-0":
        assert row.verdict.startswith("oracle-cannot-check: entries in the s390x lowcore"), row.verdict
    else:
        assert row.verdict == "agree", (v.ref, row.manual, row.mmu)


def test_user_root_is_not_overwritten() -> None:
    """x86-64: the machine's slot goes into a copy of the root, never into the user's entry 511."""
    entries = {0x0: 0x1007, 0x0FF8: 0x7000 | 0x7, 0x1000: 0x2007, 0x2000: 0x3007, 0x3000: 0x5007}
    space = AddressSpace("x86_64:4level", entries=entries, cr3=0)
    try:
        (row,) = space.check([0x10], "read")
        assert row.verdict == "agree"
        assert space._machine.ram.read_u64(0xFF8) == 0x7007
        assert space._machine.ram.read_u64(0x3000) & ~0x60 == 0x5007  # the MMU may set A/D (SDM §4.8)
    finally:
        space.close()


def test_every_matching_deviation_is_named() -> None:
    """A level-0 block (none with 4KB, Arm ARM D8.3) whose output address is above the model's
    44-bit PA size: Unicorn translates it, two registered deviations explain that, both named."""
    entries = {0x8: (1 << 47) | 0x401}
    space = AddressSpace("arm64:4k:48", entries=entries, ttbr0=0)
    try:
        va = 0x80_0000_1234
        (row,) = space.check([va], "read")
        names = [d.name for d in explain_answers(space.ops_for(va), row.manual, row.mmu)]
        assert {"block-at-any-level", "no-address-size-fault"} <= set(names), (row.mmu, names)
        assert row.verdict.startswith("emulator-deviation: ") and "block-at-any-level" in row.verdict
        assert "no-address-size-fault" in row.verdict
    finally:
        space.close()


def _flip(rng, value: int, k: int) -> int:  # type: ignore[no-untyped-def]
    for bit in rng.sample(range(64), k):
        value ^= 1 << bit
    return value


@pytest.mark.parametrize("arch", ["x86_64", "arm64", "s390x"])
def test_random_entry_bits_never_disagree(arch: str) -> None:
    """A valid 4K chain with 1..3 random bits flipped in one entry (reserved, ignored, address,
    type and permission bits alike): the manual and the MMU agree, or a registered deviation or
    the machine's limits say why not -- never ``disagree`` (seeded, 40 cases per architecture)."""
    import random

    rng = random.Random(19)
    chain = {"x86_64": ({0x1000: 0x2007, 0x2000: 0x3007, 0x3000: 0x4007, 0x4000: 0x5007}, {"cr3": 0x1000}),
             "arm64": ({0x0: 0x1003, 0x1000: 0x2003, 0x2000: 0x3003, 0x3000: 0x5443}, {"ttbr0": 0}),
             "s390x": ({0x10000: 0x4007, 0x4000: 0x8000, 0x8000: 0x5000}, {"asce": 0x10007})}[arch]
    config = {"x86_64": "x86_64:4level", "arm64": "arm64:4k:48", "s390x": "s390x"}[arch]
    verdicts = []
    for _ in range(40):
        entries = dict(chain[0])
        pa = rng.choice(sorted(entries))
        entries[pa] = _flip(rng, entries[pa], rng.randint(1, 3))
        space = AddressSpace(config, entries=entries, **chain[1])
        try:
            va = rng.choice([0x0, 0x123, 0xF_F123])
            access = rng.choice(["read", "write"] if arch == "s390x" else ["read", "write", "user-read", "user-write"])
            (row,) = space.check([va], access)
        finally:
            space.close()
        verdicts.append((hex(pa), hex(entries[pa]), hex(va), access, row.verdict))
    assert [v for v in verdicts if v[4].startswith("disagree")] == []
    assert sum(v[4] == "agree" for v in verdicts) >= 25, verdicts
