// SPDX-License-Identifier: GPL-2.0
/*
 * foliowalk kernel harness: the kernel's own page-table inline functions and constants,
 * compiled from a real tree (kbuild, M=) for one (architecture, version, Kconfig), linked
 * into a flat guest image, and called on batches of raw entry values by foliowalk's runner.
 *
 * This file includes kernel headers, so it is GPL-2.0 (the rest of foliowalk is MIT).
 * Nothing here re-implements kernel logic: every op is one expression over kernel
 * functions/macros.  What the harness defines itself are the run-time variables those
 * inlines read, set as the kernel sets them at boot (cited at each).
 *
 * ABI (all arches): unsigned long fw_batch(unsigned long op, const u64 *in, u64 *out,
 *                                         unsigned long n)
 *   in:  n records of two u64 (a, b); out: n u64.  Returns n, or ~0 for an unknown op.
 *   Op names: fw_op_names (NUL-separated, in op order); constants: fw_const_names and
 *   fw_consts (one u64 each, ~0 where the kernel does not define it for this Kconfig,
 *   with bit i of fw_const_defined[i / 64] saying whether it is defined).
 */
#define USE_EARLY_PGTABLE_L5	/* x86: pgtable_l5_enabled() reads __pgtable_l5_enabled */
#include <linux/mm.h>
#include <linux/pgtable.h>
#include <linux/swap.h>
#include <linux/swapops.h>
#include <linux/huge_mm.h>
#include <linux/version.h>

typedef unsigned long long fw_u64;

#define FW_NOINLINE __attribute__((__noinline__, __used__)) notrace

unsigned long fw_batch(unsigned long op, const fw_u64 *in, fw_u64 *out, unsigned long n);
unsigned long fw_consts(fw_u64 *out, unsigned long n);

/* A function a kernel does not define answers FW_ABSENT for every value (the runner's check
 * reports it as absent, never compares it). */
#define FW_ABSENT	(~0ULL)

/* ---- run-time state the inlines read (set by fw_setup, op 0) -------------------------- */
#ifdef CONFIG_X86_64
#ifdef CONFIG_X86_5LEVEL
/* arch/x86/kernel/head64.c (v6.12): defaults for 4-level; check_la57_support() switches them */
unsigned int __pgtable_l5_enabled;
unsigned int pgdir_shift = 39;
unsigned int ptrs_per_p4d = 1;
#endif
#ifdef CONFIG_DYNAMIC_PHYSICAL_MASK
/* arch/x86/kernel/head64.c: physical_mask = (1ULL << __PHYSICAL_MASK_SHIFT) - 1 (no SME) */
phys_addr_t physical_mask = (1ULL << __PHYSICAL_MASK_SHIFT) - 1;
#endif
/* arch/x86/mm/init.c / head64.c: __supported_pte_mask = ~0 (NX present), kernel mask ~0 */
pteval_t __supported_pte_mask = ~0ULL;
pteval_t __default_kernel_pte_mask = ~0ULL;
#endif

#ifdef CONFIG_ARM64
/* arch/arm64/kernel/cpufeature.c (v6.12, v6.1): false until KPTI/KASLR asks for nG kernel
 * mappings; PROT_DEFAULT's PTE_MAYBE_NG reads it (user PAGE_* set PTE_NG themselves). */
bool arm64_use_ng_mappings;
#endif

#if defined(CONFIG_S390) && defined(__identity_base)
/* v6.10+ arch/s390/boot/startup.c fills vm_layout at boot (identity_base is randomised with KASLR);
 * s390's pmd_pfn()/pud_pfn() go through __va()/__pa(), whose offsets cancel for any base. */
struct vm_layout vm_layout;
#endif

#ifdef CONFIG_MIGRATION
/* mm/swapfile.c (v6.12): set by swapfile_init() from arch_max_swapfile_size() */
bool swap_migration_ad_supported;
#endif

