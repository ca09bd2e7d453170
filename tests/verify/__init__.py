"""Tests of verify and the judge: default verdicts per architecture, the architecture's view, the golden output."""
