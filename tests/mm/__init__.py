"""Tests of the kernel model (emu/mm/): the walkers, the builder, struct page/folio, the memmap."""
