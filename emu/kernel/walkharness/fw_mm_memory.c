// SPDX-License-Identifier: GPL-2.0
/* The tree's own mm/memory.c, compiled unchanged (see Kbuild). */
#include <mm/memory.c>
