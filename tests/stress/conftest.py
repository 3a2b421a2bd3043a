"""Every stress-test failure names the seed that reproduces it."""

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    seed = getattr(item.module, "SEED", None)
    if report.failed and seed is not None:
        report.sections.append(
            ("seed", f"seed {seed}: reproduce with OPTOUT_STORM_SEED={seed} ./dev test {item.nodeid}")
        )
    return report
