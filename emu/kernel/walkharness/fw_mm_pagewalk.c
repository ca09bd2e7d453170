// SPDX-License-Identifier: GPL-2.0
/* The tree's own mm/pagewalk.c, compiled unchanged (see Kbuild). */
#include <mm/pagewalk.c>