static void fw_setup(fw_u64 a, fw_u64 b)
{
#ifdef CONFIG_MIGRATION
	/* mm/swapfile.c swapfile_init(): swapfile_maximum_size = arch_max_swapfile_size(), the
	 * generic one (generic_max_swapfile_size(); x86 lowers it only on CPUs with X86_BUG_L1TF,
	 * which the emulated AMD-vendor CPU has not); migration A/D bits need SWP_MIG_TOTAL_BITS. */
	unsigned long maxsize = swp_offset(pte_to_swp_entry(swp_entry_to_pte(swp_entry(0, ~0UL)))) + 1;

	swap_migration_ad_supported = maxsize >= (1UL << SWP_MIG_TOTAL_BITS);
#endif
#if defined(CONFIG_X86_64) && defined(CONFIG_X86_5LEVEL)
	/* head64.c check_la57_support(): __pgtable_l5_enabled = 1; pgdir_shift = 48;
	 * ptrs_per_p4d = 512 */
	__pgtable_l5_enabled = a ? 1 : 0;
	pgdir_shift = a ? 48 : 39;
	ptrs_per_p4d = a ? 512 : 1;
#endif
	(void)a; (void)b;
}

/* ---- the ops: one kernel expression each, over a (and b) ------------------------------ */
static inline swp_entry_t fw_pte_swp(fw_u64 a) { return pte_to_swp_entry(__pte(a)); }
static inline swp_entry_t fw_pmd_swp(fw_u64 a) { return pmd_to_swp_entry(__pmd(a)); }

#ifdef CONFIG_MIGRATION
/* b: bits 1:0 kind (0 read, 1 read-exclusive, 2 write), bit 2 young, bit 3 dirty */
static inline swp_entry_t fw_mig(fw_u64 pfn, fw_u64 b)
{
	swp_entry_t e;

	switch (b & 3) {
	case 0: e = make_readable_migration_entry(pfn); break;
	case 1: e = make_readable_exclusive_migration_entry(pfn); break;
	default: e = make_writable_migration_entry(pfn); break;
	}
	if (b & 4)
		e = make_migration_entry_young(e);
	if (b & 8)
		e = make_migration_entry_dirty(e);
	return e;
}
#define FW_MIG_PTE(a, b)	pte_val(swp_entry_to_pte(fw_mig(a, b)))
#else
#define FW_MIG_PTE(a, b)	FW_ABSENT
#endif

/* ---- encoders: a leaf as the kernel makes one ------------------------------------------
 * b: foliowalk's archs.linux.Prot as bits (bit 0 write, 1 exec, 2 young, 3 dirty, 4 special,
 * 5 devmap, 6 protnone); a: the pfn.  The pgprot is vm_get_page_prot() of a shared user mapping
 * (VM_SHARED|VM_READ [|VM_WRITE][|VM_EXEC], or VM_NONE for PROT_NONE): protection_map[] of
 * arch/x86/mm/pgprot.c, arch/arm64/mm/mmap.c, arch/s390/mm/mmap.c (v6.12, same in v6.1), whose
 * entries are these PAGE_* macros of the arch's headers.  Then the pte_mk*() calls in the order
 * mm/memory.c makes them (mk_pte, young/old, dirty, special, devmap).
 */
#define FW_PROT_WRITE	1
#define FW_PROT_EXEC	2
#define FW_PROT_YOUNG	4
#define FW_PROT_DIRTY	8
#define FW_PROT_SPECIAL	16
#define FW_PROT_DEVMAP	32
#define FW_PROT_NONE	64
#ifdef CONFIG_S390
#define FW_PAGE_R	PAGE_RO
#define FW_PAGE_RW	PAGE_RW
#define FW_PAGE_RX	PAGE_RX
#define FW_PAGE_RWX	PAGE_RWX
#else
#define FW_PAGE_R	PAGE_READONLY
#define FW_PAGE_RW	PAGE_SHARED
#define FW_PAGE_RX	PAGE_READONLY_EXEC
#define FW_PAGE_RWX	PAGE_SHARED_EXEC
#endif

static inline pgprot_t fw_prot(fw_u64 b)
{
	if (b & FW_PROT_NONE)
		return PAGE_NONE;
	switch (b & (FW_PROT_WRITE | FW_PROT_EXEC)) {
	case 0: return FW_PAGE_R;
	case FW_PROT_WRITE: return FW_PAGE_RW;
	case FW_PROT_EXEC: return FW_PAGE_RX;
	default: return FW_PAGE_RWX;
	}
}

