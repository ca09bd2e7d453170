// SPDX-License-Identifier: GPL-2.0
/* The tree's own mm/pgtable-generic.c, compiled unchanged (see Kbuild). */
#include <mm/pgtable-generic.c>
