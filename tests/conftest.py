"""Test set-up: the repository root and tests/ are importable (tests share builders such as messages.py)."""

import logging
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
for path in (str(ROOT), str(TESTS)):
    if path not in sys.path:
        sys.path.insert(0, path)

# The library logs a warning about HTTP auth levels at indexing; it says nothing about this app.
logging.getLogger().setLevel(logging.INFO)
