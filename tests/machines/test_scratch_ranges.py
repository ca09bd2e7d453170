"""A probe writes guest RAM only inside its machine's ``scratch_ranges()``, and the oracle puts
those back: a walk that a hostile pointer leads into the machine's frames reads the same bytes
before and after any probe (fuzz s390x:region3 seed 0 hierarchy 160 read a PMD in the s390x
batch buffer, and the model and the compiled kernel, walking on either side of the probe,
disagreed)."""

from __future__ import annotations

import numpy as np
import pytest

from emu.fuzz.evaluate import Target
from emu.fuzz.hierarchy_gen import HierarchyGenerator

CONFIGS = ["x86_64:4level", "x86_64:5level", "arm64:4k:48", "arm64:64k:42", "s390x:region3", "s390x:segment"]


def _loaded(config: str) -> Target:
    """A fuzzing target holding a generated (hostile) hierarchy: translations and faults at every
    level, so the probes write their buffers and, on s390x, varied lowcore contents."""
    target = Target(config)
    target.load(HierarchyGenerator(config).generate(0, 3))
    return target


def _watched(target: Target) -> list[tuple[int, int]]:
    # the frames the machine took from the allocator, and the s390x lowcore below them
    low = [(0, 0x2000)] if target.key.startswith("s390x") else []
    return low + [(a, b - a) for a, b in target.oracle.frames]


@pytest.mark.parametrize("config", CONFIGS)
def test_a_probe_writes_only_its_scratch_ranges(config: str) -> None:
    with _loaded(config) as target:
        machine, ram = target.oracle.machine, target.sc.ram
        vas = [c.addr for c in target.sc.cases]
        spans = _watched(target)
        before = [ram.read(pa, n) for pa, n in spans]
        results = machine.probe_many(vas[::-1]) + [machine.probe(va) for va in vas[:8]]  # the machine alone
        assert {type(r).__name__ for r in results} >= {"Fault", "Translation"}
        scratch = machine.scratch_ranges()
        written = 0
        for (pa, n), old in zip(spans, before, strict=True):
            new = ram.read(pa, n)
            diff = [pa + int(k) for k in np.flatnonzero(np.frombuffer(old, np.uint8) != np.frombuffer(new, np.uint8))]
            outside = [a for a in diff if not any(s <= a < s + m for s, m in scratch)]
            assert not outside, f"{config}: {len(outside)} bytes written outside scratch_ranges, first {outside[0]:#x}"
            written += len(diff)
        assert written, f"{config}: the probes wrote nothing: the check above saw no write"


@pytest.mark.parametrize("config", CONFIGS)
def test_the_oracle_leaves_the_machines_frames_as_it_found_them(config: str) -> None:
    with _loaded(config) as target:
        ram = target.sc.ram
        spans = _watched(target)
        before = [ram.read(pa, n) for pa, n in spans]
        vas = [c.addr for c in target.sc.cases]
        target.oracle.probe_many(vas[::-1])
        for va in vas[:8]:
            target.oracle.probe(va)
        assert [ram.read(pa, n) for pa, n in spans] == before