static inline fw_u64 fw_pfn_pte(fw_u64 pfn, fw_u64 b)
{
	pte_t pte = pfn_pte(pfn, fw_prot(b));

	pte = (b & FW_PROT_YOUNG) ? pte_mkyoung(pte) : pte_mkold(pte);
	if (b & FW_PROT_DIRTY)
		pte = pte_mkdirty(pte);
	if (b & FW_PROT_SPECIAL)
		pte = pte_mkspecial(pte);
	if (b & FW_PROT_DEVMAP) {
#ifdef CONFIG_ARCH_HAS_PTE_DEVMAP
		pte = pte_mkdevmap(pte);
#else
		return FW_ABSENT;
#endif
	}
	return pte_val(pte);
}

/* A THP leaf: pmd_mkhuge(pfn_pmd()) as mm/huge_memory.c's mk_huge_pmd() makes it. */
static inline fw_u64 fw_pfn_pmd(fw_u64 pfn, fw_u64 b)
{
#ifdef CONFIG_TRANSPARENT_HUGEPAGE
	pmd_t pmd = pmd_mkhuge(pfn_pmd(pfn, fw_prot(b)));

	pmd = (b & FW_PROT_YOUNG) ? pmd_mkyoung(pmd) : pmd_mkold(pmd);
	if (b & FW_PROT_DIRTY)
		pmd = pmd_mkdirty(pmd);
	if (b & FW_PROT_SPECIAL) {
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
		pmd = pmd_mkspecial(pmd);	/* a no-op without ARCH_SUPPORTS_PMD_PFNMAP */
#else
		return FW_ABSENT;
#endif
	}
	if (b & FW_PROT_DEVMAP) {
#ifdef CONFIG_ARCH_HAS_PTE_DEVMAP
		pmd = pmd_mkdevmap(pmd);
#else
		return FW_ABSENT;
#endif
	}
	return pmd_val(pmd);
#else
	return FW_ABSENT;
#endif
}

#if defined(CONFIG_TRANSPARENT_HUGEPAGE) && !defined(CONFIG_S390)
#define FW_PMD_MKINVALID(a)	pmd_val(pmd_mkinvalid(__pmd(a)))	/* s390 has none */
#else
#define FW_PMD_MKINVALID(a)	FW_ABSENT
#endif
#ifdef CONFIG_TRANSPARENT_HUGEPAGE
#define FW_PMD_MKHUGE(a)	pmd_val(pmd_mkhuge(__pmd(a)))
#else
#define FW_PMD_MKHUGE(a)	FW_ABSENT
#endif

/* mm/memory.c: zero_pfn; s390 (__HAVE_COLOR_ZERO_PAGE) also zero_page_mask, arch/s390/mm/init.c.
 * The harness defines them (it links no mm/memory.c); op set_zero_page sets them. */
unsigned long zero_pfn;
#ifdef __HAVE_COLOR_ZERO_PAGE
unsigned long zero_page_mask;
#define FW_SET_ZERO_MASK(b)	(zero_page_mask = (b))
#else
#define FW_SET_ZERO_MASK(b)	((void)(b))
#endif

/* X(name, expression over a and b); pud-level names bind a variable called pud because
 * arm64 v6.12 `#define pud_special(pte) pte_special(pud_pte(pud))` uses it by that name. */
