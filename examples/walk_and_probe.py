import foliowalk as fw

with fw.AddressSpace("x86_64:4level") as space:          # guest RAM, an mm, the MMU
    space.add_vma(0x7F0000000000, 0x7F0000200000)        # an anonymous VMA
    folio = space.alloc_folio(order=2)                   # a 4-page folio
    space.map(0x7F0000010000, folio)                     # one PTE per page
    walk = space.walk(0x7F0000011234, fw.FW_MIGRATION)   # folio_walk_start()
    print(walk.summary(), f"entry {walk.entry:#x}")
    print(space.probe(0x7F0000011234))                   # the MMU's answer
    print([row.verdict for row in space.verify([0x7F0000011234])])
