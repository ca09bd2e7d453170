"""Hypothesis strategies for your own property tests: raw entry values of one level
(:func:`entries`) and whole hierarchies (:func:`hierarchies`) from the fuzzer's generators.
Build a drawn hierarchy with ``foliowalk.AddressSpace.from_spec(h)``.

A facade over :mod:`emu.strategies` (needs ``hypothesis``: ``pip install 'foliowalk[test]'``).
"""

from __future__ import annotations

from emu.strategies import config_key, entries, hierarchies

__all__ = ["config_key", "entries", "hierarchies"]
