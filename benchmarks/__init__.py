"""Benchmarks: the product's code paths against what a user would otherwise write (see README.md)."""
