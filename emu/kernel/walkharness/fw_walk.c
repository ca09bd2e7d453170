// SPDX-License-Identifier: GPL-2.0
/*
 * foliowalk kernel walk harness: calls the tree's own folio_walk_start()/folio_walk_end()
 * (mm/pagewalk.c, include/linux/pagewalk.h) on guest page tables and records what they found.
 *
 * This file includes kernel headers, so it is GPL-2.0 (the rest of foliowalk is MIT).
 * The driver (emu/kernel/walk.py) builds the guest: the linear map at page_offset_base,
 * struct page at vmemmap_base, the mm_struct and VMAs (at offsets this file exports), per-CPU
 * state behind GS; it writes the variables below before the first call.
 *
 * ABI: unsigned long fw_walk_batch(const struct fw_walk_req *in, struct fw_walk_res *out,
 *                                  unsigned long n)   returns n.
 */
#include <linux/mm.h>
#include <linux/pagewalk.h>
#include <linux/huge_mm.h>
#include <linux/mm_types.h>
#include <linux/stddef.h>
#include <linux/sched.h>
#include <linux/hugetlb.h>
#include <linux/preempt.h>
#ifdef CONFIG_S390
#include <asm/lowcore.h>
#include <asm/spinlock.h>
#endif
#include <mm/internal.h>	/* prep_compound_head(), prep_compound_tail() */

typedef unsigned long long fw_u64;

struct fw_walk_req {
	fw_u64 vma;	/* guest VA of the struct vm_area_struct */
	fw_u64 addr;
	fw_u64 flags;	/* folio_walk_flags_t */
};

struct fw_walk_res {
	fw_u64 folio_pfn;	/* folio_pfn() of the returned folio, ~0 if NULL */
	fw_u64 page_pfn;	/* page_to_pfn(fw.page), ~0 if fw.page is NULL */
	fw_u64 level;		/* fw.level (valid when a folio was returned) */
	fw_u64 entryp;		/* fw.ptep/pmdp/pudp (kernel VA) */
	fw_u64 entry;		/* fw.pte/pmd/pud value */
	fw_u64 ptl;		/* fw.ptl */
	fw_u64 ptl_held;	/* spin_is_locked(fw.ptl) between start and end */
	fw_u64 ptl_after;	/* spin_is_locked(fw.ptl) after folio_walk_end() */
	fw_u64 stubs;		/* bit i: stub i (fw_stub_names) was reached during this call */
	fw_u64 preempt;		/* preempt_count() after the call (0 if balanced) */
	fw_u64 rcu_nesting;	/* current->rcu_read_lock_nesting after the call (0 if balanced) */
};

unsigned long fw_walk_batch(const struct fw_walk_req *in, struct fw_walk_res *out, unsigned long n);

/* ---- stubs: everything the walk reaches that a bare guest cannot run ------------------------
 * THE ONE LIST.  Each stub sets its bit in fw_stub_hits (cleared per call, returned in
 * res.stubs; names in bit order: fw_stub_names).  Which are expected on a normal walk:
 * rcu_read_lock/rcu_read_unlock (every PTE-level walk: __pte_offset_map()); everything else
 * means the kernel took a reporting or slow path, which the driver reports as such. */
#define FW_STUBS(X) \
	X(rcu_read_lock)	/* __rcu_read_lock(): kernel/rcu/tree_plugin.h; its fast path (nesting++) is done */ \
	X(rcu_read_unlock)	/* __rcu_read_unlock(): nesting--; rcu_read_unlock_special() not modelled */ \
	X(printk)		/* _printk(): no console (pXd_ERROR, print_bad_pte text) */ \
	X(dump_page)		/* dump_page(): print_bad_pte()/VM_BUG_ON_PAGE reporting */ \
	X(dump_stack)		/* dump_stack(): print_bad_pte() */ \
	X(add_taint)		/* add_taint(): print_bad_pte() taints with TAINT_BAD_PAGE */ \
	X(pti_set_user_pgtbl)	/* __pti_set_user_pgtbl(): arch/x86/mm/pti.c; only with X86_FEATURE_PTI */ \
	X(hugetlb_vma_lock)	/* hugetlb_vma_lock_read/unlock(): mm/hugetlb.c; VM_HUGETLB VMAs only */ \
	X(preempt_schedule)	/* __SCT__preempt_schedule: preempt_enable() hit zero with need_resched */ \
	X(spin_slowpath)	/* queued_*_slowpath(): contention, impossible single-CPU unless a lock leaks */ \
	X(local_bh_enable)	/* __local_bh_enable_ip(): kernel/softirq.c (spin_unlock_bh, unused by the walk) */ \
	X(set_swapper_pgd)	/* arm64 set_swapper_pgd(): arch/arm64/mm/mmu.c, writes the kernel's own table */

