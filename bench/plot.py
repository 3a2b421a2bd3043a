"""``python -m bench --plot DIR``: the fleet's and the backlog's curves, drawn from the run's own report.

* ``fleet.png``: requests the stand-in admitted per second (bins of a tenth of the window) over time, for
  K = 4 and K = 8 instances, against the rate the limit allows (N/W), with each 429 marked.
* ``backlog.png``: events left on the queue over time while the wave drains, with each 429 marked by its
  code, and the line the binding limit's rate would draw after the first window.

matplotlib comes with requirements-bench.txt only: the deployed app never imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(report: dict[str, Any], directory: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    drawn: list[Path] = []
    run_label = f"{report.get('mode', '?')} run, commit {str((report.get('code') or {}).get('commit'))[:7]}"

    fleet = report.get("fleet") or {}
    if fleet.get("runs"):
        fig, axes = plt.subplots(len(fleet["runs"]), 1, figsize=(9, 3.2 * len(fleet["runs"])), sharex=True)
        axes = axes if hasattr(axes, "__len__") else [axes]
        for ax, side in zip(axes, fleet["runs"].values(), strict=True):
            xs = [x for x, _ in side["admitted_per_s"]]
            ys = [y for _, y in side["admitted_per_s"]]
            ax.step(xs, ys, where="mid", color="tab:blue", label="admitted requests / s")
            ax.axhline(side["allowed_rate_per_s"], color="tab:green", linestyle="--", label="allowed N/W")
            refused = side["refused_at_s"]
            if refused:
                top = max(ys) if ys else 1.0
                ax.plot(refused, [top * 1.05] * len(refused), "|", color="tab:red", label="429")
            ax.set_ylabel("requests / s")
            ax.set_title(
                f"{side['instances']} instances: utilisation {side['utilisation']}, "
                f"429 share {side['share_429']}, lost {side['lost']}",
                fontsize=10,
            )
            ax.legend(loc="upper right", fontsize=8)
        axes[-1].set_xlabel("seconds since the first admission")
        fig.suptitle(f"Fleet against one user's request limit ({run_label})", fontsize=11)
        fig.tight_layout()
        path = out / "fleet.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        drawn.append(path)

    backlog = report.get("backlog") or {}
    if backlog.get("events_left"):
        fig, ax = plt.subplots(figsize=(9, 4))
        xs = [x for x, _ in backlog["events_left"]]
        ys = [y for _, y in backlog["events_left"]]
        ax.step(xs, ys, where="post", color="tab:blue", label="events left on the queue")
        codes = sorted({code for _, code in backlog["refused_at_s"]})
        for colour, code in zip(("tab:red", "tab:orange", "tab:purple"), codes, strict=False):
            at = [t for t, c in backlog["refused_at_s"] if c == code]
            ax.plot(at, [ys[0] * 1.03] * len(at), "v", color=colour, label=f"429 {code}")
        rate = (backlog.get("allowed_operations_per_s") or {}).get(backlog.get("binding_limit"))
        window = backlog["protection"]["window"]
        per_op = backlog["applied"] / max(1, backlog["standin_operations"])
        if rate:
            # After the first window's allowance, the binding limit's rate (in events: operations x events per op).
            first = [y for x, y in zip(xs, ys, strict=True) if x <= window]
            start = first[-1] if first else ys[0]
            end = window + start / (rate * per_op)
            ax.plot([window, end], [start, 0], ":", color="tab:green", label="the binding limit's rate")
        ax.set_xlabel("seconds since the first admission")
        ax.set_ylabel("events")
        ax.set_title(
            f"Backlog of {backlog['events']:,} events ({run_label}): drain vs limit "
            f"{report.get('backlog_drain_vs_limit')}, {report.get('optouts_per_request_backlog')} opt-outs per request",
            fontsize=10,
        )
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        path = out / "backlog.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        drawn.append(path)
    return drawn
