"""archs.<arch>.translate() on hand-built vectors written from the manuals
(tests/archs/translate_vectors.py; each vector names its section)."""

from __future__ import annotations

import pytest

import archs.arm64
import archs.s390x
import archs.x86_64
from archs.translate import Fault, Translation, entries_reader, image_reader
from tests.archs.translate_vectors import ALL_VECTORS, F, T, Vector

MODULES = {"x86_64": archs.x86_64, "arm64": archs.arm64, "s390x": archs.s390x}


def run(v: Vector) -> Translation | Fault:
    mod = MODULES[v.config.split(":")[0]]
    return mod.translate(v.config, entries_reader(v.entries), v.va, v.access, cpu=v.cpu or None, **v.roots)


@pytest.mark.parametrize("v", ALL_VECTORS, ids=lambda v: v.name)
def test_vector(v: Vector) -> None:
    got = run(v)
    if isinstance(v.expect, T):
        assert isinstance(got, Translation), f"{v.ref}: {got}"
        assert (got.pa, got.size) == (v.expect.pa, v.expect.size), v.ref
    else:
        assert isinstance(got, Fault), f"{v.ref}: {got}"
        assert (got.kind, got.level, got.code) == (v.expect.kind, v.expect.level, v.expect.code), f"{v.ref}: {got}"
        assert got.reason


@pytest.mark.parametrize("v", ALL_VECTORS, ids=lambda v: v.name)
def test_trace_reads_the_entries(v: Vector) -> None:
    """Every entry in the trace is the value at its address, decoded by its format."""
    got = run(v)
    for e in got.trace:
        assert e.value == v.entries.get(e.pa, 0)
        assert e.fields and e.format


def test_every_fault_kind_is_covered() -> None:
    kinds = {(v.config.split(":")[0], v.expect.kind) for v in ALL_VECTORS if isinstance(v.expect, F)}
    assert kinds >= {
        ("x86_64", "page-fault"), ("x86_64", "general-protection"),
        ("arm64", "translation"), ("arm64", "access-flag"), ("arm64", "permission"), ("arm64", "address-size"),
        ("s390x", "page-translation"), ("s390x", "segment-translation"), ("s390x", "region-third-translation"),
        ("s390x", "region-first-translation"), ("s390x", "translation-specification"), ("s390x", "asce-type"),
        ("s390x", "protection"),
    }


def test_x86_trace_and_permissions() -> None:
    got = archs.x86_64.translate("x86_64:4level", entries_reader({0: 0x1007, 0x1000: 0x2007, 0x2000: 0x3007,
                                                                   0x3000: 0x5005}), 0x10, "user-read", cr3=0)
    assert isinstance(got, Translation)
    assert [e.level for e in got.trace] == ["PML4", "PDPT", "PD", "PT"]
    assert [e.pa for e in got.trace] == [0, 0x1000, 0x2000, 0x3000]
    assert got.trace[-1].fields["addr"] == 5 and got.trace[-1].format == "pte-4k"
    assert (got.permissions.read, got.permissions.write, got.permissions.user) == (True, False, True)


def test_image_reader_big_endian() -> None:
    """s390x reads big-endian doublewords from a raw image (PoP ch. 3: entries are doublewords)."""
    image = bytearray(0x9000)
    image[0x4000:0x4008] = (0x8000).to_bytes(8, "big")
    image[0x8000:0x8008] = (0x5000).to_bytes(8, "big")
    got = archs.s390x.translate(None, image_reader(bytes(image), byteorder="big"), 0x42, "read", asce=0x4003)
    assert isinstance(got, Translation) and got.pa == 0x5042


def test_arm64_any_va_size() -> None:
    """arm64:4k:30 is not a named configuration: it is built from the granule and T0SZ 34 (D8.2
    initial lookup level 4 - ceil((30 - 12) / 9) = 2, whose table resolves VA bits 29:21)."""
    got = archs.arm64.translate("arm64:4k:30", entries_reader({0x8: 0x20_0000 | 0x401}), 0x20_0042, "read", ttbr0=0)
    assert isinstance(got, Translation) and got.pa == 0x20_0042 and got.trace[0].level == "L2"


@pytest.mark.parametrize("call, message", [
    (lambda: archs.x86_64.translate("x86_64:4level", entries_reader({}), 0, "read", cr3=1 << 45), "MAXPHYADDR"),
    (lambda: archs.x86_64.translate("x86_64:4level", entries_reader({}), 0, "peek", cr3=0), "access"),
    (lambda: archs.x86_64.translate("x86_64:4level", entries_reader({}), 0, "read", cr3=0, cpu={"bogus": 1}),
     "unknown x86_64 CPU fact"),
    (lambda: archs.arm64.translate("arm64:8k:48", entries_reader({}), 0, "read", ttbr0=0), "granule"),
    (lambda: archs.arm64.translate("arm64:4k:48", entries_reader({}), 0, "read", ttbr0=0x100), "aligned"),
    (lambda: archs.s390x.translate("s390x:bogus", entries_reader({}), 0, "read", asce=0), "unknown s390x"),
])
def test_bad_input_is_one_clear_error(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call()


def test_arm64_t1sz_differs_from_t0sz() -> None:
    """TCR_EL1.T1SZ 34: the TTBR1 half is 2**30 bytes (bits 63:30 all 1) and its walk starts at
    level 2 (Arm ARM D8.2), while TTBR0 keeps 48 bits from level 0."""
    read = entries_reader({0x8000 + 8 * 0x1FF: 0x20_0000 | 0x401})  # L2[511]: 2MB block
    got = archs.arm64.translate("arm64:4k:48", read, 0xFFFF_FFFF_FFE0_0042, "read", ttbr1=0x8000, t1sz=34)
    assert isinstance(got, Translation) and got.pa == 0x20_0042 and [e.level for e in got.trace] == ["L2"]
    miss = archs.arm64.translate("arm64:4k:48", read, 0xFFFF_FFFF_8000_0000, "read", ttbr1=0x8000, t1sz=34)
    assert isinstance(miss, Fault) and (miss.kind, miss.level) == ("translation", "L0")  # bit 30 clear: no half


def test_parse_config_any_arm64_size() -> None:
    import archs

    cfg = archs.parse_config("arm64:16k:48")
    assert cfg.key == "arm64:16k:48" and [lv.name for lv in cfg.levels] == ["L0", "L1", "L2", "L3"]
    assert archs.get_ops(cfg).config is cfg
    with pytest.raises(archs.UnknownConfig, match="granule"):
        archs.parse_config("arm64:8k:48")
