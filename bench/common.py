"""What the measurements share: side-by-side timing, realistic message bodies, settings, machine facts."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from optout_dev import messages  # the exact Dataverse wire shape

REPO = Path(__file__).resolve().parent.parent

TOKEN = "bench-token"  # the loopback stand-in's own test token; it guards no real data
KIB = 1024


# ----- timing ---------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def interleaved(sides: Mapping[str, Callable[[], Any]], *, rounds: int, inner: int = 1) -> dict[str, list[float]]:
    """Time each side ``inner`` times in a row per round, alternating which side goes first each round.

    Returns seconds per call for every round, per side. The garbage collector is off while a side is
    timed (as ``timeit`` does) and collected between sides, so neither pays for the other's garbage.
    """
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        order = names if round_ % 2 == 0 else names[::-1]
        for name in order:
            fn = sides[name]
            gc.collect()
            gc.disable()
            try:
                started = time.perf_counter()
                for _ in range(inner):
                    fn()
                elapsed = time.perf_counter() - started
            finally:
                gc.enable()
            times[name].append(elapsed / inner)
    return times


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


# ----- machine --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    with contextlib.suppress(AttributeError, OSError):  # not every platform has sched_getaffinity
        facts["cpu_affinity"] = len(os.sched_getaffinity(0))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
        facts["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        import importlib.metadata as md

        facts["packages"] = {
            name: md.version(name)
            for name in ("azure-functions", "msgspec", "requests", "azure-core", "PowerPlatform-Dataverse-Client")
            if _installed(md, name)
        }
    except Exception:  # noqa: BLE001 — facts are best effort
        pass
    return facts


def code_state() -> dict[str, Any]:
    """Which code was measured: the commit, and how many tracked files differed from it (read-only git)."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "--no-optional-locks", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
            )
        except OSError:
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    changed = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": git("rev-parse", "HEAD"),
        "tracked_files_changed": None if changed is None else len([line for line in changed.splitlines() if line]),
    }


