"""Collects the measured worst errors and prints them as a table at the end of the run."""
from __future__ import annotations

import collections

import pytest

from parity_tests.harness import full_precision

_RESULTS: dict[tuple[str, str], dict[str, float]] = collections.defaultdict(dict)
KINDS = ("logits", "pooled", "hidden", "stages", "attention", "grads", "bf16 logits")


@pytest.fixture(autouse=True)
def _pinned_precision():
    with full_precision():
        yield


@pytest.fixture
def record(request):
    """record(config, direction, {kind: error}) adds a row to the parity table. The rows travel on
    the test's report, so the table is complete under pytest-xdist too (workers send reports)."""

    def add(config: str, direction: str, errors: dict[str, float]) -> None:
        request.node.user_properties.append(("parity", (config, direction, dict(errors))))

    return add


def pytest_runtest_logreport(report):
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name == "parity":
            config, direction, errors = value
            row = _RESULTS[(config, direction)]
            for kind, error in errors.items():
                row[kind] = max(float(error), row.get(kind, 0.0))


def format_table(results) -> str:
    kinds = [k for k in KINDS if any(k in row for row in results.values())]
    header = ["config", "direction"] + kinds
    rows = [[cfg, direction] + [f"{row[k]:.1e}" if k in row else "-" for k in kinds]
            for (cfg, direction), row in sorted(results.items())]
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    terminalreporter.section("parity: worst max|a-b| / max(1, max|b|) per tensor kind")
    terminalreporter.write_line(format_table(_RESULTS))
    terminalreporter.write_line("float32 tolerance 1e-5; bf16 tolerance 1e-2 with identical top-1")
