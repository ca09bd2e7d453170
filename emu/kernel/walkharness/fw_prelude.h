/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Included before every file of the walk harness (Kbuild: -include).
 *
 * Not a module: kbuild passes -DMODULE for obj-m, but this code is linked like vmlinux code
 * (the tree's initcalls and __init/__initdata stay as in the kernel image).
 *
 * x86: static_cpu_has() becomes boot_cpu_has().  The kernel's static_cpu_has() is an asm goto
 * that, until apply_alternatives() patches it at boot, jumps to a stub in .altinstr_aux that
 * tests the feature bit in boot_cpu_data -- exactly what boot_cpu_has() does.  Nothing patches
 * the guest image, so the behaviour is the same; but .altinstr_aux is ONE section shared by every
 * function of a file, and its references would keep all of mm/memory.c alive under --gc-sections.
 */
#undef MODULE

#ifdef CONFIG_X86
#include <asm/cpufeature.h>
#undef static_cpu_has
#define static_cpu_has(bit) boot_cpu_has(bit)
#endif
