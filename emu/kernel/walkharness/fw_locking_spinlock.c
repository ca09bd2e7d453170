// SPDX-License-Identifier: GPL-2.0
/* The tree's own kernel/locking/spinlock.c (_raw_spin_lock/_raw_spin_unlock, out of line in
 * this .config), compiled unchanged (see Kbuild). */
#include <kernel/locking/spinlock.c>