enum {
#define FW_STUB_ENUM(name) FW_STUB_##name,
	FW_STUBS(FW_STUB_ENUM)
};
__attribute__((used)) const char fw_stub_names[] =
#define FW_STUB_NAME(name) #name "\0"
	FW_STUBS(FW_STUB_NAME) "\0";
__attribute__((used)) fw_u64 fw_stub_hits;
#define FW_HIT(name) (fw_stub_hits |= 1ULL << FW_STUB_##name)

#ifdef CONFIG_PREEMPT_RCU
void __rcu_read_lock(void)
{
	FW_HIT(rcu_read_lock);
	WRITE_ONCE(current->rcu_read_lock_nesting, READ_ONCE(current->rcu_read_lock_nesting) + 1);
	barrier();
}

void __rcu_read_unlock(void)
{
	FW_HIT(rcu_read_unlock);
	barrier();
	WRITE_ONCE(current->rcu_read_lock_nesting, READ_ONCE(current->rcu_read_lock_nesting) - 1);
}
#endif

asmlinkage __visible int _printk(const char *fmt, ...)
{
	FW_HIT(printk);
	return 0;
}

void dump_page(const struct page *page, const char *reason)
{
	FW_HIT(dump_page);
}

asmlinkage __visible void dump_stack(void)
{
	FW_HIT(dump_stack);
}

void add_taint(unsigned flag, enum lockdep_ok lockdep_ok)
{
	FW_HIT(add_taint);
}

#ifdef CONFIG_MITIGATION_PAGE_TABLE_ISOLATION
pgd_t __pti_set_user_pgtbl(pgd_t *pgdp, pgd_t pgd)
{
	FW_HIT(pti_set_user_pgtbl);
	return pgd;
}
#endif

#ifdef CONFIG_HUGETLB_PAGE
void hugetlb_vma_lock_read(struct vm_area_struct *vma)
{
	FW_HIT(hugetlb_vma_lock);
}

void hugetlb_vma_unlock_read(struct vm_area_struct *vma)
{
	FW_HIT(hugetlb_vma_lock);
}
#endif

void queued_spin_lock_slowpath(struct qspinlock *lock, u32 val)
{
	FW_HIT(spin_slowpath);
}

void queued_read_lock_slowpath(struct qrwlock *lock)
{
	FW_HIT(spin_slowpath);
}

void queued_write_lock_slowpath(struct qrwlock *lock)
{
	FW_HIT(spin_slowpath);
}

void __local_bh_enable_ip(unsigned long ip, unsigned int cnt)
{
	FW_HIT(local_bh_enable);
}

#if defined(CONFIG_X86_64) && defined(CONFIG_PREEMPT_DYNAMIC)
__attribute__((used)) fw_u64 fw_sct_preempt_schedule_calls;	/* fw_walk_one() turns it into the bit */
/* preempt_enable() calls the static-call trampoline from inline asm with every register live
 * (the real target is preempt_schedule_thunk, which saves them): the stub touches only memory. */
asm(".pushsection .text.__SCT__preempt_schedule, \"ax\"\n"
    ".globl __SCT__preempt_schedule\n"
    "__SCT__preempt_schedule:\n"
    "	incq fw_sct_preempt_schedule_calls(%rip)\n"
    "	ret\n"
    ".popsection\n");
#endif

#if defined(CONFIG_ARM64) && defined(CONFIG_PREEMPTION) && !defined(CONFIG_PREEMPT_DYNAMIC)
/* kernel/sched/core.c: preempt_enable() (asm/preempt.h __preempt_schedule()) calls it when the
 * count drops to zero with a resched pending, which the guest never sets */
asmlinkage __visible void preempt_schedule(void)
{
	FW_HIT(preempt_schedule);
}
#endif

#ifdef CONFIG_ARM64
/* arch/arm64/mm/mmu.c: set_pmd() of a folded PMD (2-level configurations) in swapper_pg_dir goes
 * here; the real one writes the entry through a fixmap alias under swapper_pgdir_lock, as the
 * kernel's own table is mapped read-only.  The tables under test are never swapper_pg_dir. */