#define FW_OPS(X) \
	X(setup,			(fw_setup(a, b), 0)) \
	X(pgd_none,			pgd_none(__pgd(a))) \
	X(pgd_bad,			pgd_bad(__pgd(a))) \
	X(pgd_present,			pgd_present(__pgd(a))) \
	X(p4d_none,			p4d_none(__p4d(a))) \
	X(p4d_bad,			p4d_bad(__p4d(a))) \
	X(p4d_present,			p4d_present(__p4d(a))) \
	X(pud_none,			pud_none(pud)) \
	X(pud_bad,			pud_bad(pud)) \
	X(pud_present,			pud_present(pud)) \
	X(pud_leaf,			pud_leaf(pud)) \
	X(pud_devmap,			pud_devmap(pud)) \
	X(pud_special,			FW_PUD_SPECIAL(pud)) \
	X(pud_pfn,			FW_PUD_PFN(pud)) \
	X(pmd_none,			pmd_none(__pmd(a))) \
	X(pmd_bad,			pmd_bad(__pmd(a))) \
	X(pmd_present,			pmd_present(__pmd(a))) \
	X(pmd_leaf,			pmd_leaf(__pmd(a))) \
	X(pmd_trans_huge,		pmd_trans_huge(__pmd(a))) \
	X(pmd_devmap,			pmd_devmap(__pmd(a))) \
	X(pmd_special,			FW_PMD_SPECIAL(__pmd(a))) \
	X(pmd_protnone,			pmd_protnone(__pmd(a))) \
	X(pmd_pfn,			pmd_pfn(__pmd(a))) \
	X(pte_none,			pte_none(__pte(a))) \
	X(pte_present,			pte_present(__pte(a))) \
	X(pte_special,			pte_special(__pte(a))) \
	X(pte_devmap,			pte_devmap(__pte(a))) \
	X(pte_protnone,			pte_protnone(__pte(a))) \
	X(pte_pfn,			pte_pfn(__pte(a))) \
	X(is_swap_pte,			is_swap_pte(__pte(a))) \
	X(pte_swp_type,			swp_type(fw_pte_swp(a))) \
	X(pte_swp_offset,		swp_offset(fw_pte_swp(a))) \
	X(is_migration_entry,		is_migration_entry(fw_pte_swp(a))) \
	X(is_writable_migration_entry,	is_writable_migration_entry(fw_pte_swp(a))) \
	X(is_readable_exclusive_migration_entry, \
					is_readable_exclusive_migration_entry(fw_pte_swp(a))) \
	X(is_device_private_entry,	is_device_private_entry(fw_pte_swp(a))) \
	X(is_device_exclusive_entry,	is_device_exclusive_entry(fw_pte_swp(a))) \
	X(is_hwpoison_entry,		is_hwpoison_entry(fw_pte_swp(a))) \
	X(is_pte_marker_entry,		is_pte_marker_entry(fw_pte_swp(a))) \
	X(is_pfn_swap_entry,		is_pfn_swap_entry(fw_pte_swp(a))) \
	X(is_pmd_migration_entry,	is_pmd_migration_entry(__pmd(a))) \
	X(pmd_swp_type,			swp_type(fw_pmd_swp(a))) \
	X(pmd_swp_offset,		swp_offset(fw_pmd_swp(a))) \
	X(swp_entry_to_pte,		pte_val(swp_entry_to_pte(swp_entry(a, b)))) \
	X(swp_entry_to_pmd,		pmd_val(swp_entry_to_pmd(swp_entry(a, b)))) \
	X(migration_entry_to_pte,	FW_MIG_PTE(a, b)) \
	X(pfn_pte,			fw_pfn_pte(a, b)) \
	X(pfn_pmd,			fw_pfn_pmd(a, b)) \
	X(pte_mkspecial,		pte_val(pte_mkspecial(__pte(a)))) \
	X(pmd_mkhuge,			FW_PMD_MKHUGE(a)) \
	X(pmd_mkinvalid,		FW_PMD_MKINVALID(a)) \
	X(set_zero_page,		(zero_pfn = a, FW_SET_ZERO_MASK(b), 0)) \
	X(is_zero_pfn,			is_zero_pfn(a)) \
	X(pgd_index,			pgd_index(a)) \
	X(p4d_index,			FW_P4D_INDEX(a)) \
	X(pud_index,			pud_index(a)) \
	X(pmd_index,			pmd_index(a)) \
	X(pte_index,			pte_index(a))

#if defined(CONFIG_X86_64) || defined(CONFIG_S390) || CONFIG_PGTABLE_LEVELS > 2
#define FW_PUD_PFN(pud)	pud_pfn(pud)
#else
#define FW_PUD_PFN(pud)	FW_ABSENT
#endif
/* pmd_special()/pud_special(): v6.12 ("mm: introduce ARCH_SUPPORTS_HUGE_PFNMAP and special bits
 * to pmd/pud", 6.12-rc1) */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
