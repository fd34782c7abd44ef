"""Skips nobody sees: a pytest plugin (its hooks are imported by conftest.py) that fails the run
when a test is skipped for a reason not allowed.

`--fail-on-unexpected-skip` (or $SEALBENCH_FAIL_ON_SKIP=1) turns it on; `--allow-skip REGEX`
(repeatable) and $SEALBENCH_ALLOWED_SKIPS (regexes, one per line) list the skip reasons that are
expected, matched with re.search. Built in: tests that need a GPU skip with a reason starting
"needs a GPU", expected on a machine without one. .ci/run installs the test extras, so on CI any
other skip (an optional dependency `importorskip`-ed away, a missing data dir) is a missing install
step: the run lists each unexpected skip with its reason and exits 1. xfail is not a skip.
"""
from __future__ import annotations

import os
import re

import pytest

EXPECTED = (r"^needs a GPU",)
_unexpected: list[tuple[str, str]] = []


def pytest_addoption(parser):
    group = parser.getgroup("sealbench skips")
    group.addoption("--fail-on-unexpected-skip", action="store_true",
                    default=os.environ.get("SEALBENCH_FAIL_ON_SKIP") == "1",
                    help="fail the run when a test skips for a reason no --allow-skip matches")
    group.addoption("--allow-skip", action="append", default=[], metavar="REGEX",
                    help="an expected skip reason (re.search); also $SEALBENCH_ALLOWED_SKIPS, one per line")


def _allowed(config) -> list[str]:
    extra = [x for x in os.environ.get("SEALBENCH_ALLOWED_SKIPS", "").splitlines() if x.strip()]
    return list(EXPECTED) + config.getoption("allow_skip") + extra


def skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _unexpected.append((report.nodeid, skip_reason(report)))


def _offending(config) -> list[tuple[str, str]]:
    if not config.getoption("fail_on_unexpected_skip"):
        return []
    allowed = [re.compile(x) for x in _allowed(config)]
    return [(node, why) for node, why in _unexpected if not any(a.search(why) for a in allowed)]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    bad = _offending(config)
    if bad:
        terminalreporter.section("unexpected skips", red=True)
        for node, why in bad:
            terminalreporter.line(f"SKIPPED {node}: {why}")
        terminalreporter.line(f"{len(bad)} test(s) skipped for a reason not allowed (--allow-skip, "
                              "$SEALBENCH_ALLOWED_SKIPS): install what they need or allow the reason")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if _offending(session.config) and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