void set_swapper_pgd(pgd_t *pgdp, pgd_t pgd)
{
	FW_HIT(set_swapper_pgd);
	WRITE_ONCE(*pgdp, pgd);
}
#endif

#ifdef CONFIG_S390
/* arch/s390/lib/spinlock.c: arch_spin_lock() found the lock taken (asm/spinlock.h) */
void arch_spin_lock_wait(arch_spinlock_t *lp)
{
	FW_HIT(spin_slowpath);
}
#endif

/* ---- the kernel's data, defined as the kernel defines it (the driver writes the values) ---- */
/* the one task: current (init_task is a kernel-image datum too) */
#ifdef CONFIG_ARM64
/* arm64: current is SP_EL0 (asm/current.h get_current()), which the driver points here; the
 * preempt count is thread_info's (THREAD_INFO_IN_TASK, asm/preempt.h): PREEMPT_ENABLED is
 * "count 0, need_resched bit set" = no resched pending */
struct task_struct fw_task = { .thread_info = { .preempt_count = PREEMPT_ENABLED } };
/* arch/arm64/mm/init.c: PHYS_OFFSET, -1 until arm64_memblock_init(); the driver writes the
 * start of RAM (0).  vmemmap (asm/pgtable.h) is VMEMMAP_START - (memstart_addr >> PAGE_SHIFT) */
s64 memstart_addr __ro_after_init = -1;
/* arch/arm64/kernel/vmlinux.lds.S: the kernel's own page table, TTBR1's root: the driver builds
 * the guest's TTBR1 tables here (in_swapper_pgdir() compares with it) */
pgd_t swapper_pg_dir[PTRS_PER_PGD] __aligned(PAGE_SIZE);
#else
/* x86: pcpu_hot.current_task below; s390: the lowcore's current_task (asm/current.h), which the
 * driver writes (with preempt_count and spinlock_lockval) into the lowcore it maps at 0 */
struct task_struct fw_task;
#endif
#ifdef CONFIG_S390
/* arch/s390/kernel/setup.c, filled by the decompressor (arch/s390/boot/startup.c
 * setup_kernel_memory_layout()): the image's virtual/physical base, __identity_base (0 without
 * RANDOMIZE_IDENTITY_BASE: __va(pa) = pa), ident_map_size; the driver writes them */
struct vm_layout __bootdata_preserved(vm_layout);
struct page *vmemmap;
/* arch/s390/mm/init.c setup_zero_pages(): the colored zero pages' mask (is_zero_pfn()) */
unsigned long zero_page_mask;
#endif
#ifdef CONFIG_X86_64
/* arch/x86/kernel/setup.c: filled by identify_boot_cpu(); zero = no optional feature (no LA57,
 * no PTI); the driver sets X86_FEATURE_LA57 for 5-level paging */
struct cpuinfo_x86 boot_cpu_data;
/* arch/x86/kernel/head64.c; randomised by arch/x86/mm/kaslr.c: the driver picks them */
unsigned long page_offset_base = __PAGE_OFFSET_BASE_L4;
unsigned long vmemmap_base = __VMEMMAP_BASE_L4;
unsigned long phys_base;
#ifdef CONFIG_X86_5LEVEL
/* pgtable_l5_enabled() itself tests X86_FEATURE_LA57 in boot_cpu_data (fw_prelude.h) */
unsigned int pgdir_shift = 39;
unsigned int ptrs_per_p4d = 1;
#endif
/* arch/x86/kernel/cpu/common.c: per-CPU hot data.  The guest's GS base is 0, so %gs:pcpu_hot
 * is this very variable (a one-CPU per-CPU area at its link address); const_pcpu_hot is its
 * alias (walk.lds, as arch/x86/kernel/vmlinux.lds.S).  PREEMPT_ENABLED: x86 keeps
 * PREEMPT_NEED_RESCHED inverted, so "no resched pending" is the set bit. */
DEFINE_PER_CPU_ALIGNED(struct pcpu_hot, pcpu_hot) = {
	.current_task = &fw_task,
	.preempt_count = PREEMPT_ENABLED,
};
#endif
/* kernel/time/timer.c (jiffies = jiffies_64 in vmlinux.lds): print_bad_pte() rate-limits */
unsigned long volatile __cacheline_aligned_in_smp jiffies;
#ifdef CONFIG_TRANSPARENT_HUGEPAGE
/* mm/huge_memory.c: ~0 until get_huge_zero_page(); the driver writes the huge zero folio's pfn */
unsigned long huge_zero_pfn __read_mostly = ~0UL;
#endif
#ifdef CONFIG_SPARSEMEM_EXTREME
/* mm/sparse.c: the section roots, built by fw_sparse_init() (pfn_valid() reads them) */
struct mem_section **mem_section;
#endif
/* mm/memory.c defines zero_pfn and highest_memmap_pfn itself; the driver writes them (what
 * init_zero_pfn() and memmap_init() would have set) */

