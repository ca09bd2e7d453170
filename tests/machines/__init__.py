"""Tests of the Unicorn machines (emu/machines/): probes, faults, batch probes, deviations."""
