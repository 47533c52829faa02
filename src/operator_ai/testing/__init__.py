"""Helpers that tests and benchmarks share with developers: real servers, started and
stopped on demand. Nothing here is imported by the rest of the package."""