#define FW_PMD_SPECIAL(pmd)	pmd_special(pmd)
#define FW_PUD_SPECIAL(pud)	pud_special(pud)
#else
#define FW_PMD_SPECIAL(pmd)	FW_ABSENT
#define FW_PUD_SPECIAL(pud)	FW_ABSENT
#endif
/* arm64 defines p4d_index() since its 5-level (LPA2) support, v6.9 */
#if defined(CONFIG_ARM64) && LINUX_VERSION_CODE < KERNEL_VERSION(6, 9, 0)
#define FW_P4D_INDEX(a)	FW_ABSENT
#else
#define FW_P4D_INDEX(a)	p4d_index(a)
#endif

enum fw_op {
#define FW_ENUM(name, expr) FW_OP_##name,
	FW_OPS(FW_ENUM)
	FW_NR_OPS
};

const char fw_op_names[] __used =
#define FW_NAME(name, expr) #name "\0"
	FW_OPS(FW_NAME);

FW_NOINLINE unsigned long fw_batch(unsigned long op, const fw_u64 *in, fw_u64 *out,
				   unsigned long n)
{
	unsigned long i;

	switch (op) {
#define FW_CASE(name, expr) \
	case FW_OP_##name: \
		for (i = 0; i < n; i++) { \
			fw_u64 a = in[2 * i], b = in[2 * i + 1]; \
			pud_t pud = __pud(a); \
			(void)a; (void)b; (void)pud; \
			out[i] = (fw_u64)(expr); \
		} \
		return n;
	FW_OPS(FW_CASE)
	}
	return ~0UL;
}

/* ---- constants: name, value, defined? --------------------------------------------------- */
#define FW_CONST_ALWAYS(X) \
	X(PAGE_SHIFT) X(PMD_SHIFT) X(PUD_SHIFT) X(P4D_SHIFT) X(PGDIR_SHIFT) \
	X(PTRS_PER_PTE) X(PTRS_PER_PMD) X(PTRS_PER_PUD) X(PTRS_PER_P4D) X(PTRS_PER_PGD) \
	X(MAX_SWAPFILES_SHIFT) X(MAX_SWAPFILES) X(SWP_TYPE_SHIFT) X(SWP_OFFSET_MASK) \
	X(SWP_PFN_BITS) X(MAX_PHYSMEM_BITS) X(SWP_DEVICE_NUM) X(SWP_MIGRATION_NUM) \
	X(SWP_HWPOISON_NUM) X(SWP_PTE_MARKER_NUM) X(CONFIG_PGTABLE_LEVELS)

#ifdef SWP_PTE_MARKER	/* v6.1: only with CONFIG_PTE_MARKER */
#define FW_CONST_MARKER(X) X(SWP_PTE_MARKER)
#else
#define FW_CONST_MARKER(X)
#endif

#ifdef CONFIG_MIGRATION
#define FW_CONST_MIGRATION(X) X(SWP_MIGRATION_READ) X(SWP_MIGRATION_READ_EXCLUSIVE) \
	X(SWP_MIGRATION_WRITE)
#else
#define FW_CONST_MIGRATION(X)
#endif
#ifdef CONFIG_MEMORY_FAILURE
#define FW_CONST_HWPOISON(X) X(SWP_HWPOISON)
#else
#define FW_CONST_HWPOISON(X)
#endif
#ifdef CONFIG_DEVICE_PRIVATE
#define FW_CONST_DEVICE(X) X(SWP_DEVICE_WRITE) X(SWP_DEVICE_READ) \
	X(SWP_DEVICE_EXCLUSIVE_WRITE) X(SWP_DEVICE_EXCLUSIVE_READ)
#else
#define FW_CONST_DEVICE(X)
#endif

#define FW_CONSTS(X) FW_CONST_ALWAYS(X) FW_CONST_MARKER(X) FW_CONST_MIGRATION(X) \
	FW_CONST_HWPOISON(X) FW_CONST_DEVICE(X)

/* Run-time "constants" (x86 PGDIR_SHIFT, PTRS_PER_P4D) are read after fw_setup by op
 * fw_const_value; their static values here are those of the image as linked. */
const char fw_const_names[] __used =
#define FW_CNAME(name) #name "\0"
	FW_CONSTS(FW_CNAME);

FW_NOINLINE unsigned long fw_consts(fw_u64 *out, unsigned long n)
{
	unsigned long i = 0;

#define FW_CVAL(name) if (i < n) out[i] = (fw_u64)(name); i++;
	FW_CONSTS(FW_CVAL)
	return i;
}
