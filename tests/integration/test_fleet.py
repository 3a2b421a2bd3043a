"""The fleet harness of the benchmarks (bench/instances.py), and the arithmetic of the fleet and backlog figures:
worker processes running BulkEmailOptOut against one stand-in must apply every event exactly once, and the
figures must say what the docs say they do."""

import pytest

from bench import backlog
from bench.common import pipeline_settings
from bench.instances import WorkItems, admitted_utilisation, event_log_id, rate_series, run_fleet
from bench.standin_proc import RemoteStandIn, row_id
from optout_core.domain.workitem import WorkItem

PREFIX, TAG = 0x7E57, 0x7E5


def test_work_items_are_what_the_router_queues_for_each_event():
    items = WorkItems(pipeline_settings("http://127.0.0.1:9"))
    messages = items.make(TAG, [(0, row_id(PREFIX, 5)), (7, row_id(PREFIX, 9))])
    parsed = [WorkItem.from_json(m.body) for m in messages]
    assert [p.log_id for p in parsed] == [event_log_id(TAG, 0), event_log_id(TAG, 7)]
    assert [p.recipient.id for p in parsed] == [row_id(PREFIX, 5), row_id(PREFIX, 9)]
    assert [m.message_id for m in messages] == [p.message_id for p in parsed]
    assert len({m.message_id for m in messages}) == 2 and all(m.delivery_count == 1 for m in messages)


def test_a_fleet_applies_every_event_exactly_once_under_one_users_limits():
    # Three instances, two invocations each, a limit that refuses: every event ends applied, each exactly once.
    events = 120
    tasks = [(b, [(e, row_id(PREFIX, e % 90)) for e in range(b * 4, b * 4 + 4)]) for b in range(events // 4)]
    protection = {"requests": 8, "window": 0.4, "concurrent": 52, "retry_after_step": 0.01}
    with RemoteStandIn(protection=protection) as standin:
        standin.seed(PREFIX, 90)
        run = run_fleet(standin.url, tasks, workers=3, invocations=2, gate=8, tag=TAG, window=protection["window"])
        stats = standin.stats()
        holding = standin.holding(PREFIX, 90)
    final = {name: count for name, count in run.outcomes().items() if name != "rescheduled"}
    assert final == {"applied": events} and not run.errors
    assert holding == 90
    assert len(run.workers) == 3 and all(worker["cpu_s"] > 0 for worker in run.workers)
    assert stats["throttled"] > 0  # the limit did bite, and nothing was lost to it
    assert sum(b["messages"] for b in run.batches) == events + run.outcomes().get("rescheduled", 0)


def test_utilisation_is_k_windows_over_the_time_to_request_k_n_plus_1():
    # N = 2 per 1 s window: requests 1..6 at these times; request 2·2+1 = 5 comes 2.5 s after request 1.
    admissions = [10.0, 10.1, 11.0, 11.2, 12.5, 12.6]
    assert admitted_utilisation(admissions, requests=2, window=1.0, windows=2) == pytest.approx(2 / 2.5, abs=1e-3)
    assert admitted_utilisation(admissions[:4], requests=2, window=1.0, windows=2) is None  # not reached


def test_rate_series_counts_events_per_second_in_bins():
    assert rate_series([0.0, 0.1, 0.6, 1.2], origin=0.0, step=0.5) == [(0.25, 4.0), (0.75, 2.0), (1.25, 2.0)]
    assert rate_series([], origin=0.0, step=0.5) == []


def test_a_wave_names_every_recipient_and_repeats_some():
    wave = backlog.waves(1000)
    recipients = int(1000 * backlog.RECIPIENT_SHARE)
    assert len(wave) == 1000 and set(wave) == set(range(recipients))
    assert backlog.waves(1000) == wave  # the same wave every run


def test_window_fill_averages_the_sliding_window_after_the_first():
    # One unit every 0.1 s for 3 s against a budget of 10 per 1 s window: the window is always full.
    times = [i / 10 for i in range(31)]
    fill = backlog._window_fill(times, [1.0] * len(times), budget=10, window=1.0, start=0.0, end=3.0)
    assert fill["utilisation"] == pytest.approx(1.0, abs=0.05) and fill["peak_fill"] <= 1.1
    half = backlog._window_fill(times[::2], [1.0] * len(times[::2]), budget=10, window=1.0, start=0.0, end=3.0)
    assert half["utilisation"] == pytest.approx(0.5, abs=0.06)
    assert backlog._window_fill(times, [1.0] * 31, budget=10, window=5.0, start=0.0, end=3.0)["utilisation"] is None
