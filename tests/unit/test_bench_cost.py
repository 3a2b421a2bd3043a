"""The cost model of the benchmarks (bench/cost.py): Flex Consumption's on-demand meters applied to measured
figures, as docs/performance.md explains them."""

import pytest

from bench import cost


def test_a_million_executions_and_a_thousand_gb_seconds():
    assert cost.usd(1e6, busy_seconds=1000, gb=1.0) == pytest.approx(0.40 + 1000 * 0.000026)


def test_the_model_prices_one_event_at_a_time_as_two_executions_each_and_the_cpu_time_busy():
    report = {
        "cpu_ms_per_event": 2.0,
        "backlog": {"events": 100_000, "batch": 1000, "worker_cpu_s": [10.0, 10.0], "worker_peak_rss_mb": [50, 60]},
    }
    priced = cost.model(report, quick=True)
    # 2,000,000 executions ($0.80) and 2,000 s busy on a 2,048 MB instance (4,096 GB-s, $0.1065)
    assert priced["usd_per_million_events"] == pytest.approx(0.80 + 2000 * 2.048 * 0.000026, abs=1e-4)
    assert priced["peak_rss_mb"] == 60
    wave = priced["cost"]["wave"]
    assert wave["executions"] == 1_001_000 and wave["opt_out_cpu_ms_per_event"] == pytest.approx(0.2)
    assert priced["cost"]["upper_bound_waits_not_overlapped"]["usd"] > priced["usd_per_million_events"]
    assert priced["cost"]["power_automate_pay_as_you_go"]["usd"] == 600_000


def test_without_the_cpu_figure_there_is_no_price():
    priced = cost.model({}, quick=True)
    assert priced["usd_per_million_events"] is None and "cpu_ms_per_event" in priced["notes"]["usd_per_million_events"]
