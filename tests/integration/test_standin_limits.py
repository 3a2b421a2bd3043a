"""The stand-in's service protection as the fleet and backlog benchmarks use it: time scaled down as a whole
(Retry-After's step with the window), the combined execution time of running and finished requests, and the
history a benchmark reads back (optout_dev/standin/protection.py)."""

import threading
import time

import pytest
import requests

from optout_dev.standin import DataverseStandIn, ServiceProtection
from optout_dev.standin.protection import UserLoads

TIMEOUT = 10
A = "00000000-0000-4000-8000-00000000a001"


def whoami(http, server):
    return http.get(f"{server.url}/api/data/v9.2/WhoAmI", timeout=TIMEOUT)


def error_code(response):
    return response.json()["error"]["code"]


def test_scaled_limits_keep_dataverse_rates_in_a_shorter_window():
    scaled = ServiceProtection.scaled(30)
    assert (scaled.requests, scaled.window, scaled.concurrent) == (200, 10.0, 52)
    assert scaled.execution_ms == pytest.approx(40_000)  # 4 s of execution per second, as 1,200,000 ms per 300 s
    assert scaled.retry_after_step == pytest.approx(1 / 30)
    assert scaled.allowed_rate == pytest.approx(ServiceProtection().allowed_rate)


@pytest.mark.parametrize(
    "step, wait, header",
    [
        (1.0, 0.2, "1"),  # Dataverse's whole seconds, at least one
        (1.0, 1.2, "2"),
        (0.1, 0.23, "0.300"),  # a scaled step: rounded up to it, sent with decimals
        (0.1, 0.0, "0.100"),  # never less than one step
        (1 / 30, 0.05, "0.067"),  # rounded up to the millisecond: never sooner than the slot frees
    ],
)
def test_retry_after_is_the_wait_rounded_up_to_the_step(step, wait, header):
    assert ServiceProtection(retry_after_step=step).retry_after(wait) == header


def test_retry_after_step_must_be_positive():
    with pytest.raises(ValueError):
        ServiceProtection(retry_after_step=0)


def test_a_refusal_at_a_scaled_step_says_when_the_oldest_request_slides_out(http):
    with DataverseStandIn(protection=ServiceProtection(requests=2, window=0.5, retry_after_step=0.01)) as server:
        assert whoami(http, server).status_code == 200
        assert whoami(http, server).status_code == 200
        refused = whoami(http, server)
        assert refused.status_code == 429 and error_code(refused) == "0x80072322"
        retry_after = float(refused.headers["Retry-After"])
        assert 0 < retry_after <= 0.5 and refused.headers["Retry-After"].count(".") == 1
        time.sleep(retry_after)
        assert whoami(http, server).status_code == 200  # the wait it gave was enough


def test_requests_running_count_toward_the_execution_time_limit():
    # Execution time is combined: a request admitted while others run pays for how long they have run so far.
    loads = UserLoads(ServiceProtection(requests=100, window=10, concurrent=10, execution_ms=250))
    refused, running, _ = loads.admit("user", 100.0)
    assert refused is None
    refused, _, _ = loads.admit("user", 100.2)  # 200 ms running: still within 250
    assert refused is None
    refused, _, _ = loads.admit("user", 100.3)  # 300 + 100 ms running now: over
    assert refused is not None and refused.status == 429
    assert dict(refused.headers)["Retry-After"] == "1"  # a tenth of the window, in whole seconds
    stats = loads.stats("user", 100.3)
    assert stats.throttled_by_code == {"0x80072321": 1} and stats.in_flight == 2


def test_a_batch_whose_operations_use_up_the_execution_time_gets_the_next_request_refused(http):
    protection = ServiceProtection(requests=100, window=2, execution_ms=120, retry_after_step=0.05)
    with DataverseStandIn(protection=protection, latency=0.03) as server:
        server.add_row("contact", A)
        body = "\r\n".join(
            [
                *(
                    line
                    for _ in range(5)
                    for line in (
                        "--b",
                        "Content-Type: application/http",
                        "Content-Transfer-Encoding: binary",
                        "",
                        f"PATCH {server.url}/api/data/v9.2/contacts({A}) HTTP/1.1",
                        "Content-Type: application/json",
                        "If-Match: *",
                        "",
                        '{"donotbulkemail":true}',
                    )
                ),
                "--b--",
                "",
            ]
        )
        answer = http.post(
            f"{server.url}/api/data/v9.2/$batch",
            data=body.encode(),
            headers={"Content-Type": "multipart/mixed; boundary=b"},
            timeout=TIMEOUT,
        )
        assert answer.status_code == 200  # five operations, 30 ms each: 150 ms, over 120
        refused = whoami(http, server)
        assert refused.status_code == 429 and error_code(refused) == "0x80072321"
        assert 0 < float(refused.headers["Retry-After"]) <= 2
        stats = server.window_stats()
        assert stats.admitted == 1 and stats.execution_ms_in_window >= 150


def test_the_history_records_every_admission_refusal_and_execution_in_order(http):
    with DataverseStandIn(protection=ServiceProtection(requests=3, window=5)) as server:
        statuses = [whoami(http, server).status_code for _ in range(5)]
        stats = server.window_stats()
    assert statuses == [200, 200, 200, 429, 429]
    assert len(stats.admissions) == 3 and list(stats.admissions) == sorted(stats.admissions)
    assert [code for _, code in stats.refusals] == ["0x80072322", "0x80072322"]
    assert stats.refusals[0][0] >= stats.admissions[-1]
    assert len(stats.executions) == 3 and all(ms >= 0 for _, ms in stats.executions)


def test_the_history_is_kept_without_protection_too(http):
    with DataverseStandIn() as server:
        whoami(http, server)
        stats = server.window_stats()
    assert len(stats.admissions) == 1 and len(stats.executions) == 1 and stats.refusals == ()


def test_concurrent_requests_are_each_counted_once(http):
    with DataverseStandIn(protection=ServiceProtection(requests=1000, window=5), latency=0.01) as server:
        statuses: list[int] = []
        lock = threading.Lock()

        def call():
            with requests.Session() as own:
                own.headers["Authorization"] = "Bearer local-token"
                status = whoami(own, server).status_code
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=call) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        stats = server.window_stats()
    assert statuses == [200] * 12
    assert stats.admitted == len(stats.admissions) == len(stats.executions) == 12 and stats.in_flight == 0