/* ---- layout the driver needs (offsetof, sizeof) ----------------------------------------- */
#define FW_LAYOUT(X) \
	X(sizeof_page, sizeof(struct page)) \
	X(sizeof_mm, sizeof(struct mm_struct)) \
	X(sizeof_vma, sizeof(struct vm_area_struct)) \
	X(sizeof_req, sizeof(struct fw_walk_req)) \
	X(sizeof_res, sizeof(struct fw_walk_res)) \
	X(mm_pgd, offsetof(struct mm_struct, pgd)) \
	X(mm_mmap_lock, offsetof(struct mm_struct, mmap_lock)) \
	X(mm_page_table_lock, offsetof(struct mm_struct, page_table_lock)) \
	X(vma_vm_start, offsetof(struct vm_area_struct, vm_start)) \
	X(vma_vm_end, offsetof(struct vm_area_struct, vm_end)) \
	X(vma_vm_mm, offsetof(struct vm_area_struct, vm_mm)) \
	X(vma_vm_flags, offsetof(struct vm_area_struct, vm_flags)) \
	X(vma_vm_pgoff, offsetof(struct vm_area_struct, vm_pgoff)) \
	X(page_flags, offsetof(struct page, flags)) \
	X(page_compound_head, offsetof(struct page, compound_head)) \
	X(page_refcount, offsetof(struct page, _refcount)) \
	X(page_mapcount, offsetof(struct page, _mapcount)) \
	X(VM_PFNMAP, VM_PFNMAP) \
	X(VM_MIXEDMAP, VM_MIXEDMAP) \
	X(VM_HUGETLB, VM_HUGETLB) \
	X(VM_READ, VM_READ) \
	X(VM_WRITE, VM_WRITE) \
	X(VM_MAYWRITE, VM_MAYWRITE) \
	X(VM_SHARED, VM_SHARED) \
	X(PG_head, PG_head) \
	X(PAGES_PER_SECTION, PAGES_PER_SECTION) \
	X(FW_MIGRATION, (__force unsigned long)FW_MIGRATION) \
	X(FW_ZEROPAGE, (__force unsigned long)FW_ZEROPAGE) \
	FW_LAYOUT_ARCH(X)

#ifdef CONFIG_X86_64
#define FW_LAYOUT_ARCH(X) X(cpuinfo_x86_capability, offsetof(struct cpuinfo_x86, x86_capability)) \
	X(sizeof_pcpu_hot, sizeof(struct pcpu_hot)) \
	X(task_rcu_read_lock_nesting, offsetof(struct task_struct, rcu_read_lock_nesting))
#elif defined(CONFIG_ARM64)
/* arch/arm64/include/asm/memory.h: where the kernel's macros put the linear map, vmemmap and
 * image for this VA size (the driver checks its placement against them) */
#define FW_LAYOUT_ARCH(X) X(PAGE_OFFSET, PAGE_OFFSET) \
	X(PAGE_END, PAGE_END) \
	X(VMEMMAP_START, VMEMMAP_START) \
	X(VMEMMAP_END, VMEMMAP_END) \
	X(KIMAGE_VADDR, KIMAGE_VADDR) \
	X(PAGE_SHIFT, PAGE_SHIFT) \
	X(PTRS_PER_PGD, PTRS_PER_PGD) \
	X(task_preempt_count, offsetof(struct task_struct, thread_info.preempt_count)) \
	X(task_rcu_read_lock_nesting, offsetof(struct task_struct, rcu_read_lock_nesting))
#elif defined(CONFIG_S390)
/* arch/s390/include/asm/lowcore.h: what the walk reads from the lowcore (get_lowcore() is 0:
 * the alternative unpatched) */
