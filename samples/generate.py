"""Regenerate the sample Service Bus bodies in samples/ (and samples/expected.json).

Run from the repository root:

    python samples/generate.py          # rewrite every sample deterministically
    python samples/generate.py --check  # exit 1 if a committed sample differs from what would be written

Each body is written exactly as Dataverse puts it on the queue: one line, no trailing newline, UTF-8, every
"/" escaped as "\\/" (see docs/dataverse-messages.md). The builder is optout_dev/messages.py.
samples/README.md explains the cases; keep it in step when adding one here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from optout_dev import messages as m

HERE = Path(__file__).resolve().parent

BASE_MS = 1741944413000  # 2025-03-14T09:26:53Z


def _ids(n: int) -> dict:
    """Distinct, deterministic ids and creation time for sample number n."""
    return {
        "log_id": f"5c1e8a72-4f10-f011-998a-6045bd0f2d{n:02d}",
        "operation_id": f"6d1e8a72-4f10-f011-998a-6045bd0f2d{n:02d}",
        "correlation_id": f"87b86356-9b2a-4e69-b3c5-955deb6868{n:02d}",
        "created_on_ms": BASE_MS + n * 60_000,
    }


def _routed(route: str, table: str, row_id: str) -> dict:
    return {"outcome": "routed", "route": route, "recipient": {"table": table, "id": row_id}}


IGNORED = {"outcome": "ignored", "route": None, "recipient": None}
REJECTED = {"outcome": "rejected", "route": None, "recipient": None}

C1, C2, C3 = m.CONTACTS
L1, L2 = m.LEADS
A1, _A2 = m.ACCOUNTS


def cases() -> list[tuple[str, bytes, dict]]:
    """(file name, body bytes, expected decision) for every sample, in file order."""
    out: list[tuple[str, bytes, dict]] = []

    def log(n: int, file: str, expected: dict, *, bom: bool = False, **kwargs) -> None:
        out.append((file, m.wire(m.campaign_log(**_ids(n), **kwargs), bom=bom), expected))

    log(
        1,
        "01-spam-report-contact.json",
        _routed("opt_out", "contact", C1),
        activity="Spam Report",
        recipient=("contact", C1),
    )
    log(
        2,
        "02-group-opt-out-lead.json",
        _routed("opt_out", "lead", L1),
        activity="Group Opt out",
        recipient=("lead", L1),
    )
    log(
        3,
        "03-client-opt-out-account.json",
        _routed("opt_out", "account", A1),
        activity="Client Opt Out",
        recipient=("account", A1),
    )
    log(
        4,
        "04-group-opt-out-code-only-no-label-contact.json",
        IGNORED,
        activity=m.ACTIVITY["Group Opt out"],
        recipient=("contact", C2),
    )
    log(5, "05-user-opt-out-contact.json", IGNORED, activity="User Opt Out", recipient=("contact", C3))
    log(
        6,
        "06-hard-bounce-contact.json",
        _routed("bounce", "contact", C2),
        activity="Hard Bounce",
        recipient=("contact", C2),
        bounce_reason="550 5.1.1 mailbox unavailable",
    )
    log(
        7,
        "07-soft-bounce-lead.json",
        _routed("bounce", "lead", L2),
        activity="Soft Bounce",
        recipient=("lead", L2),
        bounce_reason="452 4.2.2 mailbox full",
    )
    log(8, "08-open-contact.json", IGNORED, activity="Open", recipient=("contact", C1))
    log(
        9,
        "09-client-opt-out-deleted-contact.json",
        _routed("opt_out", "contact", m.DELETED_CONTACT),
        activity="Client Opt Out",
        recipient=("contact", m.DELETED_CONTACT),
    )
    log(
        10,
        "10-ambiguous-recipient-contact-and-lead.json",
        REJECTED,
        activity="Group Opt out",
        recipient=None,
        lookups={"concep_contactid": m.reference("contact", C1), "concep_leadid": m.reference("lead", L1)},
    )
    log(
        11,
        "11-update-message-group-opt-out.json",
        IGNORED,
        activity="Group Opt out",
        recipient=("contact", C1),
        message_name="Update",
    )
    out.append(("12-dotnet-binary-format.bin", m.MSBIN1_BODY, REJECTED))
    log(
        13,
        "13-foreign-organisation-spam-report.json",
        REJECTED,
        activity="Spam Report",
        recipient=("contact", C1),
        organization_id=m.FOREIGN_ORG_ID,
    )
    log(
        14,
        "14-spam-report-bom-non-ascii.json",
        _routed("opt_out", "contact", C3),
        bom=True,
        activity="Spam Report",
        recipient=("contact", C3),
        name="Frühjahrs-Newsletter – Ελληνικά",
    )
    return out


def expected_json(all_cases: list[tuple[str, bytes, dict]]) -> bytes:
    data = {file: expected for file, _body, expected in all_cases}
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def files() -> dict[str, bytes]:
    """Every file this script owns: name -> exact bytes."""
    all_cases = cases()
    result = {file: body for file, body, _expected in all_cases}
    result["expected.json"] = expected_json(all_cases)
    return result


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, content in files().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_bytes() != content:
                stale.append(name)
        else:
            path.write_bytes(content)
            print(f"wrote samples/{name} ({len(content)} bytes)")
    if stale:
        print("out of date: " + ", ".join(stale) + " (run: python samples/generate.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
