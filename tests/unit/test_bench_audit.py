"""The audit benchmark's CPU split (bench/audit.py): each side's CPU seconds here and in the stand-in's process."""

import os
import sys

import pytest

from bench.audit import cpu_seconds, cpu_split


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_process_cpu_seconds_are_read_and_a_process_that_cannot_be_read_has_none() -> None:
    assert isinstance(cpu_seconds(os.getpid()), float)
    assert cpu_seconds(None) is None
    assert cpu_seconds(2**22 + 1) is None  # above Linux's largest pid


def test_a_side_is_run_once_and_its_cpu_is_reported_for_each_process() -> None:
    runs: list[int] = []

    split = cpu_split(lambda: runs.append(sum(range(10_000))), None)

    assert runs == [sum(range(10_000))]
    assert split["standin"] is None and isinstance(split["client"], float) and split["client"] >= 0