#define FW_LAYOUT_ARCH(X) X(sizeof_lowcore, sizeof(struct lowcore)) \
	X(lc_current_task, offsetof(struct lowcore, current_task)) \
	X(lc_preempt_count, offsetof(struct lowcore, preempt_count)) \
	X(lc_spinlock_lockval, offsetof(struct lowcore, spinlock_lockval)) \
	X(lc_percpu_offset, offsetof(struct lowcore, percpu_offset)) \
	X(vm_layout_kaslr_offset, offsetof(struct vm_layout, kaslr_offset)) \
	X(vm_layout_kaslr_offset_phys, offsetof(struct vm_layout, kaslr_offset_phys)) \
	X(vm_layout_identity_base, offsetof(struct vm_layout, identity_base)) \
	X(vm_layout_identity_size, offsetof(struct vm_layout, identity_size)) \
	X(PREEMPT_ENABLED, PREEMPT_ENABLED)
#else
#define FW_LAYOUT_ARCH(X)
#endif

__attribute__((used)) const char fw_layout_names[] =
#define FW_LAYOUT_NAME(name, v) #name "\0"
	FW_LAYOUT(FW_LAYOUT_NAME) "\0";
__attribute__((used)) const fw_u64 fw_layout[] = {
#define FW_LAYOUT_VAL(name, v) (fw_u64)(v),
	FW_LAYOUT(FW_LAYOUT_VAL)
};

/* ---- struct page, set up with the kernel's own inline helpers ------------------------------ */
/* The part of mm/mm_init.c __init_single_page() that concerns a walk: a zeroed struct page
 * (mm_zero_struct_page()), refcount 1, no mapping (_mapcount -1), empty lru. */
unsigned long fw_memmap_init(unsigned long start_pfn, unsigned long nr);
unsigned long fw_memmap_init(unsigned long start_pfn, unsigned long nr)
{
	unsigned long pfn;

	for (pfn = start_pfn; pfn < start_pfn + nr; pfn++) {
		struct page *page = pfn_to_page(pfn);

		mm_zero_struct_page(page);
		init_page_count(page);
		atomic_set(&page->_mapcount, -1);
		INIT_LIST_HEAD(&page->lru);
	}
	return nr;
}

/* mm/mm_init.c init_unavailable_range(): the struct pages of a present section beyond the end of
 * RAM (memmap_init() rounds the last range up to PAGES_PER_SECTION) are initialised and reserved */
unsigned long fw_memmap_reserve(unsigned long start_pfn, unsigned long nr);
unsigned long fw_memmap_reserve(unsigned long start_pfn, unsigned long nr)
{
	unsigned long pfn;

	fw_memmap_init(start_pfn, nr);
	for (pfn = start_pfn; pfn < start_pfn + nr; pfn++)
		__SetPageReserved(pfn_to_page(pfn));
	return nr;
}

/* mm/page_alloc.c prep_compound_page(): head flag, folio order and counters, tails pointing at
 * the head (compound_head = head | 1) */
unsigned long fw_prep_compound(unsigned long pfn, unsigned long order);
unsigned long fw_prep_compound(unsigned long pfn, unsigned long order)
{
	struct page *page = pfn_to_page(pfn);
	unsigned long i, nr = 1UL << order;

	__SetPageHead(page);
	for (i = 1; i < nr; i++)
		prep_compound_tail(page, i);
	prep_compound_head(page, order);
	return nr;
}

/* A folio under migration is locked by migrate_pages() (migrate_folio_unmap()) for as long as
 * migration entries point at it; pfn_swap_entry_to_page() BUG()s otherwise. */
unsigned long fw_lock_folios(unsigned long start_pfn, unsigned long nr);
unsigned long fw_lock_folios(unsigned long start_pfn, unsigned long nr)
{
	unsigned long pfn;

	for (pfn = start_pfn; pfn < start_pfn + nr; pfn++) {
		struct page *page = pfn_to_page(pfn);

		if (!PageTail(page))
			__folio_set_locked(page_folio(page));
	}
	return nr;
}

#ifdef CONFIG_SPARSEMEM_EXTREME
/* mm/sparse.c at boot, for pfns [0, nr_pages): memblocks_present() -> sparse_index_init() makes
 * the root array (NR_SECTION_ROOTS pointers, memblock_alloc()ed: here `area`, zeroed by the
 * driver) and one page of sections per root; sparse_init_one_section() stores the encoded
 * mem_map (sparse_encode_mem_map(): mem_map - section_nr_to_pfn()) with the state bits of a
 * boot-time, online section.  SECTION_IS_EARLY: pfn_valid() then needs no subsection map.
 * Returns the bytes of `area` used. */
