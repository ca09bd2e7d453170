// SPDX-License-Identifier: GPL-2.0
/* The tree's own arch/arm64/mm/contpte.c (contpte_ptep_get(): ptep_get() of a PTE with the
 * contiguous bit gathers the access/dirty bits of its whole block), compiled unchanged
 * (see Kbuild; arm64 with CONFIG_ARM64_CONTPTE only). */
#include <arch/arm64/mm/contpte.c>
