"""Summarise an upstream e2e JUnit report as the README's results table.

    python tools/e2e_summary.py JUNIT SECONDS FOCUS SKIP

Counts only the specs the focus selects (the Netpol ones); a skipped spec is
listed with the reason it could not run here.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET

SKIP_REASONS = {
    "[Feature:SCTPConnectivity]": "this kernel has no SCTP sockets (CONFIG_IP_SCTP unset): agnhost cannot serve SCTP",
}


def main(junit: str, seconds: str, focus: str, skip: str) -> None:
    cases = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        if not re.search(focus, name):
            continue
        status = case.get("status") or ("failed" if case.find("failure") is not None else "passed")
        cases.append((name.removeprefix("[It] "), status, float(case.get("time", 0))))
    counts = {s: sum(1 for _, status, _ in cases if status == s) for s in ("passed", "failed", "skipped")}
    print(
        f"Upstream NetworkPolicy e2e (focus `{focus}`, skip `{skip}`): "
        f"**{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped** in {seconds} s\n"
    )
    print("| spec | result | seconds |\n| --- | --- | ---: |")
    for name, status, took in sorted(cases, key=lambda c: (c[1] != "failed", c[1], c[0])):
        reason = next((r for tag, r in SKIP_REASONS.items() if tag in name), "") if status == "skipped" else ""
        print(f"| {name} | {status}{': ' + reason if reason else ''} | {took:.0f} |")
    print(f"\n{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")


if __name__ == "__main__":
    main(*sys.argv[1:5])
