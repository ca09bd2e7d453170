"""Tests of the fuzzer (emu/fuzz/) and the Hypothesis strategies."""
