"""``foliowalk conform``: MMU conformance per architecture -- may this access happen, which fault
code does it report, what does it write back (Accessed/Dirty) -- over an enumerated space of
entry bits, accesses and CPU controls, run on the emulator and compared with the manual's model
in ``archs/`` (docs/conform.md).  :mod:`emu.conform.x86_64`: the kvm-unit-tests ``access.c``-style
space; :mod:`emu.conform.arm64`: Arm ARM D8.4 permissions, PAN, WXN, the Access flag;
:mod:`emu.conform.s390x`: DAT protection, IEP, key-controlled protection, storage-key R/C."""
