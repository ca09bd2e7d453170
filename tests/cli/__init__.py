"""Tests of the foliowalk command (emu/cli/)."""
