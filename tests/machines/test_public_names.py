"""Each machine package keeps every public name its single module had before the split (code
outside emu/machines, e.g. the kernel harness, imports them from emu.machines.<arch>)."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "emu.machines.x86_64": "X86_64Machine PF_P PF_W PF_U PF_RSVD PF_ID PF_PK CHUNK GUEST_CODE GUEST_USER_CODE "
                           "GUEST_LABELS",
    "emu.machines.arm64": "Arm64Machine Deviation DEVIATIONS SYSREGS GRANULES LOAD_STUB_OFF SCR_EL3_NS SCR_EL3_RW "
                          "HCR_EL2_RW SCTLR_M PSTATE_EL3H SPSR_EL1H SPSR_EL0T MAIR_EL1_DEFAULT PAR_F PAR_PA_MASK "
                          "PAR_FST_SHIFT PAR_FST_MASK EXCP_PREFETCH_ABORT EXCP_DATA_ABORT EXCP_BKPT VA_BITS_RANGE "
                          "TCR_T0SZ_SHIFT TCR_EPD0 TCR_TG0_SHIFT TCR_T1SZ_SHIFT TCR_EPD1 TCR_TG1_SHIFT "
                          "TCR_IPS_SHIFT tcr_el1_value start_level decode_fst",
    "emu.machines.s390x": "S390xMachine PSW_MASK REAL_SPACE_ASCE CR0_SECONDARY_SPACE CR0_EDAT LOWCORE_SIZE "
                          "TEID_ADDRESS EXCP_PGM PGM_KINDS PGM_LEVELS LEVEL_PAGE LEVEL_SEGMENT LEVEL_REGION3 "
                          "LEVEL_REGION2 LEVEL_REGION1",
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_machine_package_keeps_its_public_names(module: str) -> None:
    mod = importlib.import_module(module)
    names = PUBLIC[module].split()
    assert [n for n in names if not hasattr(mod, n)] == []
    assert set(names) <= set(mod.__all__)
