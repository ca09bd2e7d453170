"""Unicorn's departures from the arm64 architecture (ORACLE-NOTES arm64 "Deviations"), as
data: each with its Arm ARM reference and the test that shows it still exists.
"""

from __future__ import annotations

from dataclasses import dataclass


# ---------------------------------------------------------------------------------------------
# Unicorn's departures from the architecture (ORACLE-NOTES arm64 "Deviations"), as data.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Deviation:
    """One documented way Unicorn 2.1.4 (QEMU 5 ``get_phys_addr_lpae``) differs from the Arm ARM.

    ``test`` names the test in ``tests/machines/test_machine_arm64.py`` that shows it still exists.
    """

    name: str
    summary: str
    arm_arm_reference: str
    test: str


DEVIATIONS: list[Deviation] = [
    Deviation(
        name="block-at-any-level",
        summary=(
            "A valid non-table descriptor (bits[1:0] = 0b01) is taken as a block at every level "
            "below 3, including levels where the architecture has no block descriptor: level 0 "
            "with the 4KB granule (a 512GB 'block'), levels 0/1 with 16KB (128TB/64GB) and level 1 "
            "with 64KB (4TB). The architecture says Translation fault at that level."
        ),
        arm_arm_reference=(
            "Arm ARM DDI 0487, D8 (VMSAv8-64) 'Translation table descriptor formats': block "
            "descriptors exist only at level 1 and 2 (4KB) and level 2 (16KB, 64KB) without "
            "FEAT_LPA/FEAT_LPA2; elsewhere bits[1:0] = 0b01 is an invalid descriptor and the "
            "lookup generates a Translation fault at that level."
        ),
        test="test_deviation_block_at_any_level",
    ),
    Deviation(
        name="block-oa-ored",
        summary=(
            "The output address of a block is the descriptor's address field OR'ed with the VA's "
            "offset in the block, instead of OA[47:n] concatenated with VA[n-1:0]: RES0 descriptor "
            "bits between the granule and the block size leak into the physical address."
        ),
        arm_arm_reference=(
            "Arm ARM DDI 0487, D8 'Translation table descriptor formats' (block descriptor: "
            "OA[47:n], bits[n-1:12] RES0 apart from nT) and D8 'Translation table walks' (the "
            "PA is OA[47:n]:IA[n-1:0])."
        ),
        test="test_deviation_block_oa_ored",
    ),
    Deviation(
        name="no-address-size-fault",
        summary=(
            "No Address size fault is ever generated: an output or next-level table address above "
            "the effective PA size (TCR_EL1.IPS capped by ID_AA64MMFR0_EL1.PARange = 44 bits on "
            "the Cortex-A72 model) translates, and descriptor bits [51:48] are silently dropped."
        ),
        arm_arm_reference=(
            "Arm ARM DDI 0487, D8 'Address size configuration' / 'Translation faults and Address "
            "size faults' (an OA or table address wider than the effective PA size is an Address "
            "size fault at that level), D19 'TCR_EL1' IPS and 'ID_AA64MMFR0_EL1' PARange."
        ),
        test="test_deviation_no_address_size_fault",
    ),
    Deviation(
        name="contiguous-ignored",
        summary=(
            "The Contiguous bit (descriptor bit 52) is ignored: every entry of a run is used on "
            "its own, so a misprogrammed run (entries that are invalid or point elsewhere) never "
            "gives a TLB conflict or a run-wide translation."
        ),
        arm_arm_reference=(
            "Arm ARM DDI 0487, D8 'The Contiguous bit': a misprogrammed contiguous run is "
            "CONSTRAINED UNPREDICTABLE (TLB conflict abort, or the translation of any entry in the "
            "run). Ignoring the hint is one permitted outcome; the others cannot be observed here."
        ),
        test="test_deviation_contiguous_ignored",
    ),
    Deviation(
        name="txsz-clamped",
        summary=(
            "TCR_EL1.T0SZ/T1SZ are clamped to 16..39: a larger TxSZ translates as 39 and a smaller "
            "as 16, never a level 0 Translation fault."
        ),
        arm_arm_reference=(
            "Arm ARM DDI 0487, D8 'Input address size configuration' and D19 'TCR_EL1' T0SZ/T1SZ: "
            "without FEAT_TTST the largest TxSZ is 39 and without FEAT_LVA the smallest is 16; an "
            "out-of-range value is CONSTRAINED UNPREDICTABLE (treated as the limit, or a level 0 "
            "Translation fault). Unicorn always clamps."
        ),
        test="test_deviation_txsz_clamped",
    ),
    Deviation(
        name="tgran16-unimplemented-but-used",
        summary=(
            "The 16KB granule translates although every arm64 CPU model in this build reports "
            "ID_AA64MMFR0_EL1.TGran16 = 0b0000 (16KB granule not implemented)."
        ),
        arm_arm_reference=(
            "Arm ARM DDI 0487, D19 'ID_AA64MMFR0_EL1' TGran16 and 'TCR_EL1' TG0/TG1: programming "
            "an unimplemented granule size is treated as an IMPLEMENTATION DEFINED implemented "
            "size, so the PE the model describes would not walk 16KB tables."
        ),
        test="test_deviation_tgran16_unimplemented_but_used",
    ),
    Deviation(
        name="walk-outside-ram-reads-zero",
        summary=(
            "A translation table walk that reads a physical address outside guest RAM gets 0 "
            "(an invalid descriptor), so the walk ends in a Translation fault at that level "
            "instead of a Synchronous External abort on the walk. (Measured here; not in "
            "ORACLE-NOTES. It is Unicorn's memory model, not the CPU: unbacked PAs read as 0.)"
        ),
        arm_arm_reference=(
            "Arm ARM DDI 0487, D8 'Translation table walks' and D19 'PAR_EL1'/'ESR_EL1' FST "
            "0b0101LL (Synchronous External abort on translation table walk, level LL): a walk "
            "access the memory system does not complete is reported as an External abort; how "
            "an unbacked PA responds is system-defined, usually a decode error, not zeros."
        ),
        test="test_deviation_walk_outside_ram_reads_zero",
    ),
]
