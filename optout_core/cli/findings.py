"""What ``check --connect`` reports: findings, each with a severity, a stable code, what it means and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "ok"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str  # stable, for scripts: e.g. "activity_type.unknown_option"
    message: str  # what was found, in an administrator's words (record ids, never names of people or addresses)
    fix: str = ""  # what to do about it; empty for "ok"

    def as_json(self) -> dict[str, str]:
        return {"severity": self.severity, "code": self.code, "message": self.message, "fix": self.fix}


def ok(code: str, message: str) -> Finding:
    return Finding("ok", code, message)


def warning(code: str, message: str, fix: str) -> Finding:
    return Finding("warning", code, message, fix)


def error(code: str, message: str, fix: str) -> Finding:
    return Finding("error", code, message, fix)
