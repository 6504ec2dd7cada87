"""Pytest configuration of the test suite."""

# tests/workers/ holds scripts that the tests run as subprocesses (they set up JAX's devices and
# processes from their command line at start); they are not test modules to import.
collect_ignore = ["workers"]
