"""Chaos tests: packlab's reliability promises broken on purpose, on real processes."""
