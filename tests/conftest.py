"""Pytest configuration of the test suite."""

# The *_worker.py scripts are run as subprocesses by the tests (they set up JAX's devices and
# processes from their command line at start); they are not test modules to import.
collect_ignore_glob = ["*_worker.py"]
