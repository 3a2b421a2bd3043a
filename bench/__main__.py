"""``python -m bench [--quick] [--json] [--plot DIR]``: run every measurement, print a report (or one JSON object).

The JSON object's top-level keys are a contract the project keeps stable (see docs/performance.md):
router_vs_json_loads, import_vs_floor, requests_per_optout_steady, requests_per_optout_burst,
write_wall_vs_sdk, write_wall_batch_vs_sdk, ours_completed_under_429, sdk_completed_under_429,
ceiling_utilisation, rss_growth_mb; fleet_utilisation, fleet_lost, fleet_429_share, backlog_drain_vs_limit,
optouts_per_request_backlog, latency_p50_ms, latency_p99_ms, latency_vs_floor, cpu_ms_per_event,
peak_rss_mb, usd_per_million_events, audit_logs_per_request, audit_wall_vs_floor; first_event_vs_floor,
cpu_per_event_vs_floor. Each is a number, or null with the reason under ``notes``. The raw figures behind each
sit under their own keys, with the machine's facts under ``machine``. ``--plot DIR`` also draws the fleet's and
the backlog's curves from the same run into DIR (needs matplotlib, requirements-bench.txt).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from .common import code_state, machine, quiet_logging

# key -> (target as text, test on the value)
TARGETS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "router_vs_json_loads": ("<= 1.0", lambda v: v <= 1.0),
    "import_vs_floor": ("<= 1.2", lambda v: v <= 1.2),
    "first_event_vs_floor": ("<= 1.5", lambda v: v <= 1.5),
    "cpu_per_event_vs_floor": ("<= 3.0", lambda v: v <= 3.0),
    "requests_per_optout_steady": ("<= 1.0", lambda v: v <= 1.0),
    "requests_per_optout_burst": ("<= 0.01", lambda v: v <= 0.01),
    "requests_per_optout_verified_steady": ("<= 2.0", lambda v: v <= 2.0),
    "requests_per_optout_verified_burst": ("<= 0.002", lambda v: v <= 0.002),
    "write_wall_vs_sdk": ("<= 0.8", lambda v: v <= 0.8),
    "ours_completed_under_429": ("= 1.0", lambda v: v >= 1.0),
    "ceiling_utilisation": (">= 0.9, nothing lost", lambda v: v >= 0.9),
    "rss_growth_mb": ("<= 5", lambda v: v <= 5),
    "fleet_utilisation": (">= 0.95 (K = 4 and 8)", lambda v: v >= 0.95),
    "fleet_lost": ("= 0", lambda v: v == 0),
    "fleet_429_share": ("<= 0.05 (K = 4 and 8)", lambda v: v <= 0.05),
    "backlog_drain_vs_limit": (">= 0.9, exactly once", lambda v: v >= 0.9),
    "optouts_per_request_backlog": (">= 500", lambda v: v >= 500),
    "latency_vs_floor": ("<= 1.5 (p50)", lambda v: v <= 1.5),
    "audit_logs_per_request": (">= 500 (100,000 logs)", lambda v: v >= 500),
    "audit_wall_vs_floor": ("<= 1.5", lambda v: v <= 1.5),
}
REPORTED_ONLY = (
    "write_wall_batch_vs_sdk",
    "sdk_completed_under_429",
    "import_vs_floor_source",
    "latency_p50_ms",
    "latency_p99_ms",
    "cpu_ms_per_event",
    "peak_rss_mb",
    "usd_per_million_events",
)
KEYS = (*TARGETS, *REPORTED_ONLY)


def _measurements() -> list[tuple[str, tuple[str, ...], Callable[[bool], dict[str, Any]]]]:
    from . import (
        audit,
        backlog,
        cpu,
        first_event,
        fleet,
        imports,
        latency,
        memory,
        router,
        throttling,
        webapi_requests,
        writes,
    )

    return [
        ("router", ("router_vs_json_loads",), router.run),
        ("import", ("import_vs_floor",), imports.run),
        ("first_event", ("first_event_vs_floor",), first_event.run),
        (
            "requests",
            (
                "requests_per_optout_steady",
                "requests_per_optout_burst",
                "requests_per_optout_verified_steady",
                "requests_per_optout_verified_burst",
            ),
            webapi_requests.run,
        ),
        ("writes", ("write_wall_vs_sdk", "write_wall_batch_vs_sdk"), writes.run),
        ("under_429", ("ours_completed_under_429", "sdk_completed_under_429"), throttling.under_429),
        ("ceiling", ("ceiling_utilisation",), throttling.ceiling),
        ("memory", ("rss_growth_mb",), memory.run),
        ("fleet", ("fleet_utilisation", "fleet_lost", "fleet_429_share"), fleet.run),
        ("backlog", ("backlog_drain_vs_limit", "optouts_per_request_backlog"), backlog.run),
        ("latency", ("latency_p50_ms", "latency_p99_ms", "latency_vs_floor", "cpu_ms_per_event"), latency.run),
        ("audit", ("audit_logs_per_request", "audit_wall_vs_floor"), audit.run),
        ("cpu", ("cpu_per_event_vs_floor",), cpu.run),
    ]


def run(quick: bool, progress: Callable[[str], None], only: frozenset[str] | None = None) -> dict[str, Any]:
    quiet_logging()
    started = time.perf_counter()
    report: dict[str, Any] = dict.fromkeys(KEYS)
    notes: dict[str, str] = {}
    seconds: dict[str, float] = {}
    report["mode"] = "quick" if quick else "full"
    report["machine"] = machine()
    report["code"] = code_state()
    for name, keys, measure in _measurements():
        if only is not None and name not in only:
            for key in keys:
                notes[key] = f"not measured in this run (--only {','.join(sorted(only))})"
            continue
        progress(f"bench: {name} ...")
        t0 = time.perf_counter()
        try:
            result = measure(quick)
        except Exception as exc:  # noqa: BLE001 — one broken measurement must not hide the others
            for key in keys:
                notes[key] = f"{name} failed: {type(exc).__name__}: {exc}"
            report[f"{name}_error"] = traceback.format_exc(limit=6)
            result = {}
        seconds[name] = round(time.perf_counter() - t0, 2)
        notes.update(result.pop("notes", {}))
        report.update(result)
        progress(f"bench: {name} done in {seconds[name]} s: " + ", ".join(f"{k}={report.get(k)}" for k in keys))
    progress("bench: cost ...")
    try:
        from . import cost

        priced = cost.model(report, quick)
        notes.update(priced.pop("notes", {}))
        report.update(priced)
    except Exception as exc:  # noqa: BLE001 — the model must not hide the measurements
        notes["usd_per_million_events"] = f"cost failed: {type(exc).__name__}: {exc}"
        report["cost_error"] = traceback.format_exc(limit=6)
    progress(f"bench: cost done: usd_per_million_events={report.get('usd_per_million_events')}")
    if quick:
        notes.setdefault(
            "rss_growth_mb",
            "quick run: growth from message 1,000 to 3,000 only (the full run measures 1,000 to 10,000)",
        )
    for key in KEYS:
        if report[key] is None and key not in notes:
            notes[key] = "not measured"
    # A utilisation counts only when nothing was lost on the way.
    lost = {"ceiling_utilisation": (report.get("ceiling") or {}).get("lost"), "fleet_utilisation": report["fleet_lost"]}
    report["targets"] = {
        key: {
            "target": target,
            "value": report[key],
            "met": None if report[key] is None else bool(test(report[key])) and not lost.get(key),
        }
        for key, (target, test) in TARGETS.items()
    }
    report["notes"] = notes
    report["seconds"] = seconds
    report["wall_seconds"] = round(time.perf_counter() - started, 2)
    return report


def render(report: dict[str, Any]) -> str:
    lines = [f"optout benchmarks ({report['mode']} run, {report['wall_seconds']} s)", ""]
    m = report["machine"]
    lines.append(
        f"machine: Python {m.get('python')} on {m.get('platform')}, {m.get('cpu_count')} CPUs"
        f" ({m.get('cpu_model', 'unknown model')}), load at start {m.get('loadavg_at_start')}"
    )
    code = report.get("code") or {}
    lines.append(f"code: commit {code.get('commit')}, {code.get('tracked_files_changed')} tracked file(s) changed")
    lines.append("")
    lines.append(f"{'figure':32} {'value':>10}  {'target':22} met")
    for key in KEYS:
        target = report["targets"].get(key)
        value = report.get(key)
        shown = "n/a" if value is None else f"{value:g}"
        met = "" if target is None else {True: "yes", False: "NO", None: "?"}[target["met"]]
        lines.append(f"{key:32} {shown:>10}  {(target or {}).get('target', '(reported)'):22} {met}")
    lines.append("")
    router = report.get("router") or {}
    if router:
        lines.append(
            f"router: {router['sizes']} bodies, {router['min_bytes']:,}-{router['max_bytes']:,} bytes, "
            f"{router['rounds']} interleaved rounds; key = total router time / total json.loads time"
        )
        for row in router["per_size"]:
            lines.append(
                f"  {row['bytes']:>8,} B  json.loads {row['json_loads_us']:>9.1f} us  "
                f"router {row['router_us']:>9.1f} us  ratio {row['ratio']:.3f}"
            )
    imp = report.get("import") or {}
    if imp:
        lines.append(
            f"import: function_app {imp['function_app_median_ms']} ms (app compiled from source: "
            f"{imp['function_app_from_source_median_ms']} ms) vs azure.functions "
            f"{imp['azure_functions_median_ms']} ms, median of {imp['samples_per_side']} fresh "
            f"interpreters each; heavy modules loaded: {imp['heavy_modules_loaded_by_function_app']}"
        )
        top = imp["breakdown_importtime"]["cached_bytecode"]["top_self_ms"]
        lines.append(
            "  beyond the floor (-X importtime, self ms): "
            + ", ".join(f"{module} {ms}" for module, ms in list(top.items())[:6])
        )
    steady, burst = report.get("steady") or {}, report.get("burst") or {}
    if steady:
        lines.append(
            f"steady: {steady['events']} events one at a time -> {steady['applied']} applied, "
            f"{steady['standin_requests']} Web API requests"
        )
    if burst:
        lines.append(
            f"burst: {burst['events']} queued opt-outs ({burst['distinct_recipients']} recipients) -> "
            f"{burst['applied']} applied, {burst['standin_requests']} Web API request(s), "
            f"{burst['standin_operations']} operations inside"
        )
    w = report.get("writes") or {}
    if w:
        lines.append(
            f"writes: N={w['n']} at concurrency {w['concurrency']}, {w['rounds']} rounds: ours "
            f"{w['ours_median_s']} s, SDK {w['sdk_median_s']} s, ours via $batch {w['ours_batch_median_s']} s"
        )
        prof = w.get("profile_ms_per_update") or {}
        for side, figures in prof.items():
            lines.append(
                f"  {side}: {figures['own_code_ms']} ms own code + {figures['shared_http_stack_ms']} ms "
                f"shared HTTP stack per update under cProfile ({figures['own_share']:.1%} own)"
            )
    u = report.get("under_429") or {}
    for side, figures in (u.get("sides") or {}).items():
        lines.append(
            f"under 429 ({side}): {figures['completed']}/{u['n']} completed in {figures['seconds']} s, "
            f"errors {figures['errors'] or 'none'}"
        )
    c = report.get("ceiling") or {}
    if c:
        p = c["protection"]
        lines.append(
            f"ceiling: {p['requests']} requests / {p['window']:g} s window, {c['events']} events, "
            f"{c['concurrency']} workers: {c['seconds_to_request_windows_x_n_plus_1']} s to request "
            f"{c['windows_beyond_first']}xN+1 (ideal {c['ideal_seconds']} s), lost {c['lost']}, "
            f"429s {c['throttled_429']}"
        )
    r = report.get("rss") or {}
    if r:
        lines.append(
            f"memory: RSS {r['rss_at_from_mib']} MiB at message {r['from_message']:,} -> "
            f"{r['rss_at_to_mib']} MiB at {r['to_message']:,}; by-design histories "
            f"{r['designed_state_growth_mib']}"
        )
    if report["notes"]:
        lines.append("")
        lines.append("notes:")
        lines.extend(f"  {key}: {note}" for key, note in report["notes"].items())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples and shorter windows; a few minutes")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    parser.add_argument("--plot", metavar="DIR", help="also draw the fleet and backlog curves of this run into DIR")
    parser.add_argument("--only", metavar="NAMES", help="run only these measurements (comma-separated names)")
    args = parser.parse_args(argv)
    only = frozenset(args.only.split(",")) if args.only else None
    progress = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    report = run(args.quick, progress=progress, only=only)
    if args.plot:
        from .plot import draw

        for path in draw(report, args.plot):
            progress(f"bench: drew {path}")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
