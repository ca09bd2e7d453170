"""mm/memory.c (v6.12): ``vm_normal_page()`` and ``vm_normal_page_pmd()`` -- which struct page a
present leaf maps, or NULL for special mappings -- each also in a ``*_why`` form that names the
branch that gave NULL.  They take the VMA (``struct vm_area_struct``, attached to its mm) as the
kernel's do.
"""

from __future__ import annotations

from emu.mm.mm_types import MM, VM_MIXEDMAP, VM_PFNMAP, VMA, Page, is_cow_mapping


def _mm(vma: VMA) -> MM:
    mm = vma.vm_mm
    assert mm is not None, "VMA is not attached to an mm (mm.add_vma)"
    return mm


def vm_normal_page(vma: VMA, addr: int, pte: int) -> Page | None:
    """``vm_normal_page()``: the struct page of a present PTE, or None for special mappings."""
    return vm_normal_page_why(vma, addr, pte)[0]


def vm_normal_page_why(vma: VMA, addr: int, pte: int) -> tuple[Page | None, str]:
    """``vm_normal_page()`` (mm/memory.c, v6.12) and, when it gives NULL, which branch said so.

    With CONFIG_ARCH_HAS_PTE_SPECIAL (x86-64, arm64, s390): a special PTE gives NULL in a
    VM_PFNMAP/VM_MIXEDMAP VMA, for the zero page, for a devmap PTE, and otherwise too after
    print_bad_pte(); a normal PTE whose pfn is beyond highest_memmap_pfn gives NULL
    (print_bad_pte).  ``vm_ops->find_special_page`` (Xen gntdev only) is not modelled.
    """
    mm = _mm(vma)
    ops = mm.ops
    pfn = ops.pte_pfn(pte)
    if ops.pte_special(pte):
        if vma.vm_flags & (VM_PFNMAP | VM_MIXEDMAP):
            return None, "special-pfnmap" if vma.vm_flags & VM_PFNMAP else "special-mixedmap"
        if mm.is_zero_pfn(pfn):
            return None, "zero-page"
        if ops.pte_devmap(pte):
            return None, "devmap"
        return None, "bad-special-pte"
    if pfn > mm.memmap.highest_memmap_pfn:
        return None, "pfn-beyond-memmap"
    return mm.memmap.pfn_to_page(pfn), ""


def vm_normal_page_pmd(vma: VMA, addr: int, pmd: int) -> Page | None:
    """``vm_normal_page_pmd()``."""
    return vm_normal_page_pmd_why(vma, addr, pmd)[0]


def vm_normal_page_pmd_why(vma: VMA, addr: int, pmd: int) -> tuple[Page | None, str]:
    """``vm_normal_page_pmd()`` (mm/memory.c, v6.12: pmd_special() added for huge pfnmaps)
    and, when it gives NULL, which branch said so."""
    mm = _mm(vma)
    ops = mm.ops
    pfn = ops.pmd_pfn(pmd)
    if ops.pmd_special(pmd):
        return None, "special"
    if vma.vm_flags & (VM_PFNMAP | VM_MIXEDMAP):
        if vma.vm_flags & VM_MIXEDMAP:
            if not mm.memmap.pfn_valid(pfn):
                return None, "mixedmap-invalid-pfn"
            return mm.memmap.pfn_to_page(pfn), ""
        off = (addr - vma.vm_start) >> ops.PAGE_SHIFT
        if pfn == vma.vm_pgoff + off:
            return None, "pfnmap-linear"
        if not is_cow_mapping(vma.vm_flags):
            return None, "pfnmap-not-cow"
    if ops.pmd_devmap(pmd):
        return None, "devmap"
    if mm.is_huge_zero_pmd(pmd):
        return None, "huge-zero-page"
    if pfn > mm.memmap.highest_memmap_pfn:
        return None, "pfn-beyond-memmap"
    return mm.memmap.pfn_to_page(pfn), ""