unsigned long fw_sparse_init(unsigned long nr_pages, unsigned long area);
unsigned long fw_sparse_init(unsigned long nr_pages, unsigned long area)
{
	unsigned long next = area + ALIGN(sizeof(struct mem_section *) * NR_SECTION_ROOTS, PAGE_SIZE);
	unsigned long nr, last = pfn_to_section_nr(nr_pages - 1);

	mem_section = (struct mem_section **)area;
	for (nr = 0; nr <= last; nr++) {
		unsigned long root = SECTION_NR_TO_ROOT(nr);
		unsigned long start = section_nr_to_pfn(nr);

		if (!mem_section[root]) {
			mem_section[root] = (struct mem_section *)next;
			next += PAGE_SIZE;
		}
		__nr_to_section(nr)->section_mem_map =
			(unsigned long)(pfn_to_page(start) - start) | SECTION_MARKED_PRESENT |
			SECTION_HAS_MEM_MAP | SECTION_IS_ONLINE | SECTION_IS_EARLY;
	}
	return next - area;
}
#endif

/* ---- this CPU's state, as boot code sets it up ------------------------------------------- */
/* s390: arch/s390/kernel/setup.c setup_lowcore() (current_task, preempt_count, percpu_offset of
 * CPU 0) and arch/s390/lib/spinlock.c arch_spin_lock_setup() (spinlock_lockval); the driver
 * maps the lowcore (prefix area) at 0 first.  Elsewhere the driver sets the registers. */
unsigned long fw_cpu_init(void);
unsigned long fw_cpu_init(void)
{
#ifdef CONFIG_S390
	struct lowcore *lc = get_lowcore();

	lc->current_task = (unsigned long)&fw_task;
	lc->preempt_count = PREEMPT_ENABLED;
	lc->percpu_offset = 0;
	lc->spinlock_lockval = arch_spin_lockval(0);
	lc->spinlock_index = 0;
	return (unsigned long)lc;
#else
	return 0;
#endif
}

/* ---- the walk ------------------------------------------------------------------------------ */
static void fw_walk_one(const struct fw_walk_req *rq, struct fw_walk_res *rs)
{
	struct vm_area_struct *vma = (struct vm_area_struct *)(unsigned long)rq->vma;
	struct folio_walk fw = {};
	struct folio *folio;

	fw_stub_hits = 0;
	folio = folio_walk_start(&fw, vma, rq->addr, (__force folio_walk_flags_t)rq->flags);
	rs->folio_pfn = folio ? folio_pfn(folio) : ~0ULL;
	if (folio) {
		rs->page_pfn = fw.page ? page_to_pfn(fw.page) : ~0ULL;
		rs->level = fw.level;
		rs->entryp = (unsigned long)fw.ptep;
		rs->entry = fw.level == FW_LEVEL_PTE ? pte_val(fw.pte) :
			    fw.level == FW_LEVEL_PMD ? pmd_val(fw.pmd) : pud_val(fw.pud);
		rs->ptl = (unsigned long)fw.ptl;
		rs->ptl_held = spin_is_locked(fw.ptl);
		folio_walk_end(&fw, vma);
		rs->ptl_after = spin_is_locked(fw.ptl);
	} else {
		rs->page_pfn = ~0ULL;
		rs->level = ~0ULL;
		rs->entryp = rs->entry = rs->ptl = 0;
		rs->ptl_held = rs->ptl_after = 0;
	}
#if defined(CONFIG_X86_64) && defined(CONFIG_PREEMPT_DYNAMIC)
	if (fw_sct_preempt_schedule_calls)
		FW_HIT(preempt_schedule);
	fw_sct_preempt_schedule_calls = 0;
#endif
	rs->stubs = fw_stub_hits;
	rs->preempt = preempt_count();
#ifdef CONFIG_PREEMPT_RCU
	rs->rcu_nesting = current->rcu_read_lock_nesting;
#else
	rs->rcu_nesting = 0;	/* non-preemptible RCU: rcu_read_lock() is preempt_disable() */
#endif
}

/* which record of the batch is running: the driver attributes a WARN (ud2 trap) to it */
__attribute__((used)) fw_u64 fw_current_call;

unsigned long fw_walk_batch(const struct fw_walk_req *in, struct fw_walk_res *out, unsigned long n)
{
	unsigned long i;

	for (i = 0; i < n; i++) {
		fw_current_call = i;
		fw_walk_one(&in[i], &out[i]);
	}
	return n;
}
