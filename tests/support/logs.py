"""Capturing log lines in tests that run many threads (pytest's caplog is per test, not per fixture)."""

import logging


class Capture(logging.Handler):
    """Keeps every formatted line it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
