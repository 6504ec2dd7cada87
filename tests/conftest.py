"""Pytest configuration of the test suite."""

from __future__ import annotations

import pytest

# tests/workers/ holds scripts that the tests run as subprocesses (they set up JAX's devices and
# processes from their command line at start); they are not test modules to import.
collect_ignore = ["workers"]

# The generated cases of the oracles' campaigns that this session ran (see `campaign` in
# tests/oracle_support.py), counted where the reports arrive (pytest-xdist's controller too).
_oracle_cases = {"ran": 0}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "oracle_case(seed): a generated case of an oracle's campaign (tests/oracle_support.py)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """A failed oracle case's report says how to rerun that case alone."""
    report = yield
    mark = item.get_closest_marker("oracle_case")
    if mark is not None and report.failed:
        from oracle_support import rerun_command  # only when a case failed

        command = rerun_command(item.nodeid.partition("[")[0], mark.args[0])
        report.sections.append(("rerun this oracle case alone", command))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and "oracle_case" in report.keywords:
        _oracle_cases["ran"] += 1


def pytest_terminal_summary(terminalreporter) -> None:
    """After oracle cases ran: which slice of the campaigns they were, and how to get it back."""
    if _oracle_cases["ran"]:
        from oracle_support import describe_campaign

        terminalreporter.write_sep("-", "oracle campaigns")
        terminalreporter.write_line(describe_campaign(_oracle_cases["ran"]))
