"""Tests of archs/: entry formats declared once, Linux's predicates, derived masks."""