def _installed(md: Any, name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def rss_bytes() -> int:
    """Resident set size of this process (VmRSS), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


# ----- settings ---------------------------------------------------------------------------------------------


def router_settings() -> Any:
    from optout_core.domain.settings import Settings

    return Settings.from_env({"EXPECTED_ORGANIZATION_ID": messages.ORG_ID})


def pipeline_settings(url: str, **extra: str) -> Any:
    from optout_core.domain.settings import Settings

    return Settings.from_env(
        {"EXPECTED_ORGANIZATION_ID": messages.ORG_ID, "DATAVERSE_URL": url, "DATAVERSE_TOKEN": TOKEN, **extra}
    )


# ----- message bodies ---------------------------------------------------------------------------------------


def guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def opt_out_body(log_id: str, recipient: tuple[str, str], *, activity: str = "Group Opt out") -> bytes:
    """A small, ordinary Create of an opt-out campaign log (about 5 KB on the wire)."""
    return messages.wire(
        messages.campaign_log(
            activity=activity,
            recipient=recipient,
            log_id=log_id,
            operation_id=str(uuid.uuid5(uuid.NAMESPACE_URL, log_id)),
            correlation_id=str(uuid.uuid5(uuid.NAMESPACE_DNS, log_id)),
        )
    )


_TEMPLATE_LOG = "0ddba11a-0000-4000-8000-000000000000"
_TEMPLATE_RECIPIENT = "0ddba11b-0000-4000-8000-000000000000"


def opt_out_bodies(count: int, recipient_of: Callable[[int], str], *, tag: int) -> Iterator[bytes]:
    """``count`` opt-out bodies for contacts ``recipient_of(i)``, each with its own campaign log id (from
    ``tag`` and ``i``), made from one template by swapping ids: building them costs next to nothing."""
    template = opt_out_body(_TEMPLATE_LOG, ("contact", _TEMPLATE_RECIPIENT))
    log, recipient = _TEMPLATE_LOG.encode(), _TEMPLATE_RECIPIENT.encode()
    for i in range(count):
        new_log = str(uuid.UUID(int=(tag << 96) | i, version=4)).encode()
        yield template.replace(log, new_log).replace(recipient, recipient_of(i).encode())


_WORDS = (
    "newsletter",
    "campaign",
    "unsubscribe",
    "preferences",
    "Zürich",
    "Ærø",
    "São Paulo",
    "Łódź",
    "event",
    "webinar",
    "https://news.example.com/a/b?utm_source=concep&utm_medium=email",
    "recipient",
    "bounce",
    "list",
    "segment",
    "«spring»",
    "offer",
    "Müller",
    "Ōsaka",
    "report",
    "spam",
    "group",
    "client",
    "opt-out",
    "click",
    "open",
    "sent",
    "template",
    "footer",
    "header",
    "C:\\Temp\\x",
)


def _text(rng: random.Random, length: int) -> str:
    out: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(_WORDS)
        if rng.random() < 0.04:
            word += "\n"
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:length]


def _extra_columns(rng: random.Random, count: int) -> dict[str, Any]:
    """Columns a Concep campaign log plausibly carries: text, numbers, choices, lookups, dates, flags."""
    columns: dict[str, Any] = {}
    for i in range(count):
        kind = i % 7
        name = f"concep_field{i:03d}"
        if kind == 0:
            columns[name] = _text(rng, rng.randint(20, 200))
        elif kind == 1:
            columns[name] = rng.randint(0, 10**6)
        elif kind == 2:
            columns[name] = messages.option(100000000 + rng.randint(0, 20))
        elif kind == 3:  # lookups to tables that are not recipients (never ambiguous)
            columns[name] = messages.reference(
                rng.choice(("concep_campaign", "concep_mailinglist", "concep_template", "systemuser")),
                guid(rng),
                _text(rng, 30),
            )
        elif kind == 4:
            columns[name] = f"/Date({1741944413000 + rng.randint(0, 10**9)})/"
        elif kind == 5:
            columns[name] = rng.random() < 0.5
        else:
            columns[name] = f"{rng.choice(_WORDS)}@example.com"
    return columns


def sized_body(
    target_bytes: int,
    *,
    seed: int = 0,
    log_id: str | None = None,
    recipient: tuple[str, str] = ("contact", messages.CONTACTS[0]),
) -> bytes:
    """A Group Opt out Create of about ``target_bytes`` on the wire (within 1 %; a target below the bare
    context's size gives the bare context).

    The size comes from what a real Create carries in both its Target and its ParentContext's Target: a
    long description and many extra columns (about one per 1.5 KB of body). Never over 192 KB.
    """
    rng = random.Random(seed)
    bare = messages.wire(
        messages.campaign_log(activity="Group Opt out", recipient=recipient, log_id=log_id or messages.LOG_ID)
    )
    if target_bytes <= len(bare):  # the smallest Create there is (about 6.1 KiB with this schema)
        return bare
    columns = _extra_columns(rng, max(0, (target_bytes - len(bare)) // 1500))
    description_seed = rng.random()

    def build(length: int) -> bytes:
        extra = dict(columns)
        if length > 0:
            extra["description"] = _text(random.Random(description_seed), length)
        ctx = messages.campaign_log(
            activity="Group Opt out", recipient=recipient, log_id=log_id or messages.LOG_ID, extra_attributes=extra
        )
        return messages.wire(ctx)

    length = 0
    body = build(length)
    for _ in range(12):
        missing = target_bytes - len(body)
        if abs(missing) <= target_bytes * 0.005 or (missing < 0 and length == 0):
            break
        # the description appears twice (Target and ParentContext) and its escapes grow it a little
        length = max(0, length + int(missing / 2.1))
        body = build(length)
    if len(body) > 192 * KIB:
        raise ValueError(f"a body of {len(body)} bytes could not come from Dataverse (192 KB at most)")
    return body


def evenly_spread_sizes(count: int, low_kib: float = 5, high_kib: float = 190) -> list[int]:
    step = (high_kib - low_kib) / (count - 1)
    return [int(round((low_kib + i * step) * KIB)) for i in range(count)]


# ----- running things -----------------------------------------------------------------------------------------


class Clock:
    """Elapsed wall time of a block: ``with Clock() as c: ...; c.seconds``."""

    def __enter__(self) -> Clock:
        self._started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._started


def quiet_logging() -> None:
    """The pipeline logs one line per message (warnings for rejections): keep them off the report."""
    import logging

    log = logging.getLogger("optout")
    log.propagate = False
    log.addHandler(logging.NullHandler())


class _Shipped(logging.Handler):
    """Formats each record, as the Functions worker does before it ships the line to the host; keeps nothing."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


@contextlib.contextmanager
def production_logging() -> Iterator[None]:
    """The ``optout`` logger as deployed (host.json: Information): every outcome line built and formatted, as
    the worker would ship it, then dropped (not printed into the report)."""
    log = logging.getLogger("optout")
    saved = (log.level, log.propagate)
    shipped = _Shipped(logging.INFO)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(shipped)
    try:
        yield
    finally:
        log.removeHandler(shipped)
        log.setLevel(saved[0])
        log.propagate = saved[1]


def fresh_child(args: Sequence[str], env: Mapping[str, str], what: str) -> dict[str, Any]:
    """Run ``python <args>`` in a fresh interpreter from the repository root; the JSON object its last line
    prints (the cold-start benchmarks time what happens inside such a child)."""
    out = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=dict(env), capture_output=True, text=True, timeout=120, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed in a fresh interpreter:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
