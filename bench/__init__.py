"""foliowalk benchmarks (not tests): ``python -m bench`` from a source checkout (not installed).

One run measures, for every landed paging configuration (``archs.all_config_keys()``) on the
same workload, and prints each figure with its ratio to the baseline it replaces and the target
it is held to (targets are stated here, never asserted in tests):

* walk, scalar -- ``folio_walk_start()`` + ``folio_walk_end()`` address by address;
* walk, batch -- ``walk_many()`` (emu/mm/pagewalk_batch.py), all mapped and with 10% none PTEs;
  **cold** (the first call on a fresh address space of order-0 folios, no per-value memo: what
  verify, fixtures and every fuzz case see; median of 3 fresh spaces) and **warm** (the median of
  repeated calls on the same addresses);
* probe, per address -- ``machine.probe()``: one ``emu_start`` per address (the baseline);
* probe, batch, raw -- ``machine.probe_many_raw()``: guest loops over many addresses that write
  each result to a result table, handed over as numpy columns (status, physical address, fault
  code; ``emu.machines.base.RawProbes``), all mapped and with 10% faulting addresses;
* probe, batch, objects -- ``machine.probe_many()``: the same runs, plus a Python result object
  (Translation / Fault / ProbeError) per address, which costs about as much as the emulation;
* a cross-check that the batch walk and the batch probe agree on every mapped address (so the
  figures are of work that was really done);
* volatility3's Intel32e layer (optional ``bench`` extra) translating the same x86-64 image from a
  raw physical image file and CR3, with our/their ratios;
* ``foliowalk verify`` over all default scenarios of all landed architectures, wall clock.

The workload: 16,384 distinct pages (4,096 with ``--quick``) of order-4 folios, mapped by 4K/16K/
64K PTEs in one VMA, every 10th page left unmapped (a none PTE) for the 10% fault runs; one
address per page (word offset 0x18), shuffled with a fixed seed.

The code: ``bench/core.py`` (workloads, measurements, printing), ``bench/args.py`` (options).
"""
